"""The wire oracle: a payload the simulator sends, judged by Binance's own SDK models
(binance-sdk-derivatives-trading-usds-futures), generated from Binance's API specification with
strict types. `assert_matches_model` refuses a wrong type and a field the model does not know;
the deviations below follow Binance's documentation where it and the specification disagree
(tests/sim/test_wire_oracle.py judges every answer and event with it)."""

from __future__ import annotations

import importlib

SDK = "binance_sdk_derivatives_trading_usds_futures"

# Fields Binance sends that the generated models leave out, each with where Binance shows it.
DOCUMENTED_EXTRAS = {
    # The New Order (TRADE) response example in Binance's docs carries both; the spec omits them.
    "new_order_response": {"avgPrice", "cumQuote"},
    # The Modify Order response example carries both, as the New Order one does; the spec omits them.
    "modify_order_response": {"avgPrice", "cumQuote"},
    # The Cancel Order response example carries cumQuote; the spec omits it.
    "cancel_order_response": {"cumQuote"},
    # The Account Information V2 response example lists breakEvenPrice for each position.
    "account_information_v2_response_positions_inner": {"breakEvenPrice"},
}
# Types where Binance's response example and its spec disagree; the simulator follows the example.
EXAMPLE_OVER_SPEC = {
    # listenKeyExpired's example sends the event time as a string ("E": "1736996475556").
    "listen_key_expired": lambda p: {**p, "E": int(p["E"])},
    # A bracket's cum is a decimal number (the list answer's example: 0.0); the spec types it an
    # integer in the single-symbol answer only. The type is judged here, the value is not.
    "notional_and_leverage_brackets_response2": lambda p: {
        **p, "brackets": [{**b, "cum": _decimal_number(b["cum"])} for b in p["brackets"]]},
    "notional_and_leverage_brackets_response2_brackets_inner": lambda p: {**p, "cum": _decimal_number(p["cum"])},
}


def _decimal_number(value: object) -> int:
    assert isinstance(value, float), f"cum must be a decimal number, not {value!r}"
    return int(value)
EVENT_TYPE = "e"  # the stream models drop the event type their dispatcher keys on


def model(kind: str, module: str):
    mod = importlib.import_module(f"{SDK}.{kind}.models.{module}")
    name = module.replace("_", "").lower()
    candidates = [v for k, v in vars(mod).items() if k.lower() == name]
    assert candidates, f"no model class in {module}"
    return candidates[0]


def assert_matches_model(payload: dict, kind: str, module: str,
                         nested: dict[str, tuple[str, bool]] | None = None) -> None:
    """Validate ``payload`` with the SDK model; refuse fields the model does not define."""
    cls = model(kind, module)
    cls.from_dict(EXAMPLE_OVER_SPEC.get(module, lambda p: p)(payload))  # strict types: raises on a number where a string belongs, etc.
    known = {field.alias or name for name, field in cls.model_fields.items()} - {"additional_properties"}
    known |= DOCUMENTED_EXTRAS.get(module, set())
    if kind == "websocket_streams":
        known.add(EVENT_TYPE)
    invented = set(payload) - known
    assert not invented, f"{module}: fields unknown to Binance's model: {sorted(invented)}"
    for key, (inner, is_list) in (nested or {}).items():
        for item in (payload[key] if is_list else [payload[key]]):
            assert_matches_model(item, kind, inner)
