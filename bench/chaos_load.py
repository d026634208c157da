"""What the chaos run feeds the stack: app rows of mixed sizes (a backlog for the backfill,
more inserted mid-run for the relay) and signed fal webhooks (repeated, out of order,
retried on 5xx as fal retries), all on the CDN stand-in."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg2
from chaos_stack import ADMIN_TOKEN, FAL_USER, Stack

from db.migrate import apply_sample_schema
from devkit.fakecdn import FakeCdn
from devkit.jwks_server import signed_headers

KB, MB = 1024, 1024 * 1024
# (kind, share of the files, smallest and largest size in bytes)
MIX = (
    ("upscale", 0.1, 2 * MB, 6 * MB),
    ("regular", 0.3, 300 * KB, 2 * MB),
    ("image", 0.6, 20 * KB, 500 * KB),
)
EXPIRY = timedelta(days=7)


@dataclass
class SourceFile:
    url: str
    kind: str
    size: int
    via: str  # "backlog", "insert" (app row added mid-run) or "webhook"
    expires: str = ""  # "", "expired" (404 from the start) or "mid-run" (404 from a moment on)
    accepted: bool = False  # reached falback: a seeded row, or a webhook answered 2xx


@dataclass
class Delivery:
    request_id: str
    body: bytes
    files: list[SourceFile]
    answers: list[int] = field(default_factory=list)  # HTTP status per try (0: no answer)


@dataclass
class Load:
    files: list[SourceFile]
    backlog: list[tuple[str, SourceFile, SourceFile | None, datetime]]  # rows seeded before start
    inserts: list[tuple[str, SourceFile, SourceFile | None, datetime]]  # rows added mid-run
    deliveries: list[Delivery]  # in sending order: repeats and shuffles included
    expire_at: float  # seconds into the run when the "mid-run" files start answering 404


def plan(cdn: FakeCdn, rng: random.Random, count: int, expire_at: float, started: datetime) -> Load:
    """`count` files: a quarter through webhooks, the rest app rows (four in five of them
    a backlog, one in five inserted while the run goes on). A few already expired, a few
    expiring mid-run, some truncated once, some slow."""
    files: list[SourceFile] = []
    rows: list[tuple[str, SourceFile, SourceFile | None, datetime]] = []
    hooks: list[list[SourceFile]] = []
    n_hook = count // 4
    pending_upscales: list[SourceFile] = []
    for n in range(count):
        kind = rng.choices([m[0] for m in MIX], [m[1] for m in MIX])[0]
        low, high = next((lo, hi) for k, _, lo, hi in MIX if k == kind)
        size = rng.randint(low, high)
        ext, ctype = (".png", "image/png") if kind == "image" else (".mp4", "video/mp4")
        path = f"/files/b/chaos/{n:05d}{'_upscaled' if kind == 'upscale' else ''}{ext}"
        options: dict[str, object] = {"content_type": ctype}
        roll = rng.random()
        if roll < 0.06:
            options.update(truncate_at=size // 2, truncate_times=1)
        elif roll < 0.12:
            options.update(slow_delay=0.01)
        via = "webhook" if n < n_hook else "backlog"
        file = SourceFile(cdn.add(path, size, seed=n, **options), kind, size, via)
        files.append(file)
        created = started - timedelta(days=rng.uniform(0.5, 6))
        if via == "webhook":
            hooks.append([file])
            continue
        if kind == "upscale":
            pending_upscales.append(file)
            continue
        extra = rng.random()
        if extra < 0.04:
            file.expires = "expired"
            cdn.expire(file.url)
            created = started - EXPIRY - timedelta(hours=1)
        elif extra < 0.08 and kind == "image":
            file.expires = "mid-run"
            created = started - EXPIRY + timedelta(seconds=expire_at)
        upscale = pending_upscales.pop() if kind == "regular" and pending_upscales else None
        rows.append(("gen_images" if kind == "image" else "gen_videos", file, upscale, created))
    for upscale in pending_upscales:  # upscales left without a video: a row of their own
        regular_size = rng.randint(300 * KB, 2 * MB)
        regular = SourceFile(
            cdn.add(f"/files/b/chaos/{len(files):05d}.mp4", regular_size, seed=len(files)), "regular",
            regular_size, "backlog",
        )  # fmt: skip
        files.append(regular)
        rows.append(("gen_videos", regular, upscale, started - timedelta(days=rng.uniform(0.5, 6))))
    _at_least_one_expiry(cdn, rows, started, expire_at)
    rng.shuffle(rows)
    cut = len(rows) * 4 // 5
    backlog, inserts = rows[:cut], rows[cut:]
    for _table, main, up, _ in inserts:
        for f in (main, up):
            if f is not None:
                f.via = "insert"
    deliveries = [delivery_for(n, group) for n, group in enumerate(hooks)]
    sent = deliveries + [d for d in deliveries if rng.random() < 0.3]  # repeats
    rng.shuffle(sent)  # out of order
    return Load(files, backlog, inserts, sent, expire_at)


def _at_least_one_expiry(
    cdn: FakeCdn,
    rows: list[tuple[str, SourceFile, SourceFile | None, datetime]],
    started: datetime,
    expire_at: float,
) -> None:
    """A small run may draw no expired or expiring image: make the first images so."""
    for kind, created in (
        ("expired", started - EXPIRY - timedelta(hours=1)),
        ("mid-run", started - EXPIRY + timedelta(seconds=expire_at)),
    ):
        if any(r[1].expires == kind for r in rows):
            continue
        n = next((i for i, r in enumerate(rows) if r[0] == "gen_images" and not r[1].expires), None)
        if n is None:
            return
        rows[n][1].expires = kind
        rows[n] = (rows[n][0], rows[n][1], rows[n][2], created)
        if kind == "expired":
            cdn.expire(rows[n][1].url)


def delivery_for(n: int, files: list[SourceFile]) -> Delivery:
    request_id = f"c4a05{n:03d}-0000-4000-8000-{random.Random(n).getrandbits(48):012x}"
    refs = [{"url": f.url, "content_type": "video/mp4" if f.kind != "image" else "image/png",
             "file_size": f.size} for f in files]  # fmt: skip
    payload: dict[str, object] = {"images": refs} if files[0].kind == "image" else {"video": refs[0]}
    body = json.dumps(
        {"request_id": request_id, "gateway_request_id": request_id, "status": "OK", "payload": payload}
    ).encode()
    return Delivery(request_id, body, files)


def seed_backlog(database_url: str, load: Load) -> None:
    apply_sample_schema(database_url)
    for row in load.backlog:
        _insert(database_url, row)
        for f in (row[1], row[2]):
            if f is not None:
                f.accepted = True


def _insert(database_url: str, row: tuple[str, SourceFile, SourceFile | None, datetime]) -> None:
    table, main, upscale, created = row
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        if table == "gen_images":
            cur.execute(
                "INSERT INTO gen_images (generation_model, image_url, file_size, created_at)"
                " VALUES (%s,%s,%s,%s)",
                ("fal-ai/flux/dev", main.url, main.size, created),
            )
        else:
            cur.execute(
                "INSERT INTO gen_videos (generation_model, video_url, file_size,"
                " upscale_video_url, upscale_file_size, created_at) VALUES (%s,%s,%s,%s,%s,%s)",
                ("fal-ai/kling-video", main.url, main.size, upscale and upscale.url,
                 upscale and upscale.size, created),
            )  # fmt: skip
    conn.close()


class Traffic:
    """Threads that send the deliveries and insert the mid-run rows over `window` seconds,
    each retrying until it lands (fal retries a 5xx; the app retries its own writes)."""

    def __init__(self, stack: Stack, load: Load, window: float, rng: random.Random) -> None:
        self.stack, self.load, self.window = stack, load, window
        self.rng = random.Random(rng.random())
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._send_all, daemon=True),
            threading.Thread(target=self._insert_all, daemon=True),
            threading.Thread(target=self._backfill, daemon=True),
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(deadline - time.monotonic(), 0.1))

    @property
    def done(self) -> bool:
        return not any(t.is_alive() for t in self.threads)

    def _spaced(self, n: int) -> float:
        return self.window / max(n, 1)

    def _send_all(self) -> None:
        gap = self._spaced(len(self.load.deliveries))
        for delivery in self.load.deliveries:
            if self.stop.wait(gap * self.rng.uniform(0.5, 1.5)):
                return
            self._send(delivery)

    def _send(self, delivery: Delivery) -> None:
        """Retried on 5xx or no answer with fal's kind of backoff, for up to 90 s."""
        wait, deadline = 1.0, time.monotonic() + 90
        while not self.stop.is_set():
            status = self.post(delivery)
            delivery.answers.append(status)
            if 200 <= status < 300:
                for f in delivery.files:
                    f.accepted = True
                return
            if 400 <= status < 500 or time.monotonic() > deadline:
                return
            self.stop.wait(wait)
            wait = min(wait * 2, 15)

    def post(self, delivery: Delivery) -> int:
        headers = signed_headers(
            self.stack.fal_key, delivery.body, timestamp=int(time.time()),
            request_id=delivery.request_id, user_id=FAL_USER,
        )  # fmt: skip
        req = urllib.request.Request(
            f"{self.stack.base_url}/webhooks/fal", data=delivery.body, method="POST",
            headers={**headers, "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=15) as response:
                return int(response.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except OSError:
            return 0

    def _insert_all(self) -> None:
        gap = self._spaced(len(self.load.inserts))
        for row in self.load.inserts:
            if self.stop.wait(gap * self.rng.uniform(0.5, 1.5)):
                return
            while not self.stop.is_set():
                try:
                    _insert(self.stack.database_url, row)
                    break
                except psycopg2.OperationalError:
                    self.stop.wait(1.0)  # Postgres restarting: the app retries its write
            for f in (row[1], row[2]):
                if f is not None:
                    f.accepted = True

    def _backfill(self) -> None:
        """The operator's backfill call, retried until the web process takes it."""
        body = json.dumps({"type": "all", "limit": 100000}).encode()
        while not self.stop.is_set():
            req = urllib.request.Request(
                f"{self.stack.base_url}/backfill", data=body, method="POST",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(req, timeout=60) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            self.stop.wait(1.0)
