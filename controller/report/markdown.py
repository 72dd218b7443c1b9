"""The report document rendered as Markdown: the checklist first, then the evidence behind it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from controller.report.checklist import BREACHED, MET, STAGE_TITLES

_MARK = {MET: "x", BREACHED: " ", "outside": "-"}


def render(doc: dict[str, Any], *, plots_linked: bool) -> str:
    """``plots_linked``: the SVG files sit next to the Markdown (in the archive); otherwise each plot
    is summarised in words and the archive is named as where to see it."""
    out: list[str] = []
    r = doc["rollout"]
    out += [f"# Stabilization report: rollout {r['id']}, release {r['release']}", "",
            f"Status **{r['status']}** at stage {r['stage']} of pipeline `{r['pipeline']}`; "
            f"baseline {r['baseline'] or 'none'}." + (f" Reason: {r['reason']}." if r["reason"] else ""),
            "", f"Created {_t(r['created_at'])}; evidence as of {_t(doc['as_of'])} (UTC).", ""]
    out += _table(["Release", "Roles", "Config snapshot", "Artifact", "Recorded by"],
                  ([x["version"], ", ".join(x["roles"]), f"`{x['config_sha256'][:12]}`",
                    f"`{x['artifact_sha256'][:12]}`", f"{x['created_by']}, {_t(x['created_at'])}"]
                   for x in doc["releases"]))
    out += _checklist(doc)
    out += _completion(doc)
    out += _breaches(doc)
    out += _dry_run(doc)
    out += _rollback(doc)
    out += _signoffs(doc)
    out += _anomalies(doc)
    out += _stages(doc)
    out += _plots(doc, plots_linked)
    out += _policies(doc)
    out += _timeline(doc)
    out += _evidence(doc)
    return "\n".join(out).rstrip() + "\n"


def _checklist(doc) -> list[str]:
    out = ["## Checklist", "",
           "Each line: its status (met, breached, open, not run, outside) and the evidence for it.", ""]
    stage = None
    for line in doc["checklist"]:
        if line["stage"] != stage:
            stage = line["stage"]
            out += ["", f"### {STAGE_TITLES.get(stage, stage)}", ""]
        mark = _MARK.get(line["status"], " ")
        out.append(f"- [{mark}] {line['text']} — **{line['status']}**")
        for item in line["evidence"]:
            out.append(f"  - {item}")
    return out + [""]


def _completion(doc) -> list[str]:
    done = doc["completion"]
    out = ["## Completion", ""]
    out.append("- Every stage signed off: **" + ("yes" if done["signed_off"] else "no") + "**")
    for stage in done["stages"]:
        if stage["required"]:
            out.append(f"  - stage {stage['stage']}: {len(stage['signed'])} of {stage['required']} signed"
                       + (f"; missing {', '.join(stage['missing'])}" if stage["missing"] else ""))
    archive = done["archive"]
    if archive.get("path") is None:
        out.append(f"- Archive: {archive['note']}")
    else:
        state = ("exists and verifies" if archive["verifies"] else
                 "does not verify: " + "; ".join(archive["problems"]) if archive["exists"] else "does not exist")
        out.append(f"- Archive `{archive['path']}`: **{state}**")
    return out + [""]


def _breaches(doc) -> list[str]:
    out = ["## Breaches", ""]
    if not doc["breaches"]:
        return out + ["No policy breached.", ""]
    out += _table(["Time", "Policy", "Group", "Value", "Condition (threshold)", "Window", "Action", "Reason"],
                  ([_t(b["at"]) + (" (rolled back)" if b["triggered_rollback"] else ""), b["policy"],
                    _labels(b["group"]), _n(b["value"]), _cond(b), _s(b["window_seconds"]), b["action"] or "",
                    b["reason"]] for b in doc["breaches"]))
    return out


def _dry_run(doc) -> list[str]:
    """What a dry run would have done: none of it was acted on."""
    dry = doc.get("dry_run")
    if not dry:
        return []
    out = ["## Dry run", ""]
    if dry["stages"]:
        out.append(f"Stage {', '.join(dry['stages'])} ran as a dry run: judged live, no verdict acted on.")
    decision = dry["decision"]
    if decision:
        evidence = (f" (`{decision['policy']}`: {_n(decision['value'])} vs {_n(decision['threshold'])})"
                    if decision["policy"] else "")
        out.append(f"Decision: **would have {decision['would']}** at {_t(decision['at'])}{evidence}: "
                   f"{decision['reason']}. Not acted on.")
    elif dry["stages"]:
        out.append("No decision yet: the stage is still judged.")
    out.append("")
    if dry["policies"]:
        out += _table(["Policy", "Would have", "Times", "First", "Last", "Reason"],
                      ([p["policy"], p["would_have"], p["count"], _t(p["first"]), _t(p["last"]), p["reason"]]
                       for p in dry["policies"]))
    return out


def _rollback(doc) -> list[str]:
    rb = doc["rollback"]
    out = ["## Rollback", ""]
    if rb is None:
        return out + ["The rollout was not rolled back.", ""]
    out.append(f"Trigger **{rb['trigger']}**: {rb['reason'] or ''}. Planned at {_t(rb['planned_at'])}; "
               f"plan {rb['state']}.")
    if rb["breach_at"]:
        out.append(f"Breach of `{rb['breach_policy']}` at {_t(rb['breach_at'])}; account safe (release stopped, "
                   f"orders canceled, leverage restored) after {_s(rb['breach_to_safe_seconds'])}, previous "
                   f"release verified after {_s(rb['breach_to_done_seconds'])} (clock seconds).")
    out.append("")
    out += _table(["#", "Step", "Account", "State", "Attempts", "Started", "Finished", "Took", "After breach",
                   "Result / error"],
                  ([s["position"], s["name"], s["account"], s["state"], s["attempts"], _t(s["started_at"]),
                    _t(s["finished_at"]), _s(s["seconds"]), _s(s["since_breach_seconds"]),
                    s["error"] or _compact(s["result"])] for s in rb["steps"]))
    return out


def _signer(s: dict) -> str:
    """Who signed, and the operating-system user behind the name where they differ; a four-eyes
    stage lists its distinct signers."""
    if not s["by"]:
        return "**not signed**"
    who = s["by"] if not s.get("os_user") or s["os_user"] == s["by"] else f"{s['by']} (os user {s['os_user']})"
    if s.get("signers") is not None:
        who += f"; signers: {', '.join(s['signers']) or 'none'}"
    return who


def _signoffs(doc) -> list[str]:
    out = ["## Sign-offs", ""]
    if not doc["signoffs"]:
        out += ["The pipeline asks for no sign-off.", ""]
    else:
        out += _table(["Stage", "Item", "Signed by", "At", "Command"],
                      ([s["stage"], s["item"], _signer(s), _t(s["at"]), s["command"] or ""]
                       for s in doc["signoffs"]))
    commands = doc["commands"]
    if commands:
        out += ["Operator commands for this rollout:", ""]
        out += _table(["#", "Kind", "Actor", "Given", "Acknowledged", "Outcome", "Reason", "Message"],
                      ([c["id"], c["kind"], c["actor"], _t(c["created_at"]), _t(c["acked_at"]), c["outcome"] or
                        "pending", c["reason"] or "", c["message"] or ""] for c in commands))
    return out


def _anomalies(doc) -> list[str]:
    out = ["## Anomalies and resolutions", ""]
    if not doc.get("anomalies"):
        return out + ["No anomaly was logged (`canaryctl note ROLLOUT --anomaly TEXT`).", ""]
    out += _table(["#", "Stage", "Noted by", "At", "Anomaly", "Resolved by", "At", "Resolution"],
                  ([a["id"], a["stage"] or "", a["by"], _t(a["at"]), a["text"],
                    a["resolution"]["by"] if a["resolution"] else "**open**",
                    _t(a["resolution"]["at"]) if a["resolution"] else "",
                    a["resolution"]["text"] if a["resolution"] else ""] for a in doc["anomalies"]))
    return out


def _stages(doc) -> list[str]:
    out = ["## Stages", ""]
    return out + _table(["Stage", "Account", "Capital cap", "Duration", "Started", "Finished", "Ran", "Outcome"],
                        ([s["name"], f"{s['environment']}/{s['account']}", s["capital_cap"] or "",
                          _s(s["duration_seconds"]), _t(s["started_at"]) or "not reached", _t(s["finished_at"]),
                          _s(s["ran_seconds"]), s["outcome"] or ("running" if s["started_at"] else "")]
                         for s in doc["stages"])) + _toggle_line(doc)


def _toggle_line(doc) -> list[str]:
    """The release's feature toggle, stage by stage, as the placements set it (none declared: nothing)."""
    toggle = doc.get("toggle")
    if not toggle:
        return []
    states = "; ".join(f"{s['name']} {s['toggle']}" for s in doc["stages"])
    form = (f"config key `{toggle['config_key']}`" if toggle.get("form", "config_key") == "config_key"
            else f"endpoint `POST {toggle['endpoint']}`")
    return [f"Release {toggle['release']}, feature toggle ({form}): {states}.", ""]


