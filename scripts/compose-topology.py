#!/usr/bin/env python3
"""Starts the topology of compose.yaml as local processes, with the same
commands and environment as the file gives each Tessera service, and runs
Issue -> Verify -> Revoke -> Verify across them, then requests through the
gateway (nginx, with the command compose.yaml gives it) in front of an
echoing application, so compose.yaml cannot drift from what is tested. No container engine runs here: Postgres and
Redis are the test services (scripts/services.sh), host names are mapped to
loopback ports, and the secrets are made by scripts/compose-setup.sh into a
temporary directory. Every call is made over TLS with the application's
service key, and one without a key must be refused. The `otel` profile is
on, as the README runs it (TESSERA_OTLP_ENDPOINT=http://otel-collector:4317):
an OTLP/gRPC receiver here stands for the collector, and spans and metrics
must arrive from every Tessera service under its own service name. The
README's compose blocks (an application's call through the gateway, a
second caller added) run verbatim against it, its published ports mapped.

Usage: scripts/compose-topology.py (after sourcing scripts/services.sh and
scripts/tools.sh; needs the release binary, which it builds, or the binary
named by TESSERA_BIN)."""

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import yaml
from concurrent import futures
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the README sets to run the otel profile.
OTLP_ENDPOINT = "http://otel-collector:4317"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def order(services):
    """Service names, dependencies first."""
    done, out = set(), []

    def visit(name):
        if name in done:
            return
        done.add(name)
        for dep in services[name].get("depends_on", {}) or {}:
            visit(dep)
        out.append(name)

    for name in services:
        visit(name)
    return out


