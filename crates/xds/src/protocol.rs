//! The xDS protocol as synchronous state machines, one per stream, with no IO: requests and
//! resource updates go in, responses come out. `Sotw` implements state-of-the-world ADS and
//! `Delta` incremental ADS, following the xDS spec and istiod's choices:
//!
//! - CDS and LDS are wildcard types; EDS and RDS are named.
//! - A request with an empty nonce (first request, reconnect) is always answered.
//! - A request whose nonce is not the last one sent is stale and ignored.
//! - A request carrying `error_detail` for the last nonce is a NACK: the error is kept and
//!   nothing is sent; that same version is never sent again, a newer one will be.
//! - A request for the last nonce with unchanged names is an ACK: nothing is sent.
//! - After clusters are sent, the next EDS request is answered even if nothing changed (Envoy
//!   needs the assignments to finish warming updated clusters).
//! - Updates are level-triggered: a type is sent only when its content differs from what the
//!   proxy last received, so a slow proxy simply gets the newest state.
//! - State of the world: an update of a named type (EDS, RDS) carries only the resources that
//!   changed, as the protocol allows for those types and istiod does for EDS (an endpoint
//!   change is one assignment, not all of them); an explicit request gets the whole set. CDS
//!   and LDS responses always carry everything.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, Weak},
    time::SystemTime,
};

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use sextant_resources::{Body, Encoded, EncodedResources, type_url};

/// The xDS types Sextant serves, in push order (make before break: secrets before the
/// clusters and listeners whose TLS contexts name them).
pub const PUSH_ORDER: [&str; 5] = [
    type_url::SECRET,
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
];

/// CDS and LDS are wildcard types: an empty subscription means "everything".
pub fn is_wildcard_type(url: &str) -> bool {
    url == type_url::CLUSTER || url == type_url::LISTENER
}

/// The static spelling of a type URL Sextant serves.
fn known_type(url: &str) -> Option<&'static str> {
    PUSH_ORDER.into_iter().find(|u| *u == url)
}

/// The resources of one type in one encoded set (sorted by name).
pub fn resources_of<'a>(all: &'a EncodedResources, url: &str) -> &'a [Encoded] {
    match url {
        type_url::CLUSTER => &all.clusters,
        type_url::ENDPOINT => &all.endpoints,
        type_url::LISTENER => &all.listeners,
        type_url::ROUTE => &all.routes,
        _ => &[],
    }
}

/// What a stream serves from: for each type, up to two lists sorted by name with no name in
/// both (a proxy's shared and own parts).
pub trait ResourceSet {
    /// The lists of `url`.
    fn lists(&self, url: &str) -> [&[Encoded]; 2];
    /// This set, kept to compare the next one with (its lists are shared, not copied).
    fn keep(&self) -> Arc<dyn ResourceSet + Send + Sync>;
}

impl ResourceSet for EncodedResources {
    fn lists(&self, url: &str) -> [&[Encoded]; 2] {
        [resources_of(self, url), &[]]
    }
    fn keep(&self) -> Arc<dyn ResourceSet + Send + Sync> {
        Arc::new(self.clone())
    }
}

/// Every resource of `url`.
fn all_of<'a, R: ResourceSet + ?Sized>(all: &'a R, url: &str) -> Vec<&'a Encoded> {
    all.lists(url).into_iter().flatten().collect()
}

/// The resources of `url` named in `names` (in name order), then placeholders for the names
/// without one. One pass over the sorted lists: a subscription is usually every resource of
/// the type, and walking both sorted sequences beats a lookup per name.
fn select<'a, R: ResourceSet + ?Sized>(
    all: &'a R,
    url: &'static str,
    names: &BTreeSet<String>,
    placeholders: &'a mut Vec<Encoded>,
) -> Vec<&'a Encoded> {
    let lists = all.lists(url);
    let mut cursors = [0usize; 2];
    let mut found = Vec::with_capacity(names.len());
    for name in names {
        let mut hit = None;
        for (list, at) in lists.iter().zip(cursors.iter_mut()) {
            while *at < list.len() && list[*at].name.as_str() < name.as_str() {
                *at += 1;
            }
            if *at < list.len() && list[*at].name == *name {
                hit = Some(&list[*at]);
                break;
            }
        }
        match hit {
            Some(e) => found.push(e),
            None => placeholders.extend(placeholder(url, name)),
        }
    }
    let placeholders: &'a Vec<Encoded> = placeholders;
    found.extend(placeholders.iter());
    found
}

