"""The session's embedded Postgres and Redis (started by the `servers` fixture)."""

from __future__ import annotations

from devkit.embedded import EmbeddedPostgres, EmbeddedRedis


class Servers:
    def __init__(self, postgres: EmbeddedPostgres, postgres_url: str, redis: EmbeddedRedis) -> None:
        self.postgres = postgres
        self.postgres_url = postgres_url
        self.redis = redis

    def database_url(self, name: str) -> str:
        # pgserver URLs look like postgresql://postgres:@/postgres?host=/path
        return self.postgres_url.replace("@/postgres?", f"@/{name}?")
