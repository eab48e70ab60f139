//! OpenTelemetry export from the real binary: an issuer and an
//! introspection service as two processes (split roles on Postgres), each
//! exporting over OTLP/gRPC to a small collector run by the test. One
//! refresh-token reuse, sent with the test's own `traceparent`, must give
//! one trace across both processes: the issuer's `Refresh` span joins the
//! test's context, and the revocation service's `Revoke{family}` span is a
//! child of the issuer's span that sent it. Nothing exported may carry a
//! token or the service key; the counters arrive as OTLP metrics too.

use crate::harness::{Backend, Deployment, ISSUER, eventually};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use tessera_proto::v1::issuer_service_client::IssuerServiceClient;
use tessera_proto::v1::{IssueRequest, RefreshRequest};
use tonic::{Request, Response, Status};

/// What the collector received.
#[derive(Clone, Default)]
struct Collector {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.traces.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Collector {
    /// Serves OTLP/gRPC on a free loopback port; its URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self.clone()))
            .add_service(MetricsServiceServer::new(self.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        tokio::spawn(server);
        url
    }

    /// Every span received, with its process's `service.name`.
    fn spans(&self) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        for request in self.traces.lock().unwrap().iter() {
            for rs in &request.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| string_attr(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    out.extend(ss.spans.iter().map(|s| (service.clone(), s.clone())));
                }
            }
        }
        out
    }

