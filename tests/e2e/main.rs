//! End-to-end tests: the real server over real gRPC, against the embedded
//! SQLite store and against real Postgres + Redis (a fresh database and key
//! prefix per test). Postgres and Redis must be reachable: `scripts/test.sh`
//! starts (or installs) them; a missing service fails the test loudly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod pki;

mod adversarial;
mod audit;
mod audit_sink;
mod binary;
mod contract;
mod distributed;
mod edge;
mod faults;
mod flows;
mod gateway_edges;
mod gateway_procs;
mod gateways;
mod input;
mod key_safety;
mod keys;
mod lifecycle;
mod matrix;
mod metrics;
mod operator_cli;
mod operators;
mod otel;
mod outages;
mod probes;
mod purpose;
mod reach;
mod roles;
mod session_claims;
mod sigcache;
mod startup;
mod starvation;
mod store_tls;
mod streams;
mod tokens;
