"""The embedded Binance USD-M futures simulator (see `controller.sim.server.Simulator`).

It speaks Binance's wire protocol well enough for the real python-binance client: REST paths,
HMAC signatures, weights and rate limits, listenKeys and the user-data websocket, with fault
knobs for tests and the synthetic harness. Nothing here imports python-binance.
"""

from controller.sim.accounts import AccountSpec
from controller.sim.faults import Faults
from controller.sim.server import Addresses, Simulator

__all__ = ["AccountSpec", "Addresses", "Faults", "Simulator"]
