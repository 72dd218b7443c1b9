"""A release's manifest: how to start the bot, where it exports metrics, what artifact it is.

The command is an argv template, never a shell line; the controller fills in the placeholders
when it places the release, so one manifest works in the simulator, on testnet and live.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator, model_validator

from controller.config.model import ConfigModel, Int, error_at
from controller.errors import ConfigError

PLACEHOLDERS = ("python", "config", "metrics_port", "exchange_file")
"""What ``{...}`` may name in a command: the interpreter, the strategy file, the metrics port
and the file that tells the bot where the exchange (or the simulator) is."""

REFUSED_ENV_PREFIXES = ("LD_", "DYLD_")
"""The dynamic loader's variables (``LD_PRELOAD``, ``LD_LIBRARY_PATH``, ``LD_AUDIT``, macOS's ``DYLD_*``)."""
REFUSED_ENV_NAMES = frozenset({
    "PATH", "GCONV_PATH", "GLIBC_TUNABLES",
    "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONPLATLIBDIR", "PYTHONEXECUTABLE",
    "PYTHONBREAKPOINT", "PYTHONWARNINGS", "PYTHONINSPECT",
    "BASH_ENV", "ENV", "IFS", "NODE_OPTIONS", "NODE_PATH", "PERL5LIB", "PERL5OPT", "RUBYLIB", "RUBYOPT",
})
"""Variables that change which code runs: where programs, libraries and modules are looked up, and
what an interpreter or a shell loads before the bot's own code (``PYTHONWARNINGS`` and
``PYTHONBREAKPOINT`` import modules they name). A manifest may set none of these, nor
`REFUSED_ENV_PREFIXES`: the artifact's digest says what the bot runs only if they are the controller's."""
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD")
_PACKAGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class MetricsEndpoint(ConfigModel):
    """Where the bot serves its Prometheus metrics."""

    port: Int = Field(default=0, ge=0, le=65535)
    """0: the controller chooses a free port and passes it as ``{metrics_port}``."""
    path: str = Field(default="/metrics", pattern=r"^/\S*$")


class Artifact(ConfigModel):
    """The release's code: ``path``, a file or a directory relative to the manifest's directory,
    or ``package``, the folder of a Python package installed where the controller runs (the
    ``{python}`` a command starts), so that a manifest installed as package data still finds it."""

    path: str | None = Field(default=None, min_length=1)
    package: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @field_validator("package")
    @classmethod
    def _top_level_name(cls, name: str | None) -> str | None:
        # A dotted name would be found by importing its parent packages: only top-level names.
        if name is not None and not _PACKAGE_NAME.match(name):
            raise ValueError("expected the import name of a top-level package, e.g. reference_bot")
        return name

    @model_validator(mode="after")
    def _path_or_package(self) -> Artifact:
        if (self.path is None) == (self.package is None):
            raise error_at((), "give exactly one of path (a file or folder) and package (an installed "
                               "Python package)")
        return self


class Toggle(ConfigModel):
    """A feature the controller turns on at a stage with ``toggle: on``, in one of two forms (exactly one):
    ``config_key``, a dotted path to a boolean in the release's strategy config, set true in the
    snapshot that stage places (a rollback places the previous deployment's snapshot, so it is off
    again); or ``endpoint``, a path on the bot's metrics address that the controller POSTs
    ``{"enabled": true}`` to once the bot has started, and ``{"enabled": false}`` on rollback."""

    config_key: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    endpoint: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9_./-]*$")

    @model_validator(mode="after")
    def _one_form(self) -> Toggle:
        if (self.config_key is None) == (self.endpoint is None):
            raise error_at((), "give exactly one of config_key (a dotted path to a boolean in the strategy "
                               "config) and endpoint (a path the bot serves, e.g. /toggle/new_sizing)")
        return self

    def problem(self, config: Mapping[str, Any]) -> str | None:
        """Why ``config`` cannot carry the toggle (its path is missing or not a boolean), or None;
        the endpoint form asks nothing of the config."""
        if self.config_key is None:
            return None
        value: Any = config
        for depth, key in enumerate(self.config_key.split(".")):
            if not isinstance(value, Mapping) or key not in value:
                where = ".".join(self.config_key.split(".")[:depth]) or "the top level"
                return (f"{self.config_key} is not in the release's strategy config (no {key!r} under {where}): "
                        "the toggle names a boolean the config already has, set false")
            value = value[key]
        if not isinstance(value, bool):
            return (f"{self.config_key} is {value!r} in the release's strategy config: a toggle needs a boolean "
                    "there (false until a stage turns it on)")
        return None

    def switched(self, config: Mapping[str, Any], on: bool) -> dict[str, Any]:
        """A copy of ``config`` with the toggle's key set to ``on``; `ConfigError` if `problem` says why not."""
        problem = self.problem(config)
        if problem is not None:
            raise ConfigError(problem, field="toggle.config_key")
        out = copy.deepcopy(dict(config))
        *parents, last = self.config_key.split(".")
        node = out
        for key in parents:
            node = node[key]
        node[last] = on
        return out


