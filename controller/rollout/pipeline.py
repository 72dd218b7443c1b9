"""Pipeline files: the stages of the stabilization checklist a release walks through.

    name: stabilization
    stages:
      - name: C                      # the checklist's stage letter
        title: Canary / dry run
        environment: live            # an environment of the daemon's config
        account: canary              # the account the release is placed on
        duration: 24h                # how long the gate policies must pass
        policies: stage-c.yaml       # relative to the daemon's policies_dir
        capital_cap: 0.02            # the most of the master's capital the account may hold
        baseline: master             # where the previous release keeps running, for comparison
        positions: flatten           # on rollback: keep | flatten (closing market orders: reduce-only, or per side in hedge mode)
        signoffs: [owner-review]     # what a person must sign before the gate opens; a recurring
                                     # one, {name: standup-review, every: 1d}, once per period (below)
        signers: 2                   # distinct operating-system users who must sign (four eyes)
        progress_deadline: 1h        # after the stage's end, a gate that never passed rolls back
        waiting_deadline: 24h        # the longest the rollout may wait paused or for a sign-off
        on_waiting_deadline: alert   # past it: alert (an audit event, an alert rule) | rollback
        after_promotion: watch       # once the next stage is placed: watch | stop (below)
        dry_run: false               # true: judged, never acted on; the rollout ends with it (below)
        mode: trade                  # trade | shadow (below)
        toggle: off                  # on: the manifest's feature toggle is on in the snapshot placed (below)
        anomalies: block             # an open anomaly shuts the gate: block | note (default: block on the last stage)
        confirm_promotion:           # before the gate promotes, ask this endpoint (below)
          url: https://deploys.example.com/canary/confirm
          timeout: 10s               # per question; at most 5 minutes
        digest: {every: 1h, first: 24h, then: 1d}  # verdict digests on a schedule (below)

``after_promotion`` says what becomes of the stage's account once the rollout moves on, so that no
account runs the release unwatched. ``watch`` (the default): the stage's verification goes on, with
its policies, until the rollout ends or a later stage places the release on the same account (its
own verification then covers it); a breach there rolls the rollout back like any other. ``stop``:
the release is stopped on that account when the next stage is placed, and the account left empty.

``dry_run: true`` (or ``canaryctl rollout start VERSION --dry-run``) places the release and judges
the stage as usual, but acts on no verdict: what the rollout would have done (rolled back at a
breach, promoted or kept the gate shut at the stage's end) is recorded, audited and shown instead.
A dry run never moves a release forward, so a dry-run stage is the pipeline's last: at its end the
account gets its previous release back (the rollback plan, trigger ``dry_run``) and the rollout
ends ``dry_run_done``. Between the placement and the stage's end the controller sends the exchange
nothing that changes the account.

``mode: shadow`` places the release with the account's read-only key (``shadow_key`` in the
daemon's config; the daemon reads its rights first and refuses one that can trade) and sets
``CANARY_SHADOW=1`` in its environment: the release runs on live market data and exports its
metrics, and the exchange refuses every order it sends. A later ``mode: trade`` stage on the same
account starts the release again with the trading key (``stages: [C-shadow, C]``).

``toggle: on`` turns on the feature toggle the release's manifest declares: ``toggle: {config_key:
bot.new_sizing}`` (a boolean in its strategy config) is set true in the snapshot the stage places,
stored and named by the deployment; ``toggle: {endpoint: /toggle/new_sizing}`` is POSTed
``{"enabled": true}`` on the bot's metrics address once it started (no 2xx fails the placement),
and ``{"enabled": false}`` by a rollback before it stops the bot. A rollback starts the previous
release with the snapshot its deployment ran, so the feature is off again. A manifest without a
toggle places its own snapshot. The stage's account
must be one no earlier stage ran the release on (that placement would be the same deployment).

``confirm_promotion`` is Flagger's confirm-promotion: once the gate is open (the stage's time run,
its policies clean, its sign-offs given), the daemon POSTs ``{rollout, stage, release, pipeline,
verdicts}`` to the URL and promotes only on a 2xx. Any other answer, or none within ``timeout``,
keeps the gate shut with the reason in status (``waiting for confirm-promotion: HTTP 503 from
host/path``), and the question is asked again with backoff. The question is asked by a task of the
runner's, never by the engine's decision (which reads its latest answer); a 2xx is audited
(``rollout.promotion_confirmed``). The URL's query may carry a credential: it is shown as
``scheme://host/path``.

``digest`` has the controller record a digest of the stage's verdicts (per policy: how often each
outcome came, the worst value, the breaches) for each period of the schedule: every ``every`` for
the ``first`` part of the stage, every ``then`` after it (the checklist's "hourly for the first 24 h,
daily afterwards"), as ``stage.digest`` audit events. A digest not written on time alerts
(CanaryDigestMissing). A recurring sign-off (``{name: standup-review, every: 1d}``) asks for one item
per period of the stage, named ``standup-review/day-N``; the gate needs every one, and a period that
ends unsigned is said overdue (a ``signoff.overdue`` audit event, the CanarySignoffOverdue alert).

``ramp`` raises the stage's capital share in steps inside its cap, like Argo's ``setWeight`` steps::

    ramp:                            # shares of the firm's capital, increasing, each <= capital_cap
      - {share: 0.5%, for: 6h}       # a share is a fraction (0.005) or a percentage ("0.5%")
      - {share: 1%, for: 6h}
      - {share: 2%}                  # the last step holds until the stage's end

The first step's share is funded when the release is placed; each next one only once the stage's
gate has been clean (every gate policy passing, none failed) for the whole ``for`` of the step
before. The controller moves USDT between the master and the stage's sub-account with Binance's
sub-account futures internal transfer, signed with the master's transfer key (``transfer_key`` in
the daemon's config: it may transfer internally and must not withdraw), audited as
``capital.transferred``. A rollback returns the sub-account to the capital it had before the ramp
(its ``return_capital`` step, after the account is safe). The stage's gate opens only once the
ramp reached its last step. A ramp needs a ``capital_cap``; a dry-run or shadow stage has none.

The default pipeline ships in ``controller/rollout/pipelines/default.yaml`` and maps stages A to
D of the checklist; stage E's nightly regression is a harness run, not a stage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from urllib.parse import urlsplit

from pydantic import (BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError, field_validator,
                      model_validator)

from controller import signoffs
from controller.analysis.policy import Duration
from controller.canonical import canonical_json
from controller.config.model import ConfigModel, Fraction, Int, error_at
from controller.config.yamlfile import load_model, load_model_text
from controller.errors import ConfigError

DEFAULT_PIPELINE = Path(__file__).parent / "pipelines" / "default.yaml"

StageName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]
ItemName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
AccountName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


CONFIRM_TIMEOUT_MAX = 300.0
"""Seconds a confirm-promotion endpoint may be given to answer one question, at most."""


class ConfirmPromotion(ConfigModel):
    """An endpoint that must answer 2xx before the stage's gate promotes (see the module's docstring)."""

    url: str
    timeout: Duration = 10.0
    """Seconds (1 to 300) the endpoint has to answer one question; no answer in time is a no."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
            raise ValueError(f"expected an http:// or https:// URL with a host, got {url[:60]!r}")
        return url

    @field_validator("timeout")
    @classmethod
    def _bounded(cls, timeout: float) -> float:
        if not 1 <= timeout <= CONFIRM_TIMEOUT_MAX:
            raise ValueError(f"expected 1s to {CONFIRM_TIMEOUT_MAX:.0f}s, got {timeout:g}s")
        return timeout


