"""A harness run as JUnit XML, so that a CI shows the leverage paths a run judged as tests.

One suite per run with a test case per policy of the stage, one per scheduled fault and one for
the run itself; the suite fails exactly when the run is not ok (`scoring.run_ok`), so the XML and
the exit status never disagree. A policy fails when it breached with no fault to explain it (its
verdicts' reasons are the failure's text); one the harness cannot judge, or whose final verdict is
not a pass, is skipped, never passed (fail closed). A fault fails when it did not end as scored
(`scoring.fault_ok`): not injected, not caught by a policy expected to catch it, or not ridden out.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from controller.harness.result import FaultResult, HarnessResult


def document(result: HarnessResult) -> ElementTree.ElementTree:
    suite = ElementTree.Element("testsuite", name=f"canary harness stage {result.stage}: {result.release}",
                                time=f"{result.wall_s:.3f}")
    for name in sorted({*result.verdicts, *result.not_judged}):
        _policy(suite, result, name)
    for fault in result.faults:
        _fault(suite, fault)
    _run(suite, result)
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", "0")
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    root = ElementTree.Element("testsuites")
    root.append(suite)
    ElementTree.indent(root)
    return ElementTree.ElementTree(root)


def write(result: HarnessResult, path: Path) -> None:
    """Write the run's JUnit XML to ``path`` whole (a temporary file renamed over it)."""
    folder = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            document(result).write(out, encoding="utf-8", xml_declaration=True)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _case(suite: ElementTree.Element, classname: str, name: str) -> ElementTree.Element:
    return ElementTree.SubElement(suite, "testcase", classname=classname, name=name, time="0")


def _policy(suite: ElementTree.Element, result: HarnessResult, name: str) -> None:
    case = _case(suite, f"harness.stage_{result.stage}.policy", name)
    unexpected = [b for b in result.unexpected_breaches if b.verdict.policy == name]
    caught = [b for b in result.breaches if b.fault is not None and b.verdict.policy == name]
    if unexpected:
        first = unexpected[0].verdict
        failure = ElementTree.SubElement(case, "failure", type=first.outcome.value,
                                         message=f"{name} {first.outcome.value}: {first.reason}".rstrip(": "))
        failure.text = "\n".join(f"{b.at:.0f} s into the run: {b.verdict.outcome.value} {b.verdict.reason} "
                                 f"(value {b.verdict.value}, threshold {b.verdict.threshold}) with no fault to "
                                 "explain it" for b in unexpected)
    elif name in result.not_judged:
        ElementTree.SubElement(case, "skipped", message=f"not judged by the harness: {result.not_judged[name]}")
    elif result.verdicts.get(name) != "pass":
        ElementTree.SubElement(case, "skipped", message=f"final verdict {result.verdicts.get(name)}: not a pass")
    if caught:
        out = ElementTree.SubElement(case, "system-out")
        out.text = "\n".join(f"caught {b.fault.text} at {b.at:.0f} s: {b.verdict.outcome.value} {b.verdict.reason}"
                             for b in caught)


def _fault(suite: ElementTree.Element, fault: FaultResult) -> None:
    case = _case(suite, "harness.fault", fault.fault.text)
    if fault.ok:
        out = ElementTree.SubElement(case, "system-out")
        out.text = (f"caught by {fault.caught_by} ({fault.caught_outcome}) after {fault.detect_s:.0f} s"
                    if fault.caught_by else "ridden out with no breach")
        return
    if fault.injected_at is None:
        why = "never injected"
    elif fault.must_be_caught and fault.caught_by is None:
        why = f"not caught (expected: {', '.join(fault.expected) or 'a policy of the stage'})"
    elif fault.must_be_caught:
        why = f"caught by {fault.caught_by}, not by an expected policy ({', '.join(fault.expected)})"
    else:
        why = "not ridden out: breaches while on: " + ", ".join(fault.breaches)
    failure = ElementTree.SubElement(case, "failure", type="fault", message=why)
    failure.text = fault.note or why


def _run(suite: ElementTree.Element, result: HarnessResult) -> None:
    case = _case(suite, "harness.run", f"{result.duration_s:g} s of stage {result.stage}")
    if result.ok:
        return
    why = []
    if result.simulated_s < result.duration_s:
        why.append(f"ran {result.simulated_s:g} s of {result.duration_s:g} s")
    if result.unexpected_breaches:
        why.append(f"{len(result.unexpected_breaches)} breach(es) no fault explains")
    why += [f"error: {error}" for error in result.errors]
    failed = sum(1 for f in result.faults if not f.ok)
    if failed:
        why.append(f"{failed} fault(s) not as expected")
    failure = ElementTree.SubElement(case, "failure", type="run", message="; ".join(why) or "not scored ok")
    failure.text = "\n".join(result.summary())
