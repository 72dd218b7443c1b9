"""A stage's capital ramp in a pipeline file: shares as fractions or percentages, increasing, inside the
cap, timed but for the last, inside the stage; each refusal names the file, line and field."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from controller.canonical import canonical_json
from controller.errors import ConfigError
from controller.rollout.pipeline import load_pipeline, pipeline_from_document

STAGE = """\
name: p
stages:
  - name: C
    environment: live
    account: canary
    duration: 24h
    policies: stage-c.yaml
    capital_cap: 0.02
{extra}    ramp: {ramp}
"""


def load(tmp_path, ramp: str, extra: str = ""):
    path = tmp_path / "pipeline.yaml"
    path.write_text(STAGE.format(ramp=ramp, extra=extra))
    return load_pipeline(path)


def refusal(tmp_path, ramp: str, extra: str = "") -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, ramp, extra)
    return str(caught.value)


def test_percentages_and_fractions_read_alike_and_the_last_step_needs_no_duration(tmp_path):
    pipeline = load(tmp_path, "[{share: 0.5%, for: 6h}, {share: 0.01, for: 6h}, {share: '2 %'}]")

    steps = pipeline.stages[0].ramp
    assert [s.share for s in steps] == [Decimal("0.005"), Decimal("0.01"), Decimal("0.02")]
    assert [s.for_ for s in steps] == [21600.0, 21600.0, None]


def test_a_ramp_survives_the_rollout_record(tmp_path):
    """Stored with its rollout as canonical JSON (``for``, not the attribute's name) and read back the same."""
    pipeline = load(tmp_path, "[{share: 0.5%, for: 6h}, {share: 2%}]")
    document = pipeline.model_dump(mode="json")

    assert document["stages"][0]["ramp"][0] == {"share": "0.005", "for": 21600.0}
    assert pipeline_from_document(json.loads(canonical_json(document))) == pipeline


@pytest.mark.parametrize(("ramp", "extra", "said"), [
    ("[{share: 1%, for: 6h}, {share: 0.5%}]", "", "stages[0].ramp[1].share: shares must increase: 0.5% follows 1%"),
    ("[{share: 1%, for: 6h}, {share: 1%}]", "", "stages[0].ramp[1].share: shares must increase"),
    ("[{share: 0.5%, for: 6h}, {share: 3%}]", "", "stages[0].ramp[1].share: share 3% is above the stage's "
                                                  "capital_cap 2%"),
    ("[{share: 0.5%}, {share: 1%}]", "", "stages[0].ramp[0]: every step but the last needs a duration"),
    ("[{share: 0.5%, for: 20h}, {share: 1%, for: 6h}, {share: 2%}]", "", "stages[0].ramp: the steps last 93600 s, "
                                                                         "longer than the stage's duration 86400 s"),
    ("[{share: half%}]", "", "stages[0].ramp[0].share: expected a percentage such as 0.5%"),
    ("[{share: 0.5%, hold: 6h}]", "", "stages[0].ramp[0].hold: unknown field"),
    ("[]", "", "stages[0].ramp"),
    ("[{share: 1%}]", "    dry_run: true\n", "a dry-run stage moves no capital"),
    ("[{share: 1%}]", "    mode: shadow\n", "a shadow stage moves no capital"),
])
def test_a_bad_ramp_is_refused_where_it_is_wrong(tmp_path, ramp, extra, said):
    message = refusal(tmp_path, ramp, extra)

    assert "pipeline.yaml:" in message and said in message, message


def test_a_ramp_needs_a_capital_cap(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(STAGE.format(ramp="[{share: 1%}]", extra="").replace("    capital_cap: 0.02\n", ""))

    with pytest.raises(ConfigError, match=r"pipeline.yaml:\d+: stages\[0\]\.ramp: a capital ramp needs the stage's "
                                          "capital_cap"):
        load_pipeline(path)


def test_a_dry_run_of_a_ramping_stage_moves_no_capital(tmp_path):
    pipeline = load(tmp_path, "[{share: 0.5%, for: 6h}, {share: 2%}]")

    assert pipeline.dry_run_of().stages[0].ramp is None
