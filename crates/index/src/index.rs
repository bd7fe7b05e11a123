//! The index: Kubernetes objects in, immutable snapshots and changed keys out.
//!
//! Every source (directory, kube watches) calls `apply`, `delete` and `reset` per kind; nothing
//! here awaits. An invalid object is recorded with its errors and left out; it never removes
//! other objects' configuration.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use sextant_model::{
    Credential, DestinationRule, Endpoint, Gateway, Kind, Locality, MeshConfig, ObjectRef,
    PeerAuthentication, Sidecar, Snapshot, VirtualService, Workload,
};

use crate::{
    delegate,
    parse::{self, Invalid, Parsed, kube::Slice},
};

mod entries;
mod mesh_config;
mod object;

pub use object::{Object, ObjectError};

/// What changed since the previous snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Host names of services whose definition changed (added, removed, edited).
    pub services: BTreeSet<String>,
    /// Host names of services whose endpoints changed.
    pub endpoints: BTreeSet<String>,
    /// VirtualServices, DestinationRules, Gateways, Sidecars and PeerAuthentications that
    /// changed.
    pub configs: BTreeSet<ObjectRef>,
    /// Workloads (Pods) that changed.
    pub workloads: BTreeSet<(String, String)>,
    /// Credentials (Secrets a Gateway can name) that changed, by `(namespace, name)`: they
    /// change only what SDS serves.
    pub credentials: BTreeSet<(String, String)>,
    /// The mesh config changed: like a change of every configuration object.
    pub mesh_config: bool,
    /// The hosts of changed VirtualServices, before and after, as `(namespace, resolved
    /// host)`; `("", "")` for a delegate, whose roots are not known here.
    pub virtual_service_hosts: BTreeSet<(String, String)>,
}

impl Changes {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.endpoints.is_empty()
            && self.configs.is_empty()
            && self.workloads.is_empty()
            && self.credentials.is_empty()
            && !self.mesh_config
    }

    /// Only endpoints changed: an EDS-only push.
    pub fn endpoints_only(&self) -> bool {
        self.services.is_empty()
            && self.configs.is_empty()
            && self.workloads.is_empty()
            && self.credentials.is_empty()
            && !self.mesh_config
    }

    /// Only credentials changed: an SDS-only push.
    pub fn credentials_only(&self) -> bool {
        self.services.is_empty()
            && self.endpoints.is_empty()
            && self.configs.is_empty()
            && self.workloads.is_empty()
            && !self.mesh_config
    }

    /// Adds another set of changes.
    pub fn merge(&mut self, other: Changes) {
        self.services.extend(other.services);
        self.endpoints.extend(other.endpoints);
        self.configs.extend(other.configs);
        self.workloads.extend(other.workloads);
        self.credentials.extend(other.credentials);
        self.mesh_config |= other.mesh_config;
    }
}

type Key = (String, String);

/// The mutable index behind the published snapshots.
#[derive(Debug)]
pub struct Index {
    domain_suffix: String,
    trust_domain: String,
    cluster_id: String,
    version: u64,
    services: BTreeMap<Key, Arc<sextant_model::Service>>,
    slices: BTreeMap<Key, Slice>,
    /// Slices of each service, so endpoints rebuild without scanning every slice.
    service_slices: BTreeMap<Key, BTreeSet<Key>>,
    /// Services whose slices reference each pod (with a count per service).
    pod_owners: BTreeMap<Key, BTreeMap<Key, usize>>,
    pods: BTreeMap<Key, Arc<Workload>>,
    namespaces: BTreeSet<String>,
    virtual_services: BTreeMap<Key, Arc<VirtualService>>,
    destination_rules: BTreeMap<Key, Arc<DestinationRule>>,
    peer_authentications: BTreeMap<Key, Arc<PeerAuthentication>>,
    gateways: BTreeMap<Key, Arc<Gateway>>,
    credentials: BTreeMap<Key, Arc<Credential>>,
    sidecars: BTreeMap<Key, Arc<Sidecar>>,
    mesh_config: Arc<MeshConfig>,
    entries: entries::Entries,
    /// `--root-namespace` when given: it wins over the mesh config's.
    root_namespace: Option<String>,
    invalid: BTreeMap<ObjectRef, Vec<String>>,
    warnings: BTreeMap<ObjectRef, Vec<String>>,
    endpoints: BTreeMap<String, Arc<Vec<Endpoint>>>,
    dirty_endpoints: BTreeSet<Key>,
    changes: Changes,
    /// Errors or warnings of some object changed since the last publish.
    status_changed: bool,
    published: Option<Arc<Snapshot>>,
}