class RecurringSignoff(ConfigModel):
    """A sign-off asked for once per period of the stage: ``{name: standup-review, every: 1d}``."""

    name: ItemName
    every: Duration = Field(gt=0)


DIGEST_PERIODS_MAX = 1000
"""The most digests a stage's schedule may ask for over its duration: a typo (``every: 1s``) is refused."""


class DigestSchedule(ConfigModel):
    """When the stage's verdict digests are written (see the module's docstring)."""

    every: Duration = Field(default=3600.0, gt=0)
    first: Duration = Field(default=86400.0, ge=0)
    """How long, from the stage's start, a digest covers ``every``; ``then`` after that."""
    then: Duration = Field(default=86400.0, gt=0)

    @model_validator(mode="after")
    def _whole_periods(self) -> DigestSchedule:
        if self.first % self.every:
            raise error_at(("first",), f"expected a whole number of periods of {self.every:g} s, got {self.first:g} s")
        return self


def _share(value: Any) -> Any:
    """A ramp step's share as a fraction: ``0.005``, or the percentage ``"0.5%"``."""
    if isinstance(value, str) and value.strip().endswith("%"):
        number = value.strip()[:-1].strip()
        try:
            return Decimal(number) / 100
        except ArithmeticError:
            raise ValueError(f"expected a percentage such as 0.5% or a fraction such as 0.005, got {value!r}") from None
    return value


