//! Rust types for Istio's `networking.istio.io` VirtualService, DestinationRule, Gateway,
//! ServiceEntry, WorkloadEntry and Sidecar and its `security.istio.io` PeerAuthentication, and the
//! CustomResourceDefinitions generated from them.
//!
//! The types mirror Istio's protobuf API field for field, with the JSON names, integer widths and
//! oneof groups of `istio.networking.v1alpha3`, so that every manifest written for Istio
//! deserializes and serializes back to the same JSON. They carry no semantics: validation and
//! meaning live in `sextant-index` and `sextant-model`. Nothing here talks to a cluster.

pub mod crd;
mod destination;
mod destination_rule;
mod gateway;
mod peer_authentication;
mod schema;
mod selector;
mod service_entry;
mod sidecar;
mod status;
mod values;
mod virtual_service;
mod workload_entry;

pub use destination::*;
pub use destination_rule::*;
pub use gateway::*;
pub use peer_authentication::*;
pub use selector::*;
pub use service_entry::*;
pub use sidecar::*;
pub use status::*;
pub use values::*;
pub use virtual_service::*;
pub use workload_entry::*;
