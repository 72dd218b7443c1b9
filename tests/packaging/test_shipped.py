"""The shipped files: the repository's top-level folders in a checkout, package data in an install,
and the wheel's configuration packs every folder that `controller.shipped` hands out."""

from __future__ import annotations

import tomllib

from controller import shipped
from tests.support.checkout import REPO

PACKAGED = ["policies", "examples/reference-bot", "examples/demo", "systemd", "monitoring", "migrations"]


def handed_out():
    return [shipped.policies_dir(), shipped.migrations_dir(), shipped.demo_manifest(),
            shipped.reference_bot_file("manifest.yaml"), shipped.reference_bot_file("strategy.yaml"),
            shipped.systemd_dir(), shipped.monitoring_dir()]


def test_in_a_checkout_the_shipped_files_are_the_repositorys_top_level_folders():
    assert shipped.root() == REPO
    assert all(path.exists() for path in handed_out()), [p for p in handed_out() if not p.exists()]
    assert (shipped.migrations_dir() / "env.py").is_file()


def test_the_wheel_packs_every_folder_the_module_hands_out_and_shares_the_units_and_monitoring():
    wheel = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["force-include"] == {name: f"controller/_shipped/{name}" for name in PACKAGED}
    for path in handed_out():
        inside = path.relative_to(REPO).as_posix()
        assert any(inside == name or inside.startswith(name + "/") for name in PACKAGED), inside
    assert wheel["shared-data"] == {"systemd": "share/canary-controller/systemd",
                                    "monitoring": "share/canary-controller/monitoring"}


def test_an_installed_package_reads_its_shipped_files_from_its_package_data(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "controller"
    (package / shipped.PACKAGED / "policies").mkdir(parents=True)
    monkeypatch.setattr(shipped, "files", lambda name: package)
    assert shipped.policies_dir() == package / "_shipped" / "policies"
    assert shipped.demo_manifest() == package / "_shipped" / "examples" / "demo" / "manifest.yaml"
