"""Run as a separate process by the tests: append N audit events to the database at URL."""

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


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
