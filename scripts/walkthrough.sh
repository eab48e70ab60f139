#!/usr/bin/env bash
# Runs the README's grpcurl walk-through, verbatim, against a server started
# the README's way (`tessera serve` with no flags, on 127.0.0.1:50051), and
# checks that each step answered as the README says.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
root=$(pwd)
work=$(mktemp -d)
stop_split() { pkill -TERM -f 'tessera serve --role (issuer|introspection) --listen 127.0.0.1:5005[12]' 2>/dev/null || true; }
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; stop_split; rm -rf "$work"' EXIT

if (exec 3<>/dev/tcp/127.0.0.1/50051) 2>/dev/null; then
    echo "walkthrough.sh: 127.0.0.1:50051 is already in use; stop what listens there" >&2
    exit 1
fi
cargo build --locked -q -p tessera
bin="${CARGO_TARGET_DIR:-$root/target}/debug/tessera"
(cd "$work" && exec "$bin" serve >"$work/server.out" 2>"$work/server.err") &
server=$!
for _ in $(seq 50); do "$bin" healthcheck >/dev/null 2>&1 && break; sleep 0.2; done
"$bin" healthcheck >/dev/null || { cat "$work/server.err" >&2; exit 1; }

# The block between the walkthrough markers of README.md, as written.
sed -n '/<!-- walkthrough:start -->/,/<!-- walkthrough:end -->/p' README.md |
    sed -n '/^```sh$/,/^```$/p' | grep -v '^```' >"$work/walkthrough.sh"
[ -s "$work/walkthrough.sh" ] || { echo "walkthrough.sh: no walk-through found in README.md" >&2; exit 1; }
(cd "$work" && bash -euo pipefail walkthrough.sh) >"$work/out.txt" 2>&1 || {
    cat "$work/out.txt" >&2; exit 1; }

# Step 6: reflection serves the google/rpc descriptors, so grpcurl prints
# the ErrorInfo and the BadRequest decoded, as compact JSON (not an
# "is not recognized" line and a base64 blob).
for expected in '"valid": true' '"revoked": "1"' '"failure": "VERIFY_FAILURE_REVOKED"' \
    'tessera.v1.IssuerService' 'Code: InvalidArgument' \
    '"@type":"type.googleapis.com/google.rpc.ErrorInfo","domain":"tessera.dev","reason":"ERROR_REASON_FIELD_INVALID"' \
    '"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"token",'; do
    grep -qF "$expected" "$work/out.txt" || {
        echo "walkthrough.sh: expected $expected in the output:" >&2
        cat "$work/out.txt" >&2
        exit 1
    }
done
echo "README walk-through: every step answered as documented ($(wc -l <"$work/walkthrough.sh") lines run)"

# The second walk-through: a callers file and a service key. Its three
# blocks run as written, with `tessera` on PATH: make the key and the file,
# serve with them, call.
kill "$server"; wait "$server" 2>/dev/null || true
block() {
    sed -n "/<!-- $1:start -->/,/<!-- $1:end -->/p" README.md |
        sed -n '/^```sh$/,/^```$/p' | grep -v '^```'
}
export PATH="$(dirname "$bin"):$PATH"
callers="$work/callers"
mkdir "$callers"
for b in walkthrough-callers-setup walkthrough-callers-serve walkthrough-callers; do
    block "$b" >"$callers/$b.sh"
    [ -s "$callers/$b.sh" ] || { echo "walkthrough.sh: no $b block in README.md" >&2; exit 1; }
done
(cd "$callers" && bash -euo pipefail walkthrough-callers-setup.sh) || exit 1
# One command: exec'd, so that $server is the server itself.
(cd "$callers" && eval "exec $(cat walkthrough-callers-serve.sh)" >server.out 2>server.err) &
server=$!
for _ in $(seq 50); do tessera healthcheck >/dev/null 2>&1 && break; sleep 0.2; done
tessera healthcheck >/dev/null || { cat "$callers/server.err" >&2; exit 1; }
grep -q "no callers file" "$callers/server.err" && {
    echo "walkthrough.sh: the server warned that no callers file is set" >&2; exit 1; }
