"""How many audit events per second the hash chain takes on the default SQLite store.

Four writers append at once, each event committed before its writer appends the next. The key
figure is four asyncio tasks sharing one `Database` (one process, as in the daemon), each event
recorded on its own (`audit.record`: events that come at once share a write transaction, the
head locked and each event hashed onto the one before). Measured too: the same four tasks each
appending inside a write transaction of its own (`Database.write()` then `audit.append`, as a
caller that records a state change with its event does), and four processes, each with its own
engine (the daemon and three `canaryctl`s), recording on their own. The chain is verified
afterwards: a figure from a broken chain is refused.

    .venv/bin/python bench/audit_append.py [--quick]     # prints the figures as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

from controller.clock import RealClock
from controller.store import audit
from controller.store.database import Database, resolve_url
from controller.store.schema import upgrade

WRITERS = 4


async def _write(db: Database, writer: int, count: int) -> None:
    clock = RealClock()
    for i in range(count):
        await audit.record(db, clock, actor="bench", kind="bench.appended", subject=f"writer-{writer}",
                           payload={"writer": writer, "n": i})


async def _write_in_transactions(db: Database, writer: int, count: int) -> None:
    clock = RealClock()
    for i in range(count):
        async with db.write() as session:
            await audit.append(session, clock, actor="bench", kind="bench.appended", subject=f"writer-{writer}",
                               payload={"writer": writer, "n": i})


async def _tasks(url: str, per_writer: int, write=_write) -> float:
    db = Database(resolve_url(url))
    try:
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for writer in range(WRITERS):
                group.create_task(write(db, writer, per_writer))
        return time.perf_counter() - started
    finally:
        await db.close()


def _process_writer(url: str, writer: int, count: int, start: multiprocessing.synchronize.Event) -> None:
    async def run() -> None:
        db = Database(resolve_url(url))
        try:
            async with db.write() as session:  # connect and warm up before the clock starts
                pass
            start.wait()
            await _write(db, writer, count)
        finally:
            await db.close()
    asyncio.run(run())


def _processes(url: str, per_writer: int) -> float:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [context.Process(target=_process_writer, args=(url, writer, per_writer, start))
               for writer in range(WRITERS)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)  # let each process import and connect; the timed part starts with the event
    started = time.perf_counter()
    start.set()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    failed = [worker.exitcode for worker in workers if worker.exitcode != 0]
    if failed:
        raise RuntimeError(f"an audit writer process failed (exit codes {failed})")
    return elapsed


async def _prepare(url: str) -> None:
    db = Database(resolve_url(url))
    try:
        await upgrade(db)
    finally:
        await db.close()


async def _verified(url: str, expected: int) -> None:
    db = Database(resolve_url(url))
    try:
        report = await audit.verify(db)
    finally:
        await db.close()
    if not report.ok or report.checked != expected:
        raise RuntimeError(f"the audit chain does not verify after the run: {report}")


def measure(quick: bool) -> dict[str, float | int | None]:
    per_writer = 100 if quick else 1000
    figures: dict[str, float | int | None] = {}
    with tempfile.TemporaryDirectory(prefix="canary-bench-audit-") as folder:
        for key, run in (("audit_append_per_s", lambda url: asyncio.run(_tasks(url, per_writer))),
                         ("audit_append_txn_per_s",
                          lambda url: asyncio.run(_tasks(url, per_writer, _write_in_transactions))),
                         ("audit_append_4proc_per_s", lambda url: _processes(url, per_writer))):
            url = f"sqlite:///{Path(folder) / (key + '.db')}"
            asyncio.run(_prepare(url))
            elapsed = run(url)
            asyncio.run(_verified(url, WRITERS * per_writer))
            figures[key] = round(WRITERS * per_writer / elapsed, 1)
            print(f"audit: {key} = {figures[key]} ({WRITERS} writers x {per_writer} events in {elapsed:.2f} s)",
                  file=sys.stderr)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events (development)")
    print(json.dumps(measure(parser.parse_args().quick)))
