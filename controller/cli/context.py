"""What every command needs: the database the global options name, the operator's name, a loop.

Read commands open the store read-only (`open_store`) and must start in a blink, so this module
imports neither SQLAlchemy nor asyncio up front: `open_database`, `run` and `wall_clock`, for the
commands that write or wait, import them when called.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    from controller.clock import RealClock
    from controller.store.database import Database
    from controller.store.readonly import Reader

T = TypeVar("T")


def settings(ctx: click.Context | None = None):
    ctx = ctx or click.get_current_context()
    return ctx.find_root().obj


def _named_database() -> tuple[str | None, str | None]:
    """--db / CANARY_DB, else the daemon config's database (None: the default SQLite file), with the
    password the config's reference resolves to."""
    opts = settings()
    url, password = opts.db_url, None
    if opts.config_path is not None:
        from controller.config.daemon import load_daemon_config

        config = load_daemon_config(opts.config_path)
        url = url or config.database.url
        if config.database.password is not None:
            password = config.database.password.resolve()
    return url, password


def database_url():
    """--db / CANARY_DB, else the daemon config's database, else the default SQLite file."""
    from controller.store.database import resolve_url

    return resolve_url(*_named_database())


def open_store() -> Reader:
    """The same store, read-only, through `controller.store.readonly`: no SQLAlchemy unless the
    store is not SQLite. The read commands use it; close it when done."""
    from controller.store.readonly import open_reader

    url, password = _named_database()
    return open_reader(url, password=password)


def default_state_dir(url) -> Path:
    """The daemon's state folder when neither --state-dir nor systemd's STATE_DIRECTORY names one:
    next to a SQLite database, else ``$XDG_STATE_HOME/canary-controller``. Placed releases keep
    their files under its ``instances/``."""
    if url.drivername.startswith("sqlite") and url.database:
        return Path(url.database).resolve().parent
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "canary-controller"


@asynccontextmanager
async def open_database(*, check_schema: bool = True) -> AsyncIterator[Database]:
    from controller.store import audit
    from controller.store.database import Database
    from controller.store.schema import require_current

    audit.written_by(os_user=os_user())
    db = Database(database_url())
    try:
        if check_schema:
            await require_current(db)
        yield db
    finally:
        await db.close()


def operator_name(explicit: str | None = None) -> str:
    """Who is acting, as they say: --actor, else $CANARY_ACTOR, else the login name (control
    characters dropped: a name is printed on terminals and in reports)."""
    name = explicit or os.environ.get("CANARY_ACTOR") or getpass.getuser()
    return printable(name).strip()


def given_by() -> dict[str, str]:
    """What every command `canaryctl` gives records about how it was given: the operating-system
    user, and that its time is the wall clock's (see `CommandInfo.given_on`)."""
    return {"os_user": os_user(), "clock": "wall"}


def os_user() -> str:
    """The operating-system user running this `canaryctl`, recorded beside the name a command claims."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid with no passwd entry (a container): the number says who
        return f"uid {os.geteuid()}"


def printable(text: str) -> str:
    """``text`` without control characters (ESC, BEL, newlines): a line break becomes a space."""
    return "".join(ch if ch.isprintable() else (" " if ch in "\n\r\t" else "") for ch in text)


def run(main: Callable[[], Awaitable[T]]) -> T:
    import asyncio

    return asyncio.run(main())


@cache
def wall_clock() -> RealClock:
    """The wall clock commands time their records by, built on first use: `controller.clock` imports
    asyncio and tenacity, which the read commands never need."""
    from controller.clock import RealClock

    return RealClock()