    /// The latest value of counter `name` exported by `service`.
    fn counter(&self, service: &str, name: &str) -> Option<i64> {
        let mut latest = None;
        for request in self.metrics.lock().unwrap().iter() {
            for rm in &request.resource_metrics {
                let from = rm
                    .resource
                    .as_ref()
                    .and_then(|r| string_attr(&r.attributes, "service.name"));
                if from.as_deref() != Some(service) {
                    continue;
                }
                for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                    if let (true, Some(metric::Data::Sum(sum))) = (m.name == name, &m.data) {
                        for p in &sum.data_points {
                            if let Some(number_data_point::Value::AsInt(v)) = p.value {
                                latest = Some(v);
                            }
                        }
                    }
                }
            }
        }
        latest
    }

    /// Everything received, as bytes (for the search for secrets).
    fn bytes(&self) -> Vec<u8> {
        use prost::Message as _;
        let mut out = Vec::new();
        for r in self.traces.lock().unwrap().iter() {
            out.extend(r.encode_to_vec());
        }
        for r in self.metrics.lock().unwrap().iter() {
            out.extend(r.encode_to_vec());
        }
        out
    }
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attr(attributes, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `tessera serve` with `args`, exporting to `collector` as `service`;
/// the process and its address.
fn serve(d: &Deployment, service: &str, collector: &str, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("serve")
        .args(args)
        .args(["--issuer", ISSUER])
        .args(["--database-url", d.database_url.as_deref().unwrap()])
        .arg("--data-dir")
        .arg(&d.data_dir)
        .env_remove("TESSERA_KEK")
        .env("TESSERA_LOG", "warn")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
        .env("OTEL_SERVICE_NAME", service)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
        .env("TESSERA_SERVICE_KEY", SERVICE_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("tessera listening on ")
        .unwrap_or_else(|| panic!("{service}: unexpected first line {line:?}"))
        .to_owned();
    (child, addr)
}

/// The key each instance presents on its calls to the other (no callers
/// file here, so it is not checked; it must still never be exported).
const SERVICE_KEY: &str = "tsk_otel_test_service_key_0123456789abcdef";

/// Stops `child` with SIGTERM; its stderr, added to the suite's log scan.
fn stop(mut child: Child) -> String {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    if let Ok(path) = std::env::var("TESSERA_TEST_LOG") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        f.write_all(logs.as_bytes()).unwrap();
    }
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_reuse_is_one_trace_across_two_processes() {
    let collector = Collector::default();
    let otlp = collector.start().await;
    let d = Deployment::new(Backend::Distributed).await;
    // The issuer must name the revocation service before it exists.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kek = d.data_dir.join("kek");
    let revocation = format!("http://127.0.0.1:{port}");
    let (issuer, issuer_addr) = serve(
        &d,
        "tessera-issuer",
        &otlp,
        &[
            "--role",
            "issuer",
            "--listen",
            "127.0.0.1:0",
            "--migrate",
            "--kek-file",
            kek.to_str().unwrap(),
            "--revocation-endpoint",
            &revocation,
            // The binary reads the system clock: no grace, so presenting
            // the consumed token again is reuse at once.
            "--refresh-grace",
            "0",
        ],
    );
    let listen = format!("127.0.0.1:{port}");
    let issuer_url = format!("http://{issuer_addr}");
    let (verifier, _) = serve(
        &d,
        "tessera-introspection",
        &otlp,
        &[
            "--role",
            "introspection",
            "--listen",
            &listen,
            "--issuer-endpoint",
            &issuer_url,
        ],
    );

    let mut client = IssuerServiceClient::connect(issuer_url).await.unwrap();
    let login = client
        .issue(IssueRequest {
            subject: "otel-user".into(),
            audience: "orders-api".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let refresh = |token: &str| RefreshRequest {
        refresh_token: token.into(),
        scopes: vec![],
    };
    let next = client
        .refresh(refresh(&login.refresh_token))
        .await
        .unwrap()
        .into_inner();
    // The reuse, in the test's own trace.
    let trace_id = tessera_domain::random_bytes(16);
    let parent_id = tessera_domain::random_bytes(8);
    let mut reuse = Request::new(refresh(&login.refresh_token));
    reuse.metadata_mut().insert(
        "traceparent",
        format!("00-{}-{}-01", hex(&trace_id), hex(&parent_id))
            .parse()
            .unwrap(),
    );
    let refused = client.refresh(reuse).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let in_trace = |service: &str| -> Vec<Span> {
        collector
            .spans()
            .into_iter()
            .filter(|(s, span)| s == service && span.trace_id == trace_id)
            .map(|(_, span)| span)
            .collect()
    };
    let revoke_span = |spans: &[Span]| {
        spans
            .iter()
            .find(|s| s.name == "tessera.v1.RevocationService/Revoke")
            .cloned()
    };
    eventually("both processes export their spans of the reuse", || {
        let ready = !in_trace("tessera-issuer").is_empty()
            && revoke_span(&in_trace("tessera-introspection")).is_some();
        async move { ready }
    })
    .await;
    let issuer_spans = in_trace("tessera-issuer");
    let verifier_spans = in_trace("tessera-introspection");
    let names = |spans: &[Span]| spans.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    println!(
        "trace {}: issuer {:?}, introspection {:?}",
        hex(&trace_id),
        names(&issuer_spans),
        names(&verifier_spans)
    );
    // The issuer's server span joined the test's context, and says how the
    // call ended (UNAUTHENTICATED = 16).
    let refresh_span = issuer_spans
        .iter()
        .find(|s| s.name == "tessera.v1.IssuerService/Refresh")
        .unwrap_or_else(|| panic!("no Refresh span in {:?}", names(&issuer_spans)));
    assert_eq!(refresh_span.parent_span_id, parent_id);
    assert_eq!(refresh_span.kind, SpanKind::Server as i32);
    assert_eq!(
        attr(&refresh_span.attributes, "rpc.grpc.status_code"),
        Some(&any_value::Value::IntValue(16))
    );
    // The revocation service's span of Revoke{family} is a child of the
    // issuer's span that sent it.
    let revoke = revoke_span(&verifier_spans).unwrap();
    assert_eq!(revoke.kind, SpanKind::Server as i32);
    assert!(
        issuer_spans
            .iter()
            .any(|s| s.span_id == revoke.parent_span_id),
        "the Revoke span's parent {} is not one of the issuer's spans",
        hex(&revoke.parent_span_id)
    );
    assert_eq!(
        string_attr(&revoke.attributes, "rpc.method").as_deref(),
        Some("Revoke")
    );

    // The other direction: the verifier's key-set fetch at start and the
    // issuer's GetJwks that answered it are one trace.
    eventually("a GetJwks span in the trace of a key_set.fetch", || {
        let all = collector.spans();
        let fetched: Vec<_> = all
            .iter()
            .filter(|(s, span)| s == "tessera-introspection" && span.name == "key_set.fetch")
            .map(|(_, span)| span.trace_id.clone())
            .collect();
        let joined = all.iter().any(|(s, span)| {
            s == "tessera-issuer"
                && span.name == "tessera.v1.KeyService/GetJwks"
                && fetched.contains(&span.trace_id)
        });
        async move { joined }
    })
    .await;

    // The counters arrive over OTLP too, from the process that counted.
    eventually("the issuer exports its reuse counter", || {
        let n = collector.counter("tessera-issuer", "tessera_refresh_token_reuse");
        async move { n == Some(1) }
    })
    .await;

    let logs = [stop(verifier), stop(issuer)].concat();
    assert!(!logs.contains("panicked"), "{logs}");
    // No token, refresh token or key in anything exported (nor logged).
    let exported = collector.bytes();
    for secret in [
        login.access_token.as_str(),
        &login.refresh_token,
        &next.access_token,
        &next.refresh_token,
        SERVICE_KEY,
    ] {
        let found = exported
            .windows(secret.len())
            .any(|w| w == secret.as_bytes());
        assert!(!found, "a secret was exported");
        assert!(!logs.contains(secret), "a secret was logged");
    }
    d.cleanup().await;
}
