// Tessera from Node: the TypeScript clients generated from proto/ (ts-proto,
// @grpc/grpc-js) against a real server.
//
// scripts/polyglot.sh generates them into clients/node/gen, compiles this
// file with them (tsc, so a contract change that breaks the client breaks the
// build), starts the `tessera` binary with a callers file and runs the result
// with node's test runner. By hand, against your own server:
//
//   TESSERA_ADDR=127.0.0.1:50051 TESSERA_SERVICE_KEY=tsk_... node --test clients/node/dist/test.js
//
// The caller behind the key needs the rights `tessera callers add NAME --rpcs
// Issue,Refresh,Revoke --audiences orders-api --revoke jti,family` gives.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { credentials, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { getProtoPath } from "google-proto-files";
import { Root } from "protobufjs";
import { TokenKind } from "./gen/tessera/v1/common";
import {
  Consistency,
  IntrospectionServiceClient,
  VerifyFailure,
  verifyFailureToJSON,
  VerifyRequest,
  type VerifyResponse,
} from "./gen/tessera/v1/introspection";
import {
  IssueRequest,
  IssuerServiceClient,
  RefreshRequest,
  type IssueResponse,
  type RefreshResponse,
} from "./gen/tessera/v1/issuer";
import { GetJwksRequest, KeyServiceClient, KeyState, type GetJwksResponse } from "./gen/tessera/v1/keys";
import { RevocationServiceClient, RevokeRequest, type RevokeResponse } from "./gen/tessera/v1/revocation";

const AUDIENCE = "orders-api";
const DOMAIN = "tessera.dev";
const TIMEOUT_MS = 10_000;

function env(name: string): string {
  const value = process.env[name];
  if (!value) {
    console.error(`set ${name} (scripts/polyglot.sh does)`);
    process.exit(2);
  }
  return value;
}

const ADDR = env("TESSERA_ADDR");
const SERVICE_KEY = env("TESSERA_SERVICE_KEY");

/** The service key, sent as `authorization: Bearer <key>` on every call. */
function withKey(): Metadata {
  const metadata = new Metadata();
  metadata.set("authorization", `Bearer ${SERVICE_KEY}`);
  return metadata;
}

function deadline(): { deadline: Date } {
  return { deadline: new Date(Date.now() + TIMEOUT_MS) };
}

/** A grpc-js callback call as a promise. */
function call<T>(start: (done: (error: ServiceError | null, answer: T) => void) => unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    start((error, answer) => (error ? reject(error) : resolve(answer)));
  });
}

/** Runs a call that must fail and returns its error. */
async function failure(run: () => Promise<unknown>): Promise<ServiceError> {
  try {
    await run();
  } catch (error) {
    // A failed assertion or a bug is not the gRPC error expected: pass it on.
    if (!(error instanceof Error) || typeof (error as ServiceError).code !== "number") throw error;
    return error as ServiceError;
  }
  assert.fail("the call succeeded; it should have failed");
}

// google.rpc.Status and the error details, from the googleapis protos that
// google-proto-files ships, decoded by protobufjs (which has the
// google/protobuf imports built in), keeping the field names of the protos
// (type_url, field_violations).
const rpc = new Root().loadSync([getProtoPath("rpc", "status.proto"), getProtoPath("rpc", "error_details.proto")], {
  keepCase: true,
});
const Status = rpc.lookupType("google.rpc.Status");
const ErrorInfo = rpc.lookupType("google.rpc.ErrorInfo");
const BadRequest = rpc.lookupType("google.rpc.BadRequest");
const TYPE_PREFIX = "type.googleapis.com/";

interface Any {
  type_url: string;
  value: Uint8Array;
}
interface ErrorInfoMessage {
  reason: string;
  domain: string;
  metadata?: Record<string, string>;
}
interface BadRequestMessage {
  field_violations: { field: string; description: string }[];
}

/** The status of a failed call from its `grpc-status-details-bin` trailer:
 * exactly one ErrorInfo (domain tessera.dev) and every other detail. */
