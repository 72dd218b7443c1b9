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
from controller.store.commands import get_command, submit_command
from controller.store.database import Database, resolve_url
from tests.daemon.harness import ACTOR, CLOCK, bots_in, daemon_died, exchange_config, poll, prepare_database

ACCOUNT = "master"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")  # examples/reference-bot/strategy.yaml



async def test_a_bot_spawned_by_a_daemon_killed_before_recording_it_is_killed_and_one_bot_trades(
        tmp_path, processes):
    sim = processes.start_sim(seed=13)
    db_url = await prepare_database(tmp_path / "canary.db")
    config = exchange_config(tmp_path, sim)
    state_dir = tmp_path / "state"
    folder = state_dir / "instances" / f"sim-{ACCOUNT}"
    first_log, second_log = tmp_path / "daemon-1.log", tmp_path / "daemon-2.log"
    daemon = processes.start_daemon(db_url=db_url, config=config, state_dir=state_dir, log=first_log,
                                    failpoints="deploy.process.spawned")
    db = Database(resolve_url(db_url))
    client = sim.client(ACCOUNT)
    try:
        place = await submit_command(db, CLOCK, rollout_id=None, kind="place", actor=ACTOR,
                                     args={"release": "1.0.0", "environment": "sim", "account": ACCOUNT})

        async def died():
            return daemon.poll() is not None

        await poll(died, timeout=30, what="the daemon to die at deploy.process.spawned")
        assert daemon.returncode == -9, first_log.read_text(errors="replace")[-3000:]
        [stray] = bots_in(folder)  # alive, and no record names it
        assert not (folder / "placement.json").exists()
        assert (await get_command(db, place.id)).acked_at is None

        second = processes.start_daemon(db_url=db_url, config=config, state_dir=state_dir, log=second_log)

        async def acked():
            command = await get_command(db, place.id)
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