def _plots(doc, linked: bool) -> list[str]:
    out = ["## Plots", ""]
    for plot in doc["plots"]:
        out += [f"### {plot['title']}", ""]
        if plot["note"]:
            out += [plot["note"] + ".", ""]
        if not plot["series"]:
            continue
        if plot["file"] is None:
            pass  # values, but nothing drew them (no matplotlib): the note says so
        elif linked:
            out += [f"![{plot['title']}]({plot['file']})", ""]
        else:
            out += [f"Drawn in the archive as `{plot['file']}` (`canaryctl report ROLLOUT --archive FILE`). "
                    "The values plotted:", ""]
        out += _table(["Series", "Points", "First", "Last", "Min", "Max", plot["threshold_label"]],
                      ([s["label"], len(s["points"]), _n(s["points"][0][1]), _n(s["points"][-1][1]),
                        _n(min(p[1] for p in s["points"])), _n(max(p[1] for p in s["points"])),
                        _n(s["threshold"][-1][1]) if s["threshold"] else ""] for s in plot["series"]))
    return out


def _policies(doc) -> list[str]:
    out = ["## Policies: verdict history", "",
           "A policy's verdict is stored when it changes, with the value measured then.", ""]
    for p in doc["policies"]:
        out += [f"### `{p['name']}`: {p['status']}", ""]
        what = (f"{p['source']} `{p['metric']}`, {p['aggregate']} over {_s(p['window_seconds'])}, "
                f"`{p['condition']}`, on breach {p['on_breach']} ({p['severity']})") if p["defined"] else \
            f"`{p['condition']}` (the current policy files no longer define this policy)"
        out += [f"Stage {p['stage']}: {what}.", ""]
        if p["checklist"]:
            out += [f"Checklist: {p['checklist']}", ""]
        out += _table(["Time", "Group", "Verdict", "Value", "Threshold", "Window", "Samples", "Reason"],
                      ([_t(v["at"]), _labels(v["group"]), v["outcome"], _n(v["value"]), v["threshold"] or "",
                        _s(v["window_seconds"]), v["samples"], v["reason"]] for v in p["history"]))
    return out


