"""What must hold before a pipeline runs: the policies folder exists, every policy file a stage
names is in it and loads, and every environment a stage names is one of the daemon's.

The daemon checks before it says READY, `canaryctl rollout start` before it writes a rollout, so
a missing file is refused at once, by name, instead of failing a stage hours later.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from controller.analysis.policy import load_policies, load_policy_file
from controller.errors import ConfigError
from controller.rollout.info import list_rollouts
from controller.rollout.pipeline import Pipeline
from controller.store.database import Database


async def check_daemon(db: Database, folder: Path) -> None:
    """The daemon's policies folder, every file in it, and every policy file that the pipelines
    of the rollouts under way name."""
    check_folder(folder)
    for info in await list_rollouts(db, active_only=True):
        check_pipeline(info.pipeline, folder, source=f"rollout {info.id} of {info.release}")


def check_folder(folder: Path) -> None:
    """The folder exists and each policy file in it loads (policy names unique across files)."""
    _require_folder(folder)
    load_policies([folder])


def check_pipeline(pipeline: Pipeline, folder: Path, *, source: str, environments: Collection[str] | None = None,
                   config_file: str | None = None) -> None:
    """Each stage's policy file is in ``folder`` and loads; with ``environments`` (those of the
    daemon's config ``config_file``), each stage's environment is one of them. ``source`` names
    the pipeline in a refusal: its file, or the rollout it belongs to."""
    _require_folder(folder)
    for index, stage in enumerate(pipeline.stages):
        path = folder / stage.policies
        if not path.is_file():
            raise ConfigError(f"stage {stage.name} names the policy file {stage.policies}, which is not in the "
                              f"policies folder {folder}", file=source, field=f"stages[{index}].policies")
        load_policy_file(path)  # a refusal names the policy file, line and field
        if environments is not None and stage.environment not in environments:
            config = f"config {config_file}" if config_file else "config"
            raise ConfigError(f"stage {stage.name} runs in environment {stage.environment!r}, which the daemon's "
                              f"{config} does not define (its environments: {', '.join(sorted(environments))})",
                              file=source, field=f"stages[{index}].environment")


def _require_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ConfigError("the policies folder does not exist: set policies_dir in the daemon's config, or "
                          "leave it unset for the policies shipped with the package", file=str(folder))
