#!/usr/bin/env bash
# The clients other languages generate from proto/, against the real binary:
# installs the pinned tools (scripts/clients.sh), generates the Python and
# TypeScript clients (buf.gen.yaml, local plugins only) into git-ignored
# directories, compiles the TypeScript, starts `tessera serve` with a callers
# file and a service key on a free port, and runs clients/python (pytest) and
# clients/node (node's test runner) against it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
source scripts/clients.sh
root=$(pwd)

buf generate
rm -rf clients/node/dist
tsc -p clients/node

cargo build --locked -q -p tessera
bin="${CARGO_TARGET_DIR:-$root/target}/debug/tessera"
work=$(mktemp -d)
server=
stop() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap stop EXIT

# A caller with the rights the tests use, as the README makes one.
"$bin" callers add polyglot --verify-strong --rpcs Issue,Refresh,Revoke,Verify --audiences orders-api \
    --revoke jti,family >"$work/caller.txt"
key=$(grep '^tsk_' "$work/caller.txt" || true)
sed -n '/^\[\[caller\]\]/,$p' "$work/caller.txt" >"$work/callers.toml"
if [ -z "$key" ] || ! grep -q '^id = "polyglot"' "$work/callers.toml"; then
    echo "polyglot.sh: tessera callers add printed no key or no [[caller]] entry" >&2
    exit 1
fi

"$bin" serve --callers-file "$work/callers.toml" --data-dir "$work/data" \
    --listen 127.0.0.1:0 >"$work/out" 2>"$work/err" &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^tessera listening on //p' "$work/out")
[ -n "$addr" ] || { echo "polyglot.sh: the server did not start" >&2; cat "$work/err" >&2; exit 1; }

export TESSERA_ADDR="$addr" TESSERA_SERVICE_KEY="$key"
status=0
echo "polyglot: Python (grpcio, stubs from buf generate) against $addr"
python -m pytest -q -p no:cacheprovider clients/python || status=1
echo "polyglot: Node (grpc-js, ts-proto clients compiled by tsc) against $addr"
node --test clients/node/dist/test.js || status=1
if [ "$status" != 0 ]; then
    echo "polyglot.sh: a client test failed; the server's log:" >&2
    tail -n 40 "$work/err" >&2
    exit 1
fi
echo "polyglot: the Python and Node clients passed against the real server"