/// A proxy's resources without copying shared ones: the part its scope shares with other
/// proxies, its own part (inbound listeners and clusters) and the secrets of its identity.
/// Each list is sorted by name and no name is in both parts.
#[derive(Clone, Debug, Default)]
pub struct ProxyResources {
    /// Shared by every proxy of the scope.
    pub shared: Arc<EncodedResources>,
    /// This proxy's own.
    pub own: Arc<EncodedResources>,
    /// SDS secrets (`ROOTCA`, and `default` for a proxy that proved its identity), sorted by
    /// name.
    pub secrets: sextant_resources::List,
}

impl ProxyResources {
    /// Both parts in one set, sorted by name (for display).
    pub fn merged(&self) -> EncodedResources {
        self.shared.merge(&self.own)
    }
}

impl ResourceSet for ProxyResources {
    fn lists(&self, url: &str) -> [&[Encoded]; 2] {
        if url == type_url::SECRET {
            return [&self.secrets, &[]];
        }
        [
            resources_of(&self.shared, url),
            resources_of(&self.own, url),
        ]
    }
    fn keep(&self) -> Arc<dyn ResourceSet + Send + Sync> {
        Arc::new(self.clone())
    }
}

/// A state-of-the-world response, its resources shared with every other stream sending them.
#[derive(Clone, Debug)]
pub struct SotwResponse {
    /// Version of the whole set.
    pub version_info: String,
    /// Resource type.
    pub type_url: &'static str,
    /// Nonce the proxy answers with.
    pub nonce: String,
    /// Encoded resources, in order.
    pub resources: Vec<Body>,
}

/// An incremental response: changed resources and removed names.
#[derive(Clone, Debug)]
pub struct DeltaResponse {
    /// Version of the proxy's whole set of this type (informational).
    pub system_version_info: String,
    /// Resource type.
    pub type_url: &'static str,
    /// Nonce the proxy answers with.
    pub nonce: String,
    /// Added or changed resources.
    pub resources: Vec<Encoded>,
    /// Names the proxy must drop.
    pub removed_resources: Vec<String>,
}

/// Subscribed names, shared by every stream that asked for the same list (a scope's proxies
/// all ask for the same load assignments), so a proxy's state stays small.
pub type Names = Arc<BTreeSet<String>>;

fn intern(names: &[bytes::Bytes]) -> Names {
    static POOL: Mutex<Option<HashMap<u64, Weak<BTreeSet<String>>>>> = Mutex::new(None);
    let set: BTreeSet<String> = names
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for n in &set {
        h.update(n.as_bytes());
        h.update(&[0]);
    }
    let key = h.digest();
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    let pool = pool.get_or_insert_with(HashMap::new);
    if let Some(shared) = pool.get(&key).and_then(Weak::upgrade)
        && *shared == set
    {
        return shared;
    }
    if pool.len() > 1024 {
        pool.retain(|_, w| w.strong_count() > 0);
    }
    let shared = Arc::new(set);
    pool.insert(key, Arc::downgrade(&shared));
    shared
}

/// A resource a proxy asked for by name that does not exist: an empty route configuration
/// (istiod answers so, letting listeners warm) or an empty load assignment.
fn placeholder(url: &str, name: &str) -> Option<Encoded> {
    use envoy_types::pb::envoy::config::{
        endpoint::v3::ClusterLoadAssignment, route::v3::RouteConfiguration,
    };
    match url {
        type_url::ROUTE => Some(Encoded::new(
            name,
            &RouteConfiguration {
                name: name.to_owned(),
                validate_clusters: Some(envoy_types::pb::google::protobuf::BoolValue {
                    value: false,
                }),
                ..Default::default()
            },
        )),
        type_url::ENDPOINT => Some(Encoded::new(
            name,
            &ClusterLoadAssignment {
                cluster_name: name.to_owned(),
                ..Default::default()
            },
        )),
        _ => None,
    }
}