def _timeline(doc) -> list[str]:
    out = ["## Timeline (audit excerpt)", ""]
    return out + _table(["Seq", "Time", "Actor", "Event"],
                        ([e["seq"], _t(e["at"]), e["actor"], e["text"]] for e in doc["timeline"]))


def _evidence(doc) -> list[str]:
    ev = doc["evidence"]
    a = ev["audit_excerpt"]
    out = ["## Evidence", ""]
    if a["events"]:
        out.append(f"- Audit excerpt `{a['file']}`: {a['events']} events, seq {a['first_seq']} to {a['last_seq']}, "
                   f"chain {a['chain']}; it follows hash `{a['first_prev_hash']}` and ends at `{a['last_hash']}` "
                   "(compare with `canaryctl audit query --json`).")
    else:
        out.append("- Audit excerpt: the chain holds no event of this rollout.")
    out.append(f"- Verdict values `{ev['metrics']['file']}`: {ev['metrics']['verdict_changes']} verdict changes.")
    for c in ev["configs"]:
        out.append(f"- Config snapshot of {c['release']}: `{c['file']}`.")
    for log in ev["logs"]:
        out.append(f"- Bot log of {log['instance']}: " + (f"`{log['file']}` ({log['bytes']} bytes, every run of "
                                                            "the instance, appended)" if log["file"]
                                                            else log["note"]))
    for f in ev["policy_files"]:
        out.append(f"- Policy file of stage {f['stage']}: {f['path'] or f['file']} "
                   + (f"sha256 `{f['sha256']}`" if f["sha256"] else f"({f['error']})"))
    out += [f"- {note}" for note in ev["notes"]]
    return out + [""]


# ---------------------------------------------------------------- cells

def _table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    rows = list(rows)
    if not rows:
        return ["(none)", ""]
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out + [""]


def _cell(value: Any) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _t(ts: str | None) -> str:
    """ISO UTC to a short readable form (milliseconds)."""
    return "" if not ts else ts[:23].replace("T", " ")


def _n(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _s(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:g} s"


def _labels(group: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items())


def _cond(b: dict) -> str:
    return f"{b['condition']} ({b['threshold']})" if b["threshold"] is not None else (b["condition"] or "")


def _compact(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_compact(v)}" for k, v in value.items())
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)
