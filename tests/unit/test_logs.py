"""Structured logs: one JSON object per line with the fields log shippers index."""

from __future__ import annotations

import logging

import orjson

from cluster.logs import JsonFormatter, logging_config


def test_json_formatter_emits_one_object_with_extras_and_exception() -> None:
    record = logging.LogRecord("relay.test", logging.WARNING, __file__, 1, "hi %s", ("you",), None)
    record.channel = "btc:1"
    line = JsonFormatter().format(record)
    entry = orjson.loads(line)
    assert entry["msg"] == "hi you" and entry["level"] == "warning"
    assert entry["logger"] == "relay.test" and entry["channel"] == "btc:1"
    assert "\n" not in line
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failing = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in orjson.loads(JsonFormatter().format(failing))["exc"]


def test_logging_config_routes_gunicorn_through_the_same_formatter() -> None:
    config = logging_config("info", "json")
    assert config["formatters"]["main"]["()"] is JsonFormatter
    assert config["loggers"]["gunicorn.error"]["handlers"] == ["console"]
    assert "format" in logging_config("debug", "text")["formatters"]["main"]
