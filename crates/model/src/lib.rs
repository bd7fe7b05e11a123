//! The mesh vocabulary: validated routes and traffic policies, as the compiler consumes them.
//!
//! Services, endpoints, workloads and proxies describe the registry; an immutable `Snapshot`
//! holds one version of everything together with Istio's lookup rules (short names, exportTo,
//! DestinationRule precedence). Values here have passed Istio's validation: durations are parsed, regexes compile, weights
//! and percentages are in range, oneofs are resolved into enums. Nothing here knows about
//! Kubernetes objects or protobuf; `sextant-index` builds these types from the API types.

mod gateway;
mod identity;
mod mesh;
mod mesh_config;
mod policy;
mod proxy;
mod routes;
mod security;
mod service_entry;
mod sidecar;
mod snapshot;

use std::{collections::BTreeSet, fmt};

pub use gateway::*;
pub use identity::*;
pub use mesh::*;
pub use mesh_config::*;
pub use policy::*;
pub use proxy::*;
pub use routes::*;
pub use security::*;
pub use service_entry::*;
pub use sidecar::*;
pub use snapshot::*;

/// Identifies a configuration object in messages: `VirtualService default/reviews`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// The object's kind.
    pub kind: Kind,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

/// The kinds of configuration Sextant understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `networking.istio.io` VirtualService.
    VirtualService,
    /// `networking.istio.io` DestinationRule.
    DestinationRule,
    /// core/v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// core/v1 Pod.
    Pod,
    /// core/v1 Namespace.
    Namespace,
    /// `security.istio.io` PeerAuthentication.
    PeerAuthentication,
    /// `networking.istio.io` Gateway.
    Gateway,
    /// core/v1 Secret (only credentials a Gateway can name are kept).
    Secret,
    /// `networking.istio.io` ServiceEntry.
    ServiceEntry,
    /// `networking.istio.io` WorkloadEntry.
    WorkloadEntry,
    /// `networking.istio.io` Sidecar.
    Sidecar,
    /// core/v1 Node (its topology labels give its pods' locality).
    Node,
}

impl Kind {
    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::Gateway => "Gateway",
            Kind::Secret => "Secret",
            Kind::Sidecar => "Sidecar",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Node => "Node",
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// The namespaces a configuration object is visible to (`exportTo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Visible everywhere (`*`, the default).
    Public,
    /// Visible only to the listed namespaces (`.` resolved to the object's own).
    Namespaces(BTreeSet<String>),
    /// Visible to no proxy, not even in the object's own namespace (a ServiceEntry's `~`).
    Hidden,
}

impl Visibility {
    /// Whether a proxy in `namespace` may see the object.
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Visibility::Public => true,
            Visibility::Namespaces(set) => set.contains(namespace),
            Visibility::Hidden => false,
        }
    }
}

/// A duration in milliseconds precision, as Istio accepts them.
pub type Duration = std::time::Duration;
