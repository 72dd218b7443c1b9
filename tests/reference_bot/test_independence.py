"""The judge and the judged share no code: the bot imports nothing of the controller, and the
controller imports the bot only by name, at run time (the harness's entry point)."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.support.checkout import REPO


def static_imports(folder: str) -> dict[str, set[str]]:
    """Every module each file of ``folder`` imports at module level or in a function."""
    found = {}
    for path in (REPO / folder).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
        found[str(path.relative_to(REPO))] = names
    return found


def test_nothing_of_the_bot_imports_the_controller():
    offending = {file: sorted(n for n in names if n.split(".")[0] == "controller")
                 for file, names in static_imports("reference_bot").items()}
    assert {file: names for file, names in offending.items() if names} == {}


def test_nothing_of_the_controller_imports_the_bot():
    offending = {file: sorted(n for n in names if n.split(".")[0] == "reference_bot")
                 for file, names in static_imports("controller").items()}
    assert {file: names for file, names in offending.items() if names} == {}


def test_the_bot_runs_without_the_controller_loaded():
    code = ("import sys, reference_bot.__main__, reference_bot.embedded; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'controller'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
