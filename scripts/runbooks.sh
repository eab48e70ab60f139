#!/usr/bin/env bash
# Runs the runbooks of docs/operations.md as written: every ```sh block
# between `<!-- runbook:NAME:start -->` and `<!-- runbook:NAME:end -->`
# runs with bash -euo pipefail, in the environment the runbook names,
# against servers this script starts:
#   - embedded: `tessera serve` with a data directory and a callers file;
#   - split: `--role issuer` and `--role introspection` on Postgres (a
#     database of our own) and Redis (a key prefix of our own), with a
#     callers file and a service key per role;
#   - readiness: `--role all` on a Postgres of our own, which it stops.
# Around the blocks it does what the runbooks leave to the operator (stop
# and start a server) and checks what they say: the answers, the gRPC
# codes, and the audit events, each counted in the servers' --audit-log.
#
# TESSERA_BIN=PATH runs that binary instead of building one.
# RUNBOOKS_KEEP_GOING=1 reports every failed check instead of stopping at
# the first (later checks may then fail because of an earlier one);
# RUNBOOKS_KEEP_WORK=1 keeps the servers' files and every block's output.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
started=$(date +%s)

if [ -z "${TESSERA_BIN:-}" ]; then
    cargo build --locked -q -p tessera
fi
bin="${TESSERA_BIN:-${CARGO_TARGET_DIR:-target}/debug/tessera}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
[ -x "$bin" ] || { echo "runbooks.sh: no tessera binary at $bin" >&2; exit 1; }
# The runbooks say `tessera …`: this binary's directory first on PATH.
bindir=$(cd "$(dirname "$bin")" && pwd)
export PATH="$bindir:$PATH"
[ "$(command -v tessera)" -ef "$bin" ] || {
    echo "runbooks.sh: $bin is not named tessera, so the runbooks would not run it" >&2; exit 1; }
# Nothing of the caller's Tessera settings leaks into the runbooks.
for v in $(compgen -e | grep -E '^TESSERA_' |
    grep -vE '^TESSERA_(TEST_DATABASE_URL|TEST_REDIS_URL|PG_BINDIR|TOOLS_DIR|BIN)$' || true); do
    unset "$v"
done
unset VERIFIER AUDIT_LOGS

command -v grpcurl >/dev/null 2>&1 || source scripts/tools.sh
source scripts/services.sh
for tool in sqlite3 pg_dump pg_restore curl openssl; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "runbooks.sh: $tool is missing (sqlite3, postgresql-client, curl, openssl)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/tessera-runbooks.XXXXXX")
chmod 711 "$work" # our own Postgres (as the postgres user) lives below
db="runbook_$$"
prefix="tessera-runbooks-$$:"
declare -A pids=() logs=()
own_pg=""
failures=0