class ReleaseManifest(ConfigModel):
    """What a release is and how the controller starts it."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    command: list[str] = Field(min_length=1)
    metrics: MetricsEndpoint = Field(default_factory=MetricsEndpoint)
    artifact: Artifact
    env: dict[EnvName, str] = Field(default_factory=dict)
    toggle: Toggle | None = None
    """The feature a stage with ``toggle: on`` turns on (see `Toggle`)."""

    @model_validator(mode="after")
    def _known_placeholders_and_no_secrets(self) -> ReleaseManifest:
        for index, arg in enumerate(self.command):
            unknown = [name for name in _PLACEHOLDER.findall(arg) if name not in PLACEHOLDERS]
            if unknown:
                allowed = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)
                raise error_at(("command", index),
                               f"unknown placeholder {{{unknown[0]}}} (allowed: {allowed})")
        for name in self.env:
            if name in REFUSED_ENV_NAMES or name.startswith(REFUSED_ENV_PREFIXES):
                raise error_at(("env", name), f"{name} changes where the loader or interpreter finds the code it "
                                              "runs: a manifest may not set it (nor PATH, PYTHON*PATH/HOME/STARTUP, "
                                              "LD_*, DYLD_*); the code the bot runs is its artifact's")
            if any(word in name.upper() for word in _SECRET_WORDS):
                raise error_at(("env", name), f"{name} looks like a secret: secrets are never put in a "
                                              "manifest; give the bot a file:/path reference instead")
        return self

    def argv(self, *, python: str, config: str, metrics_port: int, exchange_file: str) -> list[str]:
        """The command with every placeholder filled in."""
        values = {"python": python, "config": config, "metrics_port": str(metrics_port),
                  "exchange_file": exchange_file}
        return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in self.command]

    def artifact_path(self, manifest_file: Path) -> Path:
        """The artifact's absolute path; a relative path counts from the manifest's directory, a
        package is looked up where this interpreter imports from (`ConfigError` if it is not there)."""
        if self.artifact.package is not None:
            return package_folder(self.artifact.package, manifest_file)
        return (Path(manifest_file).parent / self.artifact.path).resolve()


def package_folder(name: str, manifest_file: Path) -> Path:
    """The folder of the installed package ``name``, found without importing (running) it."""
    def refused(message: str) -> ConfigError:
        return ConfigError(message, file=str(manifest_file), field="artifact.package")

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise refused(f"the package {name} cannot be looked up: {exc}") from None
    if spec is None:
        raise refused(f"no Python package {name} is installed for {sys.executable}: install the release's "
                      "package, or give artifact.path instead")
    folders = list(spec.submodule_search_locations or [])
    if not folders:
        raise refused(f"{name} is a single module ({spec.origin}), not a package folder: give artifact.path "
                      "to its file instead")
    if len(folders) > 1:
        raise refused(f"{name} is a namespace package spread over {len(folders)} folders "
                      f"({', '.join(folders)}): give artifact.path to the one that is the release")
    return Path(folders[0]).resolve()
