"""Request security: wrong signature, unknown key and stale timestamps get Binance's codes."""

from __future__ import annotations

import pytest
from binance.exceptions import BinanceAPIException

from tests.support.clients import binance_client, sync_time


async def test_wrong_secret_is_an_invalid_signature(sim):
    async with binance_client(sim, "canary", api_secret="x" * 64) as client:
        with pytest.raises(BinanceAPIException) as exc:
            await client.futures_account()
    assert (exc.value.code, exc.value.status_code) == (-1022, 400)


async def test_unknown_key_is_rejected(sim):
    async with binance_client(sim, "canary", api_key="A" * 64) as client:
        with pytest.raises(BinanceAPIException) as exc:
            await client.futures_account()
    assert (exc.value.code, exc.value.status_code) == (-2015, 401)


async def test_malformed_key_is_a_format_error(sim):
    async with binance_client(sim, "canary", api_key="not-a-key") as client:
        with pytest.raises(BinanceAPIException) as exc:
            await client.futures_stream_get_listen_key()
    assert (exc.value.code, exc.value.status_code) == (-2014, 401)


async def test_stale_timestamp_is_outside_the_recv_window(sim, clock, canary):
    clock.advance(11)  # python-binance sends recvWindow=10000

    with pytest.raises(BinanceAPIException) as exc:
        await canary.futures_account()
    await sync_time(canary)
    account = await canary.futures_account()

    assert (exc.value.code, exc.value.status_code) == (-1021, 400)
    assert exc.value.message == "Timestamp for this request is outside of the recvWindow."
    assert account["canTrade"] is True


async def test_timestamp_ahead_of_the_server_is_refused(sim, canary):
    canary.timestamp_offset += 2000

    with pytest.raises(BinanceAPIException) as exc:
        await canary.futures_account()
    assert exc.value.code == -1021
    assert "ahead of the server's time" in exc.value.message


async def test_public_endpoints_need_no_key(sim):
    async with binance_client(sim, "canary", api_key="A" * 64) as client:
        assert "serverTime" in await client.futures_time()
        assert (await client.futures_symbol_ticker(symbol="BTCUSDT"))["price"] == "62000.00"
