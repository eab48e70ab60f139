//! The edge every request crosses before a service sees it, and the
//! sockets every Tessera connection uses. One reason to change: how calls
//! are admitted.
//!
//! - [`net`]: the accept loop (connection cap, handshake timeout, accept
//!   backoff), socket options, the HTTP/2 limits and the server-side
//!   deadline; the client endpoint and the channel to another service.
//! - [`tls`]: server TLS and mTLS from files, reloadable; client TLS.
//! - [`observe`]: the one layer that observes each call (metrics, span,
//!   status log, the audit record of the edge's refusals).
//! - [`deadline`]: each call's deadline, its handler run to its end in a
//!   task of its own (a cancelled call never cuts a store write in half).
//! - [`gate`]: load shedding and caller authentication, which answer a
//!   refused call themselves with a [`refusal::Refusal`] for the observer.
//!
//! The stack's order is written where it is built (the `tessera` crate's
//! `app.rs`) and explained in `docs/architecture.md`.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod deadline;
pub mod gate;
mod guard;
pub mod net;
pub mod observe;
pub mod refusal;
mod registry;
mod streams;
pub mod tls;
