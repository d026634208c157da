"""Stream a source file from fal's CDN, safely and in constant memory.

Only allowlisted hosts are fetched, over http(s), and every connection (redirects
included) is checked at connect time against private, loopback, link-local, metadata
and other non-public addresses; the socket connects to the very address that was
checked, so DNS rebinding cannot slip past. An interrupted body is resumed with a
Range request. 404/410 means the file is gone.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.connection
import urllib3.connectionpool
from requests.adapters import HTTPAdapter

from core.config import Config
from jobs.errors import CopyError, PermanentError, SourceGone, TransientError
from jobs.fal.api import request_cdn_token

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class BlockedAddress(Exception):
    """Raised inside the connection layer; deliberately not an OSError, so urllib3 and
    requests let it through instead of retrying."""


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in allowed:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return address_allowed(embedded, allow_loopback)
    if allow_loopback and ip.is_loopback:
        return True
    # is_global is False for private, loopback, link-local (169.254/16, the metadata
    # address), shared (100.64/10), reserved and unspecified ranges.
    return ip.is_global and not ip.is_multicast


# NAT64 prefixes (RFC 6052, RFC 8215) carry an IPv4 address in their last 32 bits.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64, compatible)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64) or (int(ip) >> 32 == 0 and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _checked_address(host: str, port: int, allow_loopback: bool) -> str:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        if not address_allowed(ipaddress.ip_address(address.split("%")[0]), allow_loopback):
            raise BlockedAddress(f"{host} resolves to a non-public address ({address})")
    return addresses[0]


def _guarded_adapter(allow_loopback: bool) -> HTTPAdapter:
    def new_conn(base: type[urllib3.connection.HTTPConnection]) -> Any:
        def _new_conn(self: urllib3.connection.HTTPConnection) -> socket.socket:
            dns_host = self._dns_host
            self._dns_host = _checked_address(dns_host, self.port, allow_loopback)
            try:
                sock: socket.socket = base._new_conn(self)
                return sock
            finally:
                self._dns_host = dns_host

        return _new_conn

    http_conn = type("GuardedHTTPConnection", (urllib3.connection.HTTPConnection,),
                     {"_new_conn": new_conn(urllib3.connection.HTTPConnection)})
    https_conn = type("GuardedHTTPSConnection", (urllib3.connection.HTTPSConnection,),
                      {"_new_conn": new_conn(urllib3.connection.HTTPSConnection)})
    http_pool = type("GuardedHTTPPool", (urllib3.connectionpool.HTTPConnectionPool,),
                     {"ConnectionCls": http_conn})
    https_pool = type("GuardedHTTPSPool", (urllib3.connectionpool.HTTPSConnectionPool,),
                      {"ConnectionCls": https_conn})

    class GuardedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}

    return GuardedAdapter(max_retries=0)


@dataclass
class SourceStream:
    """An open source file. `total` is its full size when the server said it."""

    fetcher: SourceFetcher
    url: str
    response: requests.Response
    total: int | None

    def chunks(self) -> Iterator[bytes]:
        """Yield the file from byte 0 to the end, resuming with Range when cut off."""
        received = 0
        resumes = 0
        response = self.response
        try:
            while True:
                try:
                    for chunk in response.iter_content(self.fetcher.config.fetch_chunk_size):
                        received += len(chunk)
                        yield chunk
                    if self.total is not None and received != self.total:
                        raise requests.exceptions.ChunkedEncodingError("body ended early")
                    return
                except (
                    requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ConnectionError,
                ) as e:
                    response.close()
                    if resumes >= self.fetcher.config.fetch_resume_attempts:
                        raise TransientError(
                            f"source body cut off at byte {received} of"
                            f" {self.total or 'unknown'} after {resumes} resumes: {_brief(e)}"
                        ) from e
                    resumes += 1
                    log.info("resuming %s at byte %d (resume %d)", loggable_url(self.url), received, resumes)
                    response = self.fetcher.request(self.url, start=received)
                    self._check_resumed(response, received)
        finally:
            response.close()

    def _check_resumed(self, response: requests.Response, start: int) -> None:
        if response.status_code != 206:
            response.close()
            raise TransientError(
                f"source ignored the Range request (status {response.status_code}); copy restarts"
            )
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != start:
            response.close()
            raise TransientError(f"source answered a resume with the wrong range (start {start})")


class SourceFetcher:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.session = requests.Session()
        # Proxies (HTTP(S)_PROXY) would connect through a pool the guard does not cover,
        # and .netrc would add credentials: the environment is not consulted.
        self.session.trust_env = False
        adapter = _guarded_adapter(config.allow_loopback_sources)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["Accept-Encoding"] = "identity"
        self.session.headers["User-Agent"] = "falback/0.1"
        self._token: tuple[str, float] | None = None  # fal CDN token and its expiry (epoch)

    def close(self) -> None:
        self.session.close()

    def open(self, url: str) -> SourceStream:
        response = self.request(url)
        return SourceStream(self, url, response, _content_length(response))

    def request(self, url: str, start: int | None = None) -> requests.Response:
        """GET `url` (from byte `start` with a Range request), following redirects by hand
        so that each hop is checked; raise a classified error for anything but 200/206.

        A restricted file on fal's CDN (an ACL) answers 401/403/404 like a missing one: with
        FAL_KEY set, such an answer from a FAL_CDN_TOKEN_HOSTS host is tried once more with
        a CDN token, which is only ever sent to those hosts.
        """
        headers = {"Range": f"bytes={start}-"} if start is not None else {}
        tried_token = False
        hops = 0
        while hops <= MAX_REDIRECTS:
            self.check_url(url)
            # The token is a bearer credential: only ever sent over https to fal's CDN hosts
            # (plain http only to a loopback stand-in, in tests and the demo).
            token_host = (_private_channel(url, self.config.allow_loopback_sources)
                          and host_allowed(_host(url), self.config.fal_cdn_token_hosts))
            hop_headers = dict(headers)
            if token_host and self._token is not None:
                hop_headers["Authorization"] = f"Bearer {self._token[0]}"
            try:
                response = self.session.get(
                    url,
                    headers=hop_headers,
                    stream=True,
                    allow_redirects=False,
                    timeout=(self.config.connect_timeout, self.config.read_timeout),
                )
            except BlockedAddress as e:
                raise PermanentError(f"refused to fetch {_host(url)}: {e}") from None
            except requests.exceptions.RequestException as e:
                raise TransientError(f"could not reach {_host(url)}: {_brief(e)}") from e
            if response.is_redirect:
                response.close()
                url = urljoin(url, response.headers["Location"])
                hops += 1
                continue
            if (response.status_code in (401, 403, 404) and token_host and not tried_token
                    and self.config.fal_key):
                tried_token = True
                try:
                    self._refresh_token()
                except CopyError as e:
                    # No token: the answer stands as it is (a 404 is still an expiry).
                    log.warning("no fal CDN token for %s (%s)", _host(url), e)
                    _raise_for_status(response, url)
                response.close()
                continue
            _raise_for_status(response, url)
            return response
        raise PermanentError(f"more than {MAX_REDIRECTS} redirects fetching {_host(url)}")

    def _refresh_token(self) -> None:
        """Get (or reuse) a CDN token from fal (jobs.fal.api), through the guarded session."""
        if self._token is not None and self._token[1] > time.time() + 60:
            return
        try:
            token = request_cdn_token(self.session, self.config)
        except BlockedAddress as e:
            raise TransientError(f"could not get a fal CDN token: {e}") from None
        self._token = (token.token, token.expires_at)

    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PermanentError(f"not an http(s) URL: {loggable_url(url)!r}")
        if parts.username or parts.password:
            raise PermanentError("source URLs with credentials are not fetched")
        if not host_allowed(parts.hostname, self.config.source_hosts):
            raise PermanentError(
                f"host {parts.hostname} is not in FALBACK_SOURCE_HOSTS"
                f" ({', '.join(self.config.source_hosts)})"
            )


def _raise_for_status(response: requests.Response, url: str) -> None:
    status = response.status_code
    if status in (200, 206):
        return
    response.close()
    host = _host(url)
    if status in (404, 410):
        raise SourceGone(f"source answered {status}: the file has expired at {host}")
    if status == 429 or status >= 500:
        raise TransientError(
            f"source answered {status} from {host}", retry_after=_retry_after(response)
        )
    # 401/403 on fal's CDN is an access rule (ACL), not an expiry; another try won't help.
    raise PermanentError(f"source answered {status} {response.reason or ''} from {host}".strip())


def _expiry(value: object) -> float:
    """A token's expires_at (epoch seconds or ISO 8601) as epoch; an hour if unreadable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return time.time() + 3600


def _content_length(response: requests.Response) -> int | None:
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        return int(match.group(3)) if match and match.group(3) != "*" else None
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


def loggable_url(url: str) -> str:
    """The URL without its query string: signed CDN URLs carry bearer tokens there."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return url[:80]
    return f"{parts.scheme}://{parts.hostname}{parts.path}"[:300]


def _private_channel(url: str, allow_loopback: bool) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    return allow_loopback and parts.hostname in ("127.0.0.1", "::1", "localhost")


def _host(url: str) -> str:
    return urlsplit(url).hostname or "?"


def _brief(error: BaseException) -> str:
    """The last line of a nested requests/urllib3 error, without the URL's query string."""
    text = str(error).split(":")[-1].strip() or type(error).__name__
    return text[:200]
