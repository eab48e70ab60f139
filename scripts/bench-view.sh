#!/usr/bin/env bash
# Memory and start time with a large revocation view (BENCHMARKS.md): puts N
# unexpired jti revocations (default 1 000 000) into a fresh Postgres
# database, starts the release binary on it, and prints the time from start
# to SERVING and the resident memory once serving.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
n="${1:-1000000}"
cargo build --release --locked -q -p tessera
bin="${CARGO_TARGET_DIR:-target}/release/tessera"
admin="$TESSERA_TEST_DATABASE_URL"
db="tessera_view_$$"
url="${admin%/*}/$db"
dir=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
    rm -rf "$dir"
}
trap cleanup EXIT
psql "$admin" -qc "CREATE DATABASE $db"
"$bin" migrate --database-url "$url" 2>/dev/null
psql "$url" -qc "INSERT INTO revoked_tokens (jti, expires_at, revoked_at)
    SELECT 'bench-jti-' || g || '-0123456789abcdef', 4102444800, 1800000000
    FROM generate_series(1, $n) AS g"
kek=$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("="))')
start=$(date +%s.%N)
TESSERA_KEK="$kek" TESSERA_LOG=warn "$bin" serve --listen 127.0.0.1:0 --data-dir "$dir" \
    --issuer https://bench.tessera.invalid --database-url "$url" >"$dir/out" 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q 'listening on' "$dir/out" && break; sleep 0.05; done
addr=$(sed -n 's/.*listening on //p' "$dir/out")
[ -n "$addr" ] || { cat "$dir/out" >&2; exit 1; }
until "$bin" healthcheck --endpoint "http://$addr" >/dev/null 2>&1; do sleep 0.05; done
end=$(date +%s.%N)
printf '%s revocations: start to SERVING %.2f s, ' "$n" "$(echo "$end - $start" | bc)"
grep VmRSS "/proc/$pid/status" | awk '{printf "RSS %.0f MiB\n", $2 / 1024}'
