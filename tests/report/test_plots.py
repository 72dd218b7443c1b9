"""The report's figures: drawn from the measured values of the matching policies, or a note why not."""

from __future__ import annotations

import sys
import tarfile
import xml.etree.ElementTree as ET

from controller.report import archive, document, markdown, plots
from tests.report.builders import at, rolled_back, verdict


def by_name(doc) -> dict[str, dict]:
    return {p["name"]: p for p in doc["plots"]}


def test_each_figure_draws_the_values_its_policies_measured(tmp_path):
    figures = by_name(document.build(rolled_back(tmp_path), archived=False))
    [latency] = figures["latency"]["series"]
    assert latency["label"] == "c-queue-latency-p95"
    assert latency["points"] == [[6.0, 0.12], [10.0, 0.13], [14.0, 0.18]]
    assert latency["threshold"] == [[6.0, 0.5], [10.0, 0.5], [14.0, 0.5]]
    assert figures["latency"]["file"] == "plots/latency.svg" and figures["latency"]["until"] == 40.0
    [bucket] = figures["buckets"]["series"]
    assert bucket["group"] == {"bucket": "alts"} and bucket["points"] == [[6.0, 0.1]]


def test_a_figure_without_data_says_so_instead_of_drawing_an_empty_chart(tmp_path):
    figures = by_name(document.build(rolled_back(tmp_path), archived=False))
    leverage = figures["leverage"]
    assert leverage["file"] is None and leverage["series"] == []
    assert leverage["note"].startswith("no policy of this rollout measures the applied or configured leverage")

    quiet = rolled_back(tmp_path, verdicts=(verdict(1, "c-queue-latency-p95", "nodata", 5, None,
                                                    reason="no data from the bot source yet"),))
    latency = by_name(document.build(quiet, archived=False))["latency"]
    assert latency["file"] is None
    assert latency["note"] == "no verdict of c-queue-latency-p95 carried a measured value (no data yet): " \
                              "nothing to draw"
    md = markdown.render(document.build(quiet, archived=True), plots_linked=True)
    assert "no verdict of c-queue-latency-p95 carried a measured value" in md and "plots/latency.svg" not in md


def test_a_figure_is_an_svg_with_its_series_and_the_same_bytes_every_time(tmp_path):
    latency = by_name(document.build(rolled_back(tmp_path), archived=False))["latency"]
    svg = plots.draw(latency)
    assert svg == plots.draw(latency)
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = {"".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert "c-queue-latency-p95" in texts and "limit: c-queue-latency-p95" in texts
    assert b"<dc:date>" not in svg


def test_values_are_placed_from_the_rollouts_creation(tmp_path):
    late = rolled_back(tmp_path, verdicts=(verdict(1, "c-queue-latency-p95", "pass", 125.5, 0.2, "0.5"),))
    assert late.created_at == at(0)
    [line] = by_name(document.build(late, archived=False))["latency"]["series"]
    assert line["points"] == [[125.5, 0.2]]


def test_without_matplotlib_the_report_keeps_the_values_and_says_how_to_get_the_plots(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as when it is not installed: not found, not importable
    assert not plots.can_draw()
    evidence = rolled_back(tmp_path)
    latency = by_name(document.build(evidence, archived=True))["latency"]
    assert latency["file"] is None and latency["series"][0]["points"] == [[6.0, 0.12], [10.0, 0.13], [14.0, 0.18]]
    assert "plots need matplotlib (pip install 'canary-controller[plots]')" in latency["note"]

    md = markdown.render(document.build(evidence, archived=True), plots_linked=True)
    figure = md.split("### Latency quantiles over time")[1].split("###")[0]
    assert "pip install 'canary-controller[plots]'" in figure and "| c-queue-latency-p95 | 3 |" in figure
    assert "plots/latency.svg" not in md

    target = tmp_path / "report.tar.gz"
    archive.write(target, evidence)
    with tarfile.open(target, "r:gz") as tar:
        names = tar.getnames()
    assert any(n.endswith("/report.md") for n in names) and not any("/plots/" in n for n in names)
    assert archive.verify(target).ok
