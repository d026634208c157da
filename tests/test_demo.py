"""`falback demo` (python3 dev.py demo) to completion: a personal Google account signed in
with `falback drive-login` and checked with `drive-check`, then the user's 507 files
(sizes / 100) and the webhooked ones end as one verified copy each in that account's My
Drive on the Drive emulator, through the production Drive code, most valuable first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import pytest

from db.connection import connect, fetch_all
from devkit.embedded import EmbeddedPostgres
from devkit.fakecdn import FakeFile
from tests.support.ports import free_port


@pytest.mark.slow
def test_demo_signs_in_a_personal_account_and_backs_up_every_file_to_its_drive(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # pgserver's own system user must reach the data folder
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "REDIS_URL", "FALBACK_", "FAL_", "GOOGLE_"))
    }
    env.update(FALBACK_DATA_DIR=str(tmp_path / "data"), WEB_CONCURRENCY="1")
    started = time.monotonic()
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "falback",
            "demo",
            "--port",
            str(free_port()),
            "--exit-when-done",
            "--timeout",
            "240",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=330,
    )
    output = process.stdout
    demo = tmp_path / "data" / "demo"
    assert process.returncode == 0, output[-5000:] + (demo / "processes.log").read_text()[-5000:]
    assert time.monotonic() - started < 300
    assert "done: 511 of 511 files are safe" in output
    # The personal-account path of docs/google-drive.md: drive-login, then drive-check.
    login = output.index("falback drive-login")
    assert "open https://www.google.com/device" in output[login:]
    assert "signed in as you@gmail.com" in output[login:]
    check = output.index("falback drive-check:")
    section = output[check : output.index("drive-check: ok, backups can go to Drive", check)]
    assert "personal Google account" in section and "account          you@gmail.com" in section
    assert "PROBLEM" not in section and "WARNING" not in section
    assert "/status" in output and "admin token: " in output
    assert output.count("answered 200") == 3  # the fal webhooks
    assert "Traceback" not in output

    manifest = json.loads((demo / "drive.json").read_text())
    sources = {s["url"]: s for s in manifest["sources"]}
    assert len(sources) == 511
    kinds = [s["kind"] for s in sources.values() if s["via"] == "app"]
    assert (kinds.count("upscale"), kinds.count("regular"), kinds.count("image")) == (12, 85, 410)
    assert (manifest["owner"], manifest["drive_id"]) == ("you@gmail.com", None)
    copies = {c["id"]: c for c in manifest["files"]}
    # One copy per file, nothing else the account keeps (drive-check's probe is trashed).
    assert len(copies) == len(sources)
    # falback's own tree at the top of the My Drive: falback/<kind>/<YYYY-MM>/<file>.
    assert {tuple(c["path"].split("/")[:2]) for c in copies.values()} == {
        ("falback", "upscale"),
        ("falback", "regular"),
        ("falback", "image"),
    }

    postgres = EmbeddedPostgres(demo / "postgres")
    url = postgres.start()
    try:
        conn = connect(url)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT source_url, kind, status, destination, destination_id, md5,"
                " size_bytes, done_at FROM ledger"
            )
            rows = {r["source_url"]: r for r in fetch_all(cur)}
        conn.close()
    finally:
        postgres.stop()
    assert set(rows) == set(sources)
    assert {r["destination_id"] for r in rows.values()} == set(copies)
    for source_url, row in rows.items():
        source = sources[source_url]
        cdn_md5 = FakeFile(size=source["size"], seed=source["seed"]).md5()
        copy = copies[row["destination_id"]]
        assert (row["status"], row["destination"], row["kind"]) == ("done", "drive", source["kind"])
        assert row["md5"] == copy["md5"] == cdn_md5, source_url
        assert row["size_bytes"] == copy["size"] == source["size"]
        assert os.path.getsize(copy["content_path"]) == source["size"]
    webhooked = [rows[u] for u, s in sources.items() if s["via"] == "webhook"]
    assert sorted(r["kind"] for r in webhooked) == ["image", "image", "regular", "upscale"]

    # Most valuable first: the seeded upscaled videos are copied before the images, give
    # or take the few a worker had in hand (three workers run side by side).
    def done(kind: str) -> list[float]:
        return sorted(
            r["done_at"].timestamp()
            for u, r in rows.items()
            if r["kind"] == kind and sources[u]["via"] == "app"
        )

    upscale, regular, images = done("upscale"), done("regular"), done("image")
    assert median(upscale) < median(regular) < median(images)
    assert upscale[-1] <= images[len(images) // 20]
