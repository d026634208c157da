"""The web process: a Flask app factory (gunicorn serves `listener:create_app()`)."""

from __future__ import annotations

import logging

from flask import Flask
from redis import Redis

from core.config import Config, ConfigError
from core.logs import setup_logging


def create_app(config: Config | None = None) -> Flask:
    config = config or Config.from_env()
    if not config.database_url or not config.redis_url:
        raise ConfigError(
            "the web process needs DATABASE_URL and REDIS_URL"
            " (`falback up` sets them to embedded servers when they are unset)"
        )
    setup_logging(config.log_level, config.log_format)
    app = Flask(__name__)
    app.config["FALBACK"] = config
    # Enough for any webhook; larger bodies get 413 before they are read.
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    # redis-py pools are fork-safe, so one client per app is fine under gunicorn.
    app.extensions["falback_redis"] = Redis.from_url(
        config.redis_url, socket_timeout=5, socket_connect_timeout=5
    )

    from jobs.fal.jwks import JwksCache
    from listener import (
        admin,
        app_webhook,
        dashboard,
        errors,
        fal_webhook,
        health,
        metrics,
        request_ids,
        status_page,
    )
    from listener.context import init_app
    from listener.media import bp as media_bp

    init_app(app, config)
    errors.init_app(app)
    # One key cache per process; the timeout keeps a JWKS outage inside fal's 15 s.
    app.extensions[fal_webhook.JWKS_EXTENSION] = JwksCache(
        config.fal_jwks_urls, timeout=min(config.connect_timeout, 5.0)
    )
    app.register_blueprint(health.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(fal_webhook.bp)
    app.register_blueprint(app_webhook.bp)
    app.register_blueprint(status_page.bp)
    app.register_blueprint(media_bp)
    metrics.init_app(app)
    request_ids.init_app(app)
    dashboard.mount(app, config)
    log = logging.getLogger(__name__)
    if not config.fal_webhook_user_id:
        # fal signs every user's webhooks with the same keys: without the pin, anyone with
        # a fal account who learns the URL can make this service copy files.
        log.warning(
            "FAL_WEBHOOK_USER_ID is not set: signed fal webhooks from any fal user"
            " are accepted; set it to your fal user id"
        )
    log.info("web app ready")
    return app
