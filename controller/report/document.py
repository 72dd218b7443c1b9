"""The report as one JSON document, computed from the evidence: what `--format json` prints, what
the Markdown renders, what the archive stores as ``report.json``."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from controller.report import checklist, plots
from controller.store import anomalies
from controller.report.evidence import Evidence, VerdictRow
from controller.store.audit_row import AuditRow

FORMAT = "canary-report/1"

# The archive's members (paths under its one top-level folder).
MANIFEST = "MANIFEST.sha256"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"
AUDIT_EXCERPT = "audit/excerpt.jsonl"
VERDICTS = "metrics/verdicts.jsonl"

_RANK = {"fail": 3, "nodata": 2, "inconclusive": 1, "pass": 0}
_STATUS = {"fail": "breached", "nodata": "nodata", "inconclusive": "inconclusive", "pass": "passing"}


def iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(UTC).isoformat(timespec="microseconds")


def when(ts: datetime | str | None) -> str | None:
    """A time as people read it in a sentence: UTC to the millisecond."""
    if ts is None:
        return None
    ts = datetime.fromisoformat(ts) if isinstance(ts, str) else ts
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "_"


def config_member(sha256: str) -> str:
    return f"configs/{sha256}.json"


def release_member(version: str) -> str:
    return f"releases/{safe_name(version)}.json"


def log_member(instance: str) -> str:
    return f"logs/{safe_name(instance)}/output.log"


def build(ev: Evidence, *, archived: bool, archive_check: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The whole report. ``archived``: it is being written into an archive (the checklist's
    "archived with run artifacts" line is then met); ``archive_check``: an existing archive of it,
    checked (`archive.check_of`), for the completion section."""
    policies = _policies(ev)
    breaches = _breaches(ev)
    rollback = _rollback(ev, breaches)
    signoffs = _signoffs(ev)
    stages = _stages(ev)
    baseline = next((r for r in ev.releases if "baseline" in r.roles), None)
    promoted = next((a.ts for a in ev.audit if a.kind == "rollout.transition" and a.subject == f"rollout:{ev.id}"
                     and a.data.get("to") == "promoted"), None)
    facts = checklist.Facts(
        pipeline=ev.pipeline.name,
        stages={s["name"]: checklist.StageFacts(s["name"], when(s["started_at"]), when(s["finished_at"]), s["outcome"],
                                                s["ran_seconds"], s["duration_seconds"], s["account"],
                                                s["capital_cap"]) for s in stages},
        policies=[checklist.PolicyFacts(p["name"], p["checklist"], p["stage"], p["status"], p["detail"], p["metric"],
                                        p["aggregate"], p["condition"]) for p in policies],
        signoffs={f"{s['stage']}/{s['item']}": (s["by"], when(s["at"])) for s in signoffs if s["by"]},
        required_signoffs=[f"{s['stage']}/{s['item']}" for s in signoffs],
        release=ev.release, status=ev.status.value, promoted_at=when(promoted),
        baseline=ev.baseline, baseline_config=baseline.info.config_sha256[:12] if baseline else None,
        rollback=_rollback_line(rollback), archived=archived, archive_check=archive_check)
    return {
        "format": FORMAT,
        "as_of": iso(ev.as_of),
        "rollout": {"id": ev.id, "release": ev.release, "baseline": ev.baseline, "status": ev.status.value,
                    "stage": ev.stage.name, "pipeline": ev.pipeline.name, "reason": ev.state.reason,
                    "created_at": iso(ev.created_at), "updated_at": iso(ev.updated_at)},
        "stages": stages,
        "toggle": _toggle(ev),
        "releases": [{**r.info.to_json(), "created_at": iso(r.info.created_at), "roles": list(r.roles),
                      "config_file": config_member(r.info.config_sha256)} for r in ev.releases],
        "checklist": checklist.fill(facts),
        "breaches": breaches,
        "dry_run": _dry_run(ev),
        "rollback": rollback,
        "signoffs": signoffs,
        "completion": _completion(ev, signoffs, archived, archive_check),
        "anomalies": _anomalies(ev),
        "commands": [{**c.to_json(), "created_at": iso(c.created_at), "acked_at": iso(c.acked_at)}
                     for c in ev.commands],
        "timeline": [_event(a) for a in ev.audit],
        "policies": policies,
        "plots": plots.series(ev.verdicts, ev.policies, (v.policy for v in ev.verdicts), start=ev.created_at,
                              until=ev.as_of),
        "evidence": _evidence(ev),
    }


# ---------------------------------------------------------------- stages and policies