impl Default for Index {
    fn default() -> Self {
        Index::new("cluster.local", "Kubernetes")
    }
}

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_owned(), name.to_owned())
}

impl Index {
    /// An empty index for a cluster.
    pub fn new(domain_suffix: &str, cluster_id: &str) -> Index {
        Index {
            domain_suffix: domain_suffix.to_owned(),
            trust_domain: "cluster.local".to_owned(),
            cluster_id: cluster_id.to_owned(),
            version: 0,
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            service_slices: BTreeMap::new(),
            pod_owners: BTreeMap::new(),
            pods: BTreeMap::new(),
            namespaces: BTreeSet::new(),
            virtual_services: BTreeMap::new(),
            destination_rules: BTreeMap::new(),
            peer_authentications: BTreeMap::new(),
            gateways: BTreeMap::new(),
            credentials: BTreeMap::new(),
            sidecars: BTreeMap::new(),
            mesh_config: Arc::default(),
            entries: entries::Entries::default(),
            root_namespace: None,
            invalid: BTreeMap::new(),
            warnings: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            dirty_endpoints: BTreeSet::new(),
            changes: Changes::default(),
            status_changed: false,
            published: None,
        }
    }

    fn hostname(&self, namespace: &str, name: &str) -> String {
        format!("{name}.{namespace}.svc.{}", self.domain_suffix)
    }

    fn record<T>(&mut self, result: Result<Parsed<T>, Invalid>, id: ObjectRef) -> Option<T> {
        let before = (
            self.invalid.get(&id).cloned(),
            self.warnings.get(&id).cloned(),
        );
        self.invalid.remove(&id);
        self.warnings.remove(&id);
        let value = match result {
            Ok(parsed) => {
                if !parsed.warnings.is_empty() {
                    self.warnings.insert(
                        id.clone(),
                        parsed.warnings.iter().map(ToString::to_string).collect(),
                    );
                }
                Some(parsed.value)
            }
            Err(invalid) => {
                self.invalid.insert(
                    id.clone(),
                    invalid.errors.iter().map(ToString::to_string).collect(),
                );
                None
            }
        };
        // A change in what is reported about an object is published too.
        if before
            != (
                self.invalid.get(&id).cloned(),
                self.warnings.get(&id).cloned(),
            )
        {
            self.status_changed = true;
        }
        value
    }

