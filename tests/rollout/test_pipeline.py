"""Pipeline files: the shipped default maps the checklist, bad files are refused where they are wrong."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.analysis.policy import MAX_DURATION, load_policy_file
from controller.canonical import canonical_json
from controller.errors import ConfigError
from controller.rollout.pipeline import DEFAULT_PIPELINE, Pipeline, Stage, load_pipeline, pipeline_from_document
from tests.support.checkout import REPO

POLICIES = REPO / "policies"

GOOD = """\
name: p
stages:
  - name: A
    environment: sim
    account: master
    duration: 1h
    policies: stage-a.yaml
  - name: C
    environment: live
    account: canary
    duration: 24h
    policies: stage-c.yaml
    capital_cap: 0.02
    baseline: master
    signoffs: [owner-review]
"""


def write(tmp_path, text: str):
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def refusal(tmp_path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    return str(caught.value).replace(str(path), "pipeline.yaml")


# ---------------------------------------------------------------- the shipped pipeline

def test_the_default_pipeline_maps_the_checklist_stages_a_to_d():
    pipeline = load_pipeline()
    assert pipeline.name == "stabilization"
    assert [s.name for s in pipeline.stages] == ["A", "B", "C", "D"]
    assert load_pipeline(DEFAULT_PIPELINE) == pipeline


@pytest.mark.parametrize("stage", load_pipeline().stages, ids=lambda s: s.name)
def test_every_default_stage_names_a_shipped_policy_file_of_that_stage(stage):
    path = POLICIES / stage.policies
    assert path.is_file(), f"stage {stage.name}: {stage.policies} is not in policies/"
    assert load_policy_file(path).stage == stage.name


def test_the_default_canary_stage_holds_at_most_two_percent_beside_a_baseline():
    canary = load_pipeline().stage("C")
    assert canary.capital_cap == Decimal("0.02")
    assert canary.baseline is not None and canary.baseline != canary.account
    assert canary.positions == "flatten"


def test_the_default_pipeline_says_what_happens_to_each_account_after_its_stage():
    # Stages A and B share the master account; the canary's account is watched through stage D.
    assert [s.after_promotion for s in load_pipeline().stages] == ["watch", "stop", "watch", "watch"]


def test_the_default_full_deployment_waits_for_an_operator_and_the_standup():
    full = load_pipeline().stage("D")
    assert full.auto_promote is False
    assert full.signoff_entries == [("standup-review", 86400.0)]  # one a day, day-1 to day-7


def test_a_good_file_gives_durations_in_seconds_and_defaults(tmp_path):
    pipeline = load_pipeline(write(tmp_path, GOOD))
    first, canary = pipeline.stages
    assert (first.duration, canary.duration) == (3600.0, 86400.0)
    assert first.progress_deadline == 3600.0 and first.auto_promote is True and first.positions == "keep"
    assert first.signoffs == [] and first.capital_cap is None and first.baseline is None
    assert first.after_promotion == "watch"  # never unwatched unless the file says stop
    assert pipeline.index("C") == 1 and pipeline.stage("C") is canary


# ---------------------------------------------------------------- refusals at FILE:LINE: FIELD

@pytest.mark.parametrize("old, new, expected", [
    ("    capital_cap: 0.02\n", "    capital_cap: 0.02\n    colour: red\n",
     "pipeline.yaml:14: stages[1].colour: unknown field 'colour'"),
    ("    baseline: master\n", "    baseline: canary\n",
     "pipeline.yaml:14: stages[1].baseline: the baseline runs on another account than the release "
     "(both are 'canary')"),
    ("    signoffs: [owner-review]\n", "    signoffs: [owner-review, owner-review]\n",
     "pipeline.yaml:15: stages[1].signoffs: a sign-off item is listed twice"),
    ("    duration: 1h\n", "    duration: soon\n",
     "pipeline.yaml:6: stages[0].duration: 'soon' is not a duration"),
    ("    duration: 1h\n", "    duration: 0s\n",
     "pipeline.yaml:6: stages[0].duration: expected a number greater than 0"),
    ("    capital_cap: 0.02\n", "    capital_cap: -0.02\n",
     "pipeline.yaml:13: stages[1].capital_cap: expected a number from 1E-9 to 1, got -0.02"),
    ("    capital_cap: 0.02\n", "    capital_cap: 1.5\n",
     "pipeline.yaml:13: stages[1].capital_cap: expected a number from 1E-9 to 1, got 1.5"),
    ("  - name: C\n", "  - name: A\n",
     "pipeline.yaml:8: stages[1].name: stage 'A' is listed twice"),
    ("    policies: stage-a.yaml\n", "    policies: /etc/stage-a.yaml\n",
     "pipeline.yaml:7: stages[0].policies: expected text matching"),
    ("    account: master\n", "", "pipeline.yaml:3: stages[0].account: missing required field"),
    ("    signoffs: [owner-review]\n", "    signoffs: [Owner Review]\n",
     "pipeline.yaml:15: stages[1].signoffs[0]: expected text matching"),
    ("  - name: A\n", "  - name: A\n    positions: sell\n",
     "pipeline.yaml:4: stages[0].positions: expected 'keep' or 'flatten', got 'sell'"),
    ("  - name: A\n", "  - name: A\n    after_promotion: forget\n",
     "pipeline.yaml:4: stages[0].after_promotion: expected 'watch' or 'stop', got 'forget'"),
    ("    signoffs: [owner-review]\n", "    signoffs: [owner-review]\n    confirm_promotion:\n"
     "      url: ftp://deploys.example.com/confirm\n",
     "pipeline.yaml:17: stages[1].confirm_promotion.url: expected an http:// or https:// URL with a host, "
     "got 'ftp://deploys.example.com/confirm'"),
    ("    signoffs: [owner-review]\n", "    signoffs: [owner-review]\n    confirm_promotion:\n"
     "      url: https://deploys.example.com/confirm\n      timeout: 10m\n",
     "pipeline.yaml:18: stages[1].confirm_promotion.timeout: expected 1s to 300s, got 600s"),
    ("    signoffs: [owner-review]\n", "    signoffs: [owner-review]\n    confirm_promotion:\n"
     "      url: https://deploys.example.com/confirm\n      timeout: 0s\n",
     "pipeline.yaml:18: stages[1].confirm_promotion.timeout: expected 1s to 300s, got 0s"),
    ("    signoffs: [owner-review]\n", "    signoffs: [owner-review]\n    confirm_promotion: {timeout: 5s}\n",
     "pipeline.yaml:16: stages[1].confirm_promotion.url: missing required field"),
    ("    signoffs: [owner-review]\n", "    signoffs: [owner-review]\n    dry_run: true\n"
     "    confirm_promotion: {url: 'https://deploys.example.com/confirm'}\n",
     "pipeline.yaml:17: stages[1].confirm_promotion: a dry-run stage promotes nothing"),
], ids=["unknown-key", "baseline-is-account", "duplicate-signoff", "bad-duration", "zero-duration",
        "negative-cap", "cap-above-one", "duplicate-stage", "absolute-policies-path", "missing-account",
        "bad-signoff-item", "bad-positions", "bad-after-promotion", "confirm-not-http", "confirm-timeout-too-long",
        "confirm-timeout-zero", "confirm-without-url", "confirm-on-dry-run"])
def test_a_bad_pipeline_is_refused_at_its_file_line_and_field(tmp_path, old, new, expected):
    assert old in GOOD
    assert refusal(tmp_path, GOOD.replace(old, new, 1)).startswith(expected)


def test_a_confirm_promotion_gives_its_timeout_in_seconds_and_a_dry_run_of_its_stage_drops_it(tmp_path):
    text = GOOD + "    confirm_promotion: {url: 'https://deploys.example.com/confirm?token=t', timeout: 30s}\n"
    pipeline = load_pipeline(write(tmp_path, text))
    confirm = pipeline.stage("C").confirm_promotion
    assert confirm.url == "https://deploys.example.com/confirm?token=t" and confirm.timeout == 30.0
    assert pipeline.stage("A").confirm_promotion is None
    assert pipeline.dry_run_of("C").stages[0].confirm_promotion is None


def test_the_default_pipeline_turns_the_feature_toggle_on_at_d_only():
    assert {s.name: s.toggle for s in load_pipeline().stages} == {"A": False, "B": False, "C": False, "D": True}


def test_a_toggle_on_an_account_an_earlier_stage_ran_the_release_on_is_refused_at_its_line(tmp_path):
    text = GOOD + """\
  - name: C2
    environment: live
    account: canary
    duration: 24h
    policies: stage-c.yaml
    toggle: on
