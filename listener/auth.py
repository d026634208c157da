"""Admin authentication: `Authorization: Bearer <FALBACK_ADMIN_TOKEN>` (or HTTP Basic with
the token as password, so a browser can open /rq).

A browser sends Basic credentials by itself, to any page's request, so a request that
changes state is taken with Basic only when it comes from this site's own pages (the
dashboard's buttons): `Sec-Fetch-Site`, else `Origin`, else `Referer` must say so.
Otherwise another site could make an operator's browser requeue, delete or backfill.
Bearer tokens are never sent by a browser on its own, so scripts using them are not asked.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from flask import Response, jsonify, request

from listener.context import get_config

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def admin_denied() -> Response | None:
    """None when the request carries the admin token, else the response to send."""
    token = get_config().admin_token
    if not token:
        response = jsonify(error="the admin API is disabled: set FALBACK_ADMIN_TOKEN")
        response.status_code = 403
        return response
    given = ""
    basic = False
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        given = header.removeprefix("Bearer ").strip()
    elif request.authorization and request.authorization.password:
        given, basic = request.authorization.password, True
    if given and hmac.compare_digest(given.encode(), token.encode()):
        if basic and changes_state() and not same_origin():
            response = jsonify(
                error="cross-site request refused: with HTTP Basic (a browser's"
                " credentials) state changes only from this site's own pages;"
                " scripts send Authorization: Bearer <token>"
            )
            response.status_code = 403
            return response
        return None
    response = jsonify(error="missing or wrong admin token")
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Basic realm="falback"'
    return response


def changes_state() -> bool:
    """Any unsafe method, and a GET to a route that also takes one: rq-dashboard's
    "requeue all" answers GET too, and a link or <img> elsewhere can send a GET."""
    if request.method not in SAFE_METHODS:
        return True
    rule = request.url_rule
    return rule is not None and bool((rule.methods or set()) - SAFE_METHODS)


def same_origin() -> bool:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        # Set by the browser itself (pages cannot forge it); "none" is the operator
        # typing the URL or opening a bookmark.
        return site in ("same-origin", "none")
    # Older browsers: Origin (absent on some GETs), then Referer. Neither means not a
    # browser page we can vouch for: refused, since Basic is a browser's credential.
    for name in ("Origin", "Referer"):
        value = request.headers.get(name)
        if value:
            try:
                netloc = urlsplit(value).netloc
            except ValueError:  # e.g. an unclosed IPv6 bracket
                return False
            return _authority(netloc) == _authority(request.host)
    return False


def _authority(netloc: str) -> str:
    """host[:port], lower case, without a default port (proxies and browsers differ)."""
    netloc = netloc.lower()
    for default in (":80", ":443"):
        netloc = netloc.removesuffix(default)
    return netloc
