//! Several clusters in one index: each cluster's Services, EndpointSlices, Pods, Namespaces
//! and Nodes in its own [`Registry`], merged into one mesh the way Istio merges them.
//!
//! - Namespace sameness: Services with the same namespace and name are one service. Its
//!   definition is the config cluster's, else the first other cluster's (by id) that has one;
//!   its endpoints are every cluster's, each keeping its cluster, network and locality.
//! - A relist (`reset_in`) replaces one kind of one cluster only; `remove_cluster` forgets a
//!   cluster at once.

use std::{collections::BTreeSet, sync::Arc};

use sextant_model::{Endpoint, Kind, NetworkGateway, ObjectRef, Workload};

use super::{
    Index, Key, REMOTE_KINDS, key,
    registry::{self, Registry},
};
use crate::{
    Object,
    parse::{self, Invalid, Parsed},
};

impl Index {
    /// The config cluster's id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Ids of the clusters the index holds objects of (the config cluster's always).
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        self.clusters.keys().map(String::as_str)
    }

    /// Errors of a cluster's objects that were skipped (for a remote cluster; the config
    /// cluster's are in `invalid`).
    pub fn cluster_errors(&self, cluster: &str) -> Vec<(ObjectRef, Vec<String>)> {
        match self.clusters.get(cluster) {
            Some(r) if cluster != self.cluster_id => r
                .invalid
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Sets the network of a cluster's endpoints when neither their Pods nor the cluster's
    /// system namespace name one (`--cluster-network`).
    pub fn set_network(&mut self, cluster: &str, network: &str) {
        let r = self.registry(cluster);
        if r.network != network {
            r.network = network.to_owned();
            self.registry_moved(cluster);
        }
    }

    fn registry(&mut self, cluster: &str) -> &mut Registry {
        self.clusters.entry(cluster.to_owned()).or_default()
    }

    /// Every endpoint of a cluster may have moved (its network or a node's locality changed).
    fn registry_moved(&mut self, cluster: &str) {
        if let Some(r) = self.clusters.get(cluster) {
            self.dirty_endpoints
                .extend(r.services_with_endpoints().cloned());
        }
    }

    /// Records an object's errors: the config cluster's as `apply` does, another cluster's in
    /// its registry.
    fn record_in<T>(
        &mut self,
        cluster: &str,
        result: Result<Parsed<T>, Invalid>,
        id: ObjectRef,
    ) -> Option<T> {
        if cluster == self.cluster_id {
            return self.record(result, id);
        }
        let invalid = &mut self.registry(cluster).invalid;
        match result {
            Ok(parsed) => {
                invalid.remove(&id);
                Some(parsed.value)
            }
            Err(e) => {
                invalid.insert(id, e.errors.iter().map(ToString::to_string).collect());
                None
            }
        }
    }

    /// Adds or replaces an object of `cluster`. A remote cluster's objects of kinds other than
    /// [`REMOTE_KINDS`] are ignored.
    pub fn apply_in(&mut self, cluster: &str, object: Object) {
        if cluster == self.cluster_id && !REMOTE_KINDS.contains(&object.kind()) {
            return self.apply(object);
        }
        match object {
            Object::Service(svc) => {
                let id = parse::object_ref(Kind::Service, &svc.metadata);
                let parsed = parse::kube::service(&svc, &self.domain_suffix);
                let k = key(&id.namespace, &id.name);
                let gateways = registry::network_gateways(&svc, cluster);
                if let Some(s) = self.record_in(cluster, parsed, id) {
                    let s = Arc::new(s);
                    let r = self.registry(cluster);
                    let moved = r.gateways.get(&k).map_or(&[][..], Vec::as_slice) != gateways;
                    if gateways.is_empty() {
                        r.gateways.remove(&k);
                    } else {
                        r.gateways.insert(k.clone(), gateways);
                    }
                    let changed = r.services.get(&k) != Some(&s);
                    r.services.insert(k.clone(), s);
                    self.gateways_changed |= moved;
                    if changed {
                        self.service_changed(k);
                    }
                }
            }
            Object::EndpointSlice(es) => {
                let id = parse::object_ref(Kind::EndpointSlice, &es.metadata);
                let k = key(&id.namespace, &id.name);
                let parsed = parse::kube::slice(&es);
                if let Some(slice) = self.record_in(cluster, parsed, id) {
                    let r = self.registry(cluster);
                    if r.slices.get(&k) != Some(&slice) {
                        let old = r.remove_slice(&k);
                        let new = r.insert_slice(k, slice);
                        self.dirty_endpoints.extend(old);
                        self.dirty_endpoints.insert(new);
                    }
                }
            }
            Object::Pod(pod) => {
                let id = parse::object_ref(Kind::Pod, &pod.metadata);
                let k = key(&id.namespace, &id.name);
                let parsed = parse::kube::workload(&pod);
                if let Some(w) = self.record_in(cluster, parsed, id) {
                    let w = Arc::new(w);
                    let r = self.registry(cluster);
                    if r.pods.get(&k) != Some(&w) {
                        r.pods.insert(k.clone(), w);
                        self.pod_changed(cluster, k);
                    }
                }
            }
            Object::Namespace(ns) => {
                let Some(name) = ns.metadata.name.clone() else {
                    return;
                };
                let network = ns
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(registry::NETWORK_LABEL))
                    .cloned();
                let system = name == self.root_namespace();
                let r = self.registry(cluster);
                if r.namespaces.insert(name, network.clone()) != Some(network) && system {
                    self.registry_moved(cluster);
                }
            }
            Object::Node(node) => {
                let Some(name) = node.metadata.name.clone() else {
                    return;
                };
                let locality = registry::node_locality(&node);
                if self.registry(cluster).nodes.insert(name, locality.clone()) != Some(locality) {
                    self.registry_moved(cluster);
                }
            }
            _ => {}
        }
    }

    /// Removes an object of `cluster`.
    pub fn delete_in(&mut self, cluster: &str, kind: Kind, namespace: &str, name: &str) {
        if cluster == self.cluster_id && !REMOTE_KINDS.contains(&kind) {
            return self.delete(kind, namespace, name);
        }
        let k = key(namespace, name);
        let id = ObjectRef {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        if cluster == self.cluster_id {
            if self.invalid.remove(&id).is_some() | self.warnings.remove(&id).is_some() {
                self.status_changed = true;
            }
        } else if let Some(r) = self.clusters.get_mut(cluster) {
            r.invalid.remove(&id);
        }
        let system = name == self.root_namespace();
        let Some(r) = self.clusters.get_mut(cluster) else {
            return;
        };
        match kind {
            Kind::Service => {
                self.gateways_changed |= r.gateways.remove(&k).is_some();
                if r.services.remove(&k).is_some() {
                    self.service_changed(k);
                }
            }
            Kind::EndpointSlice => {
                let old = r.remove_slice(&k);
                self.dirty_endpoints.extend(old);
            }
            Kind::Pod if r.pods.remove(&k).is_some() => self.pod_changed(cluster, k),
            Kind::Namespace if r.namespaces.remove(name).is_some() && system => {
                self.registry_moved(cluster);
            }
            Kind::Node if r.nodes.remove(name).is_some() => self.registry_moved(cluster),
            _ => {}
        }
    }

    /// Replaces every object of one kind of `cluster` (that cluster's relist).
    pub fn reset_in(&mut self, cluster: &str, kind: Kind, objects: Vec<Object>) {
        if cluster == self.cluster_id && !REMOTE_KINDS.contains(&kind) {
            return self.reset(kind, objects);
        }
        if cluster != self.cluster_id && !REMOTE_KINDS.contains(&kind) {
            return;
        }
        let r = self.registry(cluster);
        let existing: Vec<Key> = match kind {
            Kind::Service => r.services.keys().cloned().collect(),
            Kind::EndpointSlice => r.slices.keys().cloned().collect(),
            Kind::Pod => r.pods.keys().cloned().collect(),
            Kind::Namespace => r.namespaces.keys().map(|n| key("", n)).collect(),
            Kind::Node => r.nodes.keys().map(|n| key("", n)).collect(),
            _ => Vec::new(),
        };
        // Namespaces and Nodes are keyed by name alone.
        let key_of = |id: &ObjectRef| {
            let scoped = !matches!(kind, Kind::Namespace | Kind::Node);
            key(if scoped { &id.namespace } else { "" }, &id.name)
        };
        let mut keep = BTreeSet::new();
        for object in objects.into_iter().filter(|o| o.kind() == kind) {
            keep.insert(key_of(&parse::object_ref(kind, object.metadata())));
            self.apply_in(cluster, object);
        }
        for (ns, name) in existing.into_iter().filter(|k| !keep.contains(k)) {
            self.delete_in(cluster, kind, &ns, &name);
        }
        let keeps = |id: &ObjectRef| id.kind != kind || keep.contains(&key_of(id));
        if cluster == self.cluster_id {
            self.invalid.retain(|id, _| keeps(id));
        } else if let Some(r) = self.clusters.get_mut(cluster) {
            r.invalid.retain(|id, _| keeps(id));
        }
    }

    /// Forgets every object of a remote cluster (its registration was removed, or it stayed
    /// unreachable past its grace period). The config cluster cannot be removed.
    pub fn remove_cluster(&mut self, cluster: &str) {
        if cluster == self.cluster_id {
            return;
        }
        let Some(r) = self.clusters.remove(cluster) else {
            return;
        };
        self.gateways_changed |= !r.gateways.is_empty();
        self.dirty_endpoints
            .extend(r.services_with_endpoints().cloned());
        for k in r.services.into_keys() {
            self.service_changed(k);
        }
        for k in r.pods.into_keys() {
            self.changes.workloads.insert(k);
        }
    }

    /// Re-merges service `k` after one cluster's definition of it changed.
    fn service_changed(&mut self, k: Key) {
        let local = self.clusters[&self.cluster_id].services.get(&k);
        let merged = local
            .or_else(|| self.clusters.values().find_map(|r| r.services.get(&k)))
            .cloned();
        if self.services.get(&k) != merged.as_ref() {
            match merged {
                Some(s) => self.services.insert(k.clone(), s),
                None => self.services.remove(&k),
            };
            self.entries.dirty |= self.entries.watch_services();
            self.changes.services.insert(self.hostname(&k.0, &k.1));
        }
        self.dirty_endpoints.insert(k);
    }

    fn pod_changed(&mut self, cluster: &str, pod: Key) {
        if cluster == self.cluster_id {
            self.entries.dirty |= self.entries.watch_pods(&pod.0);
        }
        if let Some(owners) = self.clusters[cluster].pod_owners.get(&pod) {
            self.dirty_endpoints.extend(owners.keys().cloned());
        }
        self.changes.workloads.insert(pod);
    }

    /// The endpoints of service `k` in every cluster, the config cluster's first.
    pub(super) fn build_endpoints(&self, k: &Key) -> Vec<Endpoint> {
        let mut out = Vec::new();
        let system = self.root_namespace();
        if let Some(local) = self.clusters.get(&self.cluster_id) {
            local.endpoints(k, &self.cluster_id, system, &mut out);
        }
        for (id, r) in self
            .clusters
            .iter()
            .filter(|(id, _)| **id != self.cluster_id)
        {
            r.endpoints(k, id, system, &mut out);
        }
        out.sort_by(|a, b| {
            a.address
                .cmp(&b.address)
                .then_with(|| a.cluster_id.cmp(&b.cluster_id))
        });
        out.dedup_by(|a, b| {
            a.address == b.address && a.ports == b.ports && a.cluster_id == b.cluster_id
        });
        out
    }

    /// Each remote cluster's Pods.
    pub(super) fn remote_workloads(
        &self,
    ) -> std::collections::BTreeMap<String, std::collections::BTreeMap<Key, Arc<Workload>>> {
        self.clusters
            .iter()
            .filter(|(id, _)| **id != self.cluster_id)
            .map(|(id, r)| (id.clone(), r.pods.clone()))
            .collect()
    }

    /// Every cluster's east-west gateways, sorted.
    pub(super) fn network_gateways(&self) -> Vec<NetworkGateway> {
        let mut all: Vec<NetworkGateway> = self
            .clusters
            .values()
            .flat_map(|r| r.gateways.values().flatten().cloned())
            .collect();
        all.sort();
        all.dedup();
        // At most so many per network (sorted by network first).
        let mut kept = 0;
        let mut network = String::new();
        all.retain(|g| {
            if g.network != network {
                network.clone_from(&g.network);
                kept = 0;
            }
            kept += 1;
            kept <= registry::MAX_GATEWAYS_PER_NETWORK
        });
        all
    }

    /// Whether proxies' networks matter: a gateway leads into some network, or clusters are
    /// on different networks.
    pub(super) fn multi_network(&self) -> bool {
        let system = self.root_namespace();
        let mut networks = self.clusters.values().map(|r| r.network(system));
        let first = networks.next();
        self.clusters.values().any(|r| !r.gateways.is_empty()) || networks.any(|n| Some(n) != first)
    }
}