/// What is known about one type of one stream, for `/debug/syncz`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeStatus {
    /// Last version sent.
    pub sent_version: Option<String>,
    /// Nonce of the last response.
    pub sent_nonce: Option<String>,
    /// When it was sent.
    pub sent_at: Option<SystemTime>,
    /// Last version the proxy ACKed.
    pub acked_version: Option<String>,
    /// When.
    pub acked_at: Option<SystemTime>,
    /// Last NACK: version and Envoy's error text.
    pub nack: Option<(String, String)>,
    /// Responses sent.
    pub responses: u64,
    /// Resources in the last response.
    pub resources: usize,
}

impl TypeStatus {
    fn record_sent(&mut self, version: &str, nonce: &str, resources: usize) {
        self.sent_version = Some(version.to_owned());
        self.sent_nonce = Some(nonce.to_owned());
        self.sent_at = Some(SystemTime::now());
        self.responses += 1;
        self.resources = resources;
    }
}

/// An event worth counting (metrics) that the state machine saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The proxy ACKed a version.
    Ack { type_url: String },
    /// The proxy rejected a version.
    Nack { type_url: String, error: String },
    /// A response for an older nonce arrived and was ignored.
    Stale { type_url: String },
    /// A response was sent.
    Sent { type_url: String, resources: usize },
}

#[derive(Default)]
struct SotwType {
    /// `None`: wildcard.
    names: Option<Names>,
    /// [`names_key`] of the request that set `names`.
    names_key: (usize, u64),
    version: Option<String>,
    nonce: Option<String>,
    nacked: Option<String>,
    force: bool,
    status: TypeStatus,
    /// The set the last response came from: what the proxy holds (for named types, what
    /// updates are compared with).
    basis: Option<Arc<dyn ResourceSet + Send + Sync>>,
}

/// State of one state-of-the-world stream.
#[derive(Default)]
pub struct Sotw {
    types: BTreeMap<String, SotwType>,
    nonces: u64,
    /// Events since the caller last drained them.
    pub events: Vec<Event>,
}

fn version_of(items: &[&Encoded]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for e in items {
        h.update(e.name.as_bytes());
        h.update(&e.hash.to_le_bytes());
    }
    format!("{:016x}", h.digest())
}

/// A state-of-the-world request (Envoy's `DiscoveryRequest`, same field numbers) whose
/// resource names stay slices of the received message: every ACK of a load-assignment
/// subscription repeats all its names (150 KB at W-M), and an ACK whose names did not change
/// is recognised by their hash without making a string of any.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SotwRequest {
    /// Version being ACKed (empty on the first request).
    #[prost(string, tag = "1")]
    pub version_info: String,
    /// The node (first request only, with `set_node_on_first_message_only`).
    #[prost(message, optional, tag = "2")]
    pub node: Option<envoy_types::pb::envoy::config::core::v3::Node>,
    /// Subscribed names.
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub resource_names: Vec<bytes::Bytes>,
    /// Resource type.
    #[prost(string, tag = "4")]
    pub type_url: String,
    /// Nonce of the response this answers.
    #[prost(string, tag = "5")]
    pub response_nonce: String,
    /// Set on a NACK.
    #[prost(message, optional, tag = "6")]
    pub error_detail: Option<envoy_types::pb::google::rpc::Status>,
}

impl From<DiscoveryRequest> for SotwRequest {
    fn from(r: DiscoveryRequest) -> Self {
        SotwRequest {
            version_info: r.version_info,
            node: r.node,
            resource_names: r
                .resource_names
                .into_iter()
                .map(bytes::Bytes::from)
                .collect(),
            type_url: r.type_url,
            response_nonce: r.response_nonce,
            error_detail: r.error_detail,
        }
    }
}

/// Identifies a list of names regardless of order: its length and the wrapping sum of the
/// names' hashes.
fn names_key(names: &[bytes::Bytes]) -> (usize, u64) {
    let sum = names.iter().fold(0u64, |acc, n| {
        acc.wrapping_add(xxhash_rust::xxh3::xxh3_64(n))
    });
    (names.len(), sum)
}

