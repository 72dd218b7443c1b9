"""Reading a release from the operator's files: manifest, strategy config and artifact."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from controller.artifact import ArtifactError, artifact_sha256
from controller.config.manifest import ReleaseManifest, package_folder
from controller.config.strategy import StrategyConfig
from controller.config.yamlfile import line_in, load_model
from controller.errors import ConfigError, InputError
from controller.store.releases import NewRelease

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


def check_version(version: str) -> str:
    if not VERSION_PATTERN.match(version):
        raise InputError(f"release version {version!r} is invalid: use 1-64 characters from "
                         "letters, digits and . _ + - (starting with a letter or digit), e.g. 1.4.0")
    return version


def read_release(version: str, manifest_file: Path, config_file: Path, notes: str | None = None, *,
                 artifact_roots: Sequence[Path] = ()) -> NewRelease:
    """Validate everything a release is made of; nothing is written. A path artifact lies under the
    manifest's folder or one of ``artifact_roots`` (the daemon config's), symlinks resolved."""
    check_version(version)
    manifest = load_model(ReleaseManifest, manifest_file)
    config = load_model(StrategyConfig, config_file)
    if manifest.toggle is not None:
        problem = manifest.toggle.problem(config.model_dump(mode="json"))
        if problem is not None:
            raise ConfigError(f"{problem} (in {config_file})", file=str(manifest_file),
                              line=line_in(manifest_file, ("toggle", "config_key")), field="toggle.config_key")
    artifact = manifest.artifact_path(manifest_file)  # a package not installed is refused here
    field = "artifact.package" if manifest.artifact.package else "artifact.path"
    folder = Path(manifest_file).parent.resolve()
    allowed = [folder, *(Path(root).resolve() for root in artifact_roots)]
    if manifest.artifact.path is not None and not any(artifact.is_relative_to(root) for root in allowed):
        roots = f" or the allowed roots {', '.join(map(str, allowed[1:]))}" if artifact_roots else ""
        raise ConfigError(f"the artifact {artifact} is outside the manifest's folder {folder}{roots}: put the "
                          "manifest beside the artifact or above it, or name its folder under artifact_roots in "
                          "the daemon config (a symlink counts where it leads)",
                          file=str(manifest_file), field=field)
    try:
        digest = artifact_sha256(artifact)
    except FileNotFoundError:
        raise ConfigError(f"the artifact {artifact} does not exist", file=str(manifest_file), field=field) from None
    except ArtifactError as error:
        raise ConfigError(f"the artifact {artifact} cannot be recorded: {error}", file=str(manifest_file),
                          field=field) from None
    if manifest.artifact.sha256 is not None and manifest.artifact.sha256 != digest:
        raise ConfigError(f"the artifact's SHA-256 is {digest}, the manifest says {manifest.artifact.sha256}: "
                          "the artifact is not the one the manifest describes",
                          file=str(manifest_file), field="artifact.sha256")
    recorded = manifest.model_dump(mode="json")
    if recorded["toggle"] is None:
        del recorded["toggle"]  # a manifest without one records as it did before toggles existed (same digest)
    else:
        recorded["toggle"] = {k: v for k, v in recorded["toggle"].items() if v is not None}  # its one form
    # A path is recorded absolute; a package by its name: the digest says which content it was.
    source = {"package": manifest.artifact.package} if manifest.artifact.package else {"path": str(artifact)}
    recorded["artifact"] = {**source, "sha256": digest}
    return NewRelease(version=version, manifest=recorded, artifact_sha256=digest,
                      config=config.model_dump(mode="json"), notes=notes)


def artifact_now(recorded: Mapping[str, Any], release: str) -> tuple[str | None, str | None]:
    """The SHA-256 of a recorded release's artifact as it is now, or None and why it has none.

    A path is hashed where `read_release` recorded it (absolute). A package is looked up by name
    where this interpreter imports from, as `read_release` did, and its folder hashed: the deployers
    start ``{python}`` as this interpreter, so that folder is the code the bot will import.
    """
    artifact = recorded.get("artifact") or {}
    try:
        if artifact.get("package"):
            path = package_folder(artifact["package"], Path(f"release {release}"))
        elif artifact.get("path"):
            path = Path(artifact["path"])
        else:
            return None, "the recorded manifest names no artifact"
        return artifact_sha256(path), None
    except FileNotFoundError:
        return None, f"the artifact {artifact.get('path')} no longer exists"
    except (ArtifactError, ConfigError) as error:
        return None, str(error)
