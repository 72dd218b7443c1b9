"""canaryctl harness run --junit FILE: the run as JUnit XML a CI reads, parsed back here.

One run of an hour with two defects: wrong leverage (caught by a leverage policy: its test case
passes) and oversized orders (no policy of stage B watches them: its test case fails, and so does
the run's, as the exit status 1 says)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

from tests.support.canaryctl import assert_refused, canaryctl

LEVERAGE = {"b-bot-applied-leverage-equals-config", "b-exchange-leverage-matches-config"}


def test_the_junit_file_has_a_case_per_policy_and_per_fault_and_fails_as_the_run_does(tmp_path):
    junit = tmp_path / "harness.xml"
    result = canaryctl("harness", "run", "--no-record", "--json", "--duration", "1h", "--junit", str(junit),
                       "--faults", "10m:defect=wrong_leverage:SOLUSDT=20,30m:defect=oversized_orders=5", timeout=200)
    assert result.code == 1, (result.err[-2000:], result.out[-2000:])
    report = json.loads(result.out.strip().splitlines()[-1])

    (suite,) = ElementTree.parse(junit).getroot().findall("testsuite")
    cases = {(c.get("classname"), c.get("name")): c for c in suite.findall("testcase")}
    policies = {name: c for (kind, name), c in cases.items() if kind == "harness.stage_B.policy"}
    assert set(policies) == {*report["verdicts"], *report["not_judged"]}
    faults = {name: c for (kind, name), c in cases.items() if kind == "harness.fault"}
    assert set(faults) == {f["spec"] for f in report["faults"]}
    assert int(suite.get("tests")) == len(cases) == len(policies) + len(faults) + 1
    assert int(suite.get("failures")) == sum(1 for c in cases.values() if c.find("failure") is not None)

    leverage = faults["10m:defect=wrong_leverage:SOLUSDT=20"]
    assert leverage.find("failure") is None
    assert any(name in leverage.findtext("system-out") for name in LEVERAGE)
    oversized = faults["30m:defect=oversized_orders=5"].find("failure")
    assert oversized is not None and oversized.get("message").startswith("not caught")
    assert "no policy of stage B watches what oversized_orders moves" in oversized.text

    for name, case in policies.items():  # a policy passes only on a final pass and no unexplained breach
        if case.find("failure") is None and case.find("skipped") is None:
            assert report["verdicts"][name] == "pass"
    for name in report["not_judged"]:
        assert "not judged by the harness" in policies[name].find("skipped").get("message")
    caught_by = next(f["caught_by"] for f in report["faults"] if f["spec"].startswith("10m:"))
    assert "caught 10m:defect=wrong_leverage" in policies[caught_by].findtext("system-out")
    unexplained = {b["policy"] for b in report["breaches"] if not b["expected"]}
    assert {n for n, c in policies.items() if c.find("failure") is not None} == unexplained

    (run,) = [c for (kind, _), c in cases.items() if kind == "harness.run"]
    assert "1 fault(s) not as expected" in run.find("failure").get("message")


def test_a_junit_file_in_a_folder_that_does_not_exist_is_refused_before_the_run(tmp_path):
    missing = tmp_path / "nowhere" / "harness.xml"
    assert_refused(canaryctl("harness", "run", "--no-record", "--duration", "1h", "--junit", str(missing)),
                   "--junit", "does not exist")
    assert not missing.parent.exists()
