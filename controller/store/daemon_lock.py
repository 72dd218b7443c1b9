"""One daemon per SQLite file: an OS lock on a file next to the database, held for the daemon's life.

SQLite has no leases that another host could take over: two daemons on one file would both act on
every rollout. The daemon takes ``flock`` on ``<database>.daemon.lock`` before anything else and
writes its pid there; a second daemon finds the lock held and refuses to start, naming the file and
the pid. The kernel releases the lock when its holder exits, however it exits, so the lock of a
dead daemon never blocks the next one. PostgreSQL needs no such lock: its daemons share the
rollouts through leases (`controller.store.leases`).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from controller.errors import ConflictError
from controller.store.database import Database


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".daemon.lock")


@contextmanager
def single_daemon(db: Database) -> Iterator[Path | None]:
    """Hold the SQLite database's daemon lock until the block ends (its path; None on PostgreSQL or a
    database in memory). Raises `ConflictError` (exit status 2) while another daemon holds it."""
    database = db.url.database or ""
    if db.dialect != "sqlite" or database in ("", ":memory:"):
        yield None
        return
    path = lock_path(Path(database))
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not inherited by the bots the daemon spawns (Python opens without inheritance): a bot that
    # outlives its daemon must not keep the next daemon out.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            raise ConflictError(
                f"another daemon ({holder}) already runs on the SQLite database {database} (it holds {path}); "
                "SQLite takes one daemon: stop that one first, or run several daemons on PostgreSQL") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock; the file stays, so that no two daemons ever lock two files


def _holder(fd: int) -> str:
    """``pid N`` as the holder wrote it, or why it cannot be told (it may be writing it right now)."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f"pid {text}" if text.isdigit() else "pid not yet written"