def interpolate(text, env):
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default},
    $VAR and $$ (a literal $)."""
    def one(m):
        if m.group(0) == "$$":
            return "$"
        name, op, default = m.group(1) or m.group(4), m.group(2), m.group(3) or ""
        value = env.get(name)
        if op == ":-" and not value or op == "-" and value is None:
            return default
        return value or ""
    return re.sub(r"\$\$|\$\{(\w+)(?:(:?-)([^}]*))?\}|\$(\w+)", one, text)


class Otlp:
    """An OTLP/gRPC receiver (traces and metrics): the names of the spans
    and metrics received, by the resource's service.name."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen = {"spans": {}, "metrics": {}}
        received = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                for rs in request.resource_spans:
                    received.add("spans", rs.resource, [s.name for ss in rs.scope_spans for s in ss.spans])
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):
                for rm in request.resource_metrics:
                    received.add("metrics", rm.resource, [m.name for sm in rm.scope_metrics for m in sm.metrics])
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def add(self, kind, resource, names):
        service = next((a.value.string_value for a in resource.attributes if a.key == "service.name"), "")
        with self.lock:
            self.seen[kind].setdefault(service, set()).update(names)

    def wait_for(self, services, timeout=30):
        """Until spans and metrics have come from each of `services`."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                missing = [f"{kind} from {name}" for kind in self.seen for name in services
                           if not self.seen[kind].get(name)]
                counts = {n: (len(self.seen["spans"].get(n, ())), len(self.seen["metrics"].get(n, ())))
                          for n in services}
            if not missing:
                return counts
            if time.monotonic() > deadline:
                raise SystemExit(f"compose topology: the OTLP receiver got no {', '.join(missing)} "
                                 f"in {timeout} s (received from: {sorted(self.seen['spans'])} "
                                 f"spans, {sorted(self.seen['metrics'])} metrics)")
            time.sleep(0.2)


def collector_config(svc):
    """The otel profile's collector config (the file bind-mounted at its
    --config path) receives OTLP/gRPC on the port of OTLP_ENDPOINT and
    passes traces and metrics on."""
    path = next(a.split("=", 1)[1] for a in svc["command"] if a.startswith("--config="))
    host = next(v.split(":")[0] for v in svc["volumes"] if v.split(":")[1] == path)
    config = yaml.safe_load(open(os.path.join(ROOT, host)))
    endpoint = config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    pipelines = config["service"]["pipelines"]
    if endpoint.rsplit(":", 1)[1] != OTLP_ENDPOINT.rsplit(":", 1)[1] or \
            any("otlp" not in pipelines.get(p, {}).get("receivers", []) for p in ("traces", "metrics")):
        raise SystemExit(f"compose topology: {host}: no OTLP/gRPC receiver on {OTLP_ENDPOINT} "
                         "feeding the traces and metrics pipelines")


def readme_block(name, published, cwd, binary):
    """Runs the README's `name` block (between <!-- name:start --> and
    <!-- name:end -->) with bash in `cwd`, compose's published addresses
    mapped to the services here and `tessera` being `binary`; its stdout."""
    text = open(os.path.join(ROOT, "README.md")).read()
    m = re.search(rf"<!-- {name}:start -->\n```sh\n(.*?)```\n<!-- {name}:end -->", text, re.S)
    if not m:
        raise SystemExit(f"compose topology: no {name} block in README.md")
    script = re.sub("|".join(map(re.escape, published)), lambda a: published[a.group(0)], m.group(1))
    bindir = os.path.join(cwd, "bin")
    if not os.path.exists(bindir):
        os.mkdir(bindir)
        os.symlink(os.path.abspath(binary), os.path.join(bindir, "tessera"))
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"])
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise SystemExit(f"compose topology: the README's {name} block failed: {r.stderr.strip()}")
    return r.stdout


def check_readme(published, work, binary, at, ca):
    """The README's compose blocks: the application's Issue and a request
    through the gateway with the token; a second caller appended to the
    callers file is admitted without a restart."""
    out = readme_block("compose-call", published, work, binary)
    if not re.search(r'x-tessera-subject"?\s*:\s*"?user-123', out, re.I):
        raise SystemExit(f"compose topology: the README's compose-call block: no identity passed on: {out}")
    readme_block("compose-caller", published, work, binary)
    key = open(os.path.join(work, "deploy", "keys", "shop.key")).read().strip()
    body = {"subject": "compose-shop", "audience": "shop-api"}
    for _ in range(150):
        if grpcurl(at["issuer"], "tessera.v1.IssuerService/Issue", body, ca, key, expect_ok=False).returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit("compose topology: the caller the README adds was not admitted within 15 s")


def grpcurl(addr, method, body, ca, key=None, expect_ok=True):
    auth = ["-H", f"authorization: Bearer {key}"] if key else []
    r = subprocess.run(["grpcurl", "-cacert", ca, *auth, "-d", json.dumps(body), addr, method],
                       capture_output=True, text=True, timeout=10)
    if not expect_ok:
        return r
    if r.returncode != 0:
        raise SystemExit(f"compose topology: {method} on {addr} failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


class Echo(http.server.BaseHTTPRequestHandler):
    """The example application: answers 200 with the headers it received."""

    def do_GET(self):
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def through(port, path, token=None):
    """GET path through the gateway: (status, the application's JSON or None)."""
    import urllib.error
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def start_gateway(svc, local, work, app_addr, port):
    """The gateway service's own command (sh -c: sed renders the shipped
    nginx.conf, then nginx), its container paths mapped to this machine."""
    script = svc["command"][2].replace("$$", "$")
    script = script.replace("/tmp/nginx", os.path.join(work, "nginx"))
    script = script.replace("app:8081", app_addr).replace("0.0.0.0:8080", f"127.0.0.1:{port}")
    env = dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin")
    proc = subprocess.Popen(["sh", "-c", local(script, "gateway")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise SystemExit("compose topology: the gateway never listened")


def check_gateway(port, issue, revoke):
    """A token passes with its identity; scopes, a missing token and a
    revocation on the other verifier are refused."""
    token = issue("compose-gw")
    status, seen = through(port, "/orders/1", token)
    if status != 200 or seen.get("x-tessera-subject") != "compose-gw":
        raise SystemExit(f"compose topology: through the gateway: {status} {seen}")
    for path, tok, want in [("/orders/admin/x", token, 403), ("/orders/1", None, 401)]:
        if through(port, path, tok)[0] != want:
            raise SystemExit(f"compose topology: gateway {path}: not {want}")
    revoke(token)
    for _ in range(100):
        if through(port, "/orders/1", token)[0] == 401:
            return
        time.sleep(0.05)
    raise SystemExit("compose topology: a token revoked on introspection-2 still passed the gateway")


def main():
    compose = yaml.safe_load(open(os.path.join(ROOT, "compose.yaml")))
    services = compose["services"]
    ours = [n for n in order(services) if "build" in services[n]]
    binary = os.environ.get("TESSERA_BIN")
    if not binary:
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", "tessera"], cwd=ROOT, check=True)
        binary = os.path.join(target, "release", "tessera")
    admin = os.environ["TESSERA_TEST_DATABASE_URL"]
    db = f"tessera_compose_{os.getpid()}"
    subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {db}"], check=True)
    work = tempfile.mkdtemp(prefix="tessera-compose-")
    deploy = os.path.join(work, "deploy")
    subprocess.run([os.path.join(ROOT, "scripts", "compose-setup.sh"), deploy], check=True)
    ports = {n: free_port() for n in ours}
    collector_config(services["otel-collector"])
    otlp = Otlp()
    # compose's environment, as the README runs the otel profile
    compose_env = dict(os.environ, TESSERA_OTLP_ENDPOINT=OTLP_ENDPOINT)
    # compose secrets -> the files compose-setup.sh made
    secrets = {name: os.path.join(work, spec["file"].removeprefix("./"))
               for name, spec in compose["secrets"].items()}
    # compose host:port -> this machine
    mapping = [
        (r"postgres://[^\s]*@postgres:5432/tessera", admin.rsplit("/", 1)[0] + "/" + db),
        (r"redis://redis:6379", os.environ["TESSERA_TEST_REDIS_URL"]),
    ] + [(rf"/run/secrets/{re.escape(n)}\b", path) for n, path in secrets.items()] \
      + [(rf"https://{re.escape(n)}:50051", f"https://127.0.0.1:{ports[n]}") for n in ours] \
      + [(rf"\b{re.escape(n)}:50051\b", f"127.0.0.1:{ports[n]}") for n in ours] \
      + [(re.escape(OTLP_ENDPOINT), f"http://127.0.0.1:{otlp.port}")]
    # compose bind mounts (./file:/container/path[:ro]) -> the files here
    for svc in services.values():
        for volume in svc.get("volumes") or []:
            host, _, rest = volume.partition(":")
            if host.startswith("./"):
                mapping.append((re.escape(rest.split(":")[0]), os.path.join(ROOT, host[2:])))

    def local(text, name):
        if name in ports:
            text = text.replace("0.0.0.0:50051", f"127.0.0.1:{ports[name]}")
            text = text.replace("https://127.0.0.1:50051", f"https://127.0.0.1:{ports[name]}")
        for pattern, value in mapping:
            text = re.sub(pattern, value, text)
        return text

    procs, exporting = [], []
    try:
        for name in ours:
            svc = services[name]
            own = {k: local(interpolate(str(v), compose_env), name)
                   for k, v in (svc.get("environment") or {}).items()}
            env = dict(os.environ, **own)
            # Isolation from other runs on the shared Redis (not a deployment setting).
            env["TESSERA_REDIS_PREFIX"] = f"tessera-compose-{os.getpid()}:"
            env["TESSERA_DATA_DIR"] = os.path.join(work, name)
            env.setdefault("TESSERA_LOG", "warn")
            cmd = [binary] + [local(a, name) for a in svc["command"]]
            if svc.get("restart") == "no":
                subprocess.run(cmd, env=env, check=True, capture_output=True)
                print(f"compose topology: {name} ran to completion")
                continue
            if own.get("OTEL_EXPORTER_OTLP_ENDPOINT") != f"http://127.0.0.1:{otlp.port}" or \
                    not own.get("OTEL_SERVICE_NAME"):
                raise SystemExit(f"compose topology: {name} has no OTEL_EXPORTER_OTLP_ENDPOINT "
                                 f"(${{TESSERA_OTLP_ENDPOINT:-}}) or OTEL_SERVICE_NAME of its own")
            exporting.append(own["OTEL_SERVICE_NAME"])
            # Export within the test's time (not deployment settings).
            env.update(OTEL_METRIC_EXPORT_INTERVAL="1000", OTEL_BSP_SCHEDULE_DELAY="200")
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
            check = [binary] + [local(a, name) for a in svc["healthcheck"]["test"][2:]]
            for _ in range(150):
                if subprocess.run(check, capture_output=True).returncode == 0:
                    break
                time.sleep(0.2)
            else:
                raise SystemExit(f"compose topology: {name} never became healthy")
            print(f"compose topology: {name} healthy on 127.0.0.1:{ports[name]}")
        at = {n: f"127.0.0.1:{ports[n]}" for n in ours}
        ca = os.path.join(deploy, "tls", "ca.pem")
        key = open(os.path.join(deploy, "keys", "app.key")).read().strip()
        login = {"subject": "compose", "audience": "orders-api"}
        refused = grpcurl(at["issuer"], "tessera.v1.IssuerService/Issue", login, ca, expect_ok=False)
        if refused.returncode == 0 or "Unauthenticated" not in refused.stderr:
            raise SystemExit(f"compose topology: Issue without a service key was not refused: {refused.stderr}")
        issued = grpcurl(at["issuer"], "tessera.v1.IssuerService/Issue", login, ca, key)
        verify = {"token": issued["accessToken"], "expected_audience": "orders-api",
                  "expected_kind": "TOKEN_KIND_ACCESS", "consistency": "CONSISTENCY_DEFAULT"}
        v = grpcurl(at["introspection-2"], "tessera.v1.IntrospectionService/Verify", verify, ca, key)
        assert v.get("valid") is True, v
        grpcurl(at["introspection-1"], "tessera.v1.RevocationService/Revoke",
                {"token": issued["accessToken"]}, ca, key)
        for _ in range(100):
            v = grpcurl(at["introspection-2"], "tessera.v1.IntrospectionService/Verify", verify, ca, key)
            if v.get("failure") == "VERIFY_FAILURE_REVOKED":
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"compose topology: the revocation never reached introspection-2: {v}")
        print(f"compose topology: {len(ours)} services from compose.yaml, TLS and callers; Issue without a "
              "key refused; Issue on issuer, Verify on introspection-2, Revoke on introspection-1, "
              "Verify REVOKED on introspection-2: ok")
        app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        threading.Thread(target=app.serve_forever, daemon=True).start()
        gw_port = free_port()
        procs.append(start_gateway(services["gateway"], local, work,
                                   f"127.0.0.1:{app.server_address[1]}", gw_port))

        def issue(subject):
            body = {"subject": subject, "audience": "orders-api", "scopes": ["orders:read"]}
            return grpcurl(at["issuer"], "tessera.v1.IssuerService/Issue", body, ca, key)["accessToken"]

        def revoke(token):
            grpcurl(at["introspection-2"], "tessera.v1.RevocationService/Revoke", {"token": token}, ca, key)

        check_gateway(gw_port, issue, revoke)
        print("compose topology: gateway (nginx, TLS to introspection-1, its own key) in front of the "
              "application: identity passed, scope and missing token refused, a revocation on "
              "introspection-2 refused at the gateway: ok")
        # compose's published ports (127.0.0.1:HOST:CONTAINER) -> the services here
        here = dict(at, gateway=f"127.0.0.1:{gw_port}")
        published = {}
        for name, addr in here.items():
            for spec in services[name].get("ports") or []:
                port = spec.split(":")[-2]
                published.update({f"127.0.0.1:{port}": addr, f"localhost:{port}": addr})
        check_readme(published, work, binary, at, ca)
        print("compose topology: the README's compose blocks, verbatim: an application's Issue and its "
              "token through the gateway; a caller added to the callers file, admitted without a restart: ok")
        if len(set(exporting)) != len(exporting):
            raise SystemExit(f"compose topology: two services export under one name: {exporting}")
        counts = otlp.wait_for(exporting)
        print("compose topology: otel profile (TESSERA_OTLP_ENDPOINT=" + OTLP_ENDPOINT + "): span and metric "
              "names received, by service: " + ", ".join(f"{n} {s}/{m}" for n, (s, m) in counts.items()) + ": ok")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=20)
        otlp.server.stop(0)
        subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"])
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    sys.exit(main())