    /// Adds or replaces an object. An invalid object is recorded with its errors and leaves the
    /// index as it was: a new invalid object is not added, and an invalid edit keeps the last
    /// good version in use until the object is fixed or deleted.
    pub fn apply(&mut self, object: Object) {
        match object {
            Object::Service(svc) => {
                let id = parse::object_ref(Kind::Service, &svc.metadata);
                let parsed = parse::kube::service(&svc, &self.domain_suffix);
                let k = key(&id.namespace, &id.name);
                let host = self.hostname(&id.namespace, &id.name);
                if let Some(s) = self.record(parsed, id) {
                    let s = Arc::new(s);
                    if self.services.get(&k) != Some(&s) {
                        self.entries.dirty |= self.entries.watch_services();
                        self.services.insert(k.clone(), s);
                        self.changes.services.insert(host);
                        self.dirty_endpoints.insert(k);
                    }
                }
            }
            Object::EndpointSlice(es) => {
                let id = parse::object_ref(Kind::EndpointSlice, &es.metadata);
                let k = key(&id.namespace, &id.name);
                let parsed = parse::kube::slice(&es);
                if let Some(slice) = self.record(parsed, id)
                    && self.slices.get(&k) != Some(&slice)
                {
                    self.remove_slice(&k);
                    self.insert_slice(k, slice);
                }
            }
            Object::Pod(pod) => {
                let id = parse::object_ref(Kind::Pod, &pod.metadata);
                let k = key(&id.namespace, &id.name);
                let parsed = parse::kube::workload(&pod);
                if let Some(w) = self.record(parsed, id) {
                    let w = Arc::new(w);
                    if self.pods.get(&k) != Some(&w) {
                        self.entries.dirty |= self.entries.watch_pods(&k.0);
                        self.pods.insert(k.clone(), w);
                        self.pod_changed(k);
                    }
                }
            }
            Object::Namespace(ns) => {
                if let Some(name) = ns.metadata.name.clone() {
                    self.namespaces.insert(name);
                }
            }
            Object::VirtualService(vs) => {
                let id = parse::object_ref(Kind::VirtualService, &vs.metadata);
                let k = key(&id.namespace, &id.name);
                let parsed = parse::virtual_service(&vs);
                if let Some(v) = self.record(parsed, id.clone())
                    && self.virtual_services.get(&k).is_none_or(|old| **old != v)
                {
                    self.note_hosts(Some(&v));
                    let old = self.virtual_services.insert(k, Arc::new(v));
                    self.note_hosts(old.as_deref());
                    self.changes.configs.insert(id);
                }
            }
            Object::DestinationRule(dr) => {
                let id = parse::object_ref(Kind::DestinationRule, &dr.metadata);
                let k = key(&id.namespace, &id.name);
                let parsed = parse::destination_rule(&dr);
                if let Some(v) = self.record(parsed, id.clone())
                    && self.destination_rules.get(&k).is_none_or(|old| **old != v)
                {
                    self.destination_rules.insert(k, Arc::new(v));
                    self.changes.configs.insert(id);
                }
            }
            Object::PeerAuthentication(pa) => {
                let id = parse::object_ref(Kind::PeerAuthentication, &pa.metadata);
                let k = key(&id.namespace, &id.name);
                let parsed = parse::peer_authentication(&pa);
                if let Some(v) = self.record(parsed, id.clone())
                    && self
                        .peer_authentications
                        .get(&k)
                        .is_none_or(|old| **old != v)
                {
                    self.peer_authentications.insert(k, Arc::new(v));
                    self.changes.configs.insert(id);
                }
            }
            Object::Gateway(gw) => {
                let id = parse::object_ref(Kind::Gateway, &gw.metadata);
                let k = key(&id.namespace, &id.name);
                let parsed = parse::gateway(&gw);
                if let Some(v) = self.record(parsed, id.clone())
                    && self.gateways.get(&k).is_none_or(|old| **old != v)
                {
                    self.gateways.insert(k, Arc::new(v));
                    self.changes.configs.insert(id);
                }
            }
            Object::ServiceEntry(se) => {
                let id = parse::object_ref(Kind::ServiceEntry, &se.metadata);
                let k = key(&id.namespace, &id.name);
                let parsed = parse::service_entry(&se);
                if let Some(v) = self.record(parsed, id)
                    && self
                        .entries
                        .service_entries
                        .get(&k)
                        .is_none_or(|old| **old != v)
                {
                    self.entries.service_entries.insert(k, Arc::new(v));
                    self.entries.dirty = true;
                }
            }
            Object::WorkloadEntry(we) => {
                let id = parse::object_ref(Kind::WorkloadEntry, &we.metadata);
                let k = key(&id.namespace, &id.name);
                let parsed = parse::workload_entry(&we);
                if let Some(v) = self.record(parsed, id)
                    && self
                        .entries
                        .workload_entries
                        .get(&k)
                        .is_none_or(|old| **old != v)
                {
                    self.entries.workload_entries.insert(k, Arc::new(v));
                    self.entries.dirty = true;
                }
            }
            Object::Sidecar(sc) => self.apply_sidecar(&sc),
            Object::Secret(secret) => {
                let id = parse::object_ref(Kind::Secret, &secret.metadata);
                let k = key(&id.namespace, &id.name);
                let parsed = parse::secret(&secret);
                // Credentials change only what SDS serves: `changes.credentials`, not configs.
                match self.record(parsed, id) {
                    Some(Some(c)) if self.credentials.get(&k).is_none_or(|old| **old != c) => {
                        self.credentials.insert(k.clone(), Arc::new(c));
                        self.changes.credentials.insert(k);
                    }
                    // No longer a credential (keys or type changed): forgotten.
                    Some(None) if self.credentials.remove(&k).is_some() => {
                        self.changes.credentials.insert(k);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Removes an object.
    pub fn delete(&mut self, kind: Kind, namespace: &str, name: &str) {
        let k = key(namespace, name);
        let id = ObjectRef {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        if self.invalid.remove(&id).is_some() | self.warnings.remove(&id).is_some() {
            self.status_changed = true;
        }
        match kind {
            Kind::Service => {
                let host = self.hostname(namespace, name);
                self.remove_service(k, host);
            }
            Kind::ServiceEntry => {
                if self.entries.service_entries.remove(&k).is_some() {
                    self.entries.dirty = true;
                }
            }
            Kind::WorkloadEntry => {
                if self.entries.workload_entries.remove(&k).is_some() {
                    self.entries.dirty = true;
                }
            }
            Kind::EndpointSlice => self.remove_slice(&k),
            Kind::Pod => {
                if self.pods.remove(&k).is_some() {
                    self.entries.dirty |= self.entries.watch_pods(namespace);
                    self.pod_changed(k);
                }
            }
            Kind::Namespace => {
                self.namespaces.remove(name);
            }
            Kind::VirtualService => {
                if let Some(old) = self.virtual_services.remove(&k) {
                    self.note_hosts(Some(&old));
                    self.changes.configs.insert(id);
                }
            }
            Kind::DestinationRule => {
                if self.destination_rules.remove(&k).is_some() {
                    self.changes.configs.insert(id);
                }
            }
            Kind::PeerAuthentication => {
                if self.peer_authentications.remove(&k).is_some() {
                    self.changes.configs.insert(id);
                }
            }
            Kind::Gateway => {
                if self.gateways.remove(&k).is_some() {
                    self.changes.configs.insert(id);
                }
            }
            Kind::Sidecar => {
                if self.sidecars.remove(&k).is_some() {
                    self.changes.configs.insert(id);
                }
            }
            Kind::Secret => {
                if self.credentials.remove(&k).is_some() {
                    self.changes.credentials.insert(k);
                }
            }
        }
    }

    /// Replaces every object of one kind at once (a watch restart, a directory reload).
    pub fn reset(&mut self, kind: Kind, objects: Vec<Object>) {
        let existing: Vec<Key> = match kind {
            Kind::Service => self.services.keys().cloned().collect(),
            Kind::EndpointSlice => self.slices.keys().cloned().collect(),
            Kind::Pod => self.pods.keys().cloned().collect(),
            Kind::Namespace => self
                .namespaces
                .iter()
                .map(|n| (String::new(), n.clone()))
                .collect(),
            Kind::VirtualService => self.virtual_services.keys().cloned().collect(),
            Kind::DestinationRule => self.destination_rules.keys().cloned().collect(),
            Kind::PeerAuthentication => self.peer_authentications.keys().cloned().collect(),
            Kind::Gateway => self.gateways.keys().cloned().collect(),
            Kind::Secret => self.credentials.keys().cloned().collect(),
            Kind::Sidecar => self.sidecars.keys().cloned().collect(),
            Kind::ServiceEntry => self.entries.service_entries.keys().cloned().collect(),
            Kind::WorkloadEntry => self.entries.workload_entries.keys().cloned().collect(),
        };
        let mut keep = BTreeSet::new();
        for object in objects.into_iter().filter(|o| o.kind() == kind) {
            let meta = object.metadata();
            let id = parse::object_ref(kind, meta);
            keep.insert(if kind == Kind::Namespace {
                (String::new(), id.name.clone())
            } else {
                (id.namespace, id.name)
            });
            self.apply(object);
        }
        for (ns, name) in existing.into_iter().filter(|k| !keep.contains(k)) {
            self.delete(kind, &ns, &name);
        }
        self.invalid.retain(|id, _| {
            id.kind != kind || keep.contains(&(id.namespace.clone(), id.name.clone()))
        });
    }

    fn remove_service(&mut self, k: Key, host: String) {
        if self.services.remove(&k).is_some() {
            self.entries.dirty |= self.entries.watch_services();
            self.changes.services.insert(host);
            self.dirty_endpoints.insert(k);
        }
    }

    fn insert_slice(&mut self, k: Key, slice: Slice) {
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
        self.dirty_endpoints.insert(service);
        self.slices.insert(k, slice);
    }

    fn remove_slice(&mut self, k: &Key) {
        let Some(old) = self.slices.remove(k) else {
            return;
        };
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
        self.dirty_endpoints.insert(service);
    }

    fn pod_changed(&mut self, pod: Key) {
        if let Some(owners) = self.pod_owners.get(&pod) {
            self.dirty_endpoints.extend(owners.keys().cloned());
        }
        self.changes.workloads.insert(pod);
    }

    fn build_endpoints(&self, (namespace, service): &Key) -> Vec<Endpoint> {
        let mut out = Vec::new();
        let slices = self
            .service_slices
            .get(&key(namespace, service))
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k));
        for slice in slices {
            for ep in &slice.endpoints {
                let pod = ep.pod.as_ref().and_then(|p| self.pods.get(p));
                let labels = pod.map(|p| p.labels.clone()).unwrap_or_default();
                let mut locality = pod.and_then(|p| p.locality.clone()).unwrap_or_default();
                if locality.zone.is_empty()
                    && let Some(zone) = &ep.zone
                {
                    locality = Locality {
                        zone: zone.clone(),
                        ..locality
                    };
                }
                out.push(Endpoint {
                    address: ep.address,
                    hostname: None,
                    weight: 1,
                    ports: slice.ports.clone(),
                    istio_mtls: labels.get("security.istio.io/tlsMode").map(String::as_str)
                        == Some("istio"),
                    labels,
                    service_account: pod.and_then(|p| p.service_account.clone()),
                    locality,
                    cluster_id: self.cluster_id.clone(),
                    health: ep.health,
                    workload: ep.pod.as_ref().map(|(_, n)| n.clone()),
                    namespace: namespace.clone(),
                });
            }
        }
        out.sort_by_key(|e| e.address);
        out.dedup_by(|a, b| a.address == b.address && a.ports == b.ports);
        out
    }

    /// Records the hosts of a changed VirtualService in `changes.virtual_service_hosts`.
    fn note_hosts(&mut self, vs: Option<&VirtualService>) {
        let Some(vs) = vs else { return };
        let hosts = &mut self.changes.virtual_service_hosts;
        if vs.hosts.is_empty() {
            hosts.insert((String::new(), String::new()));
        }
        for h in &vs.hosts {
            let host = sextant_model::resolve_host(h, &vs.id.namespace, &self.domain_suffix);
            hosts.insert((vs.id.namespace.clone(), host));
        }
    }

    /// Publishes a snapshot of the current state and the changes since the last one.
    pub fn publish(&mut self) -> (Arc<Snapshot>, Changes) {
        for k in std::mem::take(&mut self.dirty_endpoints) {
            let host = self.hostname(&k.0, &k.1);
            let fresh = self.build_endpoints(&k);
            let old = self.endpoints.get(&host);
            if old.map(|o| o.as_slice()) != Some(fresh.as_slice())
                && !(old.is_none() && fresh.is_empty())
            {
                self.changes.endpoints.insert(host.clone());
            }
            if fresh.is_empty() {
                self.endpoints.remove(&host);
            } else {
                self.endpoints.insert(host, Arc::new(fresh));
            }
        }
        if self.entries.dirty {
            let refreshed = self
                .entries
                .refresh(&self.services, &self.pods, &self.cluster_id);
            self.changes.services.extend(refreshed.services);
            self.changes.endpoints.extend(refreshed.endpoints);
        }
        let changes = std::mem::take(&mut self.changes);
        let status_changed = std::mem::take(&mut self.status_changed);
        if let Some(published) = &self.published
            && changes.is_empty()
            && !status_changed
        {
            return (published.clone(), changes);
        }
        self.version += 1;
        let order = |creation: &Option<String>, id: &ObjectRef| {
            (
                creation.clone().unwrap_or_default(),
                id.name.clone(),
                id.namespace.clone(),
            )
        };
        let mut virtual_services: Vec<Arc<VirtualService>> =
            self.virtual_services.values().cloned().collect();
        virtual_services.sort_by_key(|vs| order(&vs.creation_timestamp, &vs.id));
        let virtual_services = delegate::merge(&virtual_services);
        let mut destination_rules: Vec<Arc<DestinationRule>> =
            self.destination_rules.values().cloned().collect();
        destination_rules.sort_by_key(|dr| order(&dr.creation_timestamp, &dr.id));
        let mut peer_authentications: Vec<Arc<PeerAuthentication>> =
            self.peer_authentications.values().cloned().collect();
        peer_authentications.sort_by_key(|pa| order(&pa.creation_timestamp, &pa.id));
        let mut gateways: Vec<Arc<Gateway>> = self.gateways.values().cloned().collect();
        gateways.sort_by_key(|gw| order(&gw.creation_timestamp, &gw.id));
        let mut snapshot = Snapshot {
            version: self.version,
            domain_suffix: self.domain_suffix.clone(),
            trust_domain: self.trust_domain.clone(),
            services: self
                .services
                .values()
                .map(|s| (s.hostname.clone(), s.clone()))
                .chain(self.entries.services.clone())
                .collect(),
            endpoints: self.merged_endpoints(),
            workloads: self.pods.clone(),
            virtual_services,
            destination_rules,
            peer_authentications,
            gateways,
            credentials: self.credentials.clone(),
            sidecars: self.sorted_sidecars(),
            mesh_config: self.mesh_config.clone(),
            outbound_traffic_policy: self.mesh_config.outbound_traffic_policy,
            root_namespace: self.root_namespace().to_owned(),
            invalid: self.invalid.clone(),
            warnings: self.warnings.clone(),
            service_entries: self.entries.ordered(),
            workload_entries: self.entries.workload_entries.clone(),
            allocated_addresses: self.entries.allocated.clone(),
            ..Default::default()
        };
        snapshot.index_hosts();
        let snapshot = Arc::new(snapshot);
        self.published = Some(snapshot.clone());
        (snapshot, changes)
    }

    /// Endpoints from EndpointSlices, with those ServiceEntries and WorkloadEntries add after
    /// them.
    fn merged_endpoints(&self) -> BTreeMap<String, Arc<Vec<Endpoint>>> {
        let mut all = self.endpoints.clone();
        for (host, extra) in &self.entries.endpoints {
            match all.get_mut(host) {
                Some(list) => Arc::make_mut(list).extend(extra.iter().cloned()),
                None => {
                    all.insert(host.clone(), extra.clone());
                }
            }
        }
        all
    }

    /// Errors of objects that were skipped, by object.
    pub fn invalid(&self) -> &BTreeMap<ObjectRef, Vec<String>> {
        &self.invalid
    }
}