function details(error: ServiceError): { info: ErrorInfoMessage; others: Any[] } {
  const [bin] = error.metadata.get("grpc-status-details-bin");
  assert.ok(bin instanceof Buffer, `no grpc-status-details-bin on ${status[error.code]}: ${error.details}`);
  const decoded = Status.toObject(Status.decode(bin), { defaults: true }) as {
    code: number;
    details: Any[];
  };
  assert.equal(decoded.code, error.code, "the details' code is not the call's");
  const infos = decoded.details.filter((d) => d.type_url === TYPE_PREFIX + "google.rpc.ErrorInfo");
  assert.equal(infos.length, 1, `expected exactly one ErrorInfo, got ${JSON.stringify(decoded.details)}`);
  const info = ErrorInfo.toObject(ErrorInfo.decode(infos[0].value), { defaults: true }) as ErrorInfoMessage;
  assert.equal(info.domain, DOMAIN);
  return { info, others: decoded.details.filter((d) => d !== infos[0]) };
}

/** The `kid` of a JWS compact token's header (read, not trusted). */
function kidOf(token: string): string {
  return JSON.parse(Buffer.from(token.split(".")[0], "base64url").toString("utf8")).kid;
}

const options = { "grpc.primary_user_agent": "tessera-polyglot-node" };
const issuer = new IssuerServiceClient(ADDR, credentials.createInsecure(), options);
const introspection = new IntrospectionServiceClient(ADDR, credentials.createInsecure(), options);
const revocation = new RevocationServiceClient(ADDR, credentials.createInsecure(), options);
const keys = new KeyServiceClient(ADDR, credentials.createInsecure(), options);

function verify(token: string, consistency = Consistency.CONSISTENCY_DEFAULT): Promise<VerifyResponse> {
  const request = VerifyRequest.fromPartial({
    token,
    expectedAudience: AUDIENCE,
    expectedKind: TokenKind.TOKEN_KIND_ACCESS,
    consistency,
  });
  return call((done) => introspection.verify(request, withKey(), deadline(), done));
}

function issue(subject: string) {
  const request = IssueRequest.fromPartial({ subject, audience: AUDIENCE, scopes: ["orders:read"] });
  return call<IssueResponse>((done) =>
    issuer.issue(request, withKey(), deadline(), done),
  );
}

