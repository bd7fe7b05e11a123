//! The Envoy v3 Aggregated Discovery Service, state-of-the-world and delta.
//!
//! `protocol` is the xDS protocol as synchronous state machines (versions, nonces, ACK/NACK,
//! wildcard and named subscriptions, delta removals and reconnects), tested without sockets:
//! `protocol/resources.rs` what a stream serves from, `protocol/sotw.rs` and
//! `protocol/delta.rs` the two machines, given the server's pool of subscribed names and its
//! clock. `server` is the thin tonic loop around them: one task per stream selecting on
//! requests, snapshot updates and shutdown. The server is generic over a `Generator` that
//! supplies each proxy's encoded resources (`sextant-resources`), so caching and compilation
//! live outside it and this crate does not depend on the compiler. `grpc` is the service
//! itself: responses are written to HTTP/2 straight from the shared resource bytes
//! (`grpc/outgoing.rs` the encoding, `grpc/body.rs` the body, `grpc/requests.rs` request
//! reassembly). `csds` is Envoy's Client Status Discovery Service over the same connection
//! connections.

pub mod csds;
pub mod grpc;
pub mod protocol;
pub mod server;

pub use grpc::{Authenticate, Caller};
pub use protocol::ProxyResources;
pub use server::{AdsServer, Connection, Connections, Generator, View, proxy_from_node};
