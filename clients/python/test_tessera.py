"""Tessera from Python: the stubs generated from proto/ against a real server.

scripts/polyglot.sh generates the stubs into clients/python/gen, starts the
`tessera` binary with a callers file and runs this file with pytest. Run by
hand against your own server:

    TESSERA_ADDR=127.0.0.1:50051 TESSERA_SERVICE_KEY=tsk_... pytest clients/python

The caller behind the key needs the rights `tessera callers add NAME --rpcs
Issue,Refresh,Revoke --audiences orders-api --revoke jti,family` gives.
"""

import base64
import json
import os
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

GEN = Path(__file__).resolve().parent / "gen"
if not (GEN / "tessera" / "v1" / "issuer_pb2.py").exists():
    pytest.exit(f"{GEN} holds no generated stubs: run scripts/polyglot.sh", returncode=2)
sys.path.insert(0, str(GEN))

from tessera.v1 import common_pb2  # noqa: E402
from tessera.v1 import introspection_pb2 as intro  # noqa: E402
from tessera.v1 import introspection_pb2_grpc  # noqa: E402
from tessera.v1 import issuer_pb2, issuer_pb2_grpc  # noqa: E402
from tessera.v1 import keys_pb2, keys_pb2_grpc  # noqa: E402
from tessera.v1 import revocation_pb2, revocation_pb2_grpc  # noqa: E402

AUDIENCE = "orders-api"
DOMAIN = "tessera.dev"
TIMEOUT = 10  # seconds, every call


def env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        pytest.exit(f"set {name} (scripts/polyglot.sh does)", returncode=2)
    return value


ADDR = env("TESSERA_ADDR")
# The service key, sent as `authorization: Bearer <key>` on every call.
KEY = (("authorization", f"Bearer {env('TESSERA_SERVICE_KEY')}"),)


@pytest.fixture(scope="module")
def channel():
    with grpc.insecure_channel(ADDR) as ch:
        yield ch


def verify(channel, token: str, consistency=intro.CONSISTENCY_DEFAULT) -> intro.VerifyResponse:
    stub = introspection_pb2_grpc.IntrospectionServiceStub(channel)
    request = intro.VerifyRequest(
        token=token,
        expected_audience=AUDIENCE,
        expected_kind=common_pb2.TOKEN_KIND_ACCESS,
        consistency=consistency,
    )
    return stub.Verify(request, metadata=KEY, timeout=TIMEOUT)


def kid_of(token: str) -> str:
    """The `kid` of a JWS compact token's header (read, not trusted)."""
    header = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]


