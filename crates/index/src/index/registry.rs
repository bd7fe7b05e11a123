//! One cluster's share of the index: its Services, EndpointSlices, Pods, Namespaces and Nodes,
//! and the endpoints they make. The config cluster has one; so has every remote cluster,
//! which contributes only these kinds.
//!
//! An endpoint carries its cluster, its network and its locality:
//! - network: the Pod's `topology.istio.io/network` label, else that label on the cluster's
//!   system (root) namespace, else the cluster's `--cluster-network`;
//! - locality: the Pod's `istio-locality` (or topology) labels, else its Node's
//!   `topology.kubernetes.io/region` / `zone` and `topology.istio.io/subzone` labels, else the
//!   EndpointSlice's zone.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use k8s_openapi::api::core::v1::Service as KubeService;
use sextant_model::{Endpoint, Locality, NetworkGateway, Service, Workload};

use super::{Key, key};
use crate::parse::kube::Slice;

/// The label naming a network, on a Pod, a namespace or an east-west gateway's Service.
pub const NETWORK_LABEL: &str = "topology.istio.io/network";

/// Addresses taken from one gateway Service (its load balancer ingress IPs and external IPs,
/// sorted); the rest are ignored.
pub const MAX_GATEWAY_ADDRESSES: usize = 8;

/// Gateways kept per network, of every cluster together (sorted by cluster, address, port):
/// each endpoint of the network becomes one load-balancing entry per gateway.
pub const MAX_GATEWAYS_PER_NETWORK: usize = 32;

/// What one cluster holds.
#[derive(Debug, Default)]
pub(super) struct Registry {
    pub(super) services: BTreeMap<Key, Arc<Service>>,
    pub(super) slices: BTreeMap<Key, Slice>,
    /// Slices of each service, so endpoints rebuild without scanning every slice.
    pub(super) service_slices: BTreeMap<Key, BTreeSet<Key>>,
    /// Services whose slices reference each pod (with a count per service).
    pub(super) pod_owners: BTreeMap<Key, BTreeMap<Key, usize>>,
    pub(super) pods: BTreeMap<Key, Arc<Workload>>,
    /// Namespaces, with their `topology.istio.io/network` label.
    pub(super) namespaces: BTreeMap<String, Option<String>>,
    /// Nodes' localities (from their topology labels).
    pub(super) nodes: BTreeMap<String, Locality>,
    /// East-west gateways declared by this cluster's Services.
    pub(super) gateways: BTreeMap<Key, Vec<NetworkGateway>>,
    /// The network a flag gives the cluster.
    pub(super) network: String,
    /// Objects skipped as invalid, with their errors (a remote cluster's are not the config
    /// cluster's `invalid`).
    pub(super) invalid: BTreeMap<sextant_model::ObjectRef, Vec<String>>,
}

impl Registry {
    /// The cluster's network: its system namespace's label, else the flag's.
    pub(super) fn network(&self, system_namespace: &str) -> &str {
        self.namespaces
            .get(system_namespace)
            .and_then(Option::as_deref)
            .unwrap_or(&self.network)
    }

    /// Keys of every service with slices (whose endpoints a network or node change may move).
    pub(super) fn services_with_endpoints(&self) -> impl Iterator<Item = &Key> {
        self.service_slices.keys()
    }

    pub(super) fn insert_slice(&mut self, k: Key, slice: Slice) -> Key {
        let service = key(&slice.namespace, &slice.service);
        for pod in slice.endpoints.iter().filter_map(|e| e.pod.clone()) {
            *self
                .pod_owners
                .entry(pod)
                .or_default()
                .entry(service.clone())
                .or_default() += 1;
        }
        self.service_slices
            .entry(service.clone())
            .or_default()
            .insert(k.clone());
        self.slices.insert(k, slice);
        service
    }

