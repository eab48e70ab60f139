// Verifies access tokens with jose, keys from Tessera's HTTP JWKS only.
// Usage: node verify_jose.mjs JWKS_URL ISSUER AUDIENCE TOKEN...
import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from "jose";

const [jwksUrl, issuer, audience, ...tokens] = process.argv.slice(2);
const jwks = createRemoteJWKSet(new URL(jwksUrl));
for (const token of tokens) {
  const { payload } = await jwtVerify(token, jwks, { issuer, audience, typ: "at+jwt" });
  console.log(`jose ok kid=${decodeProtectedHeader(token).kid} sub=${payload.sub}`);
}