"""
    assert refusal(tmp_path, text) == (
        "pipeline.yaml:21: stages[2].toggle: stage 'C2' turns the toggle on on live/canary, where stage 'C' already "
        "runs the release: turn it on at a stage on another account")
    assert load_pipeline(write(tmp_path, text.replace("account: canary\n    duration: 24h\n    policies: stage-c.yaml\n"
                                                      "    toggle", "account: other\n    duration: 24h\n    policies: "
                                                      "stage-c.yaml\n    toggle"))).stage("C2").toggle is True


def test_a_pipeline_without_stages_is_refused(tmp_path):
    assert refusal(tmp_path, "name: p\nstages: []\n") == "pipeline.yaml:2: stages: expected at least 1 item, got 0"


def test_a_duplicate_key_is_refused_rather_than_silently_overridden(tmp_path):
    text = GOOD.replace("    duration: 1h\n", "    duration: 1h\n    duration: 2h\n", 1)
    assert refusal(tmp_path, text).startswith("pipeline.yaml:7: stages[0].duration: duplicate key 'duration'")


# ---------------------------------------------------------------- stored with the rollout

def stored(pipeline: Pipeline) -> dict:
    """The pipeline as the store keeps it (canonical JSON) and reads it back."""
    return json.loads(canonical_json(pipeline.model_dump(mode="json")))


def test_the_default_pipeline_round_trips_through_canonical_json_unchanged():
    pipeline = load_pipeline()
    again = pipeline_from_document(stored(pipeline))
    assert again == pipeline
    assert stored(again) == stored(pipeline)


def test_a_corrupt_stored_pipeline_is_refused_naming_the_rollout():
    document = stored(load_pipeline())
    document["stages"][2]["colour"] = "red"
    with pytest.raises(ConfigError, match=r"^rollout 7.*stages\[2\]\.colour: unknown field 'colour'"):
        pipeline_from_document(document, "rollout 7")


names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,8}", fullmatch=True)
accounts = st.sampled_from(["master", "canary", "sub2"])
items = st.from_regex(r"[a-z0-9][a-z0-9-]{0,8}", fullmatch=True)


@st.composite
def stages(draw, name: str) -> Stage:
    account = draw(accounts)
    return Stage(
        name=name, title=draw(st.none() | st.text(max_size=20)), environment=draw(names), account=account,
        duration=draw(st.floats(min_value=1e-6, max_value=MAX_DURATION, allow_nan=False, allow_infinity=False)),
        policies=draw(names) + ".yaml",
        capital_cap=draw(st.none() | st.decimals(min_value=Decimal("0.000001"), max_value=1, places=6)),
        baseline=draw(st.none() | accounts.filter(lambda a: a != account)),
        positions=draw(st.sampled_from(["keep", "flatten"])),
        signoffs=draw(st.lists(items, max_size=3, unique=True)),
        progress_deadline=draw(st.floats(min_value=0, max_value=MAX_DURATION, allow_nan=False)),
        auto_promote=draw(st.booleans()), after_promotion=draw(st.sampled_from(["watch", "stop"])))


@st.composite
def pipelines(draw) -> Pipeline:
    stage_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    return Pipeline(name=draw(names), stages=[draw(stages(n)) for n in stage_names])


@settings(max_examples=150, database=None, deadline=None)
@given(pipelines())
def test_any_valid_pipeline_round_trips_through_canonical_json_unchanged(pipeline):
    assert pipeline_from_document(stored(pipeline)) == pipeline


def test_the_accounts_left_behind_are_those_earlier_stages_placed_on_and_the_stage_does_not():
    pipeline = load_pipeline()
    assert pipeline.left_behind(0) == {}
    assert pipeline.left_behind(1) == {}  # A and B share the master account
    assert pipeline.left_behind(2) == {("sim", "master"): pipeline.stage("B")}
    assert pipeline.left_behind(3) == {("sim", "master"): pipeline.stage("B"), ("live", "canary"): pipeline.stage("C")}
