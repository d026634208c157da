"""rq-dashboard at /rq, behind the admin token (the embedded blueprint has no auth)."""

from __future__ import annotations

import rq_dashboard
from flask import Flask

from core.config import Config
from listener.auth import admin_denied


def mount(app: Flask, config: Config) -> None:
    app.config.from_object(rq_dashboard.default_settings)
    app.config["RQ_DASHBOARD_REDIS_URL"] = [config.redis_url]
    rq_dashboard.web.setup_rq_connection(app)

    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/rq")
    # Attached to this app, not to rq-dashboard's module-level blueprint, which may
    # already be registered on another app (tests build several).
    app.before_request_funcs.setdefault(rq_dashboard.blueprint.name, []).insert(0, admin_denied)
