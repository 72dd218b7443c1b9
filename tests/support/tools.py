"""The real tools that check the operating files (systemd-analyze, promtool): found, or the check
is skipped loudly (failed under CI)."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, package: str) -> str:
    """The path of ``name``; skip (fail under CI) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {name} is missing: .ci/run must install the {package} package")
        pytest.skip(f"{name} is not installed (Debian package {package}): these files are not checked")
    return path
