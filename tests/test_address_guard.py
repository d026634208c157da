"""The address guard against IANA's special-purpose registries: every entry of both, an
address inside each and both edges; the embedded IPv4 forms; and URL checks that never
raise anything but PermanentError, whatever the string (property tests)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jobs.address_guard import (
    IPV4_SPECIAL,
    IPV6_SPECIAL,
    IPAddress,
    address_allowed,
    loggable_url,
    split_url,
)
from jobs.errors import PermanentError

# The registries' "Globally Reachable" column, transcribed here independently of the
# guard's own table (None: N/A or blank). EMBEDDED: a form carrying an IPv4 address,
# judged as that address.
EMBEDDED = "embedded"
IPV4_REGISTRY: dict[str, bool | None] = {
    "0.0.0.0/8": False,
    "0.0.0.0/32": False,
    "10.0.0.0/8": False,
    "100.64.0.0/10": False,
    "127.0.0.0/8": False,
    "169.254.0.0/16": False,
    "172.16.0.0/12": False,
    "192.0.0.0/24": False,
    "192.0.0.0/29": False,
    "192.0.0.8/32": False,
    "192.0.0.9/32": True,
    "192.0.0.10/32": True,
    "192.0.0.170/32": False,
    "192.0.0.171/32": False,
    "192.0.2.0/24": False,
    "192.31.196.0/24": True,
    "192.52.193.0/24": True,
    "192.88.99.0/24": None,
    "192.88.99.2/32": False,
    "192.168.0.0/16": False,
    "192.175.48.0/24": True,
    "198.18.0.0/15": False,
    "198.51.100.0/24": False,
    "203.0.113.0/24": False,
    "240.0.0.0/4": False,
    "255.255.255.255/32": False,
}
IPV6_REGISTRY: dict[str, bool | None] = {
    "::1/128": False,
    "::/128": False,
    "::ffff:0:0/96": False,
    "64:ff9b::/96": True,
    "64:ff9b:1::/48": False,
    "100::/64": False,
    "100:0:0:1::/64": False,
    "2001::/23": False,
    "2001::/32": None,
    "2001:1::1/128": True,
    "2001:1::2/128": True,
    "2001:1::3/128": True,
    "2001:2::/48": False,
    "2001:3::/32": True,
    "2001:4:112::/48": True,
    "2001:10::/28": None,
    "2001:20::/28": True,
    "2001:30::/28": True,
    "2001:db8::/32": False,
    "2002::/16": None,
    "2620:4f:8000::/48": True,
    "3fff::/20": False,
    "5f00::/16": False,
    "fc00::/7": False,
    "fe80::/10": False,
}
# Entries whose addresses carry an IPv4 one; their verdict is that address's.
IPV6_EMBEDDING = {"::ffff:0:0/96", "64:ff9b::/96", "2001::/32", "2002::/16"}


def test_the_guard_holds_both_registries_as_transcribed() -> None:
    assert {str(b.network): b.globally_reachable for b in IPV4_SPECIAL} == IPV4_REGISTRY
    assert {str(b.network): b.globally_reachable for b in IPV6_SPECIAL} == IPV6_REGISTRY


def _expected(ip: IPAddress) -> bool:
    """The test's own reading: the most specific registry entry decides."""
    registry = IPV4_REGISTRY if ip.version == 4 else IPV6_REGISTRY
    holding = [ipaddress.ip_network(c) for c in registry if ip in ipaddress.ip_network(c)]
    most_specific = max(holding, key=lambda n: n.prefixlen)
    return registry[str(most_specific)] is True


