"""What a harness run is given, found and checked before anything runs: the stage's policy file
and the release's strategy (recorded, from a file, or the reference bot's)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from controller.analysis.policy import Policy, load_policies
from controller.config.strategy import StrategyConfig
from controller.errors import ConfigError, InputError
from controller.harness.release import REFERENCE_STRATEGY, load_strategy
from controller.store.database import Database
from controller.store.releases import get_release, get_snapshot


@dataclass(frozen=True)
class StagePolicies:
    stage: str
    file: Path
    policies: tuple[Policy, ...]
    others: tuple[Policy, ...]  # every other stage's
    elsewhere: dict[str, str]   # their names -> their stage



def stage_policies(folder: Path, stage: str) -> StagePolicies:
    """The policy file of ``stage`` in ``folder`` (the one whose ``stage:`` it is)."""
    if not folder.is_dir():
        raise ConfigError("the policies folder does not exist; set policies_dir in the config", file=str(folder))
    files = load_policies([folder])
    ours = [(Path(path), f) for path, f in files.items() if f.stage == stage and f.mode == "trade"]
    if not ours:
        stages = sorted({f.stage for f in files.values()})
        raise InputError(f"--stage {stage}: no policy file in {folder} is for stage {stage} "
                         f"(stages: {', '.join(stages)})")
    path, found = ours[0]
    others = [(p, f.stage) for other, f in files.items() if Path(other) != path for p in f.policies]
    return StagePolicies(stage, path, tuple(found.policies), tuple(p for p, _ in others),
                         {p.name: name for p, name in others})


async def recorded_strategy(db: Database, version: str) -> StrategyConfig:
    """The strategy of a recorded release: its config snapshot."""
    release = await get_release(db, version)
    snapshot = await get_snapshot(db, release.config_sha256)
    return StrategyConfig.model_validate(snapshot.config)


def file_strategy(path: Path | None) -> StrategyConfig:
    if path is None and not REFERENCE_STRATEGY.is_file():
        raise InputError(f"the reference bot's strategy is not installed ({REFERENCE_STRATEGY}); "
                         "give --strategy FILE or --release VERSION")
    return load_strategy(path)


def release_name(path: Path | None, strategy: StrategyConfig) -> str:
    """How results name a release that is not a recorded version: where its strategy came from."""
    count = f"{len(strategy.symbols)} symbol{'s' * (len(strategy.symbols) != 1)}"
    return f"strategy {path.name} ({count})" if path is not None else f"reference bot ({count})"

