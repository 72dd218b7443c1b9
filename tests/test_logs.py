"""Logs are one structured line per event and never carry a secret."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest

from controller import logs
from tests.support.checkout import REPO


@pytest.fixture
def captured():
    stream = io.StringIO()
    saved = logging.getLogger().handlers, logging.getLogger().level
    logs.configure("info", "json", stream)
    yield stream
    logging.getLogger().handlers, level = saved
    logging.getLogger().setLevel(level)


def test_a_record_becomes_one_json_line_with_level_logger_and_time(captured):
    logging.getLogger("controller.test").warning("exchange_retry account=%s attempt=%d", "canary", 2)
    (line,) = captured.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "exchange_retry account=canary attempt=2"
    assert record["level"] == "warning" and record["logger"] == "controller.test" and record["timestamp"]


def test_secrets_in_fields_and_in_text_are_redacted(captured):
    log = logging.getLogger("controller.test")
    log.error("request failed url=/fapi/v1/order?symbol=BTCUSDT&signature=abc123def&timestamp=1 "
              "listenKey=K3Y api_secret: s3cr3t", extra={"api_secret": "s3cr3t"})
    text = captured.getvalue()
    for secret in ("abc123def", "K3Y", "s3cr3t"):
        assert secret not in text
    assert json.loads(text)["api_secret"] == "***"
    assert "symbol=BTCUSDT" in text and "signature=***" in text


def test_an_exception_is_rendered_inside_its_one_record(captured):
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("controller.test").exception("sink_failed")
    (line,) = captured.getvalue().splitlines()
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_an_event_logger_renders_its_fields_as_keys_of_the_record(captured):
    logs.get_logger("controller.test").warning("exchange_retry", account="canary", attempt=2, process=7)
    (line,) = captured.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "exchange_retry"
    assert (record["account"], record["attempt"], record["process"]) == ("canary", 2, 7)
    assert "canary_fields" not in record


def test_an_event_logger_redacts_secret_fields_and_keeps_the_exception(captured):
    try:
        raise ValueError("boom")
    except ValueError:
        logs.get_logger("controller.test").exception("request_failed", api_secret="s3cr3t",
                                                     url="/fapi/v1/order?signature=abc123def")
    (line,) = captured.getvalue().splitlines()
    record = json.loads(line)
    assert record["api_secret"] == "***" and "abc123def" not in line
    assert "ValueError: boom" in record["exception"]


def test_fields_of_a_record_are_readable_without_structlog(caplog):
    with caplog.at_level(logging.INFO, logger="controller.test"):
        logs.get_logger("controller.test").info("daemon_ready", admin_port=9310)
    (record,) = caplog.records
    assert record.getMessage() == "daemon_ready" and logs.fields_of(record) == {"admin_port": 9310}


@pytest.mark.parametrize("text, secret", [
    ("POST /fapi/v1/order?api_key=K3yK3yK3y&symbol=BTCUSDT", "K3yK3yK3y"),
    ("config says apiKey: K3yK3yK3y", "K3yK3yK3y"),
    ("secret=S3cr3tS3cr3t in the body", "S3cr3tS3cr3t"),
    ("connecting to postgresql://canary:Pa55w0rd@db.internal/canary", "Pa55w0rd"),
    ("postgresql://canary@db/canary?password=Pa55w0rd&sslmode=require", "Pa55w0rd"),
])
def test_secrets_the_redaction_missed_before_are_redacted(text, secret):
    redacted = logs.redact_text(text)
    assert secret not in redacted and logs.REDACTED in redacted


def test_json_logs_import_no_rich_and_console_logs_still_can():
    """structlog brings rich (and pygments) for its console tracebacks; the daemon's JSON lines do without them."""
    probe = ("import io, json, logging, sys\nfrom controller import logs\n"
             "stream = io.StringIO()\nlogs.configure('info', 'json', stream)\n"
             "logging.getLogger('controller.test').warning('daemon_ready')\n"
             "print(json.loads(stream.getvalue())['event'], 'rich' in sys.modules)\n"
             "import rich.console\nprint('rich', rich.console.Console is not None)\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          cwd=REPO)
    assert proc.stdout.splitlines() == ["daemon_ready False", "rich True"], proc.stderr
