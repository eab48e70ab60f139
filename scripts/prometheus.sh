#!/usr/bin/env bash
# The Prometheus rules, their unit tests, the sample configuration and the
# Grafana dashboard (examples/prometheus, examples/grafana), then a live test:
# a real Prometheus loads the shipped rules and scrapes a real Tessera that
# runs on a Postgres and a Redis of this script's own; both are stopped, and
# the store, view and health alerts must fire; Tessera is stopped, and the
# target-down alert must fire.
#
#   TESSERA_BIN        the tessera binary (default: built here with cargo)
#   TESSERA_PG_BINDIR  where initdb and pg_ctl are (default: Debian's
#                      /usr/lib/postgresql/<version>/bin, else what
#                      scripts/services.sh finds)
#
# promtool and prometheus come from the Debian package `prometheus`: installed
# here when missing and running as root.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

rules=examples/prometheus/tessera-rules.yml
tests=examples/prometheus/tessera-rules.test.yml
config=examples/prometheus/prometheus.yml
dashboard=examples/grafana/tessera-dashboard.json

say() { echo "prometheus.sh: $*" >&2; }
die() { say "FAIL: $*"; exit 1; }
step() { printf '\n== %s (%ss)\n' "$1" "$(( $(date +%s) - start ))" >&2; }

# ---------------------------------------------------------------- the tools
# Debian's package may start a system Prometheus (port 9090) where services
# start; nothing here uses it: this script runs its own on a free port.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "promtool and prometheus are missing: install the Debian package prometheus (apt-get install prometheus)"
    say "installing the Debian package prometheus"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    command -v promtool >/dev/null 2>&1 || die "promtool is still missing after apt-get install prometheus"
fi
for tool in python3 curl redis-server redis-cli; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (Debian: python3, curl, redis-server)"
done

# Everything this script makes lives in two temporary directories, removed
# on exit with every process it started (see cleanup below).
work=$(mktemp -d)     # configurations, logs, Prometheus's TSDB, Tessera's data
pgdir=$(mktemp -d)    # the Postgres cluster (owned by the postgres user as root)
pids=()               # processes to stop on exit
pgbin=
# The Postgres binaries run as the postgres user when this script runs as
# root (Postgres refuses to run as root), from the cluster's directory.
as_pg() {
    if [ "$(id -u)" = 0 ]; then (cd "$pgdir" && runuser -u postgres -- "$@"); else "$@"; fi
}
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "$pgbin" ] && [ -f "$pgdir/data/postmaster.pid" ]; then
        as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work" "$pgdir"
}
trap cleanup EXIT

# ------------------------------------------------- 1, 2: the rules, statically
step "promtool check rules $rules"
promtool check rules "$rules"

step "promtool test rules $tests"
promtool test rules "$tests"
# An alert reading a recording rule sees it one evaluation late or not,
# depending on which group Prometheus evaluates first: promtool picks an
# order at random, so the tests must hold (and are run here) in both.
mkdir "$work/order"
cp "$rules" "$work/order/tessera-rules.yml"
for order in "tessera-recording, tessera-alerts" "tessera-alerts, tessera-recording"; do
    sed "s/^evaluation_interval:.*/&\ngroup_eval_order: [$order]/" "$tests" >"$work/order/tessera-rules.test.yml"
    grep -q '^group_eval_order:' "$work/order/tessera-rules.test.yml" || die "cannot set group_eval_order in $tests"
    promtool test rules "$work/order/tessera-rules.test.yml" >"$work/order/out" 2>&1 ||
        { cat "$work/order/out" >&2; die "the unit tests fail when the groups are evaluated in the order $order"; }
done
say "the unit tests also pass with either rule group evaluated first"

# ------------------------------------------------------ 3: the configuration
step "promtool check config (a rendered copy of $config)"
# The shipped file as it is, beside a copy of the rules, but with its CA
# file pointed at one that exists here.
mkdir "$work/check"
cp "$rules" "$work/check/tessera-rules.yml"
: >"$work/check/ca.pem"
sed -E 's/^(    tls_config: \{ca_file:).*/\1 ca.pem}/' "$config" >"$work/check/prometheus.yml"
grep -q '^    tls_config: {ca_file: ca.pem}$' "$work/check/prometheus.yml" ||
    die "cannot point the ca_file of $config elsewhere (keep its tls_config on one line)"
