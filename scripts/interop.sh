#!/usr/bin/env bash
# Third-party verification of Tessera's access tokens, with nothing but the
# HTTP JWKS: PyJWT (PyJWKClient) and Node jose (createRemoteJWKSet), before,
# during and after a key rotation, against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
root=$(pwd)
venv="$TESSERA_TOOLS_DIR/venv"
"$venv/bin/python" -c 'import jwt, cryptography' 2>/dev/null ||
    "$venv/bin/pip" install -q "PyJWT[crypto]==2.15.1" >&2
[ -d "$TESSERA_TOOLS_DIR/node_modules/jose" ] ||
    npm install --silent --no-audit --no-fund --prefix "$TESSERA_TOOLS_DIR" jose@6.2.18 >&2

cargo build --locked -q -p tessera
bin="${CARGO_TARGET_DIR:-$root/target}/debug/tessera"
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
# A schedule as short as the safety rules allow: the JWKS may be cached for
# 0 s, so a new key may sign 60 s after it is published.
"$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" --issuer https://tessera.interop \
    --jwks-max-age 0 --key-publish-ahead 60 >"$work/out" 2>"$work/err" &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^tessera listening on //p' "$work/out")
[ -n "$addr" ] || { cat "$work/err" >&2; exit 1; }
jwks="http://$addr/.well-known/jwks.json"

issue() {
    grpcurl -plaintext -d '{"subject":"interop","audience":"orders-api"}' "$addr" \
        tessera.v1.IssuerService/Issue | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])'
}
kid() { "$venv/bin/python" -c 'import jwt,sys; print(jwt.get_unverified_header(sys.argv[1])["kid"])' "$1"; }
check() { # phase tokens...
    local phase=$1; shift
    "$venv/bin/python" tests/interop/verify_pyjwt.py "$jwks" https://tessera.interop orders-api "$@"
    # Run beside its node_modules, where ESM resolution finds jose.
    cp tests/interop/verify_jose.mjs "$TESSERA_TOOLS_DIR/verify_jose.mjs"
    node "$TESSERA_TOOLS_DIR/verify_jose.mjs" "$jwks" https://tessera.interop orders-api "$@"
    echo "interop $phase: $# token(s) verified by PyJWT and jose"
}

before=$(issue)
check before "$before"

"$bin" keys rotate --endpoint "http://$addr" >/dev/null
keys=$("$venv/bin/python" -c 'import json,sys,urllib.request; print(len(json.load(urllib.request.urlopen(sys.argv[1]))["keys"]))' "$jwks")
[ "$keys" = 2 ] || { echo "interop: expected 2 published keys during the rotation, got $keys" >&2; exit 1; }
during=$(issue)
check during "$before" "$during"

# The next key signs 60 s after publication (the server checks every 5 s).
for _ in $(seq 90); do
    after=$(issue)
    [ "$(kid "$after")" != "$(kid "$before")" ] && break
    sleep 1
done
[ "$(kid "$after")" != "$(kid "$before")" ] || { echo "interop: the new key never signed" >&2; exit 1; }
check after "$before" "$during" "$after"
echo "interop: PyJWT and jose verified tokens of both keys before, during and after a rotation"