Share = Annotated[Fraction, BeforeValidator(_share)]


class RampStep(ConfigModel):
    """One step of a capital ramp: the share of the firm's capital the account holds, and for how long."""

    model_config = ConfigDict(frozen=True, extra="forbid", serialize_by_alias=True)

    share: Share
    for_: Duration | None = Field(default=None, alias="for", gt=0)
    """How long the gate must stay clean before the next step is funded; None: the last step, held to the end."""


class Stage(ConfigModel):
    name: StageName
    title: str | None = None
    environment: AccountName
    account: AccountName
    duration: Duration = Field(gt=0)
    policies: str = Field(pattern=r"^[^/\\][^\\]*\.ya?ml$")
    capital_cap: Fraction | None = None
    baseline: AccountName | None = None
    positions: Literal["keep", "flatten"] = "keep"
    signoffs: list[ItemName | RecurringSignoff] = Field(default_factory=list)
    signers: Int = Field(default=1, ge=1, le=10)
    """How many distinct operating-system users must sign the stage's items before its gate opens
    (2: four eyes). A user counts once, whatever name they claim with ``--by``."""
    progress_deadline: Duration = 3600.0
    waiting_deadline: Duration = Field(default=86400.0, gt=0)
    """How long the rollout may wait, paused or awaiting a sign-off, a promote or a confirmation, before ``on_waiting_deadline``
    applies: a canary left waiting still trades, and nobody may be looking."""
    on_waiting_deadline: Literal["alert", "rollback"] = "alert"
    """``alert``: a ``rollout.waiting_overdue`` audit event and the CanaryRolloutWaitingOverdue alert;
    ``rollback``: the rollout rolls back (trigger ``waiting``)."""
    auto_promote: bool = True
    """False: the gate opening waits for an operator's ``promote``."""
    after_promotion: Literal["watch", "stop"] = "watch"
    """What becomes of the stage's account once the next stage is placed (see the module's docstring)."""
    # -- dry run (see the module's docstring)
    dry_run: bool = False
    """Judge the stage, act on no verdict, record what would have been done; the rollout ends with it."""
    mode: Literal["trade", "shadow"] = "trade"
    """``shadow``: the release gets the account's read-only key and ``CANARY_SHADOW=1`` (see the module's docstring)."""
    toggle: bool = False
    """True: the manifest's feature toggle is turned on in the snapshot placed (see the module's docstring)."""
    anomalies: Literal["block", "note"] | None = None
    """``block``: an open anomaly (`canaryctl note --anomaly`) shuts the stage's gate until it is resolved
    or the promote is forced; ``note``: anomalies are logged only. None: ``block`` on the last stage."""
    confirm_promotion: ConfirmPromotion | None = None
    """Ask this endpoint before the gate promotes; only a 2xx promotes (see the module's docstring)."""
    digest: DigestSchedule | None = None
    """Record verdict digests on this schedule (see the module's docstring)."""
    ramp: list[RampStep] | None = Field(default=None, min_length=1, max_length=20)
    """The capital ramp: shares of the firm's capital funded step by step (see the module's docstring)."""

    @property
    def signoff_entries(self) -> list[signoffs.Entry]:
        """The stage's sign-offs as (name, every seconds or None)."""
        return [(item, None) if isinstance(item, str) else (item.name, item.every) for item in self.signoffs]

    @property
    def signoff_items(self) -> list[str]:
        """Every item the gate needs signed: a recurring sign-off's once per period (``standup-review/day-3``)."""
        return signoffs.items(self.signoff_entries, self.duration)

    @property
    def shadow(self) -> bool:
        return self.mode == "shadow"

    @model_validator(mode="after")
    def _baseline_elsewhere(self) -> Stage:
        if self.baseline is not None and self.baseline == self.account:
            raise error_at(("baseline",), "the baseline runs on another account than the release "
                                          f"(both are {self.account!r})")
        names = [name for name, _ in self.signoff_entries]
        if len(set(names)) != len(names):
            raise error_at(("signoffs",), "a sign-off item is listed twice")
        for index, (name, every) in enumerate(self.signoff_entries):
            if every is not None and every > self.duration:
                raise error_at(("signoffs", index, "every"), f"{name!r} recurs every {every:g} s, longer than the "
                                                             f"stage's duration ({self.duration:g} s)")
            if every is not None and signoffs.periods(every, self.duration) > DIGEST_PERIODS_MAX:
                raise error_at(("signoffs", index, "every"), f"{name!r} would ask for more than "
                                                             f"{DIGEST_PERIODS_MAX} sign-offs over the stage")
        if self.digest is not None and digest_count(self.digest, self.duration) > DIGEST_PERIODS_MAX:
            raise error_at(("digest",), f"the schedule asks for more than {DIGEST_PERIODS_MAX} digests over "
                                        f"the stage's {self.duration:g} s")
        if self.signers > 1 and not self.signoffs:
            raise error_at(("signers",), f"{self.signers} signers of no sign-off item: list the items under signoffs")
        if self.dry_run and self.confirm_promotion is not None:
            raise error_at(("confirm_promotion",), "a dry-run stage promotes nothing: there is no promotion to "
                                                   "confirm (remove confirm_promotion or dry_run)")
        if self.ramp is not None:
            self._ramp_valid(self.ramp)
        return self

    def _ramp_valid(self, ramp: list[RampStep]) -> None:
        """Shares increasing and inside the cap, every step but the last timed, the steps inside the stage."""
        if self.capital_cap is None:
            raise error_at(("ramp",), "a capital ramp needs the stage's capital_cap (each share must be within it)")
        if self.dry_run or self.shadow:
            raise error_at(("ramp",), f"a {'dry-run' if self.dry_run else 'shadow'} stage moves no capital: "
                                      "remove ramp")
        for index, step in enumerate(ramp):
            if step.share > self.capital_cap:
                raise error_at(("ramp", index, "share"), f"share {step.share:%} is above the stage's capital_cap "
                                                         f"{self.capital_cap:%}")
            if index and step.share <= ramp[index - 1].share:
                raise error_at(("ramp", index, "share"), f"shares must increase: {step.share:%} follows "
                                                         f"{ramp[index - 1].share:%}")
            if step.for_ is None and index < len(ramp) - 1:
                raise error_at(("ramp", index), "every step but the last needs a duration (for: 6h)")
        total = sum(step.for_ or 0.0 for step in ramp)
        if total > self.duration:
            raise error_at(("ramp",), f"the steps last {total:g} s, longer than the stage's duration "
                                      f"{self.duration:g} s")


