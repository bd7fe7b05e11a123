//! Validated ServiceEntries and WorkloadEntries. The index turns them into [`Service`]s and
//! [`Endpoint`]s (one service per host), so that routes and policies apply to them as to
//! Kubernetes Services; these types keep what that conversion needs.
//!
//! [`Service`]: crate::Service
//! [`Endpoint`]: crate::Endpoint

use std::{collections::BTreeMap, net::IpAddr};

use crate::{Locality, ObjectRef, ServicePort, Visibility};

/// A ServiceEntry that passed validation.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceEntry {
    /// The object.
    pub id: ObjectRef,
    /// Host names, each a service of its own (`*.example.com` allowed).
    pub hosts: Vec<String>,
    /// Virtual IPs: plain addresses and CIDR blocks as written (`/32` and `/128` count as plain
    /// addresses).
    pub addresses: Vec<String>,
    /// Ports in declaration order.
    pub ports: Vec<ServicePort>,
    /// Inside or outside the mesh.
    pub location: Location,
    /// How endpoints are found.
    pub resolution: EntryResolution,
    /// Inline endpoints.
    pub endpoints: Vec<WorkloadEntry>,
    /// Selects Pods and WorkloadEntries of the entry's namespace (`None`: inline endpoints).
    pub workload_selector: Option<BTreeMap<String, String>>,
    /// Namespaces the services are visible to.
    pub export_to: Visibility,
    /// SANs the servers' certificates may carry (ISTIO_MUTUAL checks).
    pub subject_alt_names: Vec<String>,
    /// An address is allocated from `240.240.0.0/16` for each host (resolution not NONE, no
    /// `addresses`, label `networking.istio.io/enable-autoallocate-ip` not `false`).
    pub auto_allocate: bool,
    /// Creation time, for ordering (the oldest entry of a host wins).
    pub creation_timestamp: Option<String>,
}

/// Whether a ServiceEntry's service is part of the mesh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Location {
    /// Outside the mesh: no auto mutual TLS, clusters marked `istio.external`.
    #[default]
    MeshExternal,
    /// Part of the mesh: auto mutual TLS by the endpoints' `tlsMode`.
    MeshInternal,
}

/// A ServiceEntry's resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryResolution {
    /// Connect to the original destination.
    None,
    /// Endpoints are IP addresses, served over EDS.
    Static,
    /// Envoy resolves the endpoints' names and balances over every address.
    Dns,
    /// Envoy resolves one name and connects to the first address.
    DnsRoundRobin,
    /// Envoy's dynamic forward proxy (not supported by Sextant: no services).
    DynamicDns,
}

/// A WorkloadEntry, standalone or inline in a ServiceEntry.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadEntry {
    /// Name: the object's, or `<serviceEntry>-<index>` inline.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Where the workload is reached.
    pub address: EntryAddress,
    /// Endpoint ports by service port name.
    pub ports: BTreeMap<String, u16>,
    /// `spec.labels` merged with the object's labels (which win).
    pub labels: BTreeMap<String, String>,
    /// Network (else the default network).
    pub network: Option<String>,
    /// Locality.
    pub locality: Option<Locality>,
    /// Load-balancing weight (0: unset).
    pub weight: u32,
    /// Service account: the workload's identity.
    pub service_account: Option<String>,
    /// Creation time, for ordering.
    pub creation_timestamp: Option<String>,
}

impl WorkloadEntry {
    /// Whether the workload runs an Istio sidecar: label `security.istio.io/tlsMode: istio`,
    /// or a service account without that label.
    pub fn istio_mtls(&self) -> bool {
        match self.labels.get("security.istio.io/tlsMode") {
            Some(mode) => mode == "istio",
            None => self.service_account.is_some(),
        }
    }

    /// Whether the labels include every selector label.
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// The address of a WorkloadEntry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryAddress {
    /// An IP address.
    Ip(IpAddr),
    /// A DNS name (DNS ServiceEntries only).
    Dns(String),
    /// A Unix domain socket, `unix:///path` or `unix://@abstract` (not supported by Sextant).
    Unix(String),
    /// No address (a workload on another network).
    Unset,
}
