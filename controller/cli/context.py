"""What every command needs: the database the global options name, the operator's name, a loop."""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import click

from controller.clock import RealClock
from controller.store.database import Database, resolve_url
from controller.store.schema import require_current

T = TypeVar("T")


def settings(ctx: click.Context | None = None):
    ctx = ctx or click.get_current_context()
    return ctx.find_root().obj


def database_url():
    """--db / CANARY_DB, else the daemon config's database, else the default SQLite file."""
    opts = settings()
    url, password = opts.db_url, None
    if opts.config_path is not None:
        from controller.config.daemon import load_daemon_config

        config = load_daemon_config(opts.config_path)
        url = url or config.database.url
        if config.database.password is not None:
            password = config.database.password.resolve()
    return resolve_url(url, password)


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
    return asyncio.run(main())


CLOCK = RealClock()