class Pipeline(ConfigModel):
    name: StageName
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_stages(self) -> Pipeline:
        seen: set[str] = set()
        for index, stage in enumerate(self.stages):
            if stage.name in seen:
                raise error_at(("stages", index, "name"), f"stage {stage.name!r} is listed twice")
            seen.add(stage.name)
        # -- dry run: it promotes nothing, so no stage can follow it
        for index, stage in enumerate(self.stages[:-1]):
            if stage.dry_run:
                raise error_at(("stages", index, "dry_run"), f"stage {stage.name!r} is a dry run, which ends the "
                               "rollout: it must be the last stage (stages after it would never run)")
        # -- toggle: a stage placing on an account an earlier stage ran the release on goes on in
        # that stage's deployment, whose snapshot is the untoggled one
        for index, stage in enumerate(self.stages):
            earlier = [s.name for s in self.stages[:index] if (s.environment, s.account) == (stage.environment,
                                                                                                stage.account)]
            if stage.toggle and earlier:
                raise error_at(("stages", index, "toggle"), f"stage {stage.name!r} turns the toggle on on "
                               f"{stage.environment}/{stage.account}, where stage {earlier[-1]!r} already runs the "
                               "release: turn it on at a stage on another account")
        return self

    def dry_run_of(self, name: str | None = None) -> Pipeline:
        """This pipeline as ``rollout start --dry-run`` runs it: the stage ``name`` (None: the first) alone,
        in dry run; a `KeyError` for a stage it does not have."""
        stage = self.stage(name) if name is not None else self.stages[0]
        # A dry run promotes nothing: there is nothing for a confirm-promotion endpoint to confirm;
        # nor does it move capital (a ramp).
        dry = stage.model_copy(update={"dry_run": True, "confirm_promotion": None, "ramp": None})
        return self.model_copy(update={"stages": [dry]})

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def index(self, name: str) -> int:
        return [s.name for s in self.stages].index(name)

    def restarts(self, index: int) -> bool:
        """Whether stage ``index`` places the release on an account an earlier stage ran it on in the
        other mode (shadow, then trade): its bot must start again with the other key."""
        current = self.stages[index]
        earlier = [s for s in self.stages[:index] if (s.environment, s.account) == (current.environment, current.account)]
        return bool(earlier) and earlier[-1].mode != current.mode

    def blocks_on_anomalies(self, index: int) -> bool:
        """Whether an open anomaly keeps stage ``index`` from being promoted (see `Stage.anomalies`)."""
        anomalies = self.stages[index].anomalies
        return anomalies == "block" or (anomalies is None and index == len(self.stages) - 1)

    def left_behind(self, index: int) -> dict[tuple[str, str], Stage]:
        """The accounts (environment, account) that stages before ``index`` placed the release on and
        stage ``index`` does not, each with the last stage that placed it there: its ``after_promotion``
        says what becomes of the account."""
        left: dict[tuple[str, str], Stage] = {}
        for stage in self.stages[:index]:
            left[(stage.environment, stage.account)] = stage
        current = self.stages[index]
        left.pop((current.environment, current.account), None)
        return left


