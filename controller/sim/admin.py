"""The simulator's own HTTP endpoints under /sim/: fault knobs, prices and state, at run time.

    GET    /sim/state                   time, accounts (with keys), prices, knobs
    GET    /sim/faults                  the knobs now
    DELETE /sim/faults                  switch every knob off
    POST   /sim/faults/<knob>           JSON body: the keyword arguments of `Faults.<knob>`
    POST   /sim/price                   {"symbol": "BTCUSDT", "price": "61000"}
    POST   /sim/tick                    run one market tick now
    POST   /sim/adl                     {"account": "canary", "symbol": "BTCUSDT"}: ADL the position now
    POST   /sim/api-rights              {"account": "canary", "enableWithdrawals": true}: what its key may do
                                        ("key": "read-only" for its read-only key; default "trading")

Knobs: latency (add_latency), fail, rate-limit-storm, drop-stream, stall-stream,
expire-listen-key, ignore-leverage, duplicate-events, reorder-events. These endpoints have no
authentication: bind the simulator to a local address.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from aiohttp import web

from controller.sim import codes

if TYPE_CHECKING:
    from controller.sim.server import Simulator


def routes(sim: Simulator) -> list[web.RouteDef]:
    faults = sim.faults
    knobs = {
        "latency": faults.add_latency,
        "add-latency": faults.add_latency,
        "fail": faults.fail,
        "error-rate": faults.fail,
        "rate-limit-storm": faults.rate_limit_storm,
        "drop-stream": faults.drop_stream,
        "drop-market-streams": faults.drop_market_streams,
        "stall-stream": faults.stall_stream,
        "expire-listen-key": faults.expire_listen_key,
        "ignore-leverage": faults.ignore_leverage,
        "duplicate-events": faults.duplicate_events,
        "reorder-events": faults.reorder_events,
    }

    async def state(request: web.Request) -> web.Response:
        return web.json_response(sim.state())

    async def requests(request: web.Request) -> web.Response:
        """The REST requests seen since the ``since``-th (from 0): what a test outside the process
        checks (orders per bot, cancels and leverage changes per symbol); ``next`` is where to go on,
        ``lost`` how many of those asked for the log no longer holds (it keeps the last 10 000)."""
        try:
            since = int(request.query.get("since", "0"))
            if since < 0:
                raise ValueError(since)
        except ValueError:
            return _refuse("since: expected a request count, 0 or more")
        seen, total = list(sim.requests), sim.requests_total
        first = total - len(seen)  # the absolute index of the oldest request the log holds
        return web.json_response({"next": total, "lost": max(0, first - since),
                                  "requests": [r.to_json() for r in seen[max(0, since - first):]]})

    async def get_faults(request: web.Request) -> web.Response:
        return web.json_response(faults.snapshot())

    async def clear_faults(request: web.Request) -> web.Response:
        faults.clear()
        return web.json_response(faults.snapshot())

    async def set_knob(request: web.Request) -> web.Response:
        name = request.match_info["knob"].replace("_", "-")
        knob = knobs.get(name)
        if knob is None:
            return _refuse(f"no fault knob {name!r}; knobs: {', '.join(sorted(knobs))}", 404)
        kwargs = await _json(request)
        if not isinstance(kwargs, dict):
            return _refuse("the body must be a JSON object of the knob's keyword arguments")
        try:
            result = knob(**kwargs)
        except (TypeError, ValueError, KeyError) as exc:
            return _refuse(f"{name}: {exc}")
        return web.json_response({"knob": name, "result": result, "faults": faults.snapshot()})

    async def set_price(request: web.Request) -> web.Response:
        body = await _json(request)
        try:
            symbol, price = body["symbol"], Decimal(str(body["price"]))
            sim.set_price(symbol, price)
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            return _refuse(f"expected {{\"symbol\": ..., \"price\": ...}} for a listed symbol ({exc})")
        return web.json_response({"symbol": symbol, "price": str(sim.market.price(symbol))})

    async def adl(request: web.Request) -> web.Response:
        body = await _json(request)
        try:
            sim.auto_deleverage(body["account"], body["symbol"])
        except (KeyError, TypeError, ValueError) as exc:
            return _refuse(f"expected {{\"account\": ..., \"symbol\": ...}} of an account holding a position ({exc})")
        except codes.BinanceError as exc:
            return _refuse(f"{body.get('symbol')}: {exc.body()['msg']}")
        return web.json_response({"account": body["account"], "symbol": body["symbol"]})

    async def api_rights(request: web.Request) -> web.Response:
        body = await _json(request)
        if not isinstance(body, dict) or not isinstance(body.get("account"), str) \
                or not isinstance(body.get("key", "trading"), str):
            return _refuse("expected {\"account\": ..., [\"key\": \"trading\" | \"read-only\",] RIGHT: true|false, "
                           "...} with apiRestrictions' names")
        rights = {k: v for k, v in body.items() if k not in ("account", "key")}
        try:
            found = sim.set_api_rights(body["account"], body.get("key", "trading"), **rights)
        except (KeyError, ValueError) as exc:
            return _refuse(f"api-rights: {exc}")
        return web.json_response({"account": body["account"], "rights": found})

    async def tick(request: web.Request) -> web.Response:
        sim.tick()
        return web.json_response({"time": sim.clock.time()})

    return [
        web.get("/sim/state", state),
        web.get("/sim/requests", requests),
        web.get("/sim/faults", get_faults),
        web.delete("/sim/faults", clear_faults),
        web.post("/sim/faults/{knob}", set_knob),
        web.post("/sim/price", set_price),
        web.post("/sim/tick", tick),
        web.post("/sim/adl", adl),
        web.post("/sim/api-rights", api_rights),
    ]


async def _json(request: web.Request) -> object:
    if not request.can_read_body:
        return {}
    try:
        return await request.json()
    except ValueError:
        return None


def _refuse(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)