impl Sotw {
    /// Handles one request; returns the response to send, if any.
    pub fn on_request<R: ResourceSet + ?Sized>(
        &mut self,
        req: impl Into<SotwRequest>,
        all: &R,
    ) -> Option<SotwResponse> {
        let req: SotwRequest = req.into();
        let url = known_type(&req.type_url)?;
        let state = self.types.entry(url.to_owned()).or_default();
        if !req.response_nonce.is_empty()
            && state.nonce.as_deref() != Some(req.response_nonce.as_str())
        {
            self.events.push(Event::Stale {
                type_url: url.to_owned(),
            });
            return None;
        }
        let wildcard = is_wildcard_type(url)
            && (req.resource_names.is_empty() || req.resource_names.iter().any(|n| n == "*"));
        let key = names_key(&req.resource_names);
        let subscription = if wildcard {
            None
        } else if state.names.is_some() && state.names_key == key {
            state.names.clone()
        } else {
            state.names_key = key;
            Some(intern(&req.resource_names))
        };
        if let Some(err) = &req.error_detail {
            if let Some(v) = state.version.clone() {
                state.nacked = Some(v.clone());
                state.status.nack = Some((v, err.message.clone()));
            }
            // Envoy may have applied part of what it rejected: what it holds is unknown, so
            // the next update carries every subscribed resource.
            state.basis = None;
            self.events.push(Event::Nack {
                type_url: url.to_owned(),
                error: err.message.clone(),
            });
            // A NACK is also the only message carrying names that changed meanwhile.
            if state.names != subscription {
                state.names = subscription;
                return self.respond(url, all, true, &mut Kept::default());
            }
            return None;
        }
        let initial = req.response_nonce.is_empty();
        if !initial {
            state.status.acked_version = Some(req.version_info.clone());
            state.status.acked_at = Some(SystemTime::now());
            self.events.push(Event::Ack {
                type_url: url.to_owned(),
            });
        }
        let changed = state.names != subscription;
        state.names = subscription;
        if initial || changed || state.force {
            state.force = false;
            return self.respond(url, all, true, &mut Kept::default());
        }
        None
    }

    /// Handles new resources: the responses to send, in push order.
    pub fn on_update<R: ResourceSet + ?Sized>(&mut self, all: &R) -> Vec<SotwResponse> {
        let mut out = Vec::new();
        let mut kept = Kept::default();
        for url in PUSH_ORDER {
            if self.types.contains_key(url)
                && let Some(r) = self.respond(url, all, false, &mut kept)
            {
                out.push(r);
            }
        }
        out
    }

    fn respond<R: ResourceSet + ?Sized>(
        &mut self,
        url: &'static str,
        all: &R,
        always: bool,
        kept: &mut Kept,
    ) -> Option<SotwResponse> {
        let state = self.types.get_mut(url)?;
        // The very lists the proxy's last response came from (kept alive by the basis, so
        // their addresses cannot be reused): nothing changed, nothing to compare.
        if !always
            && let Some(basis) = &state.basis
            && same_lists(basis.lists(url), all.lists(url))
        {
            // Hold the newest set, not an old one with other types' stale lists.
            state.basis = Some(kept.of(all));
            return None;
        }
        let mut placeholders = Vec::new();
        let items: Vec<&Encoded> = match &state.names {
            None => all_of(all, url),
            Some(names) => select(all, url, names, &mut placeholders),
        };
        let version = version_of(&items);
        let unchanged = state.version.as_deref() == Some(version.as_str());
        let rejected = state.nacked.as_deref() == Some(version.as_str());
        // An explicit request (first, new names, warming) is always answered; a plain update
        // never resends what the proxy rejected.
        if !always && (rejected || unchanged) {
            // After a NACK the proxy's content is unknown: no basis until it ACKs again.
            if unchanged && !rejected {
                state.basis = Some(kept.of(all));
            }
            return None;
        }
        // An update of a named type: only what changed since the proxy's basis.
        let sent = match (&state.names, &state.basis) {
            (Some(names), Some(basis)) if !always => {
                let mut old_placeholders = Vec::new();
                let old = select(&**basis, url, names, &mut old_placeholders);
                changed_since(&items, &old)
            }
            _ => None,
        }
        .unwrap_or_else(|| items.clone());
        state.basis = Some(kept.of(all));
        self.nonces += 1;
        let nonce = format!("{}-{version}", self.nonces);
        state.version = Some(version.clone());
        state.nonce = Some(nonce.clone());
        state.status.record_sent(&version, &nonce, sent.len());
        let response = SotwResponse {
            version_info: version,
            resources: sent.iter().map(|e| e.body.clone()).collect(),
            type_url: url,
            nonce,
        };
        if url == type_url::CLUSTER
            && let Some(eds) = self.types.get_mut(type_url::ENDPOINT)
        {
            eds.force = true;
        }
        self.events.push(Event::Sent {
            type_url: url.to_owned(),
            resources: response.resources.len(),
        });
        Some(response)
    }