def _toggle_states(ev: Evidence) -> dict[str, str] | None:
    """Per stage, the candidate's feature toggle as its placement set it: ``on`` (config key: the
    snapshot placed had the key true; endpoint: the stage turned it on and the placement, which
    fails when the bot does not say yes, ran), ``not on`` (an endpoint the bot did not turn on),
    ``off``, ``not placed``; None: no toggle declared."""
    candidate = next((r.info for r in ev.releases if r.info.version == ev.release), None)
    declared = candidate.manifest.get("toggle") if candidate else None
    if not declared:
        return None
    states = {}
    for stage in ev.pipeline.stages:
        placed = [d for d in ev.deployments if d.release == ev.release
                  and (d.environment, d.account) == (stage.environment, stage.account)]
        if not placed:
            states[stage.name] = "not placed"
        elif declared.get("config_key"):
            states[stage.name] = "on" if placed[-1].config_sha256 != candidate.config_sha256 else "off"
        else:
            states[stage.name] = ("off" if not stage.toggle else "on" if placed[-1].state == "running"
                                  else "not on")
    return states


def _stages(ev: Evidence) -> list[dict]:
    out = []
    toggles = _toggle_states(ev)
    for stage in ev.pipeline.stages:
        runs = [r for r in ev.stage_runs if r.stage == stage.name]
        run = runs[-1] if runs else None
        ended = (run.finished_at or ev.as_of) if run else None
        out.append({"name": stage.name, "title": stage.title, "environment": stage.environment,
                    "account": stage.account, "duration_seconds": stage.duration,
                    "capital_cap": None if stage.capital_cap is None else str(stage.capital_cap),
                    "policies": stage.policies, "signoffs": stage.signoff_items,
                    "started_at": iso(run.started_at) if run else None,
                    "finished_at": iso(run.finished_at) if run else None,
                    "outcome": run.outcome if run else None, "dry_run": stage.dry_run,
                    "release": ev.release, "toggle": toggles[stage.name] if toggles else None,
                    "ran_seconds": round((ended - run.started_at).total_seconds(), 3) if run else None})
    return out


def _toggle(ev: Evidence) -> dict | None:
    """The feature toggle the candidate's manifest declares, or None."""
    candidate = next((r.info for r in ev.releases if r.info.version == ev.release), None)
    declared = candidate.manifest.get("toggle") if candidate else None
    if not declared:
        return None
    form = "config_key" if declared.get("config_key") else "endpoint"
    return {"release": ev.release, "form": form, form: declared[form]}


def _dry_run(ev: Evidence) -> dict | None:
    """What the rollout's dry-run stage (or its dry-run policies) would have done: decisions, never acted on."""
    stages = [s.name for s in ev.pipeline.stages if s.dry_run]
    would = ev.state.would_have
    if not stages and not ev.state.dry_run:
        return None
    return {"stages": stages, "acted_on": False,
            "decision": None if would is None else {**would.to_json(), "at": iso(datetime.fromtimestamp(would.at, UTC))},
            "policies": [{"policy": name, "would_have": d.would, "reason": d.reason, "count": d.count,
                          "first": iso(datetime.fromtimestamp(d.first, UTC)),
                          "last": iso(datetime.fromtimestamp(d.last, UTC))}
                         for name, d in sorted(ev.state.dry_run.items())]}


def _latest_by_group(history: list[VerdictRow]) -> list[VerdictRow]:
    latest: dict[tuple, VerdictRow] = {}
    for v in history:
        latest[v.group] = v
    grouped = [v for g, v in latest.items() if g]
    if grouped and () in latest and latest[()].id < max(v.id for v in grouped):
        del latest[()]  # the policy's first, ungrouped verdict, since split by symbol or bucket
    return sorted(latest.values(), key=lambda v: v.group)


def _policies(ev: Evidence) -> list[dict]:
    histories: dict[str, list[VerdictRow]] = {}
    for v in ev.verdicts:
        histories.setdefault(v.policy, []).append(v)
    out = []
    for name, history in histories.items():
        definition = ev.policies.get(name)
        latest = _latest_by_group(history)
        fails = [v for v in history if v.outcome == "fail"]
        worst = max(latest, key=lambda v: _RANK.get(v.outcome, 0))
        status = "breached" if fails else _STATUS.get(worst.outcome, worst.outcome)
        if fails:
            first = fails[0]
            detail = f"{_group(first)}failed at {when(first.at)}: {_measure(first)}"
        else:
            detail = "; ".join(f"{_group(v)}{v.outcome} {_measure(v)}" for v in latest)
        out.append({
            "name": name, "stage": history[-1].stage, "defined": definition is not None,
            "checklist": definition.checklist if definition else None,
            "source": definition.source if definition else None, "metric": definition.metric if definition else None,
            "aggregate": definition.aggregate if definition else None,
            "condition": history[-1].condition or (definition.condition if definition else None),
            "window_seconds": history[-1].window, "on_breach": definition.on_breach if definition else None,
            "severity": definition.severity if definition else None,
            "status": status, "detail": detail, "changes": len(history),
            "latest": [_verdict(v) for v in latest],
            "history": [_verdict(v) for v in history],
        })
    return out


