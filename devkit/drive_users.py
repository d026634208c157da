"""Personal Google accounts for the Drive emulator: Google's OAuth device flow
(`/device/code`, the device-code grant with authorization_pending / slow_down /
access_denied / expired_token), the refresh-token grant (invalid_grant once revoked),
and each account's storage limit (15 GB free, as Google gives).

A test approves a pending sign-in with `approve(email)`, or scripts it beforehand with
`script(email, after_polls=n)` so that a `falback drive-login` subprocess is approved
on its n-th poll. The authorization-code flow with a loopback redirect (for scopes the
device flow refuses) is here too: `consent(query)` is the browser's visit to the
consent page, approved or denied by the same script, and answers where Google would
redirect the browser; the code is then traded with PKCE (RFC 7636, S256).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
CODE_GRANT = "authorization_code"
_S = "https://www.googleapis.com/auth/"
# Drive scopes an installed app may ask for on the consent page.
CONSENT_SCOPES = {_S + "drive", _S + "drive.file", _S + "drive.appdata"}
# Google's list of scopes the device flow allows (only these Drive scopes among them).
DEVICE_SCOPES = {
    _S + "drive.file",
    _S + "drive.appdata",
    "openid",
    "email",
    "profile",
    _S + "userinfo.email",
    _S + "userinfo.profile",
}
FREE_QUOTA = 15 * 1024**3


class OAuthRefusal(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(error)
        self.status, self.error, self.description = status, error, description


@dataclass
class Device:
    device_code: str
    user_code: str
    client_id: str
    scopes: frozenset[str]
    expires_at: float
    interval: float
    approved_by: str | None = None
    denied: bool = False
    polls: int = 0
    last_poll: float = 0.0
    redeemed: bool = False


@dataclass
class Code:
    email: str
    client_id: str
    scopes: frozenset[str]
    redirect_uri: str
    challenge: str
    expires_at: float


@dataclass(frozen=True)
class Grant:
    email: str
    client_id: str
    scopes: frozenset[str]
    refresh_token: str | None = None


@dataclass
class Script:
    email: str | None  # None: the user clicks "Deny"
    after_polls: int
    slow_down_once: bool = False


@dataclass
class UserAccounts:
    client_id: str
    client_secret: str
    interval: float = 0.05
    device_lifetime: float = 1800.0
    quota: dict[str, int] = field(default_factory=dict)  # email -> limit in bytes
    devices: dict[str, Device] = field(default_factory=dict)
    refresh_tokens: dict[str, Grant] = field(default_factory=dict)
    refresh_grants: int = 0  # refresh-token grants answered with a token
    codes: dict[str, Code] = field(default_factory=dict)  # authorization codes not yet traded
    script_next: Script | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- what tests call

    def pending(self) -> list[Device]:
        with self._lock:
            return [d for d in self.devices.values() if not (d.approved_by or d.denied)]

    def approve(self, email: str, user_code: str | None = None) -> None:
        with self._lock:
            device = self._device(user_code)
            device.approved_by = email

    def deny(self, user_code: str | None = None) -> None:
        with self._lock:
            self._device(user_code).denied = True

    def script(self, email: str | None, *, after_polls: int = 1, slow_down_once: bool = False) -> None:
        """How the next sign-in goes: approved by `email` (or denied) at that poll."""
        self.script_next = Script(email, after_polls, slow_down_once)

    def revoke(self) -> None:
        """The user removed falback's access (myaccount.google.com > Security)."""
        with self._lock:
            self.refresh_tokens.clear()

    def limit_of(self, email: str) -> int:
        return self.quota.get(email, FREE_QUOTA)

    # -- the endpoints

    def device_code(self, form: dict[str, str]) -> dict[str, object]:
        self._client(form, secret=False)
        scopes = frozenset(form.get("scope", "").split())
        if not scopes or not scopes <= DEVICE_SCOPES:
            raise OAuthRefusal(400, "invalid_scope", "Some requested scopes were invalid.")
        device = Device(
            "AH-" + secrets.token_urlsafe(24),
            _user_code(),
            form["client_id"],
            scopes,
            time.time() + self.device_lifetime,
            self.interval,
        )
        with self._lock:
            self.devices[device.device_code] = device
        return {
            "device_code": device.device_code,
            "user_code": device.user_code,
            "expires_in": int(self.device_lifetime),
            "interval": self.interval,
            "verification_url": "https://www.google.com/device",
        }

    def consent(self, query: dict[str, str]) -> str:
        """The user's browser at the consent page: the URL Google redirects it to, with a
        code (approved by the scripted user) or error=access_denied. Refuses (no redirect)
        what Google refuses: an unknown client, a redirect that is not loopback, no PKCE."""
        if query.get("client_id") != self.client_id:
            raise OAuthRefusal(401, "invalid_client", "The OAuth client was not found.")
        redirect = query.get("redirect_uri", "")
        if not redirect.startswith(("http://127.0.0.1:", "http://[::1]:", "http://localhost:")):
            raise OAuthRefusal(400, "redirect_uri_mismatch", "Invalid redirect_uri for an installed app.")
        scopes = frozenset(query.get("scope", "").split())
        if query.get("response_type") != "code" or not scopes or not scopes <= CONSENT_SCOPES:
            raise OAuthRefusal(400, "invalid_request", "Invalid response_type or scope.")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            raise OAuthRefusal(400, "invalid_request", "PKCE with S256 is required.")
        state = query.get("state", "")
        script, self.script_next = self.script_next, None
        if script is None or script.email is None:
            return f"{redirect}?{urlencode({'error': 'access_denied', 'state': state})}"
        code = "4/emu-" + secrets.token_urlsafe(24)
        with self._lock:
            self.codes[code] = Code(
                script.email, self.client_id, scopes, redirect, query["code_challenge"], time.time() + 600
            )
        return f"{redirect}?{urlencode({'state': state, 'code': code, 'scope': ' '.join(sorted(scopes))})}"

    def code_grant(self, form: dict[str, str]) -> Grant:
        self._client(form, secret=True)
        with self._lock:
            code = self.codes.pop(form.get("code", ""), None)
            if code is None or time.time() > code.expires_at:
                raise OAuthRefusal(400, "invalid_grant", "Malformed auth code.")
            if form.get("redirect_uri") != code.redirect_uri:
                raise OAuthRefusal(400, "redirect_uri_mismatch", "Bad Request")
            verifier = form.get("code_verifier", "").encode()
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
            if challenge != code.challenge:
                raise OAuthRefusal(400, "invalid_grant", "Invalid code verifier.")
            refresh = "1//emu-" + secrets.token_urlsafe(32)
            grant = Grant(code.email, code.client_id, code.scopes, refresh)
            self.refresh_tokens[refresh] = grant
            return grant

    def device_grant(self, form: dict[str, str]) -> Grant:
        self._client(form, secret=True)
        with self._lock:
            device = self.devices.get(form.get("device_code", ""))
            if device is None or device.redeemed:
                raise OAuthRefusal(400, "invalid_grant", "Bad Request")
            now = time.time()
            if now > device.expires_at:
                raise OAuthRefusal(400, "expired_token", "Expired device code.")
            device.polls += 1
            script = self.script_next
            too_soon = now - device.last_poll < device.interval * 0.9 and device.polls > 1
            device.last_poll = now
            if script and script.slow_down_once and device.polls == 1:
                script.slow_down_once = False
                raise OAuthRefusal(403, "slow_down", "Polling too frequently.")
            if too_soon:
                raise OAuthRefusal(403, "slow_down", "Polling too frequently.")
            if script and device.polls >= script.after_polls:
                device.approved_by, device.denied = script.email, script.email is None
                self.script_next = None
            if device.denied:
                raise OAuthRefusal(403, "access_denied", "Forbidden")
            if device.approved_by is None:
                raise OAuthRefusal(428, "authorization_pending", "Precondition Required")
            device.redeemed = True
            refresh = "1//emu-" + secrets.token_urlsafe(32)
            grant = Grant(device.approved_by, device.client_id, device.scopes, refresh)
            self.refresh_tokens[refresh] = grant
            return grant

    def refresh_grant(self, form: dict[str, str]) -> Grant:
        self._client(form, secret=True)
        with self._lock:
            grant = self.refresh_tokens.get(form.get("refresh_token", ""))
            if grant is None or grant.client_id != form.get("client_id"):
                raise OAuthRefusal(400, "invalid_grant", "Token has been expired or revoked.")
            self.refresh_grants += 1
        return Grant(grant.email, grant.client_id, grant.scopes)

    def _client(self, form: dict[str, str], *, secret: bool) -> None:
        if form.get("client_id") != self.client_id or (
            secret and form.get("client_secret") != self.client_secret
        ):
            raise OAuthRefusal(401, "invalid_client", "Unauthorized")

    def _device(self, user_code: str | None) -> Device:
        waiting = [
            d
            for d in self.devices.values()
            if (user_code is None or d.user_code == user_code) and not d.redeemed
        ]
        if not waiting:
            raise LookupError("no sign-in is waiting for approval")
        return waiting[-1]


def _user_code() -> str:
    letters = "BCDFGHJKLMNPQRSTVWXZ"
    return "-".join("".join(secrets.choice(letters) for _ in range(4)) for _ in range(3))
