"""Where the files that ship with the controller are: the policies, the reference bot's release,
the systemd units, the monitoring files and the database migrations.

An installed wheel carries them as package data under ``controller/_shipped/`` (pyproject's
force-include); a checkout (an editable install) has them at the repository's top level. Every
command finds a shipped file through this module, so both layouts behave alike. A path is
returned whether or not it exists: the caller refuses a missing one, naming it.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from controller.errors import CanaryError

PACKAGED = "_shipped"
"""The package-data folder of an installed wheel, inside the ``controller`` package."""


def root() -> Path:
    """The folder that holds the shipped folders: the package data of an install, else the checkout."""
    package = files("controller")
    if not isinstance(package, Path):
        raise CanaryError(f"canary-controller is installed as an archive ({package}); "
                          "install it as files (pip install canary-controller) to use its shipped files")
    packaged = package / PACKAGED
    return packaged if packaged.is_dir() else package.parent


def policies_dir() -> Path:
    """The shipped policy files, one per checklist stage: the daemon's default policies_dir."""
    return root() / "policies"


def migrations_dir() -> Path:
    """The Alembic scripts that create and upgrade the database schema."""
    return root() / "migrations"


def reference_bot_file(name: str) -> Path:
    """One of the reference bot's release files (its manifest and strategy configs)."""
    return root() / "examples" / "reference-bot" / name


def demo_manifest() -> Path:
    """The reference bot's manifest as `canaryctl demo` places it."""
    return root() / "examples" / "demo" / "manifest.yaml"


def systemd_dir() -> Path:
    """The systemd units; an install also has them in ``share/canary-controller/systemd``."""
    return root() / "systemd"


def monitoring_dir() -> Path:
    """The Prometheus alerts and Grafana dashboard; also in ``share/canary-controller/monitoring``."""
    return root() / "monitoring"
