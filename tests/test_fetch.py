"""Fetching sources: streaming, Range resume, classified errors and the SSRF guard."""

from __future__ import annotations

import hashlib
import ipaddress
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Config
from jobs.address_guard import address_allowed, host_allowed
from jobs.errors import CopyError, PermanentError, SourceGone, TransientError
from jobs.fetch import SourceFetcher, _private_channel, loggable_url
from tests.fakes.cdn import FakeCdn


@pytest.fixture
def fetch_config(tmp_path: Path) -> Config:
    return Config(
        source_hosts=("127.0.0.1",),
        allow_loopback_sources=True,
        read_timeout=2.0,
        connect_timeout=2.0,
        fetch_resume_attempts=2,
        backup_dir=tmp_path,
    )


def md5_of(fetcher: SourceFetcher, url: str) -> tuple[int, str]:
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    for chunk in fetcher.open(url).chunks():
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def test_it_streams_the_whole_file(fetch_config: Config, cdn: FakeCdn) -> None:
    url = cdn.add("/files/b/x/a.mp4", 3_000_000)
    fetcher = SourceFetcher(fetch_config)
    stream = fetcher.open(url)
    assert stream.total == 3_000_000
    stream.response.close()
    assert md5_of(fetcher, url) == (3_000_000, cdn.file(url).md5())


def test_it_resumes_a_cut_off_body_with_range(fetch_config: Config, cdn: FakeCdn) -> None:
    url = cdn.add("/files/b/x/cut.mp4", 2_000_000, truncate_at=700_000, truncate_times=1)
    assert md5_of(SourceFetcher(fetch_config), url) == (2_000_000, cdn.file(url).md5())
    # The resume starts after the last whole chunk read before the cut.
    chunk = fetch_config.fetch_chunk_size
    assert cdn.file(url).requests == ["", f"bytes={700_000 // chunk * chunk}-"]


def test_it_gives_up_on_a_body_that_is_always_cut_off(fetch_config: Config, cdn: FakeCdn) -> None:
    url = cdn.add("/files/b/x/cut.mp4", 2_000_000, truncate_at=700_000)
    with pytest.raises(TransientError, match="cut off at byte 524288 of 2000000 after 2 resumes"):
        md5_of(SourceFetcher(fetch_config), url)
    assert len(cdn.file(url).requests) == 3


def test_a_source_that_ignores_range_restarts_the_copy(fetch_config: Config, cdn: FakeCdn) -> None:
    url = cdn.add("/files/b/x/norange.mp4", 1_000_000, truncate_at=300_000, ranges=False)
    with pytest.raises(TransientError, match="ignored the Range request"):
        md5_of(SourceFetcher(fetch_config), url)


def test_a_slow_body_times_out_and_resumes(fetch_config: Config, cdn: FakeCdn) -> None:
    config = fetch_config.replace(read_timeout=0.3)
    url = cdn.add("/files/b/x/slow.mp4", 200_000, slow_delay=1.0, truncate_at=10**9)
    with pytest.raises(TransientError, match="cut off"):
        md5_of(SourceFetcher(config), url)


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (404, SourceGone, "answered 404: the file has expired"),
        (410, SourceGone, "answered 410"),
        (500, TransientError, "answered 500"),
        (429, TransientError, "answered 429"),
        (403, PermanentError, "answered 403"),
    ],
)
def test_status_codes_are_classified(
    fetch_config: Config, cdn: FakeCdn, status: int, error: type[Exception], message: str
) -> None:
    url = cdn.add("/files/b/x/s.mp4", 10, status=status)
    with pytest.raises(error, match=message) as raised:
        SourceFetcher(fetch_config).open(url)
    # Exactly that class: a 403 that came out as SourceGone would end the row as 'gone'.
    assert type(raised.value) is error


