"""The SHA-256 of a release artifact: a file's bytes, or a directory tree's files and names.

A tree is hashed as it lies: a symlink inside it may point to a file of the tree (hashed as that
file), never out of it; a symlink to a folder is not descended into (what it points to is hashed
where it lies in the tree).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# Build and cache debris that changes without the release changing.
_IGNORED_DIRS = {"__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
_IGNORED_SUFFIXES = {".pyc", ".pyo"}


class ArtifactError(Exception):
    """The artifact cannot be hashed as a release: a symlink in it leads out of it, it is no regular
    file or folder, or a part of it cannot be read. The message names the part and why."""


def artifact_sha256(path: Path) -> str:
    """Hash a file's content; for a directory, hash every file's relative path and content
    in sorted order, so the same tree always gives the same digest wherever it lies.

    FileNotFoundError when ``path`` does not exist; `ArtifactError` when it cannot be hashed."""
    if not path.exists():
        raise FileNotFoundError(path)
    if path.is_file():
        return _file_sha256(path)
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a regular file or folder")
    tree = hashlib.sha256()
    for file in sorted(_tree_files(path)):
        tree.update(f"{file.relative_to(path).as_posix()}\0{_file_sha256(file)}\n".encode())
    return tree.hexdigest()


def _tree_files(root: Path):
    real_root = root.resolve()

    def unreadable(error: OSError) -> None:
        raise ArtifactError(f"{error.filename} cannot be read: {error.strerror}")

    for folder, dirs, files in os.walk(root, onerror=unreadable):  # symlinked folders are not descended
        here = Path(folder)
        dirs[:] = [name for name in dirs if name not in _IGNORED_DIRS]
        for name in dirs + files:
            entry = here / name
            if entry.is_symlink():
                _refuse_leaving(entry, root, real_root)
        for name in files:
            entry = here / name
            if name not in _IGNORED_DIRS and entry.is_file() and entry.suffix not in _IGNORED_SUFFIXES:
                yield entry


def _refuse_leaving(link: Path, root: Path, real_root: Path) -> None:
    """A symlink of the tree must resolve inside it: hashing follows it, and so would the bot."""
    shown = link.relative_to(root).as_posix()
    try:
        target = link.resolve()
    except (OSError, RuntimeError) as error:  # a loop of links
        raise ArtifactError(f"{shown} is a symlink that cannot be resolved ({error})") from None
    if not target.is_relative_to(real_root):
        raise ArtifactError(f"{shown} is a symlink that leads out of the artifact (to {target})")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as error:
        raise ArtifactError(f"{path} cannot be read: {error.strerror}") from None
    return digest.hexdigest()