    /// Per-type status for `/debug/syncz`.
    pub fn status(&self) -> BTreeMap<String, TypeStatus> {
        self.types
            .iter()
            .map(|(k, v)| (k.clone(), v.status.clone()))
            .collect()
    }
}

/// The set a response came from, kept (shared) once per request or update however many
/// types it answers.
#[derive(Default)]
struct Kept(Option<Arc<dyn ResourceSet + Send + Sync>>);

impl Kept {
    fn of<R: ResourceSet + ?Sized>(&mut self, all: &R) -> Arc<dyn ResourceSet + Send + Sync> {
        self.0.get_or_insert_with(|| all.keep()).clone()
    }
}

/// Whether two sets' lists of a type are the same lists (not merely equal ones).
fn same_lists(a: [&[Encoded]; 2], b: [&[Encoded]; 2]) -> bool {
    a.iter()
        .zip(&b)
        .all(|(x, y)| std::ptr::eq(x.as_ptr(), y.as_ptr()) && x.len() == y.len())
}

/// The resources of `new` that differ from `old`, both selections of the same names; `None`
/// when they do not line up name by name (then everything is sent).
fn changed_since<'a>(new: &[&'a Encoded], old: &[&Encoded]) -> Option<Vec<&'a Encoded>> {
    if new.len() != old.len() {
        return None;
    }
    let mut changed = Vec::new();
    for (n, o) in new.iter().zip(old) {
        if n.name != o.name {
            return None;
        }
        if n.hash != o.hash {
            changed.push(*n);
        }
    }
    Some(changed)
}

#[derive(Default)]
struct DeltaType {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the proxy holds: name → content hash (`None`: held, version unknown, e.g. after a
    /// NACK Envoy may have applied part of, or an unparsable reconnect version).
    sent: HashMap<String, Option<u64>>,
    /// Content the proxy rejected: name → hash (not sent again).
    rejected: HashMap<String, u64>,
    /// Resources in the last response, to attribute a NACK.
    last: Vec<(String, u64)>,
    nonce: Option<String>,
    started: bool,
    status: TypeStatus,
}

/// State of one incremental (delta) stream.
#[derive(Default)]
pub struct Delta {
    types: BTreeMap<String, DeltaType>,
    nonces: u64,
    /// Events since the caller last drained them.
    pub events: Vec<Event>,
}

impl Delta {
    /// Handles one request; returns the response to send, if any. Subscription changes are
    /// applied whatever the nonce says: Envoy sends them together with ACKs and NACKs and never
    /// repeats them.
    pub fn on_request<R: ResourceSet + ?Sized>(
        &mut self,
        req: DeltaDiscoveryRequest,
        all: &R,
    ) -> Option<DeltaResponse> {
        let url = known_type(&req.type_url)?;
        let state = self.types.entry(url.to_owned()).or_default();
        let first = !state.started;
        if first {
            state.started = true;
            // Reconnect: the proxy already holds these.
            for (name, version) in &req.initial_resource_versions {
                state
                    .sent
                    .insert(name.clone(), u64::from_str_radix(version, 16).ok());
                if !is_wildcard_type(url) {
                    state.names.insert(name.clone());
                }
            }
            if is_wildcard_type(url) && req.resource_names_subscribe.is_empty() {
                state.wildcard = true;
            }
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                state.wildcard = true;
            } else {
                state.names.insert(name.clone());
                // An explicit (re)subscription asks for the resource again, unless this is the
                // reconnect that just told us which version the proxy holds.
                if !(first && req.initial_resource_versions.contains_key(name)) {
                    state.sent.remove(name);
                }
                state.rejected.remove(name);
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                state.wildcard = false;
            } else {
                state.names.remove(name);
                state.sent.remove(name);
            }
        }
        let explicit = first || !req.resource_names_subscribe.is_empty();
        if !req.response_nonce.is_empty() {
            if state.nonce.as_deref() != Some(req.response_nonce.as_str()) {
                self.events.push(Event::Stale {
                    type_url: url.to_owned(),
                });
            } else if let Some(err) = &req.error_detail {
                // Envoy may have applied the valid part of a rejected response: the proxy holds
                // those names at an unknown version; the rejected content is not resent.
                for (name, hash) in std::mem::take(&mut state.last) {
                    state.rejected.insert(name.clone(), hash);
                    if let Some(held) = state.sent.get_mut(&name) {
                        *held = None;
                    }
                }
                state.status.nack = Some((
                    state.status.sent_version.clone().unwrap_or_default(),
                    err.message.clone(),
                ));
                self.events.push(Event::Nack {
                    type_url: url.to_owned(),
                    error: err.message.clone(),
                });
            } else {
                for (name, _) in std::mem::take(&mut state.last) {
                    state.rejected.remove(&name);
                }
                state.status.acked_version = state.status.sent_version.clone();
                state.status.acked_at = Some(SystemTime::now());
                self.events.push(Event::Ack {
                    type_url: url.to_owned(),
                });
            }
        }
        self.respond(url, all, explicit)
    }