def _edges_and_inside(cidr: str) -> list[IPAddress]:
    net = ipaddress.ip_network(cidr)
    return [net.network_address, net.network_address + net.num_addresses // 2, net.broadcast_address]


@pytest.mark.parametrize("cidr", [c for c in [*IPV4_REGISTRY, *IPV6_REGISTRY] if c not in IPV6_EMBEDDING])
def test_every_registry_entry_decides_its_range(cidr: str) -> None:
    for ip in _edges_and_inside(cidr):
        if ip.version == 6 and any(ip in ipaddress.ip_network(c) for c in IPV6_EMBEDDING):
            continue  # the edge of 2001::/23 is a Teredo address: tested below
        assert address_allowed(ip) is _expected(ip), f"{ip} in {cidr}"


def teredo(server: str, client: str) -> ipaddress.IPv6Address:
    """2001:0:<server>:<flags>:<port>:<client XOR 0xffffffff> (RFC 4380 4)."""
    s, c = int(ipaddress.IPv4Address(server)), int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF
    return ipaddress.IPv6Address((0x20010000 << 96) | (s << 64) | c)


@pytest.mark.parametrize(
    ("cidr", "inside_public", "inside_private"),
    [
        ("::ffff:0:0/96", "::ffff:8.8.8.8", "::ffff:10.0.0.1"),
        ("64:ff9b::/96", "64:ff9b::8.8.8.8", "64:ff9b::169.254.169.254"),
        ("2002::/16", "2002:808:808::1", "2002:a9fe:a9fe::1"),
        ("2001::/32", str(teredo("8.8.8.8", "1.1.1.1")), str(teredo("8.8.8.8", "192.168.1.1"))),
    ],
)
def test_embedding_entries_are_judged_by_the_ipv4_they_carry(
    cidr: str, inside_public: str, inside_private: str
) -> None:
    net = ipaddress.ip_network(cidr)
    assert ipaddress.ip_address(inside_public) in net and ipaddress.ip_address(inside_private) in net
    assert address_allowed(ipaddress.ip_address(inside_public)) is True
    assert address_allowed(ipaddress.ip_address(inside_private)) is False
    # The edges carry 0.0.0.0 and 255.255.255.255 (Teredo: as server or client).
    assert address_allowed(net.network_address) is False
    assert address_allowed(net.broadcast_address) is False
    assert address_allowed(ipaddress.ip_address(str(teredo("10.0.0.1", "8.8.8.8")))) is False


@pytest.mark.parametrize(
    "address",
    [
        # Site-local (deprecated, RFC 3879) and everything else outside 2000::/3.
        "fec0::",
        "fec0::1",
        "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "4000::1",
        "1fff:ffff::1",
        "e000::1",
        "ff02::1",
        "ff0e::1",
        # IPv4-translated (RFC 2765) and IPv4-compatible forms of non-public addresses.
        "::ffff:0:10.0.0.1",
        "::ffff:0:127.0.0.1",
        "::ffff:0:169.254.169.254",
        "::ffff:0:0.0.0.0",
        "::10.0.0.1",
        "::169.254.169.254",
        "::0.0.0.2",
        # Local-use NAT64 is not globally reachable, whatever it carries.
        "64:ff9b:1::808:808",
        "64:ff9b:1:ffff::808:808",
        # IPv4 multicast and the edges of the reserved blocks around public space.
        "224.0.0.0",
        "224.0.0.1",
        "239.255.255.255",
        "240.0.0.0",
        "255.255.255.254",
    ],
)
def test_addresses_outside_globally_reachable_space_are_refused(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address)) is False


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "9.255.255.255",
        "11.0.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "126.255.255.255",
        "128.0.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.0",
        "192.167.255.255",
        "192.169.0.0",
        "223.255.255.255",
        "2000::",
        "2606:4700::1111",
        "3ffe:ffff::1",
        "2a00:1450::1",
        "::ffff:0:8.8.8.8",
        "::8.8.8.8",
        "64:ff9b::1.1.1.1",
    ],
)
def test_globally_reachable_addresses_pass(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address)) is True


def test_loopback_is_allowed_only_when_asked() -> None:
    for address in ("127.0.0.1", "127.255.255.254", "::1", "::ffff:127.0.0.1"):
        ip = ipaddress.ip_address(address)
        assert address_allowed(ip) is False and address_allowed(ip, True) is True


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_ipv6_form_of_an_ipv4_address_gets_its_verdict(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    verdict = address_allowed(v4)
    forms = [
        ipaddress.IPv6Address((0xFFFF << 32) | value),  # mapped
        ipaddress.IPv6Address((0xFFFF << 48) | value),  # translated
        ipaddress.IPv6Address((0x64FF9B << 96) | value),  # NAT64
        ipaddress.IPv6Address((0x2002 << 112) | (value << 80)),  # 6to4
        teredo(str(v4), "8.8.8.8"),
        teredo("8.8.8.8", str(v4)),
    ]
    if value > 1:
        forms.append(ipaddress.IPv6Address(value))  # compatible
    for form in forms:
        assert address_allowed(form) is verdict, f"{form} carries {v4}"


# Characters that break URL parsers: the fullwidth '#', '@', ':', '[', ']', '%', controls.
_TRICKY = st.sampled_from(
    [
        "\uff03",
        "\uff20",
        "\uff1a",
        "\u2100",
        "[",
        "]",
        "@",
        ":",
        "%",
        "#",
        "?",
        "/",
        "\\",
        " ",
        "\t",
        "\x00",
        "\x7f",
        "-1",
        "99999",
        "::1",
        ".",
    ]
)
_URLISH = st.builds(
    lambda scheme, user, host, port, path, query: f"{scheme}{user}{host}{port}{path}{query}",
    st.sampled_from(["http://", "https://", "ftp://", "", "http:/", "HTTP://", "http:"]),
    st.sampled_from(["", "u@", "u:p@", "\uff03@", "@"]),
    st.one_of(
        st.sampled_from(["127.0.0.1", "[::1]", "[127.0.0.1", "v3.fal.media", "a" * 70]),
        st.text(min_size=0, max_size=12),
    ),
    st.one_of(
        st.just(""),
        st.integers(-5, 100_000).map(lambda p: f":{p}"),
        st.text(max_size=6).map(lambda p: f":{p}"),
    ),
    st.lists(st.one_of(_TRICKY, st.text(max_size=5)), max_size=6).map(lambda p: "/" + "".join(p)),
    st.one_of(st.just(""), st.text(max_size=10).map(lambda q: f"?token={q}")),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), _URLISH))
@example("https://v3.fal.media\uff03@evil.example/x")
@example("http://[::1/files/x")
@example("http://127.0.0.1:99999/x")
@example("http://127.0.0.1:-1/x")
@example("http://127.0.0.1:port/x")
def test_url_checks_raise_only_classified_errors(url: str) -> None:
    shown = loggable_url(url)  # never raises
    assert "token=" not in shown
    try:
        parts = split_url(url)
    except PermanentError as e:
        assert str(e)
        return
    assert parts.scheme in ("http", "https") and parts.hostname
    assert parts.port is None or 0 < parts.port < 65536
