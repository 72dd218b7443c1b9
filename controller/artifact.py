"""The SHA-256 of a release artifact: a file's bytes, or a directory tree's files and names."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Build and cache debris that changes without the release changing.
_IGNORED_DIRS = {"__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
_IGNORED_SUFFIXES = {".pyc", ".pyo"}


def artifact_sha256(path: Path) -> str:
    """Hash a file's content; for a directory, hash every file's relative path and content
    in sorted order, so the same tree always gives the same digest wherever it lies."""
    if path.is_file():
        return _file_sha256(path)
    if not path.is_dir():
        raise FileNotFoundError(path)
    tree = hashlib.sha256()
    for file in sorted(_tree_files(path)):
        tree.update(f"{file.relative_to(path).as_posix()}\0{_file_sha256(file)}\n".encode())
    return tree.hexdigest()


def _tree_files(root: Path):
    for entry in root.rglob("*"):
        if any(part in _IGNORED_DIRS for part in entry.relative_to(root).parts):
            continue
        if entry.is_file() and entry.suffix not in _IGNORED_SUFFIXES:
            yield entry


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
