"""The Flask app under test and the admin token it is configured with."""

from __future__ import annotations

from flask import Flask

from core.config import Config
from listener import create_app

ADMIN_TOKEN = "test-admin-token"


def create_app_for(config: Config) -> Flask:
    app = create_app(config)
    app.testing = True
    return app


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
