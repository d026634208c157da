"""What a source fetch may connect to: well-formed http(s) URLs on allowlisted hosts,
resolving to globally reachable addresses only; and the connection layer enforcing it.

A malformed URL is a PermanentError saying what is wrong, never the URL parser's own
ValueError. Only globally reachable addresses are fetched. The verdict comes from IANA's IPv4 and
IPv6 Special-Purpose Address Registries, written out below with each entry's "Globally
Reachable" value, not from `ipaddress.is_global` (Python 3.11 counts fec0::/10 and
::ffff:0:0:0/96 as global). An address in no entry is reachable if it is unicast space:
any IPv4 address but multicast, and IPv6 Global Unicast (2000::/3) only. An IPv6 address
that carries an IPv4 one (mapped, translated, compatible, NAT64, 6to4, Teredo) is judged
as the IPv4 address(es) it carries.

The check runs at connect time, on every address a name resolves to, and the socket then
connects to the very address that was checked, so DNS rebinding cannot slip past.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

import urllib3.connection
import urllib3.connectionpool
from requests.adapters import HTTPAdapter

from jobs.errors import PermanentError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether `host` matches FALBACK_SOURCE_HOSTS-style patterns ("*." = any subdomain)."""
    host = host.lower().rstrip(".")
    for pattern in allowed:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def split_url(url: str) -> SplitResult:
    """`url` split into its parts, or PermanentError saying what makes it unusable.

    Every check the URL parser would make later (the port, an unclosed IPv6 bracket,
    characters that change under NFKC normalisation) is made here, so that nothing past
    this point raises the parser's ValueError.
    """
    shown = loggable_url(url)
    if any(ord(c) < 0x21 or c == "\x7f" for c in url):
        raise PermanentError(f"malformed source URL (whitespace or control characters): {shown!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as e:
        # The NFKC message quotes the netloc, which may hold credentials.
        reason = re.sub(r"netloc '.*' contains", "the host part contains", str(e), flags=re.S)
        raise PermanentError(f"malformed source URL ({reason}): {shown!r}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise PermanentError(f"not an http(s) URL: {shown!r}")
    if port == 0:
        raise PermanentError(f"malformed source URL (port 0): {shown!r}")
    if parts.username is not None or parts.password is not None:
        raise PermanentError("source URLs with credentials are not fetched")
    return parts


def loggable_url(url: str) -> str:
    """The URL without its query string or fragment (signed CDN URLs carry bearer tokens
    there) and without credentials; never raises, whatever `url` is."""
    bare = url.split("?", 1)[0].split("#", 1)[0]
    try:
        parts = urlsplit(bare)
        host = parts.hostname
    except ValueError:
        return bare.rpartition("@")[2][:80]  # unparseable: what is left of it, briefly
    if parts.scheme not in ("http", "https") or not host:
        return bare.rpartition("@")[2][:80]
    return f"{parts.scheme}://{host}{parts.path}"[:300]


@dataclass(frozen=True)
class SpecialBlock:
    """One registry entry. `globally_reachable` is None where the registry says N/A or
    leaves it blank (deprecated entries); such blocks are not fetched."""

    network: IPNetwork
    name: str
    rfc: str
    globally_reachable: bool | None


def _blocks(rows: tuple[tuple[str, str, str, bool | None], ...]) -> tuple[SpecialBlock, ...]:
    return tuple(
        SpecialBlock(ipaddress.ip_network(cidr), name, rfc, reachable) for cidr, name, rfc, reachable in rows
    )


# https://www.iana.org/assignments/iana-ipv4-special-registry/ (CSV of 2026-07). The row
# "192.0.0.170/32, 192.0.0.171/32" is written as two entries.
IPV4_SPECIAL = _blocks(
    (
        ("0.0.0.0/8", '"This network"', "RFC 791", False),
        ("0.0.0.0/32", '"This host on this network"', "RFC 1122", False),
        ("10.0.0.0/8", "Private-Use", "RFC 1918", False),
        ("100.64.0.0/10", "Shared Address Space", "RFC 6598", False),
        ("127.0.0.0/8", "Loopback", "RFC 1122", False),
        ("169.254.0.0/16", "Link Local", "RFC 3927", False),
        ("172.16.0.0/12", "Private-Use", "RFC 1918", False),
        ("192.0.0.0/24", "IETF Protocol Assignments", "RFC 6890", False),
        ("192.0.0.0/29", "IPv4 Service Continuity Prefix", "RFC 7335", False),
        ("192.0.0.8/32", "IPv4 dummy address", "RFC 7600", False),
        ("192.0.0.9/32", "Port Control Protocol Anycast", "RFC 7723", True),
        ("192.0.0.10/32", "Traversal Using Relays around NAT Anycast", "RFC 8155", True),
        ("192.0.0.170/32", "NAT64/DNS64 Discovery", "RFC 8880", False),
        ("192.0.0.171/32", "NAT64/DNS64 Discovery", "RFC 8880", False),
        ("192.0.2.0/24", "Documentation (TEST-NET-1)", "RFC 5737", False),
        ("192.31.196.0/24", "AS112-v4", "RFC 7535", True),
        ("192.52.193.0/24", "AMT", "RFC 7450", True),
        ("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", "RFC 7526", None),
        ("192.88.99.2/32", "6a44-relay anycast address", "RFC 6751", False),
        ("192.168.0.0/16", "Private-Use", "RFC 1918", False),
        ("192.175.48.0/24", "Direct Delegation AS112 Service", "RFC 7534", True),
        ("198.18.0.0/15", "Benchmarking", "RFC 2544", False),
        ("198.51.100.0/24", "Documentation (TEST-NET-2)", "RFC 5737", False),
        ("203.0.113.0/24", "Documentation (TEST-NET-3)", "RFC 5737", False),
        ("240.0.0.0/4", "Reserved", "RFC 1112", False),
        ("255.255.255.255/32", "Limited Broadcast", "RFC 8190", False),
    )
)

# https://www.iana.org/assignments/iana-ipv6-special-registry/ (CSV of 2026-07).
IPV6_SPECIAL = _blocks(
    (
        ("::1/128", "Loopback Address", "RFC 4291", False),
        ("::/128", "Unspecified Address", "RFC 4291", False),
        ("::ffff:0:0/96", "IPv4-mapped Address", "RFC 4291", False),
        ("64:ff9b::/96", "IPv4-IPv6 Translat.", "RFC 6052", True),
        ("64:ff9b:1::/48", "IPv4-IPv6 Translat.", "RFC 8215", False),
        ("100::/64", "Discard-Only Address Block", "RFC 6666", False),
        ("100:0:0:1::/64", "Dummy IPv6 Prefix", "RFC 9780", False),
        ("2001::/23", "IETF Protocol Assignments", "RFC 2928", False),
        ("2001::/32", "TEREDO", "RFC 4380", None),
        ("2001:1::1/128", "Port Control Protocol Anycast", "RFC 7723", True),
        ("2001:1::2/128", "Traversal Using Relays around NAT Anycast", "RFC 8155", True),
        ("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast", "RFC 9665", True),
        ("2001:2::/48", "Benchmarking", "RFC 5180", False),
        ("2001:3::/32", "AMT", "RFC 7450", True),
        ("2001:4:112::/48", "AS112-v6", "RFC 7535", True),
        ("2001:10::/28", "Deprecated (previously ORCHID)", "RFC 4843", None),
        ("2001:20::/28", "ORCHIDv2", "RFC 7343", True),
        ("2001:30::/28", "Drone Remote ID Protocol Entity Tags (DETs) Prefix", "RFC 9374", True),
        ("2001:db8::/32", "Documentation", "RFC 3849", False),
        ("2002::/16", "6to4", "RFC 3056", None),
        ("2620:4f:8000::/48", "Direct Delegation AS112 Service", "RFC 7534", True),
        ("3fff::/20", "Documentation", "RFC 9637", False),
        ("5f00::/16", "Segment Routing (SRv6) SIDs", "RFC 9602", False),
        ("fc00::/7", "Unique-Local", "RFC 4193", False),
        ("fe80::/10", "Link-Local Unicast", "RFC 4291", False),
    )
)

# Outside the special-purpose entries: IPv4 multicast is no unicast destination (IANA
# IPv4 Address Space, RFC 5771), and IPv6 outside Global Unicast is reserved by the IETF
# (IANA IPv6 Address Space; fec0::/10 was site-local, deprecated by RFC 3879).
IPV4_MULTICAST = ipaddress.IPv4Network("224.0.0.0/4")
IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")

# Forms that carry an IPv4 address in their low 32 bits.
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 (SIIT)
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291 2.5.5.1, deprecated
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NOT_COMPATIBLE = (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1"))


def special_block(ip: IPAddress) -> SpecialBlock | None:
    """The most specific registry entry that holds `ip` (entries nest: 192.0.0.9/32 is a
    globally reachable exception inside 192.0.0.0/24)."""
    table = IPV4_SPECIAL if isinstance(ip, ipaddress.IPv4Address) else IPV6_SPECIAL
    found = [block for block in table if ip in block.network]
    return max(found, key=lambda block: block.network.prefixlen, default=None)


def carried_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...] | None:
    """The IPv4 address(es) an IPv6 address stands for, or None if it is not such a form.
    Teredo carries two: the server's and the client's (RFC 4380 4)."""
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _MAPPED or ip in _TRANSLATED or ip in _NAT64:
        return (low,)
    if ip in _COMPATIBLE and ip not in _NOT_COMPATIBLE:
        return (low,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:  # 2001::/32
        return ip.teredo
    return None


def address_allowed(ip: IPAddress, allow_loopback: bool = False) -> bool:
    """Whether a source fetch may connect to `ip`."""
    if allow_loopback and ip.is_loopback:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        carried = carried_ipv4(ip)
        if carried is not None:
            return all(address_allowed(v4, allow_loopback) for v4 in carried)
    block = special_block(ip)
    if block is not None:
        return block.globally_reachable is True
    if isinstance(ip, ipaddress.IPv4Address):
        return ip not in IPV4_MULTICAST
    return ip in IPV6_GLOBAL_UNICAST


class BlockedAddress(Exception):
    """Raised inside the connection layer; deliberately not an OSError, so urllib3 and
    requests let it through instead of retrying."""


def checked_address(host: str, port: int, allow_loopback: bool) -> str:
    """Resolve `host` and return an address to connect to, if every address it resolves
    to may be fetched; raise BlockedAddress otherwise."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError:
        # An IDNA label the codec refuses (too long, empty): no DNS name at all.
        raise BlockedAddress(f"{host[:80]!r} is not a valid host name") from None
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        if not address_allowed(ipaddress.ip_address(address.split("%")[0]), allow_loopback):
            raise BlockedAddress(f"{host} resolves to a non-public address ({address})")
    return addresses[0]


def guarded_adapter(allow_loopback: bool) -> HTTPAdapter:
    """A requests adapter whose connections (http and https) pass `checked_address`."""

    def new_conn(base: type[urllib3.connection.HTTPConnection]) -> Any:
        def _new_conn(self: urllib3.connection.HTTPConnection) -> socket.socket:
            dns_host = self._dns_host
            self._dns_host = checked_address(dns_host, self.port, allow_loopback)
            try:
                sock: socket.socket = base._new_conn(self)
                return sock
            finally:
                self._dns_host = dns_host

        return _new_conn

    http_conn = type(
        "GuardedHTTPConnection",
        (urllib3.connection.HTTPConnection,),
        {"_new_conn": new_conn(urllib3.connection.HTTPConnection)},
    )
    https_conn = type(
        "GuardedHTTPSConnection",
        (urllib3.connection.HTTPSConnection,),
        {"_new_conn": new_conn(urllib3.connection.HTTPSConnection)},
    )
    http_pool = type(
        "GuardedHTTPPool", (urllib3.connectionpool.HTTPConnectionPool,), {"ConnectionCls": http_conn}
    )
    https_pool = type(
        "GuardedHTTPSPool", (urllib3.connectionpool.HTTPSConnectionPool,), {"ConnectionCls": https_conn}
    )

    class GuardedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}

    return GuardedAdapter(max_retries=0)
