//! RPC latency by method and status code: the histograms that the edge's
//! observing layer (`tessera_edge::observe`) fills, one observation per
//! call.
//!
//! Every series exists from the start, one per (method, code), so
//! recording is an index computation and three atomic adds: no lock, no
//! map insert. Methods come from the contract's descriptor set, plus gRPC
//! health and reflection; any other path is counted as `other`, so a
//! client cannot create series by inventing paths. Only series that have
//! seen a call are exposed.

use super::histogram::AtomicHistogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

/// gRPC status codes by number, as the `code` label shows them.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Standard services every instance serves beside the contract.
const STANDARD: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// One RPC: its path and the labels it is shown with.
#[derive(Debug)]
pub struct Method {
    path: String,
    /// The full service name (`tessera.v1.IssuerService`).
    pub service: String,
    /// The method name (`Refresh`).
    pub name: String,
}

impl Method {
    /// `/service/method`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Every RPC this server knows: the contract's (from its descriptor set),
/// gRPC health and reflection. Built once; read without a lock.
#[derive(Debug)]
pub struct Methods(Vec<Method>);

impl Methods {
    /// The RPCs of `contract` (an encoded `FileDescriptorSet`), health and
    /// reflection.
    pub fn new(contract: &[u8]) -> Self {
        use prost::Message as _;
        let mut paths: Vec<String> = STANDARD.iter().map(|p| (*p).to_owned()).collect();
        if let Ok(set) = prost_types::FileDescriptorSet::decode(contract) {
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        paths.push(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        paths.sort();
        paths.dedup();
        Self(
            paths
                .into_iter()
                .filter_map(|path| {
                    let (service, name) = path.strip_prefix('/')?.split_once('/')?;
                    let (service, name) = (service.to_owned(), name.to_owned());
                    Some(Method {
                        path,
                        service,
                        name,
                    })
                })
                .collect(),
        )
    }

    /// The index of `path`, when it is a known RPC.
    fn index(&self, path: &str) -> Option<usize> {
        self.0.binary_search_by(|m| m.path.as_str().cmp(path)).ok()
    }

    /// The RPC at `path`, when it is a known one.
    pub fn get(&self, path: &str) -> Option<&Method> {
        self.index(path).and_then(|i| self.0.get(i))
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The latency histograms of every (method, code).
#[derive(Debug)]
pub struct RpcLatency {
    /// `other` is the index one past the end.
    methods: Arc<Methods>,
    histograms: Vec<AtomicHistogram>,
}

impl RpcLatency {
    /// Histograms for every method of `methods`, and `other`.
    pub fn new(methods: Arc<Methods>) -> Self {
        let histograms = (0..(methods.len() + 1) * CODES.len())
            .map(|_| AtomicHistogram::default())
            .collect();
        Self {
            methods,
            histograms,
        }
    }

    /// The index of `path` (`other` when unknown), for [`Self::observe`].
    pub fn method(&self, path: &str) -> usize {
        self.methods.index(path).unwrap_or(self.methods.len())
    }

    /// The RPC at index `method`, when it is a known one.
    pub fn method_at(&self, method: usize) -> Option<&Method> {
        self.methods.0.get(method)
    }

    /// One call to `method` (an index from [`Self::method`]) answered with
    /// `code` after `took`: three relaxed atomic adds.
    pub fn observe(&self, method: usize, code: Code, took: Duration) {
        let i = method * CODES.len() + (code as usize).min(CODES.len() - 1);
        if let Some(h) = self.histograms.get(i) {
            h.observe(took);
        }
    }

    #[cfg(test)]
    pub(crate) fn observe_for_test(&self, path: &str, code: usize, took: Duration) {
        self.observe(
            self.method(path),
            Code::from_i32(i32::try_from(code).unwrap()),
            took,
        );
    }

    /// Calls recorded for `path` answered with `code` (for tests).
    pub fn count(&self, path: &str, code: Code) -> u64 {
        let i = self.method(path) * CODES.len() + code as usize;
        self.histograms.get(i).map_or(0, AtomicHistogram::count)
    }
}

impl Collector for RpcLatency {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "tessera_rpc_duration",
            "gRPC calls by service, method and status code: time from the request's arrival to the status sent (a stream: its whole life).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (i, h) in self.histograms.iter().enumerate() {
            if h.count() == 0 {
                continue;
            }
            let (service, name) = self
                .methods
                .0
                .get(i / CODES.len())
                .map_or(("other", "other"), |m| (&m.service, &m.name));
            let labels = [
                ("service", service),
                ("method", name),
                ("code", CODES[i % CODES.len()]),
            ];
            h.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_contract_and_unknown_paths_are_other() {
        let methods = Arc::new(Methods::new(tessera_proto::FILE_DESCRIPTOR_SET));
        let verify = methods
            .get("/tessera.v1.IntrospectionService/Verify")
            .unwrap();
        assert_eq!(verify.service, "tessera.v1.IntrospectionService");
        assert_eq!(verify.name, "Verify");
        assert!(methods.get("/grpc.health.v1.Health/Check").is_some());
        assert!(methods.get("/made.up/Path").is_none());
        // Every RPC of the contract is known (13 today), and the 4 standard.
        assert!(methods.len() >= 17, "{}", methods.len());
        let t = RpcLatency::new(methods.clone());
        assert_eq!(t.method("/made.up/Path"), methods.len());
    }
}
