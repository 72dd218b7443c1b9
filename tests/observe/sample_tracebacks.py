"""Real tracebacks, as Python prints them, for the detector and the observers to find, and how the
log-file tests read them."""

from __future__ import annotations

import traceback

from controller.observe.logfile import LogFileObserver
from controller.observe.tracebacks import UNHANDLED_EXCEPTIONS


def raised(make) -> str:
    """The traceback Python prints for what ``make()`` raises."""
    try:
        make()
    except BaseException:  # noqa: BLE001 - any exception is the point
        return traceback.format_exc()
    raise AssertionError("nothing was raised")


def plain() -> None:
    raise ValueError("boom")


def handling_failed() -> None:
    try:
        {}["missing"]
    except KeyError:
        raise RuntimeError("while handling")  # noqa: B904 - the implicit chain is the point


def caused() -> None:
    try:
        1 / 0
    except ZeroDivisionError as exc:
        raise ConnectionError("no route") from exc


def grouped() -> None:
    raise ExceptionGroup("two failures", [ValueError("one"), TypeError("two")])


def exceptions(recorder) -> list[str | None]:
    """The exception named by each unhandled-exception observation ``recorder`` holds, in order."""
    return [o.label("exception") for o in recorder.observations(UNHANDLED_EXCEPTIONS)]


async def read(observer: LogFileObserver, passes: int = 2) -> None:
    """Read passes: the second finds nothing new and so completes a traceback at the end."""
    for _ in range(passes):
        assert await observer.read_once() is True
