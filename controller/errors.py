"""The project's error hierarchy: what went wrong, said once, in words an operator can act on.

Every error that reaches the CLI is a `CanaryError`; its `exit_code` is the command's exit
status (1: the operation failed; 2: the input from a person or a peer was refused).
"""

from __future__ import annotations


class CanaryError(Exception):
    """Base of every error the controller raises on purpose."""

    exit_code = 1


class InputError(CanaryError):
    """Input from a person or a peer was refused; nothing was written."""

    exit_code = 2


class ConfigError(InputError):
    """A configuration, manifest or policy file is invalid.

    Rendered as ``FILE:LINE: FIELD: expected ...`` so an editor can jump to it.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(self.render())

    def render(self) -> str:
        where = self.file or "<input>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class NotFoundError(InputError):
    """A thing named by the operator (release, snapshot, rollout) does not exist."""


class ConflictError(InputError):
    """The request contradicts what is already recorded (e.g. same version, other content)."""


class StoreError(CanaryError):
    """The database cannot be used: unreachable, or its schema is not at the expected revision."""
