"""The offline demo: sample app tables whose files live on a local stand-in for fal's CDN.

`seed` is `falback up --demo`'s handful of files. `run_demo` is `falback demo`: the user's
data set (507 files, shaped as in their note), every process on embedded servers, signed
fal webhooks through /webhooks/fal, and copies to the Drive emulator through the
production Drive code (devkit/demo_drive.py: a personal account signed in with
`falback drive-login`, or a service account; resumable uploads).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.config import Config
from core.kinds import KIND_NAMES
from db import figures
from db.connection import Connection, connection, fetch_all
from db.migrate import apply_sample_schema, migrate
from devkit import demo_drive, supervisor
from devkit.fakecdn import FakeCdn
from devkit.jwks_server import JwksServer, jwks, signed_headers
from devkit.services import running_services
from devkit.supervisor import admin_token

MB = 1024 * 1024


def seed(database_url: str, cdn: FakeCdn, videos: int = 10, images: int = 10) -> None:
    """Add videos (half of them upscaled) and images, created over the past 6 days."""
    apply_sample_schema(database_url)
    now = datetime.now(UTC)
    with connection(database_url) as conn, conn.cursor() as cur:
        for n in range(videos):
            created = now - timedelta(days=6, minutes=-n)
            video = cdn.add(f"/files/b/demo/video-{n}.mp4", 4 * MB + n, content_type="video/mp4")
            upscale, upscale_size = None, None
            if n % 2 == 0:
                upscale_size = 24 * MB + n
                upscale = cdn.add(
                    f"/files/b/demo/video-{n}_upscaled.mp4", upscale_size, content_type="video/mp4"
                )
            cur.execute(
                "INSERT INTO gen_videos (generation_model, video_url, file_size,"
                " upscale_video_url, upscale_file_size, created_at) VALUES (%s,%s,%s,%s,%s,%s)",
                ("fal-ai/kling-video", video, 4 * MB + n, upscale, upscale_size, created),
            )
        for n in range(images):
            size = 300 * 1024 + n
            image = cdn.add(f"/files/b/demo/image-{n}.png", size, content_type="image/png")
            cur.execute(
                "INSERT INTO gen_images (generation_model, image_url, file_size, created_at)"
                " VALUES (%s,%s,%s,%s)",
                ("fal-ai/flux/dev", image, size, now - timedelta(days=5, minutes=-n)),
            )


# ------------------------------------------------------------------ `falback demo`
#
# The user's data (docs: the mission note): 507 files, 5.96 GB. 12 upscaled videos make
# 5.5 GB (hundreds of MB each), 85 regular videos 340 MB (about 4 MB each), and 410
# images at about 293 KB each (120 MB; 5.5 GB + 340 MB + 120 MB is the note's 5.96 GB).
# Every 85 regular videos' row holds one video; 12 of those rows also hold an upscale.
DATASET = (("upscale", 12, 5_500_000_000), ("regular", 85, 340_000_000), ("image", 410, 120_000_000))
SCALE = 100  # sizes are divided by this unless --full-size
WORKERS = 3  # worker processes: a job's fixed cost (fork, connections) dwarfs a small file
FAL_USER = "demo-user"
# Variables of the operator's environment that must not reach the demo's processes: the
# demo brings its own servers, Drive, signing keys and settings.
FOREIGN_ENV = (
    "DATABASE_URL",
    "REDIS_URL",
    "FALBACK_",
    "FAL_",
    "GOOGLE_DRIVE_",
    "GOOGLE_APPLICATION_CREDENTIALS",
)


@dataclass(frozen=True)
class DemoFile:
    url: str
    kind: str
    size: int
    seed: int  # the stand-in CDN's content seed: its md5 is FakeFile(size, seed).md5()
    via: str  # "app" (a seeded app row) or "webhook" (a signed fal webhook)


def sizes(kind_bytes: int, count: int, scale: int, rng: random.Random) -> list[int]:
    """`count` sizes around the kind's average (±40%), summing to about kind_bytes/scale."""
    weights = [rng.uniform(0.6, 1.4) for _ in range(count)]
    total = kind_bytes / scale
    return [max(1024, int(total * w / sum(weights))) for w in weights]


