"""The report document and its Markdown, on hand-built evidence."""

from __future__ import annotations

import json

from controller.report import document, markdown
from controller.rollout.decide import State
from tests.report.builders import at, chain, rolled_back, verdict


def test_a_rollout_just_started_renders_with_nothing_claimed(tmp_path):
    pending = State.from_json({"status": "pending", "stage": 0}).to_json()
    fresh = rolled_back(tmp_path, decision_document=pending, stage_runs=(), verdicts=(), steps=(),
                        audit=chain([(0, "tester", "rollout.created", {"rollout": 3, "stages": ["C"]})]))
    doc = document.build(fresh, archived=False)
    assert doc["rollback"] is None and doc["breaches"] == [] and doc["policies"] == []
    assert {line["status"] for line in doc["checklist"]} <= {"not run", "open", "outside", "met"}
    assert [line["key"] for line in doc["checklist"] if line["status"] == "met"] == ["D5"]  # the plan is ready
    md = markdown.render(doc, plots_linked=False)
    assert "The rollout was not rolled back." in md and "No policy breached." in md
    assert "| C | sim/canary | 0.02 | 3600 s | not reached |" in md


def test_the_breach_that_started_the_rollback_is_marked_and_timed(tmp_path):
    doc = document.build(rolled_back(tmp_path), archived=False)
    [breach] = doc["breaches"]
    assert breach["policy"] == "c-leverage-mismatch-zero" and breach["triggered_rollback"]
    rollback = doc["rollback"]
    assert rollback["trigger"] == "policy" and rollback["breach_at"] == document.iso(at(18))
    assert rollback["safe_at"] == document.iso(at(23.5))  # restore_leverage, the fourth step, done
    assert rollback["breach_to_safe_seconds"] == 5.5 and rollback["breach_to_done_seconds"] == 7.5
    assert [s["since_breach_seconds"] for s in rollback["steps"]] == [2.5, 3.5, 4.5, 5.5, 6.5, 7.5]


def test_a_policy_the_current_files_no_longer_define_is_reported_as_such(tmp_path):
    gone = rolled_back(tmp_path, policies={})
    doc = document.build(gone, archived=False)
    assert {p["defined"] for p in doc["policies"]} == {False}
    assert any(n.startswith("Verdicts of policies the current files no longer define") for n in
               doc["evidence"]["notes"])
    assert doc["plots"][0]["note"].startswith("no policy of this rollout measures")


def test_the_evidence_section_says_what_the_store_does_not_keep(tmp_path):
    doc = document.build(rolled_back(tmp_path), archived=False)
    assert doc["evidence"]["metrics"] == {"file": "metrics/verdicts.jsonl", "verdict_changes": 5, "raw_scrapes": None}
    md = markdown.render(doc, plots_linked=False)
    assert "the daemon keeps no raw metric scrapes or exchange snapshots, so none are archived" in md
    assert doc["evidence"]["audit_excerpt"]["chain"] == "consistent"


def test_the_document_is_json_and_carries_every_verdict_value(tmp_path):
    ev = rolled_back(tmp_path, verdicts=(*rolled_back(tmp_path).verdicts,
                                         verdict(6, "c-queue-latency-p95", "pass", 30, float("nan"), "0.5")))
    doc = document.build(ev, archived=False)
    text = json.dumps(doc, allow_nan=False)  # NaN never reaches the document
    assert json.loads(text)["policies"][0]["history"][-1]["value"] is None
