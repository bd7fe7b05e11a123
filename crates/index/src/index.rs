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
    Credential, DestinationRule, Endpoint, Gateway, Kind, MeshConfig, ObjectRef,
    PeerAuthentication, Sidecar, Snapshot, VirtualService,
};

use crate::{
    delegate,
    parse::{self, Invalid, Parsed},
};

mod clusters;
mod entries;
mod mesh_config;
mod object;
mod registry;

pub use object::{Object, ObjectError};
pub use registry::{MAX_GATEWAY_ADDRESSES, MAX_GATEWAYS_PER_NETWORK, NETWORK_LABEL};

/// The kinds a remote cluster contributes; its other objects are ignored (configuration comes
/// from the config cluster).
pub const REMOTE_KINDS: [Kind; 5] = [
    Kind::Namespace,
    Kind::Node,
    Kind::Pod,
    Kind::Service,
    Kind::EndpointSlice,
];

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

/// What `Snapshot::workloads` and `Snapshot::remote_workloads` hold.
type Workloads = (
    Arc<sextant_model::Workloads>,
    Arc<BTreeMap<String, sextant_model::Workloads>>,
);

/// The mutable index behind the published snapshots.
#[derive(Debug)]
pub struct Index {
    domain_suffix: String,
    trust_domain: String,
    /// The config cluster: configuration comes from it, and `apply` and friends feed it.
    cluster_id: String,
    version: u64,
    /// Every cluster's registry, the config cluster's included.
    clusters: BTreeMap<String, registry::Registry>,
    /// Services of every cluster merged by namespace and name: the config cluster's
    /// definition, else the first other cluster's (by id) that has one.
    services: BTreeMap<Key, Arc<sextant_model::Service>>,
    /// East-west gateways changed: every endpoint list may look different from other networks.
    gateways_changed: bool,
    /// The published workload maps (the config cluster's; each remote cluster's), until a Pod
    /// changes.
    workloads: Option<Workloads>,
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
            clusters: BTreeMap::from([(cluster_id.to_owned(), registry::Registry::default())]),
            services: BTreeMap::new(),
            gateways_changed: false,
            workloads: None,
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
            Object::Service(_)
            | Object::EndpointSlice(_)
            | Object::Pod(_)
            | Object::Namespace(_)
            | Object::Node(_) => {
                let cluster = self.cluster_id.clone();
                self.apply_in(&cluster, object);
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
        if REMOTE_KINDS.contains(&kind) {
            let cluster = self.cluster_id.clone();
            return self.delete_in(&cluster, kind, namespace, name);
        }
        if self.invalid.remove(&id).is_some() | self.warnings.remove(&id).is_some() {
            self.status_changed = true;
        }
        match kind {
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
            Kind::Service | Kind::EndpointSlice | Kind::Pod | Kind::Namespace | Kind::Node => {}
        }
    }

    /// Replaces every object of one kind at once (a watch restart, a directory reload).
    pub fn reset(&mut self, kind: Kind, objects: Vec<Object>) {
        if REMOTE_KINDS.contains(&kind) {
            let cluster = self.cluster_id.clone();
            return self.reset_in(&cluster, kind, objects);
        }
        let existing: Vec<Key> = match kind {
            Kind::Service | Kind::EndpointSlice | Kind::Pod | Kind::Namespace | Kind::Node => {
                Vec::new()
            }
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
            keep.insert((id.namespace, id.name));
            self.apply(object);
        }
        for (ns, name) in existing.into_iter().filter(|k| !keep.contains(k)) {
            self.delete(kind, &ns, &name);
        }
        self.invalid.retain(|id, _| {
            id.kind != kind || keep.contains(&(id.namespace.clone(), id.name.clone()))
        });
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
        if std::mem::take(&mut self.gateways_changed) {
            // What proxies of other networks see of every endpoint list may have changed.
            self.changes
                .endpoints
                .extend(self.endpoints.keys().cloned());
        }
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
            let refreshed = self.entries.refresh(
                &self.services,
                &self.clusters[&self.cluster_id].pods,
                &self.cluster_id,
            );
            self.changes.services.extend(refreshed.services);
            self.changes.endpoints.extend(refreshed.endpoints);
        }
        // Pods are many and change rarely: their maps are rebuilt only after a change.
        if !self.changes.workloads.is_empty() {
            self.workloads = None;
        }
        let (workloads, remote_workloads) = match &self.workloads {
            Some(w) => w.clone(),
            None => {
                let w = (
                    Arc::new(self.clusters[&self.cluster_id].pods.clone()),
                    Arc::new(self.remote_workloads()),
                );
                self.workloads = Some(w.clone());
                w
            }
        };
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
            workloads,
            remote_workloads,
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
            network_gateways: self.network_gateways(),
            multi_network: self.multi_network(),
            multi_cluster: self.clusters.len() > 1,
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