(cd "$work/check" && promtool check config prometheus.yml)

# ---------------------------------------- 4: the dashboard and the rules' names
step "dashboard and rules: series in the README or the recording rules, runbooks, tests"
# Every series a dashboard panel or a rule reads must be in the README's
# metrics table (a histogram with its _bucket, _count, _sum), be a recording
# rule, or be `up`. Every alert must have `for:`, a severity, a summary, a
# description and a runbook_url whose anchor is a heading of
# docs/operations.md, and a unit test where it fires and one where it does not.
python3 - README.md docs/operations.md "$rules" "$tests" "$dashboard" <<'PY' || die "the rules or the dashboard (above)"
import json, re, sys

readme, operations, rules_path, tests_path, dashboard_path = sys.argv[1:]
problems = []

# The README's metrics table: the first cell of each row of the section.
section = re.search(r"^### Metrics and traces\n(.*?)(?=^##)", open(readme).read(), re.S | re.M)
documented = {"up"}
for line in section.group(1).splitlines():
    if line.startswith("| `"):
        first = line.split("|")[1]
        for name in re.findall(r"`(tessera_\w+)`", first):
            documented.add(name)
            if "(histogram)" in first:
                documented.update(name + s for s in ("_bucket", "_count", "_sum"))
rules_text = open(rules_path).read()
recorded = set(re.findall(r"^\s*- record:\s*(\S+)", rules_text, re.M))
known = documented | recorded

KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"}
def series_names(expr):
    """The series an expression reads (a small PromQL lexer: enough for ours)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                  # strings
    e = re.sub(r"\$\{?\w+\}?", "1", e)                             # Grafana variables
    e = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", e)                    # matchers, ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][\w:]*|\d[\w.]*", e):
        word = m.group(0)
        if word[0].isdigit() or word in KEYWORDS or e[m.end():].lstrip().startswith("("):
            continue  # a number, a keyword, a function or an aggregation
        names.add(word)
    return names

def check(where, expr):
    names = series_names(expr)
    if not names:
        problems.append(f"{where}: no series in {expr!r}")
    for name in sorted(names - known):
        problems.append(f"{where}: {name} is neither in the README's metrics table nor a recording rule")

# The rules: every expression (inline, or a `|` block), and each alert's fields.
lines = rules_text.splitlines()
for i, line in enumerate(lines):
    m = re.match(r"^(\s*)(?:- )?expr:\s*(.*)$", line)
    if not m:
        continue
    expr, indent = m.group(2).strip(), len(m.group(1))
    if expr in ("|", ">", "|-", ">-"):
        block = []
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            block.append(nxt.strip())
        expr = " ".join(block)
    check(f"{rules_path}:{i + 1}", expr)

anchors = set()
for heading in re.findall(r"^#+ (.+)$", open(operations).read(), re.M):
    anchors.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
tests_text = open(tests_path).read()
alerts = re.split(r"^\s*- alert:\s*", rules_text, flags=re.M)[1:]
for block in alerts:
    name = block.split()[0]
    body = block.split("\n  - name:")[0]
    for field in ("for:", "severity:", "summary:", "description:", "runbook_url:"):
        if not re.search(rf"^\s+{field}", body, re.M):
            problems.append(f"alert {name}: no {field}")
    for url in re.findall(r"runbook_url:\s*\"?docs/operations\.md#([\w-]+)", body):
        if url not in anchors:
            problems.append(f"alert {name}: docs/operations.md has no heading #{url}")
    # A case where it fires (`exp_alerts:` and a list) and one where it does not.
    cases = re.findall(rf"alertname:\s*{name}\s*\n\s*exp_alerts:(.*)", tests_text)
    if not any(c.strip() == "[]" for c in cases):
        problems.append(f"alert {name}: no unit test where it does not fire")
    if not any(c.strip() == "" for c in cases):
        problems.append(f"alert {name}: no unit test where it fires")

# The dashboard.
dash = json.load(open(dashboard_path))
if not 36 <= dash.get("schemaVersion", 0) <= 41:
    problems.append(f"dashboard: schemaVersion {dash.get('schemaVersion')} (expected about 39)")
variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
ds = variables.get("datasource", {})
if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
    problems.append("dashboard: no `datasource` variable of type prometheus")
panels = []
for p in dash["panels"]:
    panels += [p] + p.get("panels", [])  # a collapsed row holds its panels
ids = [p["id"] for p in panels]
if len(ids) != len(set(ids)):
    problems.append("dashboard: two panels share an id")
graphs = [p for p in panels if p["type"] != "row"]
for p in graphs:
    where = f"dashboard panel {p['title']!r}"
    if p.get("datasource", {}).get("uid") != "${datasource}":
        problems.append(f"{where}: its datasource is not ${{datasource}}")
    if not p.get("targets"):
        problems.append(f"{where}: no targets")
    for t in p.get("targets", []):
        check(where, t.get("expr", ""))
for problem in problems:
    print("  " + problem, file=sys.stderr)
if problems:
    sys.exit(1)
print(f"  {len(graphs)} panels, {len(alerts)} alerts, {len(recorded)} recording rules: every series documented")
PY

# --------------------------------------------------------- 5: the live test
step "live: Prometheus scrapes Tessera; Postgres and Redis stop; the alerts fire"
if [ -z "${TESSERA_BIN:-}" ]; then
    cargo build --locked -q -p tessera
fi
bin="${TESSERA_BIN:-${CARGO_TARGET_DIR:-target}/debug/tessera}"
[ -x "$bin" ] || die "no tessera binary at $bin"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_until SECONDS COMMAND...: true once COMMAND succeeds, false after SECONDS.
wait_until() {
    local deadline=$(( $(date +%s) + $1 )); shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}
# Postgres: a cluster of our own, on a free port, so that we may stop it.
if [ -z "${TESSERA_PG_BINDIR:-}" ]; then
    TESSERA_PG_BINDIR=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -1)
    # Not Debian's layout, or not installed: scripts/services.sh finds (or
    # installs) them and hands TESSERA_PG_BINDIR back.
    # shellcheck source=scripts/services.sh
    [ -x "${TESSERA_PG_BINDIR:-}/initdb" ] || source scripts/services.sh
fi
pgbin=$TESSERA_PG_BINDIR
[ -x "$pgbin/initdb" ] || die "no initdb in $pgbin; set TESSERA_PG_BINDIR"
pgport=$(free_port)
if [ "$(id -u)" = 0 ]; then chown postgres: "$pgdir"; fi
as_pg "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth=trust -E UTF8 >"$work/initdb.log" 2>&1 ||
    { cat "$work/initdb.log" >&2; die "initdb failed"; }
as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -w -l "$pgdir/log" \
    -o "-c listen_addresses=127.0.0.1 -c port=$pgport -c unix_socket_directories=$pgdir" start >/dev/null ||
    { cat "$pgdir/log" >&2; die "Postgres did not start"; }
"$pgbin/createdb" -h 127.0.0.1 -p "$pgport" -U postgres tessera
database_url="postgres://postgres@127.0.0.1:$pgport/tessera"

# Redis: one of our own, in the foreground of a background job, nothing saved.
redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --daemonize no \
    --dir "$work" --logfile "$work/redis.log" &
redis_pid=$!
pids+=("$redis_pid")
wait_until 15 sh -c "[ \"\$(redis-cli -h 127.0.0.1 -p $redis_port ping)\" = PONG ]" ||
    die "Redis did not start"

# Tessera: every role on the shared store. It reconciles its revocation view
# every 200 ms, and turns IntrospectionService NOT_SERVING once the view is
# 3 s old (--max-view-staleness): the view's age is what the view alert reads.
"$bin" migrate --database-url "$database_url" >"$work/migrate.log" 2>&1 ||
    { cat "$work/migrate.log" >&2; die "tessera migrate failed"; }
kek=$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("="))')
TESSERA_KEK="$kek" TESSERA_LOG=info "$bin" serve --role all --listen 127.0.0.1:0 \
    --database-url "$database_url" --redis-url "redis://127.0.0.1:$redis_port" \
    --issuer https://prometheus-test.tessera.invalid --data-dir "$work/data" \
    --reconcile-interval-ms 200 --max-view-staleness 3 >"$work/tessera.log" 2>&1 &
tessera_pid=$!
pids+=("$tessera_pid")
wait_until 30 grep -q 'listening on' "$work/tessera.log" ||
    { tail -30 "$work/tessera.log" >&2; die "tessera serve did not start"; }
addr=$(sed -n 's/.*listening on //p' "$work/tessera.log" | head -1)
wait_until 30 "$bin" healthcheck --endpoint "http://$addr" ||
    { tail -30 "$work/tessera.log" >&2; die "tessera serve is not SERVING"; }

# Prometheus: the shipped configuration rendered for this Tessera (plain
# http, scraped and evaluated every second: the intervals, the scheme and
# the targets rewritten, the tls_config line dropped), and beside it the
# shipped rules with every `for:` shortened to 5 s, so that the test waits
# seconds, not minutes; the expressions and thresholds are the shipped ones.
prom_port=$(free_port)
prom="http://127.0.0.1:$prom_port"
sed -E -e 's/^(  (scrape|evaluation)_interval:).*/\1 1s/' \
    -e 's/^(    scheme:).*/\1 http/' \
    -e '/^    tls_config:/d' \
    -e "s/^(      - targets:).*/\1 [\"$addr\"]/" \
    "$config" >"$work/prometheus.yml"
[ "$(grep -cE "^  (scrape|evaluation)_interval: 1s$|^    scheme: http$|^      - targets: \[\"$addr\"\]$" "$work/prometheus.yml")" = 4 ] ||
    die "rendering $config failed (keep its intervals, scheme, tls_config and targets one line each)"
sed -E 's/^(\s+for:).*/\1 5s/' "$rules" >"$work/tessera-rules.yml"
promtool check config "$work/prometheus.yml" >/dev/null
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=("$!")
wait_until 30 curl -sf "$prom/-/ready" || { tail -20 "$work/prometheus.log" >&2; die "Prometheus did not start"; }

# query EXPR: the values of an instant query, one a line ("" when none).
query() {
    curl -sfG "$prom/api/v1/query" --data-urlencode "query=$1" |
        python3 -c 'import json, sys; [print(r["value"][1]) for r in json.load(sys.stdin)["data"]["result"]]'
}
is_one() { [ "$(query "$1")" = 1 ]; }
has_data() { [ -n "$(query "$1")" ]; }
# alert_state NAME: firing, pending, or nothing.
alert_state() {
    curl -sf "$prom/api/v1/alerts" | python3 -c '
import json, sys
states = {a["state"] for a in json.load(sys.stdin)["data"]["alerts"] if a["labels"]["alertname"] == sys.argv[1]}
print("firing" if "firing" in states else "pending" if states else "")' "$1"
}
firing() { [ "$(alert_state "$1")" = firing ]; }
# Said before failing: what Prometheus sees, and the end of each log.
report() {
    say "alerts: $(curl -sf "$prom/api/v1/alerts" || echo '(Prometheus did not answer)')"
    say "tessera.log:"; tail -25 "$work/tessera.log" >&2
    say "prometheus.log:"; tail -10 "$work/prometheus.log" >&2
}

# Before the outage: the target is up, the store up, the view fresh; a few
# calls (ListKeys, and a Verify of a token Tessera never signed) give the
# recording rules something to count; nothing fires.
wait_until 30 is_one 'up{job="tessera"}' || { report; die "Prometheus never scraped Tessera at $addr"; }
wait_until 20 is_one 'tessera_store_up' ||
    { report; die "tessera_store_up is not 1 with Postgres up (is it exported? /metrics: $(curl -s "http://$addr/metrics" | grep -c '^tessera_store_up') lines)"; }
has_data 'tessera_revocation_view_age_seconds < 15' || { report; die "no fresh tessera_revocation_view_age_seconds"; }
for _ in 1 2 3; do
    "$bin" keys list --endpoint "http://$addr" >/dev/null
    echo 'eyJhbGciOiJFUzI1NiIsImtpZCI6InByb20ifQ.eyJzdWIiOiJwcm9tIn0.c2ln' |
        "$bin" token inspect - --audience prometheus-test --endpoint "http://$addr" >/dev/null 2>&1 || true
done
wait_until 20 has_data 'tessera:verify:rate5m{result="invalid"} > 0' ||
    { report; die "the recording rules never counted the test's Verify calls"; }
now_firing=$(curl -sf "$prom/api/v1/alerts" | python3 -c '
import json, sys
print(" ".join(sorted({a["labels"]["alertname"] for a in json.load(sys.stdin)["data"]["alerts"]})))')
[ -z "$now_firing" ] || { report; die "alerts before the outage: $now_firing"; }

# The outage: Postgres and Redis stop. Within a minute, with the shortened
# `for:`: the store alert (tessera_store_up is 0 within 2 s), the services
# that need the store NOT_SERVING, and the view alert once the view is over
# 15 s old (the shipped threshold).
outage=$(date +%s)
as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null
kill "$redis_pid"
wait "$redis_pid" 2>/dev/null || true
declare -A fired=()
expected=(TesseraStoreUnavailable TesseraServiceNotServing TesseraRevocationViewStale)
while [ "${#fired[@]}" -lt "${#expected[@]}" ] && [ $(( $(date +%s) - outage )) -lt 60 ]; do
    for alert in "${expected[@]}"; do
        [ -z "${fired[$alert]:-}" ] && firing "$alert" && fired[$alert]=$(( $(date +%s) - outage ))
    done
    sleep 1
done
missing=()
for alert in "${expected[@]}"; do [ -n "${fired[$alert]:-}" ] || missing+=("$alert"); done
[ "${#missing[@]}" = 0 ] || { report; die "not firing 60 s after Postgres and Redis stopped: ${missing[*]}"; }

# Tessera stops: its target goes down.
kill "$tessera_pid"
wait "$tessera_pid" 2>/dev/null || true
down=$(date +%s)
wait_until 30 firing TesseraTargetDown || { report; die "TesseraTargetDown did not fire 30 s after Tessera stopped"; }
target_down=$(( $(date +%s) - down ))

# Every rule evaluated without an error, and every dashboard query is valid
# PromQL that Prometheus answers (its variables replaced by what Grafana would).
errors=$(curl -sf "$prom/api/v1/rules" | python3 -c '
import json, sys
for g in json.load(sys.stdin)["data"]["groups"]:
    for r in g["rules"]:
        if r["health"] != "ok":
            print(r["name"], r.get("lastError", r["health"]))')
[ -z "$errors" ] || die "rules that failed to evaluate: $errors"
python3 - "$dashboard" "$prom" <<'PY' || die "dashboard queries Prometheus refuses (above)"
import json, sys, urllib.parse, urllib.request
dashboard, prom = sys.argv[1:]
bad = []
for p in json.load(open(dashboard))["panels"]:
    for t in p.get("targets", []):
        expr = t["expr"].replace("$__rate_interval", "1m").replace("$job", ".*")
        url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            urllib.request.urlopen(url, timeout=10).read()
        except Exception as e:  # HTTP 400: a query Prometheus refuses
            bad.append(f"{p['title']!r}: {expr}: {e}")
for b in bad:
    print("  " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY

echo "prometheus.sh: OK: rules, unit tests, config and dashboard checked; live, after Postgres and Redis stopped:" \
    "TesseraStoreUnavailable firing in ${fired[TesseraStoreUnavailable]} s," \
    "TesseraServiceNotServing in ${fired[TesseraServiceNotServing]} s," \
    "TesseraRevocationViewStale in ${fired[TesseraRevocationViewStale]} s;" \
    "TesseraTargetDown ${target_down} s after Tessera stopped (${SECONDS} s in all)"
