"""fal's JWKS endpoint and webhook signing. They live in the dev kit because the offline
demo signs the webhooks it sends."""

from devkit.jwks_server import JwksServer, jwk, jwks, signed_headers

__all__ = ["JwksServer", "jwk", "jwks", "signed_headers"]
