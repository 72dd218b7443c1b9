"""docs/architecture.md stays true: its map names every package, only places that exist, and the
checklist exactly as the report judges it."""

from __future__ import annotations

import re

from controller.report.checklist import LINES
from tests.support.checkout import REPO

DOC = REPO / "docs" / "architecture.md"


def _section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/architecture.md has no section {title!r}"
    return match.group(1)


def _mapped_places() -> list[str]:
    return re.findall(r"^\| `([^`]+)` \|", _section("Map of the packages"), re.M)


def test_every_package_of_the_controller_is_in_the_map():
    packages = sorted(f"controller/{p.parent.name}/" for p in (REPO / "controller").glob("*/__init__.py"))
    missing = [p for p in packages if p not in _mapped_places()]
    assert not missing, f"docs/architecture.md's map leaves out {missing}"


def test_every_place_in_the_map_exists():
    places = _mapped_places()
    assert len(places) >= 15
    absent = [place for place in places if not (REPO / place).exists()]
    assert not absent, f"docs/architecture.md maps places that do not exist: {absent}"


def test_the_checklist_section_holds_every_line_the_report_judges():
    rows = dict(re.findall(r"^\| ([A-Za-z0-9-]+) \| (.+?) \|", _section("The checklist the policies quote"), re.M))
    assert {line.key: line.text for line in LINES} == {key: text for key, text in rows.items() if key not in ("key", "---")}
