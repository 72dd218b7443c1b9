"""Binance's error answers: `{"code": -4028, "msg": "..."}` with the HTTP status Binance pairs it with.

Codes and messages follow Binance's USD-M futures error-code page; HTTP statuses follow what the
live API returns (401 for key errors, 400 for request and business errors, 429/418 for rate
limits, 5xx for internal errors).
"""

from __future__ import annotations


class BinanceError(Exception):
    """A request the simulated exchange refuses, rendered as Binance's error body."""

    def __init__(self, code: int, msg: str, status: int = 400,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}


def internal(msg: str = "Internal error; unable to process your request. Please try again.",
             status: int = 500) -> BinanceError:
    # Binance documents 5XX for its internal errors without pinning which; 500 is a guess.
    return BinanceError(-1001, msg, status)


def too_many_requests(msg: str, retry_after: int, status: int = 429) -> BinanceError:
    return BinanceError(-1003, msg, status, {"Retry-After": str(retry_after)})


def too_many_orders(limit: int, interval: str, retry_after: int) -> BinanceError:
    return BinanceError(-1015, f"Too many new orders; current limit is {limit} orders per {interval}.",
                        429, {"Retry-After": str(retry_after)})


def unsupported(msg: str = "This operation is not supported.") -> BinanceError:
    return BinanceError(-1020, msg)


def stale_timestamp() -> BinanceError:
    return BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")


def future_timestamp() -> BinanceError:
    return BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")


def bad_signature() -> BinanceError:
    return BinanceError(-1022, "Signature for this request is not valid.")


def illegal_chars(param: str, legal: str) -> BinanceError:
    return BinanceError(-1100, f"Illegal characters found in parameter '{param}'; legal range is '{legal}'.")


def mandatory(param: str) -> BinanceError:
    return BinanceError(-1102, f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed.")


def not_required(param: str) -> BinanceError:
    return BinanceError(-1106, f"Parameter '{param}' sent when not required.")


def bad_precision() -> BinanceError:
    return BinanceError(-1111, "Precision is over the maximum defined for this asset.")


def bad_time_in_force() -> BinanceError:
    return BinanceError(-1115, "Invalid timeInForce.")


def bad_order_type() -> BinanceError:
    return BinanceError(-1116, "Invalid orderType.")


def bad_side() -> BinanceError:
    return BinanceError(-1117, "Invalid side.")


def bad_symbol() -> BinanceError:
    return BinanceError(-1121, "Invalid symbol.")


def bad_listen_key() -> BinanceError:
    return BinanceError(-1125, "This listenKey does not exist.")


def bad_value(param: str) -> BinanceError:
    return BinanceError(-1130, f"Data sent for parameter '{param}' is not valid.")


def bad_recv_window() -> BinanceError:
    return BinanceError(-1131, "recvWindow must be less than 60000")


def unknown_order() -> BinanceError:
    return BinanceError(-2011, "Unknown order sent.")


def no_such_order() -> BinanceError:
    return BinanceError(-2013, "Order does not exist.")


def bad_key_format() -> BinanceError:
    return BinanceError(-2014, "API-key format invalid.", 401)


def rejected_key(ip: str) -> BinanceError:
    return BinanceError(-2015, f"Invalid API-key, IP, or permissions for action, request ip: {ip}", 401)


def would_trigger_immediately() -> BinanceError:
    return BinanceError(-2021, "Order would immediately trigger.")


def insufficient_margin() -> BinanceError:
    return BinanceError(-2019, "Margin is insufficient.")


def reduce_only_rejected() -> BinanceError:
    return BinanceError(-2022, "ReduceOnly Order is rejected.")


def max_open_orders() -> BinanceError:
    return BinanceError(-2025, "Reach max open order limit.")


def over_max_position() -> BinanceError:
    return BinanceError(-2027, "Exceeded the maximum allowable position at current leverage.")


def qty_not_positive() -> BinanceError:
    return BinanceError(-4003, "Quantity less than or equal to zero.")


def qty_below_min() -> BinanceError:
    return BinanceError(-4004, "Quantity less than min quantity.")


def qty_above_max() -> BinanceError:
    return BinanceError(-4005, "Quantity greater than max quantity.")


def price_not_positive() -> BinanceError:
    return BinanceError(-4006, "Price less than or equal to zero.")


def price_below_min() -> BinanceError:
    return BinanceError(-4013, "Price less than min price.")


def price_not_on_tick() -> BinanceError:
    return BinanceError(-4014, "Price not increased by tick size.")


def bad_client_order_id() -> BinanceError:
    return BinanceError(-4015, "Client order id is not valid.")


def price_above_band(limit: str) -> BinanceError:
    return BinanceError(-4016, f"Limit price can't be higher than {limit}.")


def qty_not_on_step() -> BinanceError:
    return BinanceError(-4023, "Quantity not increased by step size.")


def price_below_band(limit: str) -> BinanceError:
    return BinanceError(-4024, f"Limit price can't be lower than {limit}.")


def bad_leverage(leverage: str) -> BinanceError:
    return BinanceError(-4028, f"Leverage {leverage} is not valid")


def max_algo_orders() -> BinanceError:
    return BinanceError(-4045, "Reach max stop order limit.")


def bad_margin_type() -> BinanceError:
    return BinanceError(-4044, "The margin type is not valid.")


def margin_type_unchanged() -> BinanceError:
    return BinanceError(-4046, "No need to change margin type.")


def margin_type_open_orders() -> BinanceError:
    return BinanceError(-4047, "Margin type cannot be changed if there exists open orders.")


def margin_type_position() -> BinanceError:
    return BinanceError(-4048, "Margin type cannot be changed if there exists position.")


def position_side_mismatch() -> BinanceError:
    return BinanceError(-4061, "Order's position side does not match user's setting.")


def position_side_unchanged() -> BinanceError:
    return BinanceError(-4059, "No need to change position side.")


def position_side_open_orders() -> BinanceError:
    return BinanceError(-4067, "Position side cannot be changed if there exists open orders.")


def position_side_position() -> BinanceError:
    return BinanceError(-4068, "Position side cannot be changed if there exists position.")


def multi_assets_unchanged() -> BinanceError:
    # Guessed: the message Binance gives when the account is already in the asked mode.
    return BinanceError(-4171, "Adjusted Multi-Assets mode is same as current Multi-Assets mode.")


def bad_callback_rate() -> BinanceError:
    # Guessed: Binance's code for a callbackRate outside [0.1, 10] (its documented range).
    return BinanceError(-1130, "Data sent for parameter 'callbackRate' is not valid.")


def duplicate_client_order_id() -> BinanceError:
    return BinanceError(-4116, "ClientOrderId is duplicated.")


def use_algo_endpoint() -> BinanceError:
    return BinanceError(-4120, "Order type not supported for this endpoint. "
                               "Please use the Algo Order API endpoints instead.")


def min_notional(notional: str) -> BinanceError:
    return BinanceError(-4164, f"Order's notional must be no smaller than {notional} "
                               "(unless you choose reduce only).")


def modify_limit_reached() -> BinanceError:
    return BinanceError(-5026, "Exceed maximum modify order limit.")


def modify_unchanged() -> BinanceError:
    return BinanceError(-5027, "No need to modify the order.")


def post_only_rejected() -> BinanceError:
    return BinanceError(-5022, "Due to the order could not be executed as maker, the Post Only order "
                               "will be rejected. The order will not be recorded in the order history")
