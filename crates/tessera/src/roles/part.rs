//! One role's share of the server: what it serves, what runs beside it, and
//! what it must have before it is ready. Parts join by concatenation, so the
//! all-in-one topology is the issuer's part and the verifier's on one port.

use crate::readiness::ReadinessCheck;
use std::convert::Infallible;
use tokio::task::JoinHandle;
use tonic::codegen::Service;
use tonic::codegen::http::Request;
use tonic::server::NamedService;
use tonic::service::Routes;

/// What one role (or the base every role shares) adds to the server.
pub(crate) struct Part {
    /// Its gRPC services. Without a fallback, so that parts merge; the
    /// application sets the one fallback of the port.
    pub grpc: Routes,
    /// HTTP routes served beside gRPC on the same port.
    pub http: axum::Router,
    /// Its gRPC service names, for health ("" is the whole server).
    pub services: Vec<&'static str>,
    /// Its background tasks, awaited at shutdown.
    pub tasks: Vec<JoinHandle<()>>,
    /// What health checks before it reports this part SERVING.
    pub readiness: Vec<Box<dyn ReadinessCheck>>,
}

impl Default for Part {
    fn default() -> Self {
        Self {
            grpc: Routes::from(axum::Router::new()),
            http: axum::Router::new(),
            services: Vec::new(),
            tasks: Vec::new(),
            readiness: Vec::new(),
        }
    }
}

impl Part {
    /// Adds a gRPC service, and its name to health.
    pub fn serve<S>(mut self, svc: S) -> Self
    where
        S: Service<Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.grpc = self.grpc.add_service(svc);
        self.services.push(S::NAME);
        self
    }

    /// Both parts on one port: `self`'s services first (health lists them
    /// in this order).
    pub fn join(mut self, other: Self) -> Self {
        let grpc = self.grpc.into_axum_router();
        self.grpc = Routes::from(grpc.merge(other.grpc.into_axum_router()));
        self.http = self.http.merge(other.http);
        self.services.extend(other.services);
        self.tasks.extend(other.tasks);
        self.readiness.extend(other.readiness);
        self
    }
}