def _group(v: VerdictRow) -> str:
    return "".join(f"{k}={val} " for k, val in v.group)


def _measure(v: VerdictRow) -> str:
    if v.value is None:
        return f"(no value: {v.reason})" if v.reason else "(no value)"
    text = f"{v.value:.6g}"
    if v.condition:
        text += f" vs `{v.condition}`" + (f" (threshold {v.threshold})" if v.threshold is not None else "")
    window = f"window {v.window:g} s, " if v.window is not None else ""
    return f"{text}; {window}samples {v.samples}"


def _verdict(v: VerdictRow) -> dict:
    return {"id": v.id, "policy": v.policy, "stage": v.stage, "at": iso(v.at), "group": dict(v.group),
            "outcome": v.outcome, "value": number(v.value), "threshold": v.threshold, "condition": v.condition,
            "window_seconds": v.window, "samples": v.samples, "reason": v.reason, "action": v.action}


# ---------------------------------------------------------------- breaches, rollback, sign-offs

def _breaches(ev: Evidence) -> list[dict]:
    planned = next((a for a in ev.audit if a.kind == "rollback.planned"), None)
    reason = (planned.data.get("reason") or "") if planned else ""
    out = [{**_verdict(v), "triggered_rollback": False} for v in ev.verdicts
           if v.outcome == "fail" or (v.outcome == "nodata" and v.action == "rollback")]
    if planned is not None:  # the plan names the policy whose breach started it (older plans: in the reason)
        named = planned.data.get("policy")
        before = [b for b in out if (b["policy"] == named if named else reason.startswith(f"{b['policy']} "))
                  and b["at"] <= iso(planned.ts)]
        if before:
            before[-1]["triggered_rollback"] = True
    return out


def _rollback(ev: Evidence, breaches: list[dict]) -> dict | None:
    planned = next((a for a in ev.audit if a.kind == "rollback.planned"), None)
    if planned is None and not ev.steps:
        return None
    trigger = next((b for b in breaches if b["triggered_rollback"]), None)
    start = datetime.fromisoformat(trigger["at"]) if trigger else (planned.ts if planned else None)

    def since(ts: datetime | None) -> float | None:
        return round((ts - start).total_seconds(), 3) if ts and start else None

    steps = [{"position": s.position, "name": s.name, "account": s.detail.get("account"), "state": s.state,
              "attempts": s.attempts, "started_at": iso(s.started_at), "finished_at": iso(s.finished_at),
              "seconds": round((s.finished_at - s.started_at).total_seconds(), 3)
              if s.started_at and s.finished_at else None,
              "since_breach_seconds": since(s.finished_at), "result": s.detail.get("result"), "error": s.error}
             for s in ev.steps]
    done = bool(ev.steps) and all(s.state == "done" for s in ev.steps)
    safe = [s.finished_at for s in ev.steps if s.name == "restore_leverage" and s.state == "done"]
    safe_at = max(safe) if safe and len(safe) == sum(s.name == "restore_leverage" for s in ev.steps) else None
    done_at = max(s.finished_at for s in ev.steps) if done else None
    data = planned.data if planned else {}
    return {"trigger": data.get("trigger"), "reason": data.get("reason"), "planned_at": iso(planned.ts)
            if planned else None, "breach_policy": trigger["policy"] if trigger else None,
            "breach_at": trigger["at"] if trigger else None, "steps": steps,
            "state": "done" if done else ("failed" if any(s.state == "failed" for s in ev.steps) else "incomplete"),
            "safe_at": iso(safe_at), "done_at": iso(done_at),
            "breach_to_safe_seconds": since(safe_at), "breach_to_done_seconds": since(done_at)}


def _rollback_line(rollback: dict | None) -> str | None:
    if rollback is None:
        return None
    states = ", ".join(f"{s['name']} {s['state']}" for s in rollback["steps"])
    return f"rollback plan of {len(rollback['steps'])} steps ({rollback['state']}): {states}"


