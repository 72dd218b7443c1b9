"""Run as a separate process by the tests: append N audit events to the database at URL, each in a
write transaction of its own, or with ``record TASKS``, N events from each of TASKS tasks recorded
at once (`audit.record`, whose concurrent events share transactions)."""

from __future__ import annotations

import asyncio
import sys

from controller.clock import RealClock
from controller.store import audit
from controller.store.database import Database, resolve_url


async def main(url: str, count: int, actor: str) -> None:
    db = Database(resolve_url(url))
    try:
        for i in range(count):
            async with db.write() as session:
                await audit.append(session, RealClock(), actor=actor, kind="test.concurrent",
                                   subject=f"{actor}:{i}", payload={"i": i})
    finally:
        await db.close()


async def record(url: str, count: int, actor: str, tasks: int) -> None:
    db = Database(resolve_url(url))

    async def task(name: str) -> None:
        for i in range(count):
            await audit.record(db, RealClock(), actor=actor, kind="test.concurrent", subject=f"{name}:{i}",
                               payload={"i": i})

    try:
        await asyncio.gather(*(task(f"{actor}.{n}") for n in range(tasks)))
    finally:
        await db.close()


if __name__ == "__main__":
    if sys.argv[4:5] == ["record"]:
        asyncio.run(record(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[5])))
    else:
        asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