def digest_period(schedule: DigestSchedule, number: int) -> tuple[float, float]:
    """Digest ``number`` (from 1)'s period, in seconds from the stage's start: [start, end)."""
    early = round(schedule.first / schedule.every)
    if number <= early:
        return (number - 1) * schedule.every, number * schedule.every
    later = number - early
    return schedule.first + (later - 1) * schedule.then, schedule.first + later * schedule.then


def digests_ended(schedule: DigestSchedule, elapsed: float) -> int:
    """How many digest periods have ended ``elapsed`` seconds after the stage's start."""
    if elapsed < 0:
        return 0
    early = math.floor(min(elapsed, schedule.first) / schedule.every + 1e-9)
    return early + max(0, math.floor((elapsed - schedule.first) / schedule.then + 1e-9))


def digest_count(schedule: DigestSchedule, duration: float) -> int:
    """How many digests a stage of ``duration`` seconds has over its duration."""
    return digests_ended(schedule, duration)


def load_pipeline(path: Path | None = None) -> Pipeline:
    """A pipeline file; None means the one that ships with the project."""
    return load_model(Pipeline, path or DEFAULT_PIPELINE)


def pipeline_from_document(document: Mapping[str, Any], source: str = "<rollout>") -> Pipeline:
    """A pipeline as stored with its rollout: its canonical JSON, read by `controller.store.rollout_record`.

    A document the model refuses is written out again and read through the YAML loader, whose
    error names the field; should that reading pass (YAML 1.1 reads some canonical JSON
    differently: ``1e-06`` is text to it), the JSON reading's refusal stands.
    """
    try:
        return Pipeline.model_validate(document)
    except ValidationError as exc:
        load_model_text(Pipeline, canonical_json(document), source)
        raise ConfigError(f"not a pipeline: {exc.error_count()} field(s) refused", file=source) from None
