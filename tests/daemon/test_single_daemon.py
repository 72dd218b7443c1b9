"""SQLite takes one daemon: a second `canaryctl run` on the same file is refused (exit 2, the file and the
first daemon's pid named), and once the first is gone, even SIGKILLed, the next one starts."""

from __future__ import annotations

import signal

from tests.daemon.harness import daemon_died, log_events, poll, prepare_database, sim_config
from tests.support.canaryctl import assert_refused, canaryctl


async def test_a_second_daemon_on_one_sqlite_file_is_refused_and_a_dead_ones_lock_does_not_block(tmp_path, processes):
    db_file = tmp_path / "canary.db"
    db_url = await prepare_database(db_file, releases=False)
    config = sim_config(tmp_path)
    first_log = tmp_path / "daemon-1.log"
    first = processes.start_daemon(db_url=db_url, config=config, state_dir=tmp_path / "state", log=first_log)

    async def ready(log):
        return any(e.get("event") == "daemon_ready" for e in log_events(log)) or None

    await poll(lambda: ready(first_log), timeout=60, what="the first daemon to be ready",
               alive=daemon_died(first, first_log))

    second = canaryctl("--db", db_url, "--config", str(config), "run", "--state-dir", str(tmp_path / "state-2"),
                       timeout=60)
    assert_refused(second, f"another daemon (pid {first.pid}) already runs on the SQLite database {db_file}",
                   f"{db_file}.daemon.lock", "run several daemons on PostgreSQL")
    assert "daemon_ready" not in second.out + second.err
    assert first.poll() is None  # the refused one took nothing from the first

    first.send_signal(signal.SIGKILL)  # no clean exit: the kernel drops the lock with the process
    first.wait(10)
    third_log = tmp_path / "daemon-3.log"
    third = processes.start_daemon(db_url=db_url, config=config, state_dir=tmp_path / "state", log=third_log)
    await poll(lambda: ready(third_log), timeout=60, what="a daemon after the first was killed",
               alive=daemon_died(third, third_log))