def test_it_refuses_hosts_off_the_allowlist(fetch_config: Config, cdn: FakeCdn) -> None:
    fetcher = SourceFetcher(fetch_config.replace(source_hosts=("*.fal.media",)))
    with pytest.raises(PermanentError, match="host 127.0.0.1 is not in FALBACK_SOURCE_HOSTS"):
        fetcher.open(cdn.add("/files/b/x/a.png", 10))
    with pytest.raises(PermanentError, match="not an http"):
        fetcher.open("file:///etc/passwd")
    with pytest.raises(PermanentError, match="credentials"):
        fetcher.open("https://user:pw@v3.fal.media/files/x")


def test_loopback_is_blocked_by_default_even_when_the_host_is_allowed(
    fetch_config: Config, cdn: FakeCdn
) -> None:
    url = cdn.add("/files/b/x/a.png", 10).replace("127.0.0.1", "localhost")
    fetcher = SourceFetcher(fetch_config.replace(source_hosts=("localhost",), allow_loopback_sources=False))
    with pytest.raises(PermanentError, match="non-public address"):
        fetcher.open(url)
    assert cdn.file(url.replace("localhost", "127.0.0.1")).requests == []


def test_redirects_are_checked_at_every_hop(fetch_config: Config, cdn: FakeCdn) -> None:
    target = cdn.add("/files/b/x/real.png", 1000)
    hop = cdn.add("/files/b/x/hop.png", 0, redirect_to=target)
    assert md5_of(SourceFetcher(fetch_config), hop) == (1000, cdn.file(target).md5())

    metadata = cdn.add("/files/b/x/evil.png", 0, redirect_to="http://169.254.169.254/latest/meta-data/")
    with pytest.raises(PermanentError, match="host 169.254.169.254 is not in"):
        SourceFetcher(fetch_config).open(metadata)
    # Even with the metadata address allowlisted by mistake, the address guard refuses it.
    careless = SourceFetcher(fetch_config.replace(source_hosts=("127.0.0.1", "169.254.169.254")))
    with pytest.raises(PermanentError, match="non-public address"):
        careless.open(metadata)

    loop = cdn.add("/files/b/x/loop.png", 0, redirect_to="/files/b/x/loop.png")
    with pytest.raises(PermanentError, match="more than 5 redirects"):
        SourceFetcher(fetch_config).open(loop)


@pytest.mark.parametrize(
    ("address", "loopback_ok", "allowed"),
    [
        ("8.8.8.8", False, True),
        ("2606:4700::1111", False, True),
        ("127.0.0.1", False, False),
        ("127.0.0.1", True, True),
        ("::1", False, False),
        ("10.1.2.3", True, False),
        ("172.16.0.1", True, False),
        ("192.168.1.1", True, False),
        ("169.254.169.254", True, False),
        ("100.64.0.1", True, False),
        ("0.0.0.0", True, False),
        ("::ffff:10.0.0.1", True, False),
        ("::ffff:127.0.0.1", False, False),
        ("fd00::1", True, False),
        ("fe80::1", True, False),
        ("224.0.0.1", True, False),
    ],
)
def test_address_guard(address: str, loopback_ok: bool, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address), loopback_ok) is allowed


def test_host_patterns() -> None:
    hosts = ("fal.media", "*.fal.media")
    assert host_allowed("v3b.fal.media", hosts) and host_allowed("FAL.media.", hosts)
    assert not host_allowed("evilfal.media", hosts) and not host_allowed("fal.media.evil.com", hosts)


def test_memory_stays_flat_while_streaming(fetch_config: Config, cdn: FakeCdn) -> None:
    """64 MiB streamed through the fetcher allocates no more than a few chunks."""
    url = cdn.add("/files/b/x/big.mp4", 64 * 1024 * 1024)
    fetcher = SourceFetcher(fetch_config)
    tracemalloc.start()
    try:
        size, _ = md5_of(fetcher, url)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == 64 * 1024 * 1024
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes"


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "::a9fe:a9fe",
        "::ffff:169.254.169.254",
    ],
)
def test_ipv6_forms_of_a_blocked_ipv4_address_are_blocked(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address), True) is False


