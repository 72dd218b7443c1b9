"""SIGKILL of the daemon between spawning a bot and recording it, restart: one bot on the account.

The daemon runs as `canaryctl run` with ``CANARY_FAILPOINTS=deploy.process.spawned``: it dies
right after the bot's process exists and before ``placement.json`` names it, while carrying out
an operator's ``place`` of 1.0.0 on the master account. The bot lives on in its own session,
known to no record. The restarted daemon, which finds the command not yet acknowledged and
places again, must kill that bot before it starts its own: two bots would trade one account.

Which bots run is read from Linux (the processes whose working directory is the instance's
folder), and which bots trade from the simulator, through python-binance: each run of the
reference bot gives its orders client ids of its own (``bot-RUN-N``).
"""

from __future__ import annotations

import json

from controller.procfs import read_stat
from controller.store.commands import get_command
from tests.daemon.harness import bots_in, crash_after_spawning, daemon_died, poll

ACCOUNT = "master"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")  # examples/reference-bot/strategy.yaml


async def test_a_bot_spawned_by_a_daemon_killed_before_recording_it_is_killed_and_one_bot_trades(
        tmp_path, processes):
    crash = await crash_after_spawning(tmp_path, processes, seed=13, account=ACCOUNT)
    db, folder, stray, second_log = crash.db, crash.folder, crash.stray, tmp_path / "daemon-2.log"
    client = crash.sim.client(ACCOUNT)
    try:
        assert crash.first.returncode == -9, (tmp_path / "daemon-1.log").read_text(errors="replace")[-3000:]
        assert not (folder / "placement.json").exists()  # alive, and no record names it
        assert (await get_command(db, crash.place.id)).acked_at is None

        second = crash.restart(processes, second_log)

        async def acked():
            command = await get_command(db, crash.place.id)
            return command if command.acked_at is not None else None

        placed = await poll(acked, timeout=40, what="the placement after the restart", alive=daemon_died(second, second_log))
        assert placed.outcome == "accepted", placed.message

        # Linux: exactly one bot in the instance's folder, the one placement.json names; the stray is gone.
        record = json.loads((folder / "placement.json").read_text())
        assert bots_in(folder) == [record["pid"]], "two bots on one account"
        assert read_stat(stray) is None or not read_stat(stray).alive

        # The exchange: from now on, the orders of the account come from one run of the bot.
        await client.sync_time()
        since_ms = (await client._client.futures_time())["serverTime"]

        async def runs_trading() -> set[str] | None:
            runs: set[str] = set()
            count = 0
            for symbol in SYMBOLS:
                for order in await client._client.futures_get_all_orders(symbol=symbol):
                    if order["time"] > since_ms:
                        runs.add(order["clientOrderId"].rsplit("-", 1)[0])
                        count += 1
            return runs if count >= 6 else None

        runs = await poll(runs_trading, timeout=40, every=0.5, what="six orders after the placement",
                          alive=daemon_died(second, second_log))
        assert len(runs) == 1, f"orders from {len(runs)} bots after the placement: {sorted(runs)}"
        assert bots_in(folder) == [record["pid"]]
    finally:
        await client.close()
        await db.close()
