"""Logs: one line per event with the ids that matter; LOG_FORMAT=json gives one JSON
object per line (ours, RQ's and the libraries' lines alike), still redacted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from redis import Redis

from core.config import Config, ConfigError
from db.connection import Connection
from jobs.backfill import backfill
from tests.fakes.cdn import FakeCdn
from tests.support.gunicorn import gunicorn
from tests.support.rows import add_image, ledger_rows
from tests.support.workers import run_worker_process


def json_lines(text: str) -> list[dict[str, object]]:
    """Every non-empty line as JSON; fails on the first line that is not."""
    lines = []
    for line in text.splitlines():
        if line.strip():
            try:
                lines.append(json.loads(line))
            except ValueError:
                pytest.fail(f"not a JSON line: {line!r}")
    return lines


def test_worker_lines_are_json_with_ledger_and_job_ids(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    add_image(conn, cdn, 1, size=5000)
    backfill(config, conn, redis, "all", 10)
    [row] = ledger_rows(conn)
    result = run_worker_process(config.replace(log_format="json"))
    lines = json_lines(result.stdout) + json_lines(result.stderr)
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    done = [
        line
        for line in lines
        if str(line["message"]).endswith(f"at local {row['id']}-image-1.png")
        or "done:" in str(line["message"])
    ]
    assert done, lines
    assert done[0]["ledger_id"] == row["id"] and done[0]["job_id"] == f"backup-{row['id']}"
    assert any(str(line["logger"]).startswith("rq.") for line in lines)  # RQ's own lines too


def test_web_lines_carry_the_request_id(config: Config, tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    with gunicorn(
        config.replace(
            log_format="json", app_webhook_secret="whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
        ),
        log,
    ) as base:
        given = requests.post(
            f"{base}/webhooks/app", data=b"{}", timeout=10, headers={"X-Request-Id": "req-from-the-router"}
        )
        made_up = requests.post(
            f"{base}/webhooks/app", data=b"{}", timeout=10, headers={"X-Request-Id": "not sane;"}
        )
    assert given.status_code == made_up.status_code == 401
    assert given.headers["X-Request-Id"] == "req-from-the-router"
    new_id = made_up.headers["X-Request-Id"]
    assert len(new_id) == 16 and new_id.isalnum()
    ours = [
        line
        for line in json_lines(
            "\n".join(line for line in log.read_text().splitlines() if line.startswith("{"))
        )
        if line["logger"] == "listener.app_webhook"
    ]
    assert [line["request_id"] for line in ours] == ["req-from-the-router", new_id]


def test_a_json_line_stays_json_when_secrets_are_redacted() -> None:
    import logging

    from core.logs import JsonFormatter, RedactingFormatter

    record = logging.LogRecord(
        "x",
        logging.WARNING,
        __file__,
        1,
        'GET https://v3.fal.media/a.mp4?token=s3cret "Authorization: Bearer abc"',
        None,
        None,
    )
    record.ledger_id = 7
    line = json.loads(RedactingFormatter(JsonFormatter()).format(record))
    assert "s3cret" not in line["message"] and "abc" not in line["message"]
    assert line["ledger_id"] == 7


def test_log_settings_are_strict() -> None:
    assert Config.from_env({"LOG_FORMAT": "json", "FALBACK_LOG_LEVEL": "debug"}).log_level == "DEBUG"
    with pytest.raises(ConfigError, match="LOG_FORMAT must be one of text, json, got 'xml'"):
        Config.from_env({"LOG_FORMAT": "xml"})
