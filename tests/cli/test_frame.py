"""The canaryctl frame: help without heavy imports, exit statuses, database errors, secrets."""

from __future__ import annotations

import json
import subprocess
import sys

from controller.store.schema import SCHEMA_REVISION
from tests.support.canaryctl import assert_refused, canaryctl
from tests.support.checkout import EXAMPLES, REPO


def test_help_lists_the_commands_without_importing_heavy_modules():
    probe = ("import sys\nfrom controller.cli.app import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit as e:\n    code = e.code\n"
             "heavy = sorted(m for m in ('binance', 'sqlalchemy', 'alembic', 'pydantic', 'aiohttp', 'rich', 'yaml') if m in sys.modules)\n"
             "print(code, ','.join(heavy), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    code, _, heavy = proc.stderr.strip().splitlines()[-1].partition(" ")
    assert code == "0" and heavy == ""
    for command in ("audit", "config", "db", "release", "sim"):
        assert command in proc.stdout


def test_the_console_script_and_module_entry_agree_on_version():
    result = canaryctl("--version")
    assert result.code == 0 and "canaryctl" in result.out


def test_unknown_command_is_bad_usage():
    result = canaryctl("frobnicate")
    assert result.code == 2 and "No such command" in result.err


def test_a_command_on_a_database_without_schema_says_to_upgrade(sqlite_url):
    result = canaryctl("audit", "verify", db=sqlite_url)
    assert result.code == 1 and "canaryctl db upgrade" in result.err and "Traceback" not in result.err


def test_an_unsupported_database_url_is_refused(tmp_path):
    assert_refused(canaryctl("db", "status", db="mysql://x@y/z"), "not supported")


def test_a_password_in_the_db_option_draws_a_warning_and_is_never_printed(postgres_server):
    url = f"postgresql://{postgres_server.superuser}:s3cret-pw@127.0.0.1:{postgres_server.port}/postgres"
    result = canaryctl("--db", url, "db", "status", "--json")
    assert "process list" in result.err
    assert "s3cret-pw" not in result.out + result.err.replace(url, "")
    assert json.loads(result.out)["revision"] is None


def test_db_status_reports_a_missing_schema_as_failure_then_ok_after_upgrade(sqlite_url):
    assert canaryctl("db", "status", db=sqlite_url).code == 1
    upgraded = canaryctl("db", "upgrade", "--json", db=sqlite_url)
    assert upgraded.code == 0 and json.loads(upgraded.out)["to"] == SCHEMA_REVISION
    assert canaryctl("db", "status", db=sqlite_url).code == 0


def test_downgrade_needs_confirmation(sqlite_url):
    canaryctl("db", "upgrade", db=sqlite_url)
    assert_refused(canaryctl("db", "downgrade", "base", db=sqlite_url), "--yes")
    assert canaryctl("db", "status", db=sqlite_url).code == 0


def test_the_default_database_lives_under_xdg_state_home(tmp_path):
    result = canaryctl("db", "upgrade", "--json", env={"XDG_STATE_HOME": str(tmp_path)})
    assert result.code == 0
    assert (tmp_path / "canary-controller" / "canary.db").is_file()


def test_audit_verify_and_query_through_the_cli(sqlite_url):
    canaryctl("db", "upgrade", db=sqlite_url)
    ok = canaryctl("audit", "verify", "--json", db=sqlite_url)
    assert ok.code == 0 and json.loads(ok.out)["ok"] is True
    bad_time = canaryctl("audit", "query", "--since", "yesterday-ish", db=sqlite_url)
    assert_refused(bad_time, "--since", "ISO 8601")


def test_audit_verify_names_the_first_bad_sequence_number_and_exits_1(sqlite_url):
    import sqlite3

    canaryctl("db", "upgrade", db=sqlite_url)
    canaryctl("release", "add", "1.0.0", "--manifest", str(EXAMPLES / "reference-bot" / "manifest.yaml"),
              "--config", str(EXAMPLES / "reference-bot" / "strategy.yaml"), db=sqlite_url)
    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    conn.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
    conn.commit()
    conn.close()
    result = canaryctl("audit", "verify", db=sqlite_url)
    assert result.code == 1 and "BROKEN at seq 2" in result.err


SIM = "environments:\n  sim:\n    kind: sim\n"


def test_the_daemon_config_names_the_database_relative_to_its_own_folder(tmp_path):
    (tmp_path / "controller.yaml").write_text("database:\n  url: sqlite:///state/canary.db\n" + SIM)
    result = canaryctl("--config", str(tmp_path / "controller.yaml"), "db", "upgrade", cwd=REPO)
    assert result.code == 0, result.err
    assert (tmp_path / "state" / "canary.db").is_file()


def test_a_bad_daemon_config_is_refused_with_file_line_and_field(tmp_path):
    config = tmp_path / "controller.yaml"
    config.write_text("database:\n  url: sqlite:///x.db\nadmin:\n  port: 99999\n")
    assert_refused(canaryctl("--config", str(config), "db", "status"),
                   f"{config}:4: admin.port: expected an integer from 0 to 65535, got 99999")


def test_a_database_password_reference_that_cannot_be_resolved_is_refused(tmp_path):
    config = tmp_path / "controller.yaml"
    config.write_text("database:\n  url: postgresql://canary@127.0.0.1/canary\n  password: env:CANARY_TEST_NO_SUCH_VAR\n" + SIM)
    assert_refused(canaryctl("--config", str(config), "db", "status"), "CANARY_TEST_NO_SUCH_VAR")


def test_the_daemons_state_folder_defaults_to_the_databases_folder_else_xdg_state(tmp_path, monkeypatch):
    from controller.cli.context import default_state_dir
    from controller.deploy.process import instance_folder
    from controller.store.database import resolve_url

    folder = default_state_dir(resolve_url(f"sqlite:///{tmp_path / 'canary.db'}"))
    assert folder == tmp_path
    assert instance_folder(folder, "sim-canary") == tmp_path / "instances" / "sim-canary"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_state_dir(resolve_url("postgresql://canary@db/canary")) == tmp_path / "state" / "canary-controller"
