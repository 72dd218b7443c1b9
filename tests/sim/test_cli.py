"""`canaryctl sim serve --json`: the first line tells where it listens and the keys; SIGTERM stops it."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from binance import AsyncClient

COMMAND = ("-m", "controller", "sim")


async def test_serve_json_first_line_then_sigterm_stops_it():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *COMMAND, "serve", "--json", "--seed", "11",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        canary = first["accounts"]["canary"]
        client = AsyncClient(canary["api_key"], canary["api_secret"])
        client.FUTURES_URL = first["rest_url"]
        try:
            server_time = await client.futures_time()
            listen_key = await client.futures_stream_get_listen_key()
        finally:
            await client.close_connection()
    finally:
        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(proc.wait(), 20)

    assert first["rest_url"].startswith("http://127.0.0.1:") and first["rest_url"].endswith("/fapi")
    assert first["ws_url"].startswith("ws://127.0.0.1:") and first["ws_url"].endswith("/")
    assert {name: a["master"] for name, a in first["accounts"].items()} == {"master": True, "canary": False}
    assert "serverTime" in server_time and len(listen_key) == 64
    assert returncode == 0


def test_sim_serve_is_a_canaryctl_command_with_its_options():
    from click.testing import CliRunner

    from controller.cli import app

    result = CliRunner().invoke(app.cli, ["sim", "serve", "--help"])

    assert result.exit_code == 0, result.output
    for option in ("--host", "--port", "--seed", "--json"):
        assert option in result.output
