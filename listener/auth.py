"""Admin authentication: `Authorization: Bearer <FALBACK_ADMIN_TOKEN>` (or HTTP Basic with
the token as password, so a browser can open /rq)."""

from __future__ import annotations

import hmac

from flask import Response, jsonify, request

from listener.context import get_config


def admin_denied() -> Response | None:
    """None when the request carries the admin token, else the response to send."""
    token = get_config().admin_token
    if not token:
        response = jsonify(error="the admin API is disabled: set FALBACK_ADMIN_TOKEN")
        response.status_code = 403
        return response
    given = ""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        given = header.removeprefix("Bearer ").strip()
    elif request.authorization and request.authorization.password:
        given = request.authorization.password
    if given and hmac.compare_digest(given.encode(), token.encode()):
        return None
    response = jsonify(error="missing or wrong admin token")
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Basic realm="falback"'
    return response
