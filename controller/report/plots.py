"""The report's figures: which policies' measured values each one draws, and the drawing (SVG).

The values are those of the verdict history (the store keeps a value when a policy's verdict
changes), plotted against the policy's threshold. matplotlib is an optional extra, imported only
when a figure is drawn, so that the CLI starts light; without it a figure with data is not drawn
and its note says how to get it. Its SVG output is made deterministic (fixed ids, no date).
"""

from __future__ import annotations

import importlib.util
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from controller.report.evidence import PolicyDef, VerdictRow

QUANTILES = frozenset({"p50", "p90", "p95", "p99"})
LEVERAGE_METRICS = frozenset({"strategy_leverage_applied", "strategy_leverage_configured", "leverage_applied"})
INSTALL = "pip install 'canary-controller[plots]'"
"""What gives the report its figures: matplotlib, through the package's ``plots`` extra."""


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
    unit: str
    measures: str
    """What a matching policy measures, for the note when none does."""
    threshold_label: str
    matches: Callable[[PolicyDef], bool]


FIGURES = (
    Figure("latency", "Latency quantiles over time", "seconds", "a latency quantile (p50/p90/p95/p99 of a "
           "*_latency_seconds metric)", "limit", lambda p: p.metric.endswith("_latency_seconds")
           and p.aggregate in QUANTILES),
    Figure("leverage", "Leverage: applied vs configured", "leverage", "the applied or configured leverage "
           "(strategy_leverage_applied / _configured)", "configured (config snapshot)",
           lambda p: p.metric in LEVERAGE_METRICS),
    Figure("buckets", "Bucket usage vs allocation (+2 % headroom)", "share of capital",
           "bucket usage (strategy_bucket_usage_ratio)", "allocation x 1.02",
           lambda p: p.metric == "strategy_bucket_usage_ratio"),
)


def series(verdicts: Iterable[VerdictRow], policies: dict[str, PolicyDef], judged: Iterable[str], *,
           start: datetime, until: datetime) -> list[dict]:
    """Each figure's data as JSON: one series per policy and label group, or a note saying why none.

    ``judged``: every policy name the rollout has verdicts of (a figure says which of them, if
    any, it would have drawn)."""
    verdicts = list(verdicts)
    judged = sorted(set(judged))
    out = []
    for figure in FIGURES:
        names = [n for n in judged if n in policies and figure.matches(policies[n])]
        lines: dict[tuple, dict] = {}
        for v in verdicts:
            if v.policy not in names or v.value is None or not math.isfinite(v.value):
                continue
            key = (v.policy, v.group)
            line = lines.setdefault(key, {"policy": v.policy, "group": dict(v.group),
                                          "label": v.policy + "".join(f" {k}={val}" for k, val in v.group),
                                          "points": [], "threshold": []})
            t = round((v.at - start).total_seconds(), 3)
            line["points"].append([t, v.value])
            threshold = _number(v.threshold)
            if threshold is not None:
                line["threshold"].append([t, threshold])
        note = None
        if not names:
            note = f"no policy of this rollout measures {figure.measures}: nothing to draw"
        elif not lines:
            note = f"no verdict of {', '.join(names)} carried a measured value (no data yet): nothing to draw"
        elif not can_draw():
            note = f"not drawn: plots need matplotlib ({INSTALL}); its values follow"
        out.append({"name": figure.name, "title": figure.title, "unit": figure.unit,
                    "x": "seconds since the rollout was created", "threshold_label": figure.threshold_label,
                    "until": round((until - start).total_seconds(), 3),
                    "policies": names, "series": [lines[k] for k in sorted(lines)],
                    "file": f"plots/{figure.name}.svg" if lines and note is None else None, "note": note})
    return out


def can_draw() -> bool:
    """Whether matplotlib is installed: looked up, not imported (importing it takes a second)."""
    return importlib.util.find_spec("matplotlib") is not None


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def draw(plot: dict) -> bytes:
    """One figure as SVG bytes; the same data gives the same bytes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure as MplFigure

    settings = {"svg.hashsalt": "canary-report", "svg.fonttype": "none", "font.size": 9}
    with matplotlib.rc_context(settings):
        fig = MplFigure(figsize=(8, 3.6), layout="constrained")
        ax = fig.add_subplot()
        for n, line in enumerate(plot["series"]):
            colour = f"C{n % 10}"
            xs, ys = zip(*line["points"], strict=True)
            # Measured only where the verdict changed: markers, thinly joined, nothing invented after.
            ax.plot(xs, ys, marker="o", markersize=4, linewidth=0.6, color=colour, label=line["label"])
            if line["threshold"]:  # a threshold holds until it changes: drawn on to the evidence's end
                held = [*line["threshold"], [plot["until"], line["threshold"][-1][1]]]
                tx, ty = zip(*held, strict=True)
                ax.step(tx, ty, where="post", linestyle="--", linewidth=1, color=colour,
                        label=f"{plot['threshold_label']}: {line['label']}")
        ax.set_xlim(0, max(plot["until"], *(p[0] for s in plot["series"] for p in s["points"])) or 1)
        ax.set_title(f"{plot['title']} (values at verdict changes)")
        ax.set_xlabel(plot["x"])
        ax.set_ylabel(plot["unit"])
        ax.grid(True, linewidth=0.3)
        ax.legend(fontsize=7, loc="best")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()