    /// Handles new resources: the responses to send, in push order.
    pub fn on_update<R: ResourceSet + ?Sized>(&mut self, all: &R) -> Vec<DeltaResponse> {
        let mut out = Vec::new();
        for url in PUSH_ORDER {
            if self.types.contains_key(url)
                && let Some(r) = self.respond(url, all, false)
            {
                out.push(r);
            }
        }
        out
    }

    fn respond<R: ResourceSet + ?Sized>(
        &mut self,
        url: &'static str,
        all: &R,
        always: bool,
    ) -> Option<DeltaResponse> {
        let state = self.types.get_mut(url)?;
        let mut placeholders = Vec::new();
        let wanted: Vec<&Encoded> = if state.wildcard {
            all_of(all, url)
        } else {
            select(all, url, &state.names, &mut placeholders)
        };
        let changed: Vec<&Encoded> = wanted
            .iter()
            .copied()
            .filter(|e| {
                state.sent.get(&e.name) != Some(&Some(e.hash))
                    && state.rejected.get(&e.name) != Some(&e.hash)
            })
            .collect();
        let wanted_names: BTreeSet<&str> = wanted.iter().map(|e| e.name.as_str()).collect();
        let removed: Vec<String> = state
            .sent
            .keys()
            .filter(|n| !wanted_names.contains(n.as_str()))
            .cloned()
            .collect();
        if changed.is_empty() && removed.is_empty() && !always {
            return None;
        }
        for n in &removed {
            state.sent.remove(n);
        }
        for e in &changed {
            state.sent.insert(e.name.clone(), Some(e.hash));
        }
        state.last = changed.iter().map(|e| (e.name.clone(), e.hash)).collect();
        self.nonces += 1;
        let mut sent: Vec<(&String, &Option<u64>)> = state.sent.iter().collect();
        sent.sort();
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (n, v) in sent {
            h.update(n.as_bytes());
            h.update(&v.unwrap_or(0).to_le_bytes());
        }
        let version = format!("{:016x}", h.digest());
        let nonce = format!("{}-{version}", self.nonces);
        state.nonce = Some(nonce.clone());
        state.status.record_sent(&version, &nonce, changed.len());
        let updated_clusters: Vec<String> = if url == type_url::CLUSTER {
            changed.iter().map(|e| e.name.clone()).collect()
        } else {
            Vec::new()
        };
        let response = DeltaResponse {
            system_version_info: version,
            resources: changed.iter().map(|e| (*e).clone()).collect(),
            type_url: url,
            removed_resources: removed,
            nonce,
        };
        self.events.push(Event::Sent {
            type_url: url.to_owned(),
            resources: response.resources.len() + response.removed_resources.len(),
        });
        // Updated clusters must get their assignments again to finish warming.
        if let Some(eds) = self.types.get_mut(type_url::ENDPOINT) {
            for c in updated_clusters {
                eds.sent.remove(&c);
                eds.rejected.remove(&c);
            }
        }
        Some(response)
    }

    /// Per-type status for `/debug/syncz`.
    pub fn status(&self) -> BTreeMap<String, TypeStatus> {
        self.types
            .iter()
            .map(|(k, v)| (k.clone(), v.status.clone()))
            .collect()
    }
}
