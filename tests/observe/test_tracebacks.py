"""Unhandled exceptions found in real output: tracebacks Python printed, and JSON records our logging
and structlog wrote."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from controller import logs as controller_logs
from controller.observe.tracebacks import ERROR_RECORDS, UNHANDLED_EXCEPTIONS, ExceptionDetector
from tests.observe.sample_tracebacks import caused, grouped, handling_failed, plain, raised


def detect(*texts: str) -> list[tuple[str, str | None]]:
    detector = ExceptionDetector()
    found = [f for text in texts for line in text.splitlines() for f in detector.feed(line, 1.0)]
    return [(f.metric, f.exception) for f in found + detector.settle()]


def test_a_traceback_is_one_exception_named_by_its_class():
    assert detect(raised(plain)) == [(UNHANDLED_EXCEPTIONS, "ValueError")]


@pytest.mark.parametrize(("make", "name"), [(handling_failed, "RuntimeError"), (caused, "ConnectionError")])
def test_a_chained_traceback_is_one_exception_named_by_the_one_that_propagated(make, name):
    text = raised(make)
    assert "During handling" in text or "direct cause" in text
    assert detect(text) == [(UNHANDLED_EXCEPTIONS, name)]


def test_an_exception_group_is_one_exception():
    text = raised(grouped)
    assert "Exception Group Traceback" in text
    assert detect(text) == [(UNHANDLED_EXCEPTIONS, "ExceptionGroup")]


def test_tracebacks_one_after_another_are_counted_each():
    assert detect(raised(plain), "bot_restarted\n", raised(caused), raised(grouped)) == [
        (UNHANDLED_EXCEPTIONS, "ValueError"), (UNHANDLED_EXCEPTIONS, "ConnectionError"),
        (UNHANDLED_EXCEPTIONS, "ExceptionGroup")]


def test_a_traceback_cut_short_by_other_output_still_counts():
    cut = "\n".join(raised(plain).splitlines()[:3])
    assert detect(cut, "2026-01-01 INFO next line\n") == [(UNHANDLED_EXCEPTIONS, "unknown")]


def test_the_end_of_a_traceback_waits_for_a_line_that_cannot_continue_it_or_for_quiet():
    detector = ExceptionDetector()
    for line in raised(caused).splitlines()[:6]:  # up to the first exception of the chain
        assert detector.feed(line, 1.0) == []
    assert detector.pending
    found = detector.settle()
    assert [(f.exception, f.ts) for f in found] == [("ZeroDivisionError", 1.0)] and not detector.pending


def test_json_records_with_a_traceback_or_at_error_level_are_found():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("binance").level
    controller_logs.configure(level="info", fmt="json", stream=stream)  # the controller's own JSON logs
    logger = logging.getLogger("tests.observe.bot")
    try:
        try:
            plain()
        except ValueError:
            logger.exception("order_failed")
        logger.error("cancel_open_orders_failed symbol=BTCUSDT")
        logger.warning("leverage_not_applied")
        logger.info("bot_started")
    finally:
        root.handlers, root.level = saved[0], saved[1]
        logging.getLogger("binance").setLevel(saved[2])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    assert detect(*lines) == [(UNHANDLED_EXCEPTIONS, "ValueError"), (ERROR_RECORDS, None)]


def test_structlog_dict_tracebacks_and_json_logger_exc_info_are_found():
    stream = io.StringIO()
    logger = structlog.wrap_logger(structlog.PrintLogger(stream), processors=[
        structlog.processors.add_log_level, structlog.processors.dict_tracebacks,
        structlog.processors.JSONRenderer(default=repr)])
    try:
        caused()
    except ConnectionError:
        logger.exception("stream_lost")
    json_logger = json.dumps({"levelname": "ERROR", "message": "crash", "exc_info": raised(grouped)})
    repr_only = json.dumps({"level": "critical", "event": "x", "exc_info": "(<class 'KeyError'>, KeyError('a'))"})
    assert detect(stream.getvalue(), json_logger, repr_only) == [
        (UNHANDLED_EXCEPTIONS, "ConnectionError"), (UNHANDLED_EXCEPTIONS, "ExceptionGroup"),
        (UNHANDLED_EXCEPTIONS, "KeyError")]


def test_ordinary_output_is_no_finding():
    assert detect("bot_started account=canary\n", '{"level": "info", "event": "x"}\n', "{not json}\n",
                  "ValueError: mentioned in passing\n") == []