def _signoffs(ev: Evidence) -> list[dict]:
    """Every sign-off the pipeline asks for: who signed it (from the rollout's state), the
    operating-system user that ran the command, when (the daemon's acknowledgement of that
    person's accepted signoff command), and for a four-eyes stage every distinct user who signed."""
    out = []
    signed = ev.state.signoffs
    for stage in ev.pipeline.stages:
        for item in stage.signoff_items:
            by = signed.get(f"{stage.name}/{item}")
            # A recurring sign-off's period may have been signed by its name alone (the current period).
            named = {item, item.split("/", 1)[0]}
            command = next((c for c in ev.commands if by and c.kind == "signoff" and c.actor == by
                            and c.outcome == "accepted" and c.args.get("stage") == stage.name
                            and (not c.args.get("items") or named & set(c.args["items"]))), None)
            out.append({"stage": stage.name, "item": item, "by": by,
                        "os_user": command.args.get("os_user") if command else None,
                        "at": iso(command.acked_at) if command else None,
                        "command": command.id if command else None,
                        "signers": list(ev.state.signers.get(stage.name, ())) if stage.signers > 1 else None})
    return out


def _completion(ev: Evidence, signoffs: list[dict], archived: bool,
                archive_check: Mapping[str, Any] | None) -> dict[str, Any]:
    """The checklist's completion criteria: is every stage signed off (each stage with what it still
    lacks), and does an archive of this report exist and verify."""
    stages = []
    for stage in ev.pipeline.stages:
        items = [s for s in signoffs if s["stage"] == stage.name]
        stages.append({"stage": stage.name, "required": len(items),
                       "signed": [s["item"] for s in items if s["by"]],
                       "missing": [s["item"] for s in items if not s["by"]]})
    if archived:
        archive = {"path": None, "exists": True, "verifies": None,
                   "note": "this report is the archive's own: `canaryctl report verify FILE` checks the file"}
    elif archive_check is not None:
        archive = dict(archive_check)
    else:
        archive = {"path": None, "exists": None, "verifies": None,
                   "note": "no archive named: `canaryctl report ROLLOUT --archive FILE` writes one, "
                           "`--check-archive FILE` checks one here"}
    return {"signed_off": all(not s["missing"] for s in stages), "stages": stages, "archive": archive}


def _anomalies(ev: Evidence) -> list[dict]:
    """The anomaly log (`canaryctl note`), each anomaly with its resolution, from the audit excerpt."""
    subject = f"rollout:{ev.id}"
    events = ((a.seq, a.ts, a.actor, a.kind, a.data) for a in ev.audit
              if a.subject == subject and a.kind in anomalies.KINDS)
    return [{**a.to_json(), "at": iso(a.at),
             "resolution": None if a.resolution is None else {**a.resolution.to_json(), "at": iso(a.resolution.at)}}
            for a in anomalies.fold(ev.id, events)]


# ---------------------------------------------------------------- the audit excerpt as a timeline

def _event(a: AuditRow) -> dict:
    return {"seq": a.seq, "at": iso(a.ts), "actor": a.actor, "kind": a.kind, "subject": a.subject,
            "text": describe(a)}


def describe(a: AuditRow) -> str:
    """One line a person reads for an audit event."""
    d = a.data
    match a.kind:
        case "rollout.created":
            return f"rollout {d.get('rollout')} of {a.release} created (pipeline {d.get('pipeline')}: " \
                   f"{' -> '.join(d.get('stages', []))})"
        case "rollout.transition":
            why = f": {d['reason']}" if d.get("reason") else ""
            return f"{d.get('from')} -> {d.get('to')} (stage {d.get('stage')}){why}"
        case "deploy.placed":
            return f"{a.release} placed on {a.subject.removeprefix('account:')} (deployment {d.get('deployment')})"
        case "deploy.stopped":
            return f"{a.release} stopped on {a.subject.removeprefix('account:')} (deployment {d.get('deployment')})" \
                   + (f": {d['reason']}" if d.get("reason") else "")
        case "rollback.planned":
            return f"rollback planned ({d.get('trigger')}): {len(d.get('steps', []))} steps; {d.get('reason')}"
        case "gate.spoiled":
            return f"gate of stage {d.get('stage')} spoiled by {d.get('policy')}: {d.get('reason')}"
        case "rollout.would_roll_back" | "rollout.would_promote" | "rollout.would_hold":
            return f"dry run of stage {d.get('stage')}: would have {d.get('would')} (not acted on): {d.get('reason')}"
        case "policy.dry_run_breach":
            return f"dry run: {d.get('policy')} would have {d.get('would_have')} (not acted on): {d.get('reason')}"
        case "rollout.forced_promote":
            return f"stage {d.get('stage')} promoted by force: {d.get('reason')}"
        case anomalies.NOTED:
            return f"anomaly {a.seq} noted at stage {d.get('stage')}: {d.get('text')}"
        case anomalies.RESOLVED:
            return f"anomaly {d.get('anomaly')} resolved: {d.get('text')}"
    if a.kind.startswith("rollback.step."):
        error = f": {d['error']}" if d.get("error") else ""
        return f"step {d.get('position')} {d.get('step')} on {d.get('account')} {a.kind.rsplit('.', 1)[1]} " \
               f"(attempt {d.get('attempts')}){error}"
    if a.kind.startswith("command."):
        verdict = "accepted" if d.get("accepted") else "refused"
        return f"{a.actor}: {a.kind.removeprefix('command.')} {verdict}: {d.get('message')}"
    return f"{a.kind} {a.subject}"