def seed_dataset(database_url: str, cdn: FakeCdn, scale: int = SCALE) -> list[DemoFile]:
    """The user's 507 files as app rows (gen_videos, gen_images) on the stand-in CDN,
    created over the past 6 days so each expires at fal at a different time."""
    apply_sample_schema(database_url)
    rng = random.Random(507)
    counts = {kind: count for kind, count, _ in DATASET}
    size_of = {kind: sizes(total, count, scale, rng) for kind, count, total in DATASET}
    upscaled = set(rng.sample(range(counts["regular"]), counts["upscale"]))
    now = datetime.now(UTC)
    files: list[DemoFile] = []

    def add(path: str, kind: str, size: int, content_type: str) -> str:
        url = cdn.add(path, size, content_type=content_type)
        files.append(DemoFile(url, kind, size, cdn.file(url).seed, "app"))
        return url

    def created(n: int, of: int) -> datetime:
        return now - timedelta(days=6) * (1 - n / of) - timedelta(minutes=5)

    ups = iter(size_of["upscale"])
    with connection(database_url) as conn, conn.cursor() as cur:
        for n, size in enumerate(size_of["regular"]):
            video = add(f"/files/b/demo/video-{n}.mp4", "regular", size, "video/mp4")
            upscale = upscale_size = None
            if n in upscaled:
                upscale_size = next(ups)
                upscale = add(f"/files/b/demo/video-{n}_upscaled.mp4", "upscale", upscale_size, "video/mp4")
            cur.execute(
                "INSERT INTO gen_videos (generation_model, video_url, file_size,"
                " upscale_video_url, upscale_file_size, created_at) VALUES (%s,%s,%s,%s,%s,%s)",
                ("fal-ai/kling-video", video, size, upscale, upscale_size, created(n, counts["regular"])),
            )
        for n, size in enumerate(size_of["image"]):
            image = add(f"/files/b/demo/image-{n}.png", "image", size, "image/png")
            cur.execute(
                "INSERT INTO gen_images (generation_model, image_url, file_size, created_at)"
                " VALUES (%s,%s,%s,%s)",
                ("fal-ai/flux/dev", image, size, created(n, counts["image"])),
            )
    return files