def test_proxy_settings_in_the_environment_are_not_used(
    fetch_config: Config, cdn: FakeCdn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy would connect through a pool the address guard does not cover."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")
    url = cdn.add("/files/b/x/p.png", 1000)
    assert md5_of(SourceFetcher(fetch_config), url) == (1000, cdn.file(url).md5())


def test_urls_are_logged_without_their_query_string() -> None:
    assert loggable_url("https://v3b.fal.media/files/b/x/a.mp4?identity=secret") == (
        "https://v3b.fal.media/files/b/x/a.mp4"
    )


@pytest.mark.parametrize("denied", [403, 404])
def test_a_restricted_file_is_fetched_with_a_cdn_token(
    fetch_config: Config, cdn: FakeCdn, denied: int
) -> None:
    """fal's ACLs answer 403 (forbid) or 404 (hide): with FAL_KEY set the fetch is tried
    once more with a CDN token from fal's REST API, and the token is reused."""
    cdn.token_key = "id:secret"
    config = fetch_config.replace(
        fal_key="id:secret", fal_rest_base_url=cdn.base_url, fal_cdn_token_hosts=("127.0.0.1",)
    )
    url = cdn.add("/files/b/x/private.mp4", 5000, bearer="cdn-token", denied_status=denied)
    other = cdn.add("/files/b/x/private2.mp4", 10, bearer="cdn-token")
    fetcher = SourceFetcher(config)
    assert md5_of(fetcher, url) == (5000, cdn.file(url).md5())
    assert cdn.file(url).authorizations == ["", "Bearer cdn-token"]
    assert md5_of(fetcher, other)[0] == 10
    assert cdn.tokens_issued == 1


def test_without_a_key_or_off_the_token_hosts_a_hidden_file_is_gone(
    fetch_config: Config, cdn: FakeCdn
) -> None:
    cdn.token_key = "id:secret"
    url = cdn.add("/files/b/x/private.mp4", 10, bearer="cdn-token")
    with pytest.raises(SourceGone):
        SourceFetcher(fetch_config.replace(fal_cdn_token_hosts=("127.0.0.1",))).open(url)
    with pytest.raises(SourceGone):
        SourceFetcher(fetch_config.replace(fal_key="id:secret", fal_rest_base_url=cdn.base_url)).open(url)
    assert cdn.tokens_issued == 0 and set(cdn.file(url).authorizations) == {""}


def test_a_refused_key_leaves_the_files_answer_as_it_is(fetch_config: Config, cdn: FakeCdn) -> None:
    cdn.token_key = "id:secret"
    config = fetch_config.replace(
        fal_key="wrong", fal_rest_base_url=cdn.base_url, fal_cdn_token_hosts=("127.0.0.1",)
    )
    url = cdn.add("/files/b/x/private.mp4", 10, bearer="cdn-token", denied_status=403)
    with pytest.raises(PermanentError, match="source answered 403"):
        SourceFetcher(config).open(url)


def test_the_cdn_token_goes_over_https_only() -> None:
    """Plain http carries the token only to a loopback stand-in (tests and the demo)."""
    assert _private_channel("https://v3b.fal.media/files/b/x", False)
    assert not _private_channel("http://v3b.fal.media/files/b/x", False)
    assert not _private_channel("http://127.0.0.1/files/b/x", False)
    assert _private_channel("http://127.0.0.1/files/b/x", True)


def test_an_expiry_stays_an_expiry_when_no_token_can_be_had(fetch_config: Config, cdn: FakeCdn) -> None:
    """A refused key or an unreachable token endpoint leaves a 404 as 'gone'."""
    cdn.token_key = "id:secret"
    url = cdn.add("/files/b/x/expired.mp4", 10, status=404)
    for key, rest in (("wrong", cdn.base_url), ("id:secret", "http://127.0.0.1:1")):
        config = fetch_config.replace(fal_key=key, fal_rest_base_url=rest, fal_cdn_token_hosts=("127.0.0.1",))
        with pytest.raises(SourceGone):
            SourceFetcher(config).open(url)


