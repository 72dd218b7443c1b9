"""What must hold before a pipeline runs: the policies folder exists, every policy file a stage
names is in it and loads, every environment a stage names is one of the daemon's, and every
shadow stage's account names a read-only key (``shadow_key``) in the daemon's config, and a ramp stage's
environment a master transfer key and the emails transfers name the accounts by.

The daemon checks before it says READY, `canaryctl rollout start` before it writes a rollout, so
a missing file is refused at once, by name, instead of failing a stage hours later.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from controller.analysis.policy import load_policies, load_policy_file
from controller.config.daemon import EnvironmentConfig
from controller.config.yamlfile import line_in
from controller.errors import ConfigError
from controller.rollout.info import list_rollouts
from controller.rollout.pipeline import Pipeline, Stage
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
    daemon's config ``config_file``), each stage's environment is one of them, and given their
    settings (a mapping of `EnvironmentConfig`), a shadow stage's account names a shadow key there
    (the embedded simulator gives every account one). ``source`` names the pipeline in a refusal:
    its file, or the rollout it belongs to."""
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
        settings = environments.get(stage.environment) if isinstance(environments, Mapping) else None
        if stage.shadow and isinstance(settings, EnvironmentConfig):
            _require_shadow_key(stage, index, settings, source=source, config_file=config_file)
        if stage.ramp and isinstance(settings, EnvironmentConfig):
            _require_transfer_key(stage, index, settings, source=source, config_file=config_file)


def _require_shadow_key(stage: Stage, index: int, environment: EnvironmentConfig, *, source: str,
                        config_file: str | None) -> None:
    if environment.kind == "sim":
        return  # the embedded simulator's accounts each have a read-only key
    account = environment.accounts.get(stage.account)
    if account is not None and account.shadow_key is not None:
        return
    config = f"config {config_file}" if config_file else "config"
    path = Path(source)
    raise ConfigError(f"stage {stage.name} runs in shadow mode on account {stage.account!r} of environment "
                      f"{stage.environment!r}, which names no read-only key: set shadow_key and shadow_secret under "
                      f"environments.{stage.environment}.accounts.{stage.account} in the daemon's {config}, or use "
                      "mode: trade", file=source, field=f"stages[{index}].mode",
                      line=line_in(path, ("stages", index, "mode")) if path.is_file() else None)


def _require_transfer_key(stage: Stage, index: int, environment: EnvironmentConfig, *, source: str,
                          config_file: str | None) -> None:
    """A ramp moves capital with the master's transfer key, naming the accounts by their emails."""
    if environment.kind == "sim":
        return  # the embedded simulator's master has a transfer key, and every account an email
    masters = [name for name, account in environment.accounts.items() if account.role == "master"]
    master = environment.accounts[masters[0]] if masters else None
    account = environment.accounts.get(stage.account)
    missing = ([] if master is not None and master.transfer_key is not None else ["the master's transfer_key"]) + \
              ([] if master is not None and master.email else ["the master's email"]) + \
              ([] if account is not None and account.email else [f"{stage.account}'s email"])
    if not missing:
        return
    config = f"config {config_file}" if config_file else "config"
    path = Path(source)
    raise ConfigError(f"stage {stage.name} ramps the capital of account {stage.account!r} in environment "
                      f"{stage.environment!r}, whose accounts in the daemon's {config} lack {', '.join(missing)}: "
                      f"set them under environments.{stage.environment}.accounts, or remove ramp",
                      file=source, field=f"stages[{index}].ramp",
                      line=line_in(path, ("stages", index, "ramp")) if path.is_file() else None)


def _require_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ConfigError("the policies folder does not exist: set policies_dir in the daemon's config, or "
                          "leave it unset for the policies shipped with the package", file=str(folder))
