"""What Linux's /proc says of a process: its state and its start time, which with the pid is its identity.

Shared by the deployer (is the bot it started still that process?) and the process observer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEAD_STATES = frozenset({"Z", "X", "x"})  # zombie (exited, not yet reaped), dead


@dataclass(frozen=True, slots=True)
class ProcessStat:
    """What ``/proc/PID/stat`` says of a process."""

    pid: int
    state: str
    start_ticks: int  # when it started, in clock ticks after boot: with the pid, its identity

    @property
    def alive(self) -> bool:
        return self.state not in DEAD_STATES


def read_stat(pid: int, proc: Path = Path("/proc")) -> ProcessStat | None:
    """The process ``pid`` as /proc shows it, or None when there is no such process."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses, so split after the last ')'.
    fields = text[text.rindex(")") + 2:].split()
    return ProcessStat(pid, fields[0], int(fields[19]))