def webhook_files(cdn: FakeCdn, scale: int) -> list[tuple[str, bytes, list[DemoFile]]]:
    """Three fal completions made while the backfill runs (an upscale, a video, two
    images): (request id, body, files), bodies shaped like fal's."""
    hooks: list[tuple[str, list[dict[str, Any]], list[DemoFile], int]] = []
    for n, (kind, key, path, size) in enumerate(
        (
            ("upscale", "video", "hook-0_upscaled.mp4", 450_000_000),
            ("regular", "video", "hook-1.mp4", 4_100_000),
            ("image", "images", "hook-2-a.png", 300_000),
            ("image", "images", "hook-2-b.png", 290_000),
        )
    ):
        content_type = "video/mp4" if kind != "image" else "image/png"
        url = cdn.add(f"/files/b/demo/{path}", max(1024, size // scale), content_type=content_type)
        ref = {"url": url, "content_type": content_type, "file_name": path, "file_size": cdn.file(url).size}
        file = DemoFile(url, kind, cdn.file(url).size, cdn.file(url).seed, "webhook")
        if key == "images" and hooks and hooks[-1][0] == "images":
            hooks[-1][1].append(ref)
            hooks[-1][2].append(file)
        else:
            hooks.append((key, [ref], [file], n))
    out = []
    for key, refs, files, n in hooks:
        request_id = f"d3m0{n:04d}-0000-4000-8000-{secrets.token_hex(6)}"
        payload = {"video": refs[0]} if key == "video" else {"images": refs, "seed": 42}
        body = json.dumps(
            {"request_id": request_id, "gateway_request_id": request_id, "status": "OK", "payload": payload}
        ).encode()
        out.append((request_id, body, files))
    return out


def send_webhook(base_url: str, key: Ed25519PrivateKey, request_id: str, body: bytes) -> int:
    headers = signed_headers(key, body, timestamp=int(time.time()), request_id=request_id, user_id=FAL_USER)
    req = urllib.request.Request(
        f"{base_url}/webhooks/fal",
        data=body,
        method="POST",
        headers={**headers, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as response:
        status: int = response.status
        return status


@dataclass
class Tally:
    files: dict[str, int] = field(default_factory=dict)  # kind -> expected
    done: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    bytes_total: int = 0
    bytes_done: int = 0

    @property
    def finished(self) -> bool:
        return sum(self.done.values()) + self.failed >= sum(self.files.values())

    def line(self, elapsed: float) -> str:
        kinds = "  ".join(
            f"{kind} {self.done.get(kind, 0)}/{self.files[kind]}" for kind in KIND_NAMES if kind in self.files
        )
        return (
            f"[{elapsed:5.1f}s] {kinds}  {figures.size(self.bytes_done)} of"
            f" {figures.size(self.bytes_total)}  {self.failed} failed"
        )


def tally(conn: Connection, files: list[DemoFile]) -> Tally:
    t = Tally(bytes_total=sum(f.size for f in files))
    for f in files:
        t.files[f.kind] = t.files.get(f.kind, 0) + 1
    with conn.cursor() as cur:
        cur.execute(
            "SELECT kind, status, count(*) AS n, coalesce(sum(size_bytes), 0) AS bytes"
            " FROM ledger"
            " GROUP BY kind, status"
        )
        for row in fetch_all(cur):
            kind, status, count, size = row["kind"], row["status"], row["n"], row["bytes"]
            if status == "done":
                t.done[kind] = count
                t.bytes_done += size
            elif status in ("failed", "gone"):
                t.failed += count
    conn.rollback()
    return t


def run_demo(
    config: Config,
    port: int,
    *,
    full_size: bool = False,
    drive_mode: str = "personal",
    exit_when_done: bool = False,
    timeout: float | None = None,
) -> int:
    """Everything on embedded servers, files from the stand-in CDN, copies to the Drive
    emulator through the production Drive code (a personal account signed in with
    `falback drive-login`, or a service account on a shared drive: devkit/demo_drive.py);
    a fresh data folder every time."""
    data_dir = config.data_dir / "demo"
    if (data_dir / "postgres" / "postmaster.pid").exists():
        print(f"a demo seems to be running already ({data_dir}); stop it first", file=sys.stderr)
        return 2
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    data_dir.chmod(0o755)  # pgserver runs postgres as its own system user when we are root
    config = Config(data_dir=data_dir)
    scale = 1 if full_size else SCALE
    with running_services(config) as config, ExitStack() as stack:
        assert config.database_url
        migrate(config.database_url)
        cdn = FakeCdn().start()
        stack.callback(cdn.stop)
        files = seed_dataset(config.database_url, cdn, scale)
        hooks = webhook_files(cdn, scale)
        drive = demo_drive.start(drive_mode, data_dir / "drive")
        stack.callback(drive.emulator.stop)
        fal_key = Ed25519PrivateKey.generate()
        jwks_server = JwksServer(jwks(fal_key)).start()
        stack.callback(jwks_server.stop)
        extra_env = {
            **drive.env,
            "FALBACK_DATA_DIR": str(data_dir),
            "FALBACK_SOURCE_HOSTS": "127.0.0.1",
            "FALBACK_ALLOW_LOOPBACK_SOURCES": "true",
            "FAL_JWKS_URLS": jwks_server.url,
            "FAL_WEBHOOK_USER_ID": FAL_USER,
        }
        token = admin_token(config)[0]
        base = f"http://127.0.0.1:{port}"
        log_path = data_dir / "processes.log"
        all_files = files + [f for _, _, hook_files in hooks for f in hook_files]
        print(
            f"falback demo: {len(files)} files ({figures.size(sum(f.size for f in files))},"
            f" sizes {'as the user has them' if full_size else f'divided by {scale}'}) on a"
            f" stand-in fal CDN at {cdn.base_url}, backed up to {drive.where}"
            f" ({drive.emulator.url})\n"
            f"  status page: {base}/status  (any user name, password = admin token)\n"
            f"  admin token: {token}\n"
            f"  process output: {log_path}\n"
            f"  Ctrl-C stops it",
            flush=True,
        )
        process_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)},
            **extra_env,
            "DATABASE_URL": config.database_url,
            "REDIS_URL": config.redis_url or "",
        }
        code = drive.prepare(process_env, lambda line: print(line, flush=True))
        if code != 0:
            return code
        stop = threading.Event()
        outcome: dict[str, int] = {}
        driver = threading.Thread(
            target=_drive,
            daemon=True,
            args=(
                config,
                base,
                token,
                fal_key,
                hooks,
                all_files,
                stop,
                exit_when_done,
                timeout,
                outcome,
                lambda: _finish(drive, data_dir, all_files),
            ),
        )
        with log_path.open("a") as log:
            driver.start()
            code = supervisor.run(
                config,
                extra_env,
                port,
                stop=stop,
                output=log,
                drop_env=FOREIGN_ENV,
                scale={"worker": WORKERS},
            )
        stop.set()
        driver.join(10)
        return code or outcome.get("code", 0)


def _drive(
    config: Config,
    base: str,
    token: str,
    fal_key: Ed25519PrivateKey,
    hooks: list[tuple[str, bytes, list[DemoFile]]],
    files: list[DemoFile],
    stop: threading.Event,
    exit_when_done: bool,
    timeout: float | None,
    outcome: dict[str, int],
    finish: Callable[[], str],
) -> None:
    """The demo's script, beside the processes: the user's backfill calls, fal webhooks
    while it runs, a progress line every second, and the summary once every file is safe."""
    assert config.database_url
    started = time.monotonic()
    try:
        while not stop.is_set() and not _healthy(base):
            stop.wait(0.3)
        for type_ in ("upscale", "regular", "images"):  # the user's calls, most valuable first
            if stop.is_set():
                return
            req = urllib.request.Request(
                f"{base}/backfill",
                method="POST",
                data=json.dumps({"type": type_, "limit": len(files)}).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=30) as response:
                print(
                    f"POST /backfill {type_}: {json.load(response)['files']} file(s) added to the backlog",
                    flush=True,
                )
        sent = 0
        interactive = sys.stdout.isatty()
        with connection(config.database_url, application_name="falback-demo") as conn:
            while not stop.is_set():
                t = tally(conn, files)
                if sent < len(hooks) and sum(t.done.values()) >= 20 * (sent + 1):
                    request_id, body, hook_files = hooks[sent]
                    status = send_webhook(base, fal_key, request_id, body)
                    print(
                        ("\n" if interactive else "") + f"fal webhook {request_id}:"
                        f" {len(hook_files)} new file(s), answered {status}",
                        flush=True,
                    )
                    sent += 1
                line = t.line(time.monotonic() - started)
                print(f"\r{line}" if interactive else line, end="" if interactive else "\n", flush=True)
                if sent == len(hooks) and t.finished:
                    print(
                        ("\n" if interactive else "")
                        + finish()
                        + ("" if exit_when_done else " Ctrl-C stops the demo."),
                        flush=True,
                    )
                    outcome["code"] = 0 if t.failed == 0 else 1
                    if exit_when_done:
                        stop.set()
                    return
                if timeout is not None and time.monotonic() - started > timeout:
                    print(f"\nfalback demo: not done after {timeout:.0f}s; stopping", flush=True)
                    outcome["code"] = 1
                    stop.set()
                    return
                stop.wait(1.0)
    except Exception as e:  # noqa: BLE001 - a broken script must stop the demo, not hang it
        print(f"\nfalback demo: {type(e).__name__}: {e}; stopping", flush=True)
        outcome["code"] = 1
        stop.set()


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _finish(drive: demo_drive.DemoDrive, data_dir: Path, files: list[DemoFile]) -> str:
    copies = drive.manifest()
    manifest = data_dir / "drive.json"
    manifest.write_text(
        json.dumps(
            {
                "owner": drive.owner,
                "drive_id": drive.drive_id,
                "files": copies,
                "sources": [asdict(f) for f in files],
            },
            indent=1,
        )
    )
    return (
        f"done: {len(copies)} of {len(files)} files are safe, each a verified copy in"
        f" {drive.where} (contents under {data_dir / 'drive' / 'files'}, list in {manifest})."
    )
