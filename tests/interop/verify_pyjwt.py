"""Verifies access tokens with PyJWT, keys from Tessera's HTTP JWKS only.

Usage: verify_pyjwt.py JWKS_URL ISSUER AUDIENCE TOKEN...
Exits non-zero (with the reason) if any token fails.
"""
import sys

import jwt

jwks_url, issuer, audience, *tokens = sys.argv[1:]
# A fresh client per run, as a gateway starting up would have.
client = jwt.PyJWKClient(jwks_url, cache_keys=False)
for token in tokens:
    key = client.get_signing_key_from_jwt(token)
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt", header
    claims = jwt.decode(
        token,
        key.key,
        algorithms=[header["alg"]],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "nbf", "sub", "jti"]},
    )
    print(f"pyjwt ok kid={header['kid']} sub={claims['sub']}")
