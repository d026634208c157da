"""`falback status` in the terminal: the table, the at-risk figures and alarms; `--watch`
draws live progress bars until interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from core.config import Config
from db.connection import Connection, fetch_all
from tests.support.wait import wait_for


def seed(conn: Connection) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ledger (source_url, kind, status, expected_size, last_error, expires_at)"
            " VALUES ('https://v3.fal.media/a.mp4', 'upscale', 'retrying', 5000,"
            " 'source answered 503', now() + interval '3 hours'),"
            " ('https://v3.fal.media/b.png', 'image', 'failed', 10, 'host x is not allowed',"
            " now() + interval '2 days')"
        )
        cur.execute(
            "INSERT INTO ledger (source_url, kind, status, size_bytes, destination, done_at, expires_at)"
            " VALUES ('https://v3.fal.media/c.mp4', 'upscale', 'done', 4000, 'local',"
            " now() - interval '5 minutes', now() + interval '6 days')"
        )
        cur.execute(
            "INSERT INTO destination_pauses (destination, paused_until, reason)"
            " VALUES ('drive', now() + interval '2 hours', 'the daily upload cap')"
        )
    conn.commit()


def run(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "falback", *args],
        env={**os.environ, **config.as_env()},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_shows_what_is_at_risk_and_why(config: Config, conn: Connection) -> None:
    seed(conn)
    result = run(config, "status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    table = {line.split()[0]: line.split() for line in lines[1:4]}
    assert table["upscale"][1:3] == ["2", "1"] and table["image"][3] == "1"
    assert "at risk: 2 file(s) not yet safe; the first may expire at fal in 2h 59m" in result.stdout
    risk = [line.split() for line in lines if line.startswith("  ledger")]
    assert [(r[1], r[2], r[3]) for r in risk] == [("1", "upscale", "retrying"), ("2", "image", "failed")]
    assert "ALARM: drive is paused until" in result.stdout


def watching(conn: Connection) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'falback-status'")
        n = fetch_all(cur)[0]["n"]
    conn.rollback()
    return bool(n)


def test_watch_draws_progress_bars_until_interrupted(config: Config, conn: Connection) -> None:
    seed(conn)
    process = subprocess.Popen(
        [sys.executable, "-m", "falback", "status", "--watch", "--interval", "0.2"],
        env={**os.environ, **config.as_env(), "COLUMNS": "120"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Watching once its connection is open (a busy machine can take seconds to start it),
    # and a few frames later.
    wait_for(lambda: watching(conn), 30, "falback status --watch connected")
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "upscale" in out and "1/2" in out and "━" in out  # rich's bar
    assert "at risk: 2 file(s) not yet safe" in out