(cd "$callers" && bash -euo pipefail walkthrough-callers.sh) >"$callers/out.txt" 2>&1 || {
    cat "$callers/out.txt" >&2; exit 1; }
for expected in '"valid": true' 'Code: Unauthenticated' '"reason":"ERROR_REASON_CALLER_UNKNOWN"'; do
    grep -qF "$expected" "$callers/out.txt" || {
        echo "walkthrough.sh: expected $expected in the callers walk-through's output:" >&2
        cat "$callers/out.txt" >&2
        exit 1
    }
done
grep -q "no callers file" "$work/server.err" || {
    echo "walkthrough.sh: the server without a callers file did not warn" >&2; exit 1; }
echo "README callers walk-through: a service key admitted, no key refused"
kill "$server"; wait "$server" 2>/dev/null || true

# The TLS recipe, in the same directory (its callers file and key): a
# private CA and certificate, served on every interface, checked over TLS.
for b in walkthrough-tls-setup walkthrough-tls-serve walkthrough-tls-check; do
    block "$b" >"$callers/$b.sh"
    [ -s "$callers/$b.sh" ] || { echo "walkthrough.sh: no $b block in README.md" >&2; exit 1; }
done
(cd "$callers" && bash -euo pipefail walkthrough-tls-setup.sh) || exit 1
for f in ca.key server.key; do
    [ "$(stat -c %a "$callers/tls/$f")" = 600 ] || { echo "walkthrough.sh: tls/$f is not 0600" >&2; exit 1; }
done
# The certificates are public: other users' clients read ca.pem.
for f in ca.pem server.pem; do
    [ "$(stat -c %a "$callers/tls/$f")" = 644 ] || { echo "walkthrough.sh: tls/$f is not 0644" >&2; exit 1; }
done
(cd "$callers" && eval "exec $(cat walkthrough-tls-serve.sh)" >server.out 2>server.err) &
server=$!
for _ in $(seq 50); do
    (cd "$callers" && tessera healthcheck --endpoint https://localhost:50051 --peer-ca-file tls/ca.pem) >/dev/null 2>&1 && break
    sleep 0.2
done
(cd "$callers" && bash -euo pipefail walkthrough-tls-check.sh) >"$callers/tls.txt" 2>&1 || {
    cat "$callers/tls.txt" "$callers/server.err" >&2; exit 1; }
for expected in SERVING '"accessToken"'; do
    grep -qF "$expected" "$callers/tls.txt" || {
        echo "walkthrough.sh: expected $expected in the TLS recipe's output:" >&2
        cat "$callers/tls.txt" >&2
        exit 1
    }
done
echo "README TLS recipe: a private CA, served on 0.0.0.0 with TLS and the callers file, answered over TLS"
kill "$server"; wait "$server" 2>/dev/null || true

# The third: the split roles on Postgres + Redis, as the README gives them.
# The reader's settings block is replaced by a database of our own.
source scripts/services.sh
split="$work/split"
mkdir "$split"
block walkthrough-split >"$split/split.sh"
[ -s "$split/split.sh" ] || { echo "walkthrough.sh: no walkthrough-split block in README.md" >&2; exit 1; }
db="tessera_walkthrough_$$"
psql "$TESSERA_TEST_DATABASE_URL" -qc "CREATE DATABASE $db"
export TESSERA_DATABASE_URL="${TESSERA_TEST_DATABASE_URL%/*}/$db"
head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$split/tessera-kek"
# Its own process group, so both servers it starts are stopped with it.
# On failure each distinct line once: a server's refusal is not lost
# behind repeated waits.
(cd "$split" && TESSERA_LOG=warn timeout 120 bash -euo pipefail split.sh) >"$split/out.txt" 2>&1 || {
    awk '!seen[$0]++' "$split/out.txt" >&2; exit 1; }
stop_split
sleep 1
psql "$TESSERA_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
grep -qF '"valid": true' "$split/out.txt" || {
    echo "walkthrough.sh: the split-role example did not verify its token:" >&2
    cat "$split/out.txt" >&2
    exit 1
}
echo "README split-role example: issued on the issuer, valid at the introspection instance"
