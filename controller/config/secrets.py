"""References to secrets: config files say where a secret lives, never what it is.

A `SecretRef` is ``file:/abs/path`` (e.g. a systemd credential under ``/run/credentials``) or
``env:NAME``. It is read only when used, by `SecretRef.resolve`, and the value is handed to the
caller as a plain ``str``: it never passes through a model, a repr, an error or a log line.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from controller.errors import InputError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFUSED = "secrets are never stored in config files: use file:/path or env:NAME"


class SecretError(InputError):
    """A referenced secret cannot be used: missing, unreadable or too widely readable."""


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret lives: ``file:/abs/path`` or ``env:NAME``; usable as a pydantic field."""

    scheme: Literal["file", "env"]
    target: str

    @classmethod
    def parse(cls, reference: Any) -> SecretRef:
        """The reference written as text; anything that is not a reference is refused unseen.

        Error messages never quote a refused value: it may be the literal secret itself.
        """
        if isinstance(reference, SecretRef):
            return reference
        if not isinstance(reference, str):
            raise ValueError(_REFUSED)
        scheme, _, target = reference.partition(":")
        if scheme == "file" and target:
            if not PurePosixPath(target).is_absolute():
                raise ValueError(f"secret file path must be absolute (file:/path), got 'file:{target}'")
            return cls("file", target)
        if scheme == "env" and _ENV_NAME.fullmatch(target):
            return cls("env", target)
        raise ValueError(_REFUSED)

    def resolve(self, environ: Mapping[str, str] | None = None) -> str:
        """Read the secret now; a trailing newline (as `echo` writes one) is dropped."""
        if self.scheme == "env":
            value = (os.environ if environ is None else environ).get(self.target)
            if not value:
                state = "is not set" if value is None else "is empty"
                raise SecretError(f"secret {self}: environment variable {self.target} {state}")
            return value
        return self._read_file()

    def _read_file(self) -> str:
        try:
            with open(self.target, "rb") as handle:
                # Checked on the open descriptor, so the file read is the file checked.
                mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
                if mode & 0o077:
                    raise SecretError(
                        f"secret file {self.target} has mode {mode:04o}: group and others must have no "
                        f"access; run: chmod 600 {self.target}")
                data = handle.read()
        except FileNotFoundError:
            raise SecretError(f"secret file {self.target} does not exist") from None
        except OSError as exc:
            raise SecretError(f"secret file {self.target} cannot be read: {exc.strerror or exc}") from None
        try:
            value = data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise SecretError(f"secret file {self.target} is not UTF-8 text") from None
        if not value:
            raise SecretError(f"secret file {self.target} is empty")
        return value

    def __str__(self) -> str:
        return f"{self.scheme}:{self.target}"

    def __repr__(self) -> str:
        return f"SecretRef({str(self)!r})"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        # A plain validator sees every input, so pydantic never builds an error that echoes one.
        return core_schema.no_info_plain_validator_function(
            cls.parse, serialization=core_schema.plain_serializer_function_ser_schema(str))

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"type": "string", "pattern": r"^(file:/.+|env:[A-Za-z_][A-Za-z0-9_]*)$",
                "description": "where a secret lives: file:/abs/path or env:NAME"}
