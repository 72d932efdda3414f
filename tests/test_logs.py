"""One logging set-up: ``--log-format json`` gives one JSON object per line with the ids in
context; text stays the default."""

from __future__ import annotations

import io
import json
import logging
import sys

from runtime.cli import build_parser
from vigil.logs import log_context, setup_logging


def test_json_lines_parse_and_carry_the_ids_in_context(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging(level="INFO", format="json")
        log = logging.getLogger("ingest.worker")
        with log_context(worker="0-telemetry"):
            with log_context(device="lift-7"):
                log.warning("broker %s unreachable", "mqtt://b:1883")
            log.info("stored", extra={"incident": 42})
        try:
            raise ValueError("bad payload")
        except ValueError:
            log.exception("refused")
        log.debug("not shown at INFO")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == [
        "broker mqtt://b:1883 unreachable",
        "stored",
        "refused",
    ]
    first, second, third = lines
    assert first["level"] == "WARNING" and first["logger"] == "ingest.worker"
    assert first["device"] == "lift-7" and first["worker"] == "0-telemetry"
    assert first["time"].endswith("+00:00")
    assert second["incident"] == 42 and "device" not in second
    assert third["error"] == "ValueError" and "bad payload" in third["traceback"]


def test_the_command_line_takes_the_log_format():
    args = build_parser().parse_args(["--log-format", "json", "db", "status"])
    assert args.log_format == "json"
    assert build_parser().parse_args(["db", "status"]).log_format is None