cleanup() {
    local status=$?
    local name
    for name in "${!pids[@]}"; do kill "${pids[$name]}" 2>/dev/null || true; done
    for name in "${!pids[@]}"; do wait "${pids[$name]}" 2>/dev/null || true; done
    [ -z "$own_pg" ] || pg_as_postgres pg_ctl -D "$own_pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    psql "$TESSERA_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    redis-cli -u "$TESSERA_TEST_REDIS_URL" --scan --pattern "$prefix*" 2>/dev/null |
        xargs -r redis-cli -u "$TESSERA_TEST_REDIS_URL" del >/dev/null 2>&1 || true
    if [ "${RUNBOOKS_KEEP_WORK:-}" = 1 ]; then
        echo "runbooks.sh: the runbooks' files are kept in $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT

# ---------------------------------------------------------------- reporting

# fail MESSAGE [FILE...]: says what failed, shows the files and the tail of
# every running server's stderr; stops unless RUNBOOKS_KEEP_GOING=1.
fail() {
    local f name
    {
        echo
        echo "runbooks.sh: FAILED: $1"
        shift
        for f in "$@"; do
            echo "--- ${f#"$work"/}"
            cat "$f" 2>/dev/null || echo "(missing)"
        done
        for name in "${!pids[@]}"; do
            echo "--- $name: the last lines of its stderr"
            tail -n 15 "${logs[$name]}" 2>/dev/null || true
        done
        echo
    } >&2
    failures=$((failures + 1))
    [ "${RUNBOOKS_KEEP_GOING:-}" = 1 ] || exit 1
}

# has FILE TEXT...: each TEXT is in FILE.
has() {
    local f=$1 t
    shift
    for t in "$@"; do grep -qF -- "$t" "$f" || fail "expected $t" "$f"; done
}

# lacks FILE TEXT...: no TEXT is in FILE.
lacks() {
    local f=$1 t
    shift
    for t in "$@"; do ! grep -qF -- "$t" "$f" || fail "did not expect $t" "$f"; done
}

# proven WHAT: one line per runbook proven (or not, with RUNBOOKS_KEEP_GOING=1).
proven() {
    local verdict="runbook"
    [ "$failures" = "$step_failures" ] || verdict="NOT PROVEN ($((failures - step_failures)) failed check(s)):"
    echo "$verdict $1 ($(( $(date +%s) - step_started )) s)"
}
# begin: a runbook's checks start.
begin() { step_started=$(date +%s); step_failures=$failures; }

# ---------------------------------------------------------------- the runbooks

# block NAME N: the Nth ```sh block between runbook NAME's markers, with the
# indentation of its fence (a block inside a list item) taken off.
block() {
    awk -v start="<!-- runbook:$1:start -->" -v end="<!-- runbook:$1:end -->" -v want="$2" '
        index($0, start) { on = 1; next }
        index($0, end) { on = 0; next }
        !on { next }
        !code && /^ *```sh *$/ { code = 1; n++; match($0, /^ */); indent = RLENGTH; next }
        code && /^ *``` *$/ { code = 0; next }
        code && n == want { print substr($0, indent + 1) }
    ' docs/operations.md
}

# blocks NAME: how many ```sh blocks runbook NAME has.
blocks() {
    awk -v start="<!-- runbook:$1:start -->" -v end="<!-- runbook:$1:end -->" '
        index($0, start) { on = 1 } index($0, end) { on = 0 }
        on && /^ *```sh *$/ { n++ } END { print n + 0 }
    ' docs/operations.md
}

# Every block of every runbook runs below: a block added to the docs
# without being run here fails.
for expected in key-compromise:4 kek-embedded:3 kek-shared:2 callers:2 backup-embedded:2 \
    backup-shared:1 restore-embedded:1 restore-shared:1 restore-reapply:2 readiness:1; do
    [ "$(blocks "${expected%:*}")" = "${expected#*:}" ] || fail \
        "docs/operations.md: runbook ${expected%:*} has $(blocks "${expected%:*}") sh block(s), this script runs ${expected#*:}"
done
[ "$(grep -c '<!-- runbook:[a-z-]*:start -->' docs/operations.md)" = 10 ] ||
    fail "docs/operations.md has runbooks this script does not run (10 expected)"

# run NAME N...: blocks N... of runbook NAME, as one script, in $here (or
# $in_dir) with the environment of the topology ($block_env); its output
# (stdout and stderr) in $out.
run() {
    local name=$1 dir=${in_dir:-$here} script
    shift
    script="$dir/$name.$(IFS=.; echo "$*").sh"
    out="$dir/$name.$(IFS=.; echo "$*").out"
    for n in "$@"; do
        [ -n "$(block "$name" "$n")" ] || fail "docs/operations.md: runbook $name has no block $n"
        block "$name" "$n"
    done >"$script"
    (cd "$dir" && env "${block_env[@]}" bash -euo pipefail "$script") >"$out" 2>&1 ||
        fail "runbook $name, block(s) $* exited with $? (as written in docs/operations.md)" "$script" "$out"
}

# run_refused NAME N...: the same, which must fail.
run_refused() {
    local name=$1 dir=${in_dir:-$here} script
    shift
    script="$dir/$name.$(IFS=.; echo "$*").refused.sh"
    out="$dir/$name.$(IFS=.; echo "$*").refused.out"
    for n in "$@"; do block "$name" "$n"; done >"$script"
    ! (cd "$dir" && env "${block_env[@]}" bash -euo pipefail "$script") >"$out" 2>&1 ||
        fail "runbook $name, block(s) $* should have been refused" "$script" "$out"
}

# ---------------------------------------------------------------- servers

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# serve NAME ENDPOINT ARGS...: `tessera serve --listen … ARGS` in $here,
# without the runbooks' environment, until it reports SERVING.
serve() {
    local name=$1 endpoint=$2
    shift 2
    (cd "$here" && exec env -u TESSERA_SERVICE_KEY_FILE -u TESSERA_AUDIT_LOG -u TESSERA_DATA_DIR \
        -u TESSERA_DATABASE_URL -u TESSERA_CALLERS_FILE \
        tessera serve --listen "${endpoint#http://}" "$@" >>"$here/$name.out" 2>>"$here/$name.err") &
    pids[$name]=$!
    logs[$name]=$here/$name.err
    for _ in $(seq 100); do
        tessera healthcheck --endpoint "$endpoint" >/dev/null 2>&1 && return 0
        kill -0 "${pids[$name]}" 2>/dev/null || break
        sleep 0.2
    done
    fail "$name did not report SERVING at $endpoint" "${logs[$name]}"
}

# halt NAME: stops a server (SIGTERM) and waits for it.
halt() {
    kill "${pids[$1]}" 2>/dev/null || true
    wait "${pids[$1]}" 2>/dev/null || true
    unset "pids[$1]"
}

# pg_as_postgres PROGRAM ARGS...: a PostgreSQL server binary, as the
# postgres user when we are root (initdb and postgres refuse root).
pg_as_postgres() {
    local program=$1
    shift
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$TESSERA_PG_BINDIR/$program" "$@"
    else
        "$TESSERA_PG_BINDIR/$program" "$@"
    fi
}
# same_kek FILE FILE: both hold the same KEK (base64 or base64url, padded or not).
same_kek() {
    python3 - "$1" "$2" <<'EOF'
import base64, sys
def kek(path):
    text = open(path).read().strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4))
sys.exit(0 if len(kek(sys.argv[1])) == 32 and kek(sys.argv[1]) == kek(sys.argv[2]) else 1)
EOF
}

# make_key FILE: a service key, as scripts/compose-setup.sh makes them.
make_key() {
    (umask 077 && { printf 'tsk_'; head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '='; } >"$1")
}
hash_of() { tr -d '\n' <"$1" | sha256sum | cut -d' ' -f1; }

# The operator of the runbooks: keys_admin and every revocation right.
operator_entry() {
    cat <<TOML
[[caller]]
id = "operator"
key_sha256 = ["$(hash_of "$1")"]
rpcs = ["Issue", "Refresh", "Revoke", "Verify"]
audiences = ["*"]
revoke = ["token", "family", "jti", "subject", "kid"]
keys_admin = true

TOML
}

# ---------------------------------------------------------------- calls

# grpc ENDPOINT METHOD JSON [KEYFILE]: grpcurl's answer or error, as the
# operator (or KEYFILE's caller); never fails.
grpc() {
    local key=${4:-$operator_key} auth=()
    [ ! -s "$key" ] || auth=(-H "authorization: Bearer $(tr -d '\n' <"$key")")
    grpcurl -plaintext "${auth[@]}" -d "$3" "${1#http://}" "tessera.v1.$2" 2>&1 || true
}

# login FILE: Issue for user-123 at orders-api on the issuer; the answer in FILE.
login() {
    grpc "$issuer" IssuerService/Issue '{"subject":"user-123","audience":"orders-api"}' >"$1"
    grep -q '"accessToken"' "$1" || fail "Issue failed" "$1"
}

# field FILE NAME: a field of a JSON answer.
field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2" 2>/dev/null || true; }

# kid_of TOKEN: the kid in a token's header.
kid_of() {
    python3 -c 'import base64, json, sys
h = sys.argv[1].split(".")[0]
print(json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))["kid"])' "$1" 2>/dev/null || true
}

# valid TOKEN WHAT: Verify at the verifier must answer valid.
valid() {
    grpc "$verifier" IntrospectionService/Verify \
        "{\"token\":\"$1\",\"expected_audience\":\"orders-api\",\"expected_kind\":\"TOKEN_KIND_ACCESS\",\"consistency\":\"CONSISTENCY_DEFAULT\"}" \
        >"$here/verify.out"
    grep -qF '"valid": true' "$here/verify.out" || fail "$2: Verify should answer valid" "$here/verify.out"
}

# refused TOKEN WHAT: Verify at the verifier must answer REVOKED or UNKNOWN_KEY.
refused() {
    grpc "$verifier" IntrospectionService/Verify \
        "{\"token\":\"$1\",\"expected_audience\":\"orders-api\",\"expected_kind\":\"TOKEN_KIND_ACCESS\",\"consistency\":\"CONSISTENCY_DEFAULT\"}" \
        >"$here/verify.out"
    grep -qE '"failure": "VERIFY_FAILURE_(REVOKED|UNKNOWN_KEY)"' "$here/verify.out" ||
        fail "$2: Verify should answer VERIFY_FAILURE_REVOKED or VERIFY_FAILURE_UNKNOWN_KEY" "$here/verify.out"
}

# refresh REFRESH_TOKEN FILE: Refresh at the issuer; the answer in FILE.
refresh() { grpc "$issuer" IssuerService/Refresh "{\"refresh_token\":\"$1\"}" >"$2"; }

# key_state KID: its state in `tessera keys list` at the issuer.
key_state() {
    tessera keys list --endpoint "$issuer" --service-key-file "$operator_key" |
        python3 -c 'import json, sys
print(next((k["state"] for k in map(json.loads, sys.stdin) if k["kid"] == sys.argv[1]), "ABSENT"))' "$1" || true
}
active_kid() {
    tessera keys list --endpoint "$issuer" --service-key-file "$operator_key" |
        python3 -c 'import json, sys; print(next(k["kid"] for k in map(json.loads, sys.stdin) if k["state"] == "KEY_STATE_ACTIVE"))' ||
        true
}

# ---------------------------------------------------------------- the audit trail

# mark: from now on, count() reads only what the audit logs gain.
mark() {
    local f
    audit_mark=""
    for f in "${audit[@]}"; do audit_mark+="$f:$( (wc -l <"$f") 2>/dev/null || echo 0) "; done
}

# count [--in FILE] EVENT [FIELD=VALUE]...: audit events since mark(), in
# every audit log of the topology (or FILE's alone); they are also written
# to $here/audit.new for a failure's report.
count() {
    AUDIT_MARK=$audit_mark AUDIT_NEW=$here/audit.new python3 - "$@" <<'EOF'
import json, os, sys
args = sys.argv[1:]
only = None
if args[0] == "--in":
    only, args = args[1], args[2:]
event, wanted = args[0], dict(a.split("=", 1) for a in args[1:])
found, new = 0, []
for spec in os.environ["AUDIT_MARK"].split():
    path, skip = spec.rsplit(":", 1)
    try:
        lines = open(path).read().splitlines()[int(skip):]
    except FileNotFoundError:
        continue
    for line in lines:
        new.append(f"{os.path.basename(path)}: {line}")
        if only and path != only:
            continue
        e = json.loads(line)
        text = lambda v: v if isinstance(v, str) else json.dumps(v)
        if e.get("event") == event and all(k in e and text(e[k]) == v for k, v in wanted.items()):
            found += 1
open(os.environ["AUDIT_NEW"], "w").write("\n".join(new) + "\n")
print(found)
EOF
}

# events N [--in FILE] EVENT [FIELD=VALUE]...: exactly N such events since mark().
events() {
    local want=$1 got
    shift
    got=$(count "$@")
    [ "$got" = "$want" ] ||
        fail "expected $want audit event(s) $* since the runbook began, found $got" "$here/audit.new"
}

# await_event SECONDS [--in FILE] EVENT [FIELD=VALUE]...: until one is there.
await_event() {
    local n=$(( $1 * 5 ))
    shift
    for _ in $(seq "$n"); do
        [ "$(count "$@")" -ge 1 ] && return 0
        sleep 0.2
    done
}

# ================================================================= checks shared by both topologies

# A signing key is compromised: `keys compromise` (blocks 1, 2, 4), then
# `revoke --kid` (blocks 1, 3, 4), each on the key signing at the time.
prove_compromise() {
    local variant kid token
    for variant in 2 3; do
        login "$here/victim.json"
        token=$(field "$here/victim.json" accessToken)
        kid=$(active_kid)
        [ "$(kid_of "$token")" = "$kid" ] || fail "the token was not signed by the active key $kid" "$here/victim.json"
        mark
        run key-compromise 1 "$variant" 4
        if [ "$variant" = 2 ]; then
            has "$out" "\"compromised\":\"$kid\"" '"new_active_key":' '"affected_sessions":' '"estimate":'
        else
            has "$out" '"target":"kid"' '"revoked":1'
        fi
        # tessera keys list (block 4): the key compromised, another signing.
        python3 - "$out" "$kid" <<'EOF' || fail "keys list: $kid should be KEY_STATE_COMPROMISED and another key KEY_STATE_ACTIVE" "$out"
import json, sys
keys = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
state = {k["kid"]: k["state"] for k in keys if "state" in k}
assert state.get(sys.argv[2]) == "KEY_STATE_COMPROMISED", state
assert any(s == "KEY_STATE_ACTIVE" and k != sys.argv[2] for k, s in state.items()), state
EOF
        refused "$token" "a token signed by the killed key"
        curl -s "$issuer/.well-known/jwks.json" >"$here/jwks.json"
        has "$here/jwks.json" '"keys"'
        lacks "$here/jwks.json" "$kid"
        # Sessions survive: the refresh token is not the key's.
        refresh "$(field "$here/victim.json" refreshToken)" "$here/refreshed.json"
        grep -q '"accessToken"' "$here/refreshed.json" || fail "the session should refresh after the kill" "$here/refreshed.json"
        [ "$(kid_of "$(field "$here/refreshed.json" accessToken)")" != "$kid" ] ||
            fail "the refreshed token is signed by the killed key" "$here/refreshed.json"
        valid "$(field "$here/refreshed.json" accessToken)" "the token of the refreshed session"
        sleep 0.5 # the fan-out's event, written after the answer
        events 1 key_compromised kid="$kid"
        events 1 key_revoked kid="$kid"
        # The same kill again, as a retry would send it: nothing new is
        # killed, the answer says so, and no second event is written.
        local again=("${block_env[@]}")
        block_env+=(kid="$kid")
        run key-compromise "$variant"
        block_env=("${again[@]}")
        if [ "$variant" = 2 ]; then
            has "$out" "\"compromised\":\"$kid\"" '"new_active_key":null'
        else
            has "$out" '"target":"kid"' '"revoked":0'
        fi
        refused "$token" "a token signed by the killed key, after the kill was repeated"
        sleep 0.5
        events 1 key_compromised kid="$kid"
        events 1 key_revoked kid="$kid"
    done
}

# Adding and removing a caller: one callers_reloaded per server per read.
prove_callers() {
    local f n callers
    mark
    run callers 1
    [ "$(stat -c %a "$here/billing-api.key")" = 600 ] || fail "billing-api.key should be mode 0600" "$out"
    has "$here/callers.toml" 'id = "billing-api"'
    events 1 caller_key_made id=billing-api
    events 1 --in "$cli_audit" caller_key_made id=billing-api caller=cli
    callers=$(grep -c '^\[\[caller\]\]' "$here/callers.toml")
    for _ in $(seq 10); do
        grpc "$issuer" IssuerService/Issue '{"subject":"user-7","audience":"billing"}' "$here/billing-api.key" >"$here/billing.out"
        grep -q '"accessToken"' "$here/billing.out" && break
        sleep 0.2
    done
    grep -q '"accessToken"' "$here/billing.out" || fail "the new caller should be admitted after SIGHUP" "$here/billing.out"
    sleep 5 # past two polls: the SIGHUP's read is the only one
    for f in "${audit[@]}"; do
        events 1 --in "$f" callers_reloaded trigger=sighup result=ok callers="$callers"
    done
    events "${#audit[@]}" callers_reloaded

    mark
    run callers 2
    lacks "$here/callers.toml" 'billing-api'
    has "$here/callers.toml" 'id = "operator"'
    callers=$(grep -c '^\[\[caller\]\]' "$here/callers.toml")
    for f in "${audit[@]}"; do
        await_event 12 --in "$f" callers_reloaded trigger=modified
    done
    sleep 2.5 # one more poll: nothing more is read
    for f in "${audit[@]}"; do
        events 1 --in "$f" callers_reloaded trigger=modified result=ok callers="$callers"
    done
    events "${#audit[@]}" callers_reloaded
    grpc "$issuer" IssuerService/Issue '{"subject":"user-7","audience":"billing"}' "$here/billing-api.key" >"$here/billing.out"
    has "$here/billing.out" 'Code: Unauthenticated' 'ERROR_REASON_CALLER_UNKNOWN'
    grpc "$verifier" IntrospectionService/Verify '{"token":"x.y.z","expected_audience":"billing","expected_kind":"TOKEN_KIND_ACCESS","consistency":"CONSISTENCY_DEFAULT"}' \
        "$here/billing-api.key" >"$here/billing.out"
    has "$here/billing.out" 'Code: Unauthenticated' 'ERROR_REASON_CALLER_UNKNOWN'
    login "$here/still.json" # the others are still in
}

# The KEK rotation wrote one keys_rewrapped, to its --audit-log, not stderr.
rewrapped_checks() { # rewrapped_checks AUDIT_FILE
    local n
    n=$(python3 -c 'import json, sys
for l in open(sys.argv[1]):
    if l.startswith("{") and "rewrapped" in json.loads(l): print(json.loads(l)["rewrapped"])' "$out" 2>/dev/null |
        tail -n 1 || true)
    if [ -z "$n" ] || [ "$n" -lt 2 ]; then
        fail 'keys rewrap should print {"rewrapped":N}, N >= 2 (the signing key and the standby at least)' "$out"
    fi
    lacks "$out" keys_rewrapped
    events 1 --in "$1" keys_rewrapped caller=cli sealed_items="${n:-0}"
    python3 - "$here/audit.new" <<'EOF' || fail "keys_rewrapped should name two different KEK ids" "$here/audit.new"
import json, sys
e = [json.loads(l.split(": ", 1)[1]) for l in open(sys.argv[1]) if '"keys_rewrapped"' in l][0]
assert e["from_kek_id"] and e["to_kek_id"] and e["from_kek_id"] != e["to_kek_id"], e
EOF
}

# Backups, and restoring one. $1: embedded or shared; the caller's
# functions stop_all, start_all and the restore block name.
prove_restore() {
    local topology=$1 ta tc rb rb2 rd ra fa k1
    login "$here/a.json"; login "$here/b.json"; login "$here/c.json"
    ta=$(field "$here/a.json" accessToken); fa=$(field "$here/a.json" familyId); ra=$(field "$here/a.json" refreshToken)
    rb=$(field "$here/b.json" refreshToken)
    tc=$(field "$here/c.json" accessToken)
    k1=$(active_kid)

    run "backup-$topology" 1
    backup=$(cd "$here" && ls -d tessera-backup-* | tail -n 1)
    grep -Eqx '[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z' "$here/$backup/taken-at" ||
        fail "the backup's taken-at should be a UTC time" "$here/$backup/taken-at" "$out"

    # Written after the backup: a session revoked, a token revoked, a
    # session refreshed, a session opened, the signing key killed.
    tessera revoke --endpoint "$verifier" --service-key-file "$operator_key" --family "$fa" >"$here/after.out"
    printf '%s' "$tc" | tessera revoke --endpoint "$verifier" --service-key-file "$operator_key" --token - >>"$here/after.out"
    refresh "$rb" "$here/b2.json"
    rb2=$(field "$here/b2.json" refreshToken)
    login "$here/d.json"
    rd=$(field "$here/d.json" refreshToken)
    tessera revoke --endpoint "$verifier" --service-key-file "$operator_key" --kid "$k1" >>"$here/after.out"
    refused "$ta" "before the restore, a token of the revoked session"
    refused "$tc" "before the restore, the revoked token"

    stop_all
    run "restore-$topology" 1
    start_all

    # Lost, as the table says.
    [ "$(key_state "$k1")" = KEY_STATE_ACTIVE ] || fail "after the restore, the key killed after the backup should sign again ($(key_state "$k1"))"
    valid "$ta" "after the restore, a token of the session revoked after the backup (the revocation is lost)"
    valid "$tc" "after the restore, the token revoked after the backup (the revocation is lost)"
    refresh "$rb2" "$here/lost.out"
    has "$here/lost.out" 'Code: Unauthenticated' 'ERROR_REASON_REFRESH_TOKEN_INVALID'
    refresh "$rd" "$here/lost.out"
    has "$here/lost.out" 'Code: Unauthenticated' 'ERROR_REASON_REFRESH_TOKEN_INVALID'
    valid "$(field "$here/d.json" accessToken)" "after the restore, an access token of a session opened after the backup"

    # Re-applied from the audit log.
    mark
    run restore-reapply 1
    has "$out" "--family=$fa" "--kid=$k1" '# not re-applied: 1 token_revoked since the backup'
    lacks "$out" "$(field "$here/c.json" accessTokenId)"
    run restore-reapply 2
    has "$out" '"target":"family"' '"target":"kid"'
    refused "$ta" "after the re-apply, a token of the session revoked after the backup"
    refresh "$ra" "$here/lost.out"
    has "$here/lost.out" 'Code: Unauthenticated'
    [ "$(key_state "$k1")" = KEY_STATE_COMPROMISED ] || fail "after the re-apply, the key killed after the backup should be compromised again ($(key_state "$k1"))"
    refused "$tc" "after the re-apply, the token revoked after the backup (its key is killed)"
    sleep 0.5
    events 1 key_compromised kid="$k1"
    events 1 key_revoked kid="$k1"
    events 1 family_revoked family_id="$fa"
    # The session refreshed after the backup: its previous token works again.
    refresh "$rb" "$here/again.json"
    grep -q '"accessToken"' "$here/again.json" ||
        fail "after the restore, the refresh token rotated after the backup should work again" "$here/again.json"
}

# ================================================================= embedded

here=$work/embedded
mkdir -p "$here"
begin
operator_key=$here/operator.key
make_key "$operator_key"
operator_entry "$operator_key" >"$here/callers.toml"
port=$(free_port)
issuer=http://127.0.0.1:$port
verifier=$issuer
audit=("$here/audit.log")
cli_audit=$here/audit.log
embedded_args=(--data-dir "$here/data" --audit-log "$here/audit.log" --callers-file "$here/callers.toml")
start_embedded() {
    serve embedded "$issuer" "${embedded_args[@]}"
    block_env=(TESSERA_ENDPOINT="$issuer" VERIFIER="$verifier" TESSERA_SERVICE_KEY_FILE="$operator_key"
        TESSERA_DATA_DIR="$here/data" TESSERA_AUDIT_LOG="$here/audit.log" AUDIT_LOGS="$here/audit.log"
        TESSERA_CALLERS_FILE="$here/callers.toml" TESSERA_PIDS="${pids[embedded]}")
}
start_embedded

prove_compromise
proven "key-compromise (embedded): keys compromise and revoke --kid each killed the signing key (Verify refuses its tokens, it left the JWKS, another key signs, sessions refresh) with one key_compromised and one key_revoked, repeated kills answering so and writing nothing more"

begin
prove_callers
proven "callers (embedded): added and admitted on SIGHUP, removed and refused UNAUTHENTICATED after the file settled; one callers_reloaded per read"

begin
login "$here/before.json"
cp "$here/data/kek" "$here/kek.was"
mark
run kek-embedded 1
[ "$(stat -c %a "$here/kek.new")" = 600 ] || fail "kek.new should be mode 0600" "$out"
# While the server runs, the rewrap refuses, naming it.
run_refused kek-embedded 2
has "$out" "${pids[embedded]}"
cmp -s "$here/data/kek" "$here/kek.was" || fail "a refused rewrap changed the data directory's kek"
halt embedded
run kek-embedded 2
rewrapped_checks "$here/audit.log"
same_kek "$here/data/kek" "$here/kek.new" || fail "after the rewrap, <data-dir>/kek should hold the new KEK" "$out"
[ "$(stat -c %a "$here/data/kek")" = 600 ] || fail "<data-dir>/kek should stay mode 0600 ($(stat -c %a "$here/data/kek"))"
start_embedded
run kek-embedded 3
[ ! -e "$here/kek.new" ] || fail "kek.new should be gone" "$out"
valid "$(field "$here/before.json" accessToken)" "a token issued before the KEK rotation"
login "$here/after.json"
valid "$(field "$here/after.json" accessToken)" "a token signed with a key re-sealed under the new KEK"
proven "kek-embedded: refused while the server ran (naming its PID); re-sealed, <data-dir>/kek replaced (0600), one keys_rewrapped in the audit log; the server starts with it and signs"

begin
# The copy taken with the server stopped (in a directory of its own).
halt embedded
mkdir -p "$here/offline"
in_dir=$here/offline run backup-embedded 2
offline=$(cd "$here/offline" && ls -d tessera-backup-*)
for f in tessera.db kek issuer taken-at; do
    [ -s "$here/offline/$offline/$f" ] || fail "the stopped server's backup lacks $f" "$out"
done
start_embedded
stop_all() { halt embedded; }
start_all() { start_embedded; }
prove_restore embedded
for f in tessera.db kek issuer; do [ -s "$here/$backup/$f" ] || fail "the online backup lacks $f"; done
proven "backup and restore (embedded): sqlite3 .backup and a stopped copy; the restore lost a session revocation, a token revocation, a key kill and a refresh, as documented; the audit log's re-apply restored the session revocation and the kill"
halt embedded

# ================================================================= split roles on Postgres + Redis

here=$work/split
mkdir -p "$here"
begin
psql "$TESSERA_TEST_DATABASE_URL" -qc "CREATE DATABASE $db"
db_url="${TESSERA_TEST_DATABASE_URL%/*}/$db"
tessera migrate --database-url "$db_url" >"$here/migrate.out" 2>&1 || fail "tessera migrate" "$here/migrate.out"
operator_key=$here/operator.key
for who in operator issuer introspection; do make_key "$here/$who.key"; done
{
    operator_entry "$operator_key"
    cat <<TOML
[[caller]]
id = "tessera-issuer"
key_sha256 = ["$(hash_of "$here/issuer.key")"]
rpcs = ["Revoke"]
audiences = ["*"]
revoke = ["family", "subject", "kid"]
relay = true

[[caller]]
id = "tessera-introspection"
key_sha256 = ["$(hash_of "$here/introspection.key")"]
rpcs = ["GetJwks", "WatchKeys", "CompromiseKey"]
relay = true

TOML
} >"$here/callers.toml"
(umask 077 && openssl rand -base64 32 >"$here/kek.old")
iport=$(free_port)
vport=$(free_port)
issuer=http://127.0.0.1:$iport
verifier=http://127.0.0.1:$vport
audit=("$here/issuer-audit.log" "$here/introspection-audit.log")
cli_audit=$here/issuer-audit.log
shared_args=(--database-url "$db_url" --redis-url "$TESSERA_TEST_REDIS_URL" --redis-prefix "$prefix"
    --issuer https://auth.example.test --callers-file "$here/callers.toml")
issuer_kek=(--kek-file "$here/kek.old")
start_issuer() {
    serve issuer "$issuer" --role issuer "${shared_args[@]}" "${issuer_kek[@]}" \
        --revocation-endpoint "$verifier" --service-key-file "$here/issuer.key" --audit-log "$here/issuer-audit.log"
}
start_verifier() {
    serve introspection "$verifier" --role introspection "${shared_args[@]}" \
        --issuer-endpoint "$issuer" --service-key-file "$here/introspection.key" --audit-log "$here/introspection-audit.log"
}
split_env() {
    block_env=(TESSERA_ENDPOINT="$issuer" VERIFIER="$verifier" TESSERA_SERVICE_KEY_FILE="$operator_key"
        TESSERA_DATABASE_URL="$db_url" TESSERA_AUDIT_LOG="$here/issuer-audit.log"
        AUDIT_LOGS="$here/issuer-audit.log $here/introspection-audit.log"
        TESSERA_CALLERS_FILE="$here/callers.toml" TESSERA_PIDS="${pids[issuer]:-} ${pids[introspection]:-}")
}
start_all() { start_issuer; start_verifier; split_env; }
stop_all() { halt introspection; halt issuer; }
start_all

prove_compromise
proven "key-compromise (split roles): keys compromise at the issuer and revoke --kid at the verifier each killed the signing key, with one key_compromised and one key_revoked across the two audit logs, repeated kills answering so and writing nothing more"

begin
prove_callers
proven "callers (split roles): both servers read the file on SIGHUP and once it settled, one callers_reloaded each per read; the removed caller is refused at both"

begin
login "$here/before.json"
run kek-shared 1
[ "$(stat -c %a "$here/kek.new")" = 600 ] || fail "kek.new should be mode 0600" "$out"
# Step 2: the issuer restarted with the new KEK and the old one as previous.
halt issuer
issuer_kek=(--kek-file "$here/kek.new" --previous-kek-file "$here/kek.old")
start_issuer; split_env
login "$here/during.json"
valid "$(field "$here/during.json" accessToken)" "a token signed during the KEK rotation"
mark
run kek-shared 2
rewrapped_checks "$here/issuer-audit.log"
new_kek_id=$(python3 -c 'import json, sys
print([json.loads(l.split(": ", 1)[1]) for l in open(sys.argv[1]) if "keys_rewrapped" in l][0]["to_kek_id"])' "$here/audit.new" 2>/dev/null || echo "?")
# Step 4: the issuer restarted with the new KEK alone.
halt issuer
issuer_kek=(--kek-file "$here/kek.new")
start_issuer; split_env
login "$here/after.json"
valid "$(field "$here/after.json" accessToken)" "a token signed after the KEK rotation"
valid "$(field "$here/before.json" accessToken)" "a token signed before the KEK rotation"
# The old KEK alone no longer opens the keys: refused, naming the store's KEK id.
rc=0
timeout 15 tessera serve --role issuer --listen "127.0.0.1:$(free_port)" \
    "${shared_args[@]}" --kek-file "$here/kek.old" --revocation-endpoint "$verifier" \
    --service-key-file "$here/issuer.key" --audit-log "$here/stale-audit.log" >"$here/stale.out" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "an issuer with the old KEK alone should refuse to start (exit 1, not $rc)" "$here/stale.out"
has "$here/stale.out" "$new_kek_id"
proven "kek-shared: issuers served through the rotation; re-sealed on the database with one keys_rewrapped in the audit log; the old KEK alone is refused, naming the new KEK id"

begin
prove_restore shared
proven "backup and restore (split roles): pg_dump -Fc / pg_restore; the restore lost a session revocation, a token revocation, a key kill and a refresh, as documented; the audit logs' re-apply restored the session revocation and the kill"
stop_all

# ================================================================= readiness, and Postgres down

here=$work/readiness
mkdir -p "$here"
begin
own_pg=$here/pg
mkdir -p "$own_pg"
[ "$(id -u)" != 0 ] || chown postgres "$own_pg"
pg_as_postgres initdb -D "$own_pg/data" -U postgres --auth=trust -E UTF8 >"$here/initdb.out" 2>&1 ||
    fail "initdb" "$here/initdb.out"
pgport=$(free_port)
pg_start() {
    pg_as_postgres pg_ctl -D "$own_pg/data" -l "$own_pg/log" -w \
        -o "-c listen_addresses=127.0.0.1 -c port=$pgport -c unix_socket_directories=$own_pg" start >/dev/null
}
pg_start
psql "postgres://postgres@127.0.0.1:$pgport/postgres" -qc "CREATE DATABASE tessera"
pg_url="postgres://postgres@127.0.0.1:$pgport/tessera"
tessera migrate --database-url "$pg_url" >"$here/migrate.out" 2>&1 || fail "tessera migrate" "$here/migrate.out"
(umask 077 && openssl rand -base64 32 >"$here/kek")
port=$(free_port)
issuer=http://127.0.0.1:$port
verifier=$issuer
operator_key=$here/none.key
: >"$operator_key"
block_env=(TESSERA_ENDPOINT="$issuer")
serve all "$issuer" --database-url "$pg_url" --redis-url "$TESSERA_TEST_REDIS_URL" --redis-prefix "${prefix}ready:" \
    --issuer https://auth.example.test --kek-file "$here/kek" --audit-log "$here/audit.log"
login "$here/token.json"

run readiness 1
[ "$(grep -c '^{"reasons":\[\],.*"status":"SERVING"}$' "$out")" = 2 ] || fail "a ready instance: two SERVING bodies" "$out"
[ "$(grep -c '^HTTP 200$' "$out")" = 2 ] || fail "a ready instance: /readyz answers 200 twice" "$out"
grep -qx SERVING "$out" || fail "a ready instance: tessera healthcheck prints SERVING" "$out"
lacks "$out" 'healthcheck: exit'

pg_as_postgres pg_ctl -D "$own_pg/data" -m fast -w stop >/dev/null
for _ in $(seq 50); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$issuer/readyz")" = 503 ] && break
    sleep 0.2
done
run readiness 1
# The output the runbook shows is this one.
awk '/<!-- output:readiness-store-down:start -->/ { on = 1; next }
    /<!-- output:readiness-store-down:end -->/ { on = 0 }
    on && !/^```/' docs/operations.md >"$here/documented.out"
cmp -s "$out" "$here/documented.out" ||
    fail "with Postgres stopped, the readiness runbook's output differs from the one docs/operations.md shows" \
        "$here/documented.out" "$out"
python3 - "$out" <<'EOF' || fail "with Postgres stopped: /readyz 503 naming the store, the IntrospectionService 200, healthcheck NOT_SERVING exit 1" "$out"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
whole, code1, one, code2 = json.loads(lines[0]), lines[1], json.loads(lines[2]), lines[3]
assert code1 == "HTTP 503" and whole["status"] == "NOT_SERVING", lines[:2]
assert any("store" in r for r in whole["reasons"]), whole
assert whole["services"]["tessera.v1.IntrospectionService"] == "SERVING", whole
for s in ("IssuerService", "KeyService", "RevocationService"):
    assert whole["services"]["tessera.v1." + s] == "NOT_SERVING", whole
assert code2 == "HTTP 200" and one["status"] == "SERVING", lines[2:4]
assert one["service"] == "tessera.v1.IntrospectionService", one
assert "NOT_SERVING" in lines[4:] and lines[-1] == "healthcheck: exit 1", lines[4:]
EOF
# The Postgres-down runbook: writes answer UNAVAILABLE at once, Verify
# answers from memory.
t0=$(date +%s%N)
grpc "$issuer" IssuerService/Issue '{"subject":"user-123","audience":"orders-api"}' >"$here/down.out"
elapsed_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
has "$here/down.out" 'Code: Unavailable' 'ERROR_REASON_STORE_UNAVAILABLE'
[ "$elapsed_ms" -lt 3000 ] || fail "Issue with Postgres down took ${elapsed_ms} ms (about a second, says the runbook)" "$here/down.out"
valid "$(field "$here/token.json" accessToken)" "Verify (DEFAULT) with Postgres down"
# Nothing listening: UNKNOWN and the reason on stderr.
tessera healthcheck --endpoint "http://127.0.0.1:$(free_port)" >"$here/nothing.out" 2>"$here/nothing.err" &&
    fail "healthcheck with nothing listening should exit 1" "$here/nothing.out"
[ -s "$here/nothing.err" ] || fail "healthcheck with nothing listening should say why on stderr" "$here/nothing.out" "$here/nothing.err"
grep -qx UNKNOWN "$here/nothing.out" || fail "healthcheck with nothing listening should print UNKNOWN" "$here/nothing.out"
pg_start
for _ in $(seq 75); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$issuer/readyz")" = 200 ] && break
    sleep 0.2
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$issuer/readyz")" = 200 ] ||
    fail "/readyz should be 200 again once Postgres answers, without a restart"
login "$here/again.json"
proven "readiness: /readyz 200, then 503 naming the store with Postgres stopped while ?service=tessera.v1.IntrospectionService stayed 200 and healthcheck said NOT_SERVING; writes UNAVAILABLE (STORE_UNAVAILABLE), Verify from memory; back to 200 without a restart"
halt all

if [ "$failures" -gt 0 ]; then
    echo "runbooks.sh: $failures check(s) failed" >&2
    exit 1
fi
echo "runbooks.sh: every runbook of docs/operations.md ran as written ($(( $(date +%s) - started )) s)"
