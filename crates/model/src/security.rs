//! Validated PeerAuthentication policies, and Istio's precedence over them: which mutual TLS
//! mode a workload's sidecar accepts on each port.

use std::collections::BTreeMap;

use crate::{ObjectRef, Snapshot};

/// A validated PeerAuthentication.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerAuthentication {
    /// Which object this came from.
    pub id: ObjectRef,
    /// Creation time (RFC 3339): the oldest policy of a level wins.
    pub creation_timestamp: Option<String>,
    /// Only workloads with these labels (`None`: the whole namespace, or the mesh in the root
    /// namespace).
    pub selector: Option<BTreeMap<String, String>>,
    /// The mode for every port not in `port_modes`.
    pub mode: MtlsMode,
    /// Modes by workload port (`portLevelMtls`).
    pub port_modes: BTreeMap<u16, MtlsMode>,
}

/// A PeerAuthentication mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MtlsMode {
    /// Inherit from the enclosing level.
    #[default]
    Unset,
    /// Plaintext only.
    Disable,
    /// Mutual TLS and plaintext on the same port.
    Permissive,
    /// Mutual TLS only.
    Strict,
}

impl MtlsMode {
    /// `self`, or `outer` when `self` is `Unset`.
    pub fn or(self, outer: MtlsMode) -> MtlsMode {
        if self == MtlsMode::Unset { outer } else { self }
    }

    /// Istio's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Unset => "UNSET",
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }
}

/// The modes one workload accepts: one for the workload, and overrides by port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadMtls {
    /// The mode of ports without an override (never `Unset`).
    pub mode: MtlsMode,
    /// Port-level overrides (never `Unset`).
    pub ports: BTreeMap<u16, MtlsMode>,
}

impl WorkloadMtls {
    /// The mode on workload port `port`.
    pub fn port(&self, port: u16) -> MtlsMode {
        self.ports.get(&port).copied().unwrap_or(self.mode)
    }
}

impl Snapshot {
    /// Istio's precedence (`ComposePeerAuthentication`): the mesh policy (root namespace, no
    /// selector), then the namespace's, then the workload's (a selector matching `labels`; not
    /// in the root namespace),
    /// each overriding the one before unless `Unset`; at each level the oldest policy counts.
    /// Port-level modes of the workload policy apply last, `Unset` ones inheriting the
    /// workload's mode. With nothing set, PERMISSIVE.
    pub fn workload_mtls(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> WorkloadMtls {
        let level = |ns: &str, selected: bool| {
            self.peer_authentications
                .iter()
                .filter(|p| p.id.namespace == ns)
                .find(|p| match &p.selector {
                    None => !selected,
                    Some(sel) => selected && sel.iter().all(|(k, v)| labels.get(k) == Some(v)),
                })
        };
        let mesh = level(&self.root_namespace, false);
        let namespaced = (namespace != self.root_namespace)
            .then(|| level(namespace, false))
            .flatten();
        // Policies with a selector in the root namespace are ignored, even for its own workloads.
        let workload = (namespace != self.root_namespace)
            .then(|| level(namespace, true))
            .flatten();
        let mut mode = MtlsMode::Permissive;
        for p in [mesh, namespaced, workload].into_iter().flatten() {
            mode = p.mode.or(mode);
        }
        let ports = workload
            .map(|p| {
                p.port_modes
                    .iter()
                    .map(|(port, m)| (*port, m.or(mode)))
                    .collect()
            })
            .unwrap_or_default();
        WorkloadMtls { mode, ports }
    }

    /// Istio's `BestEffortInferServiceMTLSMode`, the client side's hint: the mode of the mesh
    /// and namespace policies of the service's namespace, ignoring workload and port-level
    /// ones (a service's workloads are not known to one policy).
    pub fn service_mtls(&self, namespace: &str) -> MtlsMode {
        self.workload_mtls(namespace, &BTreeMap::new()).mode
    }
}