describe("tessera from node", () => {
  before(async () => {
    // Fail here, once, when the server is not there.
    await new Promise<void>((resolve, reject) =>
      issuer.waitForReady(deadline().deadline, (error) => (error ? reject(error) : resolve())),
    );
  });
  after(() => {
    for (const client of [issuer, introspection, revocation, keys]) client.close();
  });

  test("Issue -> Verify -> Refresh -> Revoke -> Verify", async () => {
    const issued = await issue("node-user");
    assert.equal(issued.accessToken.split(".").length, 3, "the access token is not a JWS compact");
    assert.equal(issued.refreshToken.length, 43, "the refresh token is not 256 bits of base64url");
    assert.ok(issued.familyId && issued.accessTokenId);
    assert.ok(issued.accessTokenExpiresAt instanceof Date && issued.accessTokenExpiresAt > new Date());

    const verified = await verify(issued.accessToken);
    assert.ok(verified.valid, `a fresh access token failed Verify: ${verifyFailureToJSON(verified.failure)}`);
    assert.equal(verified.failure, VerifyFailure.VERIFY_FAILURE_UNSPECIFIED);
    const claims = verified.claims;
    assert.ok(claims, "Verify said valid without claims");
    assert.equal(claims.subject, "node-user");
    assert.deepEqual(claims.audience, [AUDIENCE]);
    assert.deepEqual(claims.scopes, ["orders:read"]);
    assert.equal(claims.familyId, issued.familyId);
    assert.equal(claims.tokenId, issued.accessTokenId);
    assert.equal(claims.kid, kidOf(issued.accessToken));
    assert.equal(claims.allClaims?.sub, "node-user");

    const refreshed = await call<RefreshResponse>((done) =>
      issuer.refresh(RefreshRequest.fromPartial({ refreshToken: issued.refreshToken }), withKey(), deadline(), done),
    );
    assert.equal(refreshed.familyId, issued.familyId, "Refresh left the family");
    assert.notEqual(refreshed.refreshToken, issued.refreshToken, "Refresh did not rotate the refresh token");
    assert.notEqual(refreshed.accessTokenId, issued.accessTokenId);
    const again = await verify(refreshed.accessToken);
    assert.ok(again.valid, verifyFailureToJSON(again.failure));
    assert.equal(again.claims?.tokenId, refreshed.accessTokenId);

    const revoked = await call<RevokeResponse>((done) =>
      revocation.revoke(
        RevokeRequest.fromPartial({ familyId: issued.familyId, reason: "polyglot test: log out" }),
        withKey(),
        deadline(),
        done,
      ),
    );
    assert.equal(revoked.revoked, 1, `Revoke(family) revoked ${revoked.revoked}, expected 1`);

    // STRONG reads the store: the revocation that just returned (read your writes).
    const last = await verify(refreshed.accessToken, Consistency.CONSISTENCY_STRONG);
    assert.equal(last.valid, false, "a token of a revoked family still verifies");
    assert.equal(verifyFailureToJSON(last.failure), "VERIFY_FAILURE_REVOKED");
    assert.equal(last.claims, undefined, "claims were returned for an invalid token");

    // The family's refresh token is dead too.
    const error = await failure(() =>
      call((done) =>
        issuer.refresh(RefreshRequest.fromPartial({ refreshToken: refreshed.refreshToken }), withKey(), deadline(), done),
      ),
    );
    assert.equal(status[error.code], "UNAUTHENTICATED");
    assert.equal(details(error).info.reason, "ERROR_REASON_REFRESH_TOKEN_INVALID");
  });

  test("INVALID_ARGUMENT carries ErrorInfo and a BadRequest naming the field", async () => {
    const error = await failure(() => verify(""));
    assert.equal(status[error.code], "INVALID_ARGUMENT");
    const { info, others } = details(error);
    assert.equal(info.reason, "ERROR_REASON_FIELD_INVALID");
    const bad = others.filter((d) => d.type_url === TYPE_PREFIX + "google.rpc.BadRequest");
    assert.equal(bad.length, 1, `expected one BadRequest among ${others.map((d) => d.type_url)}`);
    const request = BadRequest.toObject(BadRequest.decode(bad[0].value), { defaults: true }) as BadRequestMessage;
    assert.deepEqual(
      request.field_violations.map((v) => v.field),
      ["token"],
    );
    assert.ok(request.field_violations[0].description, "the field violation says nothing");
  });

  test("no service key: UNAUTHENTICATED, ERROR_REASON_CALLER_UNKNOWN", async () => {
    const request = IssueRequest.fromPartial({ subject: "node-user", audience: AUDIENCE });
    const error = await failure(() => call((done) => issuer.issue(request, new Metadata(), deadline(), done)));
    assert.equal(status[error.code], "UNAUTHENTICATED");
    assert.equal(details(error).info.reason, "ERROR_REASON_CALLER_UNKNOWN");
  });

  test("the JWKS over HTTP and GetJwks name the key that signs", async () => {
    const kid = kidOf((await issue("node-jwks")).accessToken);

    const answer = await fetch(`http://${ADDR}/.well-known/jwks.json`, { signal: AbortSignal.timeout(TIMEOUT_MS) });
    assert.equal(answer.status, 200);
    // RFC 7517 section 8.5.
    assert.equal(answer.headers.get("content-type")?.split(";")[0], "application/jwk-set+json");
    const httpJwks = (await answer.json()) as { keys: Record<string, string>[] };
    const httpKids = new Set(httpJwks.keys.map((k) => k.kid));
    assert.ok(httpKids.has(kid), `the token's kid ${kid} is not in the HTTP JWKS ${[...httpKids]}`);
    for (const key of httpJwks.keys) {
      assert.ok(key.use === "sig" && key.alg && key.kty, JSON.stringify(key));
      assert.equal(key.d, undefined, "the JWKS publishes a private key");
    }

    const jwks = await call<GetJwksResponse>((done) =>
      keys.getJwks(GetJwksRequest.fromPartial({}), withKey(), deadline(), done),
    );
    const grpcKids = new Set(jwks.keys.map((k) => k.kid));
    const jsonKids = new Set((JSON.parse(jwks.jwksJson) as { keys: { kid: string }[] }).keys.map((k) => k.kid));
    assert.deepEqual(grpcKids, jsonKids, "jwks_json and keys disagree");
    assert.deepEqual(grpcKids, httpKids, "GetJwks and the HTTP JWKS disagree");
    assert.ok(jwks.etag, "GetJwks sent no etag");
    assert.equal(jwks.keys.find((k) => k.kid === kid)?.state, KeyState.KEY_STATE_ACTIVE);
  });
});
