"""fal's CDN, stood in for by a local HTTP server (Range, Content-Length, 404 after expiry,
slow or truncated bodies). It lives in the dev kit because the offline demo serves its
files from it too."""

from devkit.fakecdn import FakeCdn, FakeFile

__all__ = ["FakeCdn", "FakeFile"]