# ---------------------------------------------------------------- what the evidence is and is not

def check_chain(lines: Iterable[dict]) -> tuple[int, str | None]:
    """Check an audit excerpt (events as JSON, payload as its stored text): every event's hash covers
    its content and the hash before it, and the sequence has no gap. Returns (events, problem)."""
    from controller.store.audit import event_hash

    count, previous = 0, None
    for event in lines:
        count += 1
        seq = event.get("seq")
        try:
            if not isinstance(seq, int):
                raise TypeError("its seq is not a number")
            recomputed = event_hash(event["prev_hash"], seq=seq, ts=datetime.fromisoformat(event["ts"]),
                                    actor=event["actor"], kind=event["kind"], subject=event["subject"],
                                    release=event["release"], symbol=event["symbol"], payload=event["payload"])
        except (KeyError, TypeError, ValueError) as exc:
            return count, f"event {count} (seq {seq}) is malformed: {exc}"
        if previous is not None and seq != previous["seq"] + 1:
            return count, f"seq {seq}, which follows seq {previous['seq']}: events are missing or reordered"
        if previous is not None and event["prev_hash"] != previous["hash"]:
            return count, f"seq {seq}: its previous-hash does not match the event before it"
        if recomputed != event["hash"]:
            return count, f"seq {seq}: its content does not match its hash (edited)"
        previous = event
    return count, None


def audit_line(a: AuditRow) -> dict:
    return {"seq": a.seq, "ts": iso(a.ts), "actor": a.actor, "kind": a.kind, "subject": a.subject,
            "release": a.release, "symbol": a.symbol, "payload": a.payload, "prev_hash": a.prev_hash,
            "hash": a.hash}


def _evidence(ev: Evidence) -> dict:
    events, problem = check_chain(audit_line(a) for a in ev.audit)
    notes = [
        "Metrics: the store keeps a policy's verdict each time it changes, with the value, threshold, window "
        f"and sample count measured then ({VERDICTS}); the daemon keeps no raw metric scrapes or exchange "
        "snapshots, so none are archived, and values between two verdict changes are not stored.",
        "Policies: the store keeps no copy of the policy files a rollout was judged by; checklist lines and "
        "policy definitions come from the files as they are now (listed with their SHA-256).",
        "Times are the daemon's clock, in UTC; bot logs carry the host's wall clock (the two differ when "
        "the daemon runs the simulator on an accelerated clock).",
    ]
    undefined = sorted({v.policy for v in ev.verdicts} - set(ev.policies))
    if undefined:
        notes.append("Verdicts of policies the current files no longer define (checklist line unknown): "
                     + ", ".join(undefined))
    return {
        "audit_excerpt": {"file": AUDIT_EXCERPT, "events": events,
                          "first_seq": ev.audit[0].seq if ev.audit else None,
                          "last_seq": ev.audit[-1].seq if ev.audit else None,
                          "first_prev_hash": ev.audit[0].prev_hash if ev.audit else None,
                          "last_hash": ev.audit[-1].hash if ev.audit else None,
                          "chain": "consistent" if problem is None else f"broken: {problem}"},
        "metrics": {"file": VERDICTS, "verdict_changes": len(ev.verdicts), "raw_scrapes": None},
        "configs": [{"release": r.info.version, "sha256": r.info.config_sha256,
                     "file": config_member(r.info.config_sha256)} for r in ev.releases],
        "logs": [{"instance": log.instance, "source": str(log.path) if log.size is not None else None,
                  "bytes": log.size, "file": log_member(log.instance) if log.size is not None else None,
                  "note": log.note} for log in ev.logs],
        "policy_files": [{"stage": f.stage, "file": f.name, "path": f.path, "sha256": f.sha256, "error": f.error}
                         for f in ev.policy_files],
        "notes": notes,
    }
