"""The sign-in for a scope Google's device flow refuses (the full `drive` scope): the
installed-app flow with a loopback redirect ("OAuth 2.0 for iOS & Desktop Apps"), PKCE
(RFC 7636, S256), and the redirected address pasted back, as `rclone authorize` does.

The server has no browser, so the user opens the consent URL on any machine; Google then
sends that browser to http://127.0.0.1:<port>/?state=...&code=..., which does not load
there. The user copies that address from the browser's address bar and pastes it into
drive-login, which checks the state and trades the code (with the verifier) for tokens.
The code and verifier are never printed or logged.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from core.drive_settings import DriveSettings

# Any port is allowed for a loopback redirect of a Desktop client; nothing listens here.
REDIRECT_URI = "http://127.0.0.1:53682/"
Say = Callable[[str], None]
Ask = Callable[[str], str]


class PasteFailed(Exception):
    """The pasted address does not complete the sign-in; the message says why."""


def consent_url(settings: DriveSettings, state: str, verifier: str) -> str:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    query = {
        "client_id": settings.oauth_client_id,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": settings.scope,
        "access_type": "offline",  # a refresh token
        "prompt": "consent",  # a refresh token again on a second sign-in
        "state": state,
        "code_challenge": challenge.decode(),
        "code_challenge_method": "S256",
    }
    return f"{settings.auth_uri}?{urlencode(query)}"


def sign_in_by_paste(settings: DriveSettings, http: requests.Session, say: Say, ask: Ask) -> dict[str, Any]:
    """The token endpoint's answer (access and refresh token), or PasteFailed."""
    state, verifier = secrets.token_urlsafe(16), secrets.token_urlsafe(48)
    say(f"The scope {settings.scope} needs Google's browser sign-in (the device flow refuses it).")
    say("Open this address in a browser on any machine, sign in with the Google account to back up to,")
    say("and allow:")
    say(f"  {consent_url(settings, state, verifier)}")
    say(f"The browser then goes to {REDIRECT_URI}?... and shows an error page: that is expected.")
    code = _code(ask("Copy that address from the address bar and paste it here: "), state)
    answer = http.post(
        settings.token_uri,
        timeout=30,
        data={
            "client_id": settings.oauth_client_id,
            "client_secret": settings.oauth_client_secret,
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": REDIRECT_URI,
            "grant_type": "authorization_code",
        },
    )
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if answer.status_code != 200 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        raise PasteFailed(
            f"Google did not accept the code ({error or answer.status_code}); it is good for one use"
            ' and a few minutes: run drive-login again. The OAuth client must be of type "Desktop app"'
            " for this sign-in"
        )
    return body


def _code(pasted: str, state: str) -> str:
    query = parse_qs(urlsplit(pasted.strip()).query)
    if query.get("error"):
        raise PasteFailed(
            f"the consent screen answered {query['error'][0]}; run drive-login again and choose Allow"
        )
    if query.get("state", [""])[0] != state:
        raise PasteFailed(
            "that is not the address of this sign-in (its state does not match): paste the whole"
            f" address the browser shows, starting with {REDIRECT_URI}"
        )
    if not query.get("code"):
        raise PasteFailed(f"the address has no code: paste the whole address, starting with {REDIRECT_URI}")
    return query["code"][0]