def details(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, list]:
    """The ErrorInfo and the other details of a failed call, from its
    `grpc-status-details-bin` trailer (a google.rpc.Status)."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no grpc-status-details-bin on {error.code()}: {error.details()}"
    assert status.code == error.code().value[0], (status.code, error.code())
    infos, others = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
        else:
            others.append(detail)
    assert len(infos) == 1, f"expected exactly one ErrorInfo, got {infos}"
    assert infos[0].domain == DOMAIN, infos[0]
    return infos[0], others


def test_issue_verify_refresh_revoke_verify(channel):
    issuer = issuer_pb2_grpc.IssuerServiceStub(channel)
    issued = issuer.Issue(
        issuer_pb2.IssueRequest(subject="py-user", audience=AUDIENCE, scopes=["orders:read"]),
        metadata=KEY,
        timeout=TIMEOUT,
    )
    assert issued.access_token.count(".") == 2, "the access token is not a JWS compact"
    assert len(issued.refresh_token) == 43, "the refresh token is not 256 bits of base64url"
    assert issued.family_id and issued.access_token_id

    verified = verify(channel, issued.access_token)
    assert verified.valid, f"a fresh access token failed Verify: {intro.VerifyFailure.Name(verified.failure)}"
    assert verified.failure == intro.VERIFY_FAILURE_UNSPECIFIED
    claims = verified.claims
    assert claims.subject == "py-user"
    assert list(claims.audience) == [AUDIENCE]
    assert list(claims.scopes) == ["orders:read"]
    assert claims.family_id == issued.family_id
    assert claims.token_id == issued.access_token_id
    assert claims.kid == kid_of(issued.access_token)
    assert claims.all_claims["sub"] == "py-user"

    refreshed = issuer.Refresh(
        issuer_pb2.RefreshRequest(refresh_token=issued.refresh_token), metadata=KEY, timeout=TIMEOUT
    )
    assert refreshed.family_id == issued.family_id, "Refresh left the family"
    assert refreshed.refresh_token != issued.refresh_token, "Refresh did not rotate the refresh token"
    assert refreshed.access_token_id != issued.access_token_id
    verified = verify(channel, refreshed.access_token)
    assert verified.valid, intro.VerifyFailure.Name(verified.failure)
    assert verified.claims.token_id == refreshed.access_token_id

    revocation = revocation_pb2_grpc.RevocationServiceStub(channel)
    revoked = revocation.Revoke(
        revocation_pb2.RevokeRequest(family_id=issued.family_id, reason="polyglot test: log out"),
        metadata=KEY,
        timeout=TIMEOUT,
    )
    assert revoked.revoked == 1, f"Revoke(family) revoked {revoked.revoked}, expected 1"

    # STRONG reads the store: the revocation that just returned (read your writes).
    after = verify(channel, refreshed.access_token, intro.CONSISTENCY_STRONG)
    assert not after.valid, "a token of a revoked family still verifies"
    assert after.failure == intro.VERIFY_FAILURE_REVOKED, intro.VerifyFailure.Name(after.failure)
    assert not after.HasField("claims"), "claims were returned for an invalid token"

    # The family's refresh token is dead too.
    with pytest.raises(grpc.RpcError) as failed:
        issuer.Refresh(
            issuer_pb2.RefreshRequest(refresh_token=refreshed.refresh_token), metadata=KEY, timeout=TIMEOUT
        )
    assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED, failed.value.code()
    info, _ = details(failed.value)
    assert info.reason == "ERROR_REASON_REFRESH_TOKEN_INVALID", info.reason


def test_invalid_argument_carries_error_info_and_bad_request(channel):
    with pytest.raises(grpc.RpcError) as failed:
        verify(channel, "")
    error = failed.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.code()
    info, others = details(error)
    assert info.reason == "ERROR_REASON_FIELD_INVALID", info.reason
    bad = [d for d in others if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    assert len(bad) == 1, f"expected one BadRequest among {[d.type_url for d in others]}"
    request = error_details_pb2.BadRequest()
    bad[0].Unpack(request)
    fields = [v.field for v in request.field_violations]
    assert fields == ["token"], fields
    assert request.field_violations[0].description, "the field violation says nothing"


def test_no_service_key_is_unauthenticated(channel):
    issuer = issuer_pb2_grpc.IssuerServiceStub(channel)
    with pytest.raises(grpc.RpcError) as failed:
        issuer.Issue(issuer_pb2.IssueRequest(subject="py-user", audience=AUDIENCE), timeout=TIMEOUT)
    assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED, failed.value.code()
    info, _ = details(failed.value)
    assert info.reason == "ERROR_REASON_CALLER_UNKNOWN", info.reason


def test_jwks_over_http_and_grpc_name_the_signing_key(channel):
    issued = issuer_pb2_grpc.IssuerServiceStub(channel).Issue(
        issuer_pb2.IssueRequest(subject="py-jwks", audience=AUDIENCE), metadata=KEY, timeout=TIMEOUT
    )
    kid = kid_of(issued.access_token)

    with urllib.request.urlopen(f"http://{ADDR}/.well-known/jwks.json", timeout=TIMEOUT) as answer:
        assert answer.status == 200, answer.status
        # RFC 7517 section 8.5.
        assert answer.headers.get_content_type() == "application/jwk-set+json", answer.headers["content-type"]
        http_jwks = json.load(answer)
    http_kids = {k["kid"] for k in http_jwks["keys"]}
    assert kid in http_kids, f"the token's kid {kid} is not in the HTTP JWKS {sorted(http_kids)}"
    for key in http_jwks["keys"]:
        assert key["use"] == "sig" and key["alg"] and key["kty"], key
        assert "d" not in key, "the JWKS publishes a private key"

    jwks = keys_pb2_grpc.KeyServiceStub(channel).GetJwks(
        keys_pb2.GetJwksRequest(), metadata=KEY, timeout=TIMEOUT
    )
    grpc_kids = {k.kid for k in jwks.keys}
    assert grpc_kids == {k["kid"] for k in json.loads(jwks.jwks_json)["keys"]}, "jwks_json and keys disagree"
    assert grpc_kids == http_kids, f"GetJwks {sorted(grpc_kids)} and HTTP {sorted(http_kids)} disagree"
    assert jwks.etag, "GetJwks sent no etag"
    signing = [k for k in jwks.keys if k.kid == kid]
    assert signing[0].state == keys_pb2.KEY_STATE_ACTIVE, keys_pb2.KeyState.Name(signing[0].state)