    /// Removes a slice; the service it belonged to, if it existed.
    pub(super) fn remove_slice(&mut self, k: &Key) -> Option<Key> {
        let old = self.slices.remove(k)?;
        let service = key(&old.namespace, &old.service);
        for pod in old.endpoints.iter().filter_map(|e| e.pod.as_ref()) {
            if let Some(owners) = self.pod_owners.get_mut(pod) {
                if let Some(n) = owners.get_mut(&service) {
                    *n -= 1;
                    if *n == 0 {
                        owners.remove(&service);
                    }
                }
                if owners.is_empty() {
                    self.pod_owners.remove(pod);
                }
            }
        }
        if let Some(set) = self.service_slices.get_mut(&service) {
            set.remove(k);
            if set.is_empty() {
                self.service_slices.remove(&service);
            }
        }
        Some(service)
    }

    /// Appends the endpoints of service `k` in this cluster to `out`.
    pub(super) fn endpoints(
        &self,
        k: &Key,
        cluster_id: &str,
        system_namespace: &str,
        out: &mut Vec<Endpoint>,
    ) {
        let network = self.network(system_namespace);
        let slices = self
            .service_slices
            .get(k)
            .into_iter()
            .flatten()
            .filter_map(|s| self.slices.get(s));
        for slice in slices {
            for ep in &slice.endpoints {
                let pod = ep.pod.as_ref().and_then(|p| self.pods.get(p));
                let labels = pod.map(|p| p.labels.clone()).unwrap_or_default();
                let node = pod.and_then(|p| p.node.as_ref()).or(ep.node.as_ref());
                let mut locality = pod
                    .and_then(|p| p.locality.clone())
                    .or_else(|| node.and_then(|n| self.nodes.get(n)).cloned())
                    .unwrap_or_default();
                if locality.zone.is_empty()
                    && let Some(zone) = &ep.zone
                {
                    locality.zone = zone.clone();
                }
                out.push(Endpoint {
                    address: ep.address,
                    hostname: None,
                    weight: 1,
                    ports: slice.ports.clone(),
                    istio_mtls: labels.get("security.istio.io/tlsMode").map(String::as_str)
                        == Some("istio"),
                    network: labels
                        .get(NETWORK_LABEL)
                        .map_or(network, String::as_str)
                        .to_owned(),
                    labels,
                    service_account: pod.and_then(|p| p.service_account.clone()),
                    locality,
                    cluster_id: cluster_id.to_owned(),
                    health: ep.health,
                    workload: ep.pod.as_ref().map(|(_, n)| n.clone()),
                    namespace: k.0.clone(),
                });
            }
        }
    }
}

/// A Node's locality, from its topology labels.
pub(super) fn node_locality(node: &k8s_openapi::api::core::v1::Node) -> Locality {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    Locality {
        region: get("topology.kubernetes.io/region"),
        zone: get("topology.kubernetes.io/zone"),
        subzone: get("topology.istio.io/subzone"),
    }
}

/// The east-west gateways a Service declares (Istio's `extractGatewaysFromService`): a Service
/// labelled `topology.istio.io/network` leads into that network at each of its load balancer
/// ingress IPs and external IPs, on port 15443 unless its `networking.istio.io/gatewayPort`
/// label says otherwise.
pub(super) fn network_gateways(svc: &KubeService, cluster_id: &str) -> Vec<NetworkGateway> {
    let labels = svc.metadata.labels.clone().unwrap_or_default();
    let Some(network) = labels.get(NETWORK_LABEL).filter(|n| !n.is_empty()) else {
        return Vec::new();
    };
    let port = labels
        .get("networking.istio.io/gatewayPort")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0)
        .unwrap_or(15443);
    let ingress = svc
        .status
        .iter()
        .filter_map(|s| s.load_balancer.as_ref())
        .flat_map(|lb| lb.ingress.iter().flatten())
        .filter_map(|i| i.ip.as_deref());
    let external = svc
        .spec
        .iter()
        .flat_map(|s| s.external_ips.iter().flatten())
        .map(String::as_str);
    let mut out: Vec<NetworkGateway> = ingress
        .chain(external)
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|address| NetworkGateway {
            network: network.clone(),
            cluster_id: cluster_id.to_owned(),
            address,
            port,
        })
        .collect();
    out.sort();
    out.dedup();
    out.truncate(MAX_GATEWAY_ADDRESSES);
    out
}