def test_the_cdn_token_is_not_sent_to_other_hosts(fetch_config: Config, cdn: FakeCdn) -> None:
    """A redirect from a token host to another host drops the token."""
    cdn.token_key = "id:secret"
    config = fetch_config.replace(
        fal_key="id:secret",
        fal_rest_base_url=cdn.base_url,
        source_hosts=("127.0.0.1", "localhost"),
        fal_cdn_token_hosts=("127.0.0.1",),
    )
    target = cdn.add("/files/b/x/public.mp4", 100).replace("127.0.0.1", "localhost")
    hop = cdn.add("/files/b/x/hop.mp4", 0, redirect_to=target, bearer="cdn-token")
    assert md5_of(SourceFetcher(config), hop)[0] == 100
    assert cdn.file(hop).authorizations == ["", "Bearer cdn-token"]
    assert cdn.file("/files/b/x/public.mp4").authorizations == [""]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:99999/files/x", "Port out of range"),
        ("http://127.0.0.1:-1/files/x", "Port could not be cast"),
        ("http://127.0.0.1:http/files/x", "Port could not be cast"),
        ("http://127.0.0.1:0/files/x", "port 0"),
        ("https://v3.fal.media\uff03@127.0.0.1/files/x", "invalid characters under NFKC"),
        ("http://[127.0.0.1/files/x", "Invalid IPv6 URL"),
        ("http://127.0.0.1/files/a b", "whitespace or control characters"),
        (f"http://{'a' * 70}.fal.media/files/x", "is not a valid host name"),
    ],
)
def test_a_malformed_url_is_a_permanent_error(fetch_config: Config, url: str, reason: str) -> None:
    """README: a malformed URL fails at once; a bad port is no reason to retry."""
    fetcher = SourceFetcher(fetch_config.replace(source_hosts=("127.0.0.1", "*.fal.media")))
    with pytest.raises(PermanentError) as raised:
        fetcher.open(url + "?token=secret")
    assert reason in str(raised.value) and "secret" not in str(raised.value)


def test_a_malformed_redirect_is_a_permanent_error(fetch_config: Config, cdn: FakeCdn) -> None:
    hop = cdn.add("/files/b/x/hop.png", 0, redirect_to="http://[::1/files/x")
    with pytest.raises(PermanentError, match="redirected to a malformed URL|malformed source URL"):
        SourceFetcher(fetch_config).open(hop)


_HOSTS = st.sampled_from(["127.0.0.1", "[::1]", "[127.0.0.1", "a" * 70 + ".fal.media", "localhost\uff03"])
_PIECES = st.sampled_from(
    [
        "\uff03",
        "\uff20",
        "[",
        "]",
        "@",
        ":",
        "%",
        "%zz",
        "#",
        "?",
        "/",
        "\\",
        " ",
        "\x7f",
        "..",
        "~",
        "\u00e4",
        "a",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    host=_HOSTS,
    port=st.sampled_from(["", ":{cdn}", ":99999", ":-1", ":x", ":0", ":"]),
    path=st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=8).map("".join),
    query=st.text(max_size=8),
)
def test_fetching_any_url_raises_only_classified_errors(
    fetch_config: Config, cdn: FakeCdn, host: str, port: str, path: str, query: str
) -> None:
    """Whatever the string, a fetch answers or raises a CopyError (never the URL parser's
    or urllib3's own exceptions)."""
    netloc_port = port.format(cdn=cdn.base_url.rsplit(":", 1)[1])
    url = f"http://{host}{netloc_port}/files/{path}?token={query}"
    fetcher = SourceFetcher(fetch_config.replace(source_hosts=("127.0.0.1", "*.fal.media")))
    try:
        fetcher.open(url).response.close()
    except CopyError:
        pass
    finally:
        fetcher.close()
