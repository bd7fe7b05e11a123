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

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::SystemTime,
};

use envoy_types::pb::{
    envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
        Resource,
    },
    google::protobuf::Any,
};
use sextant_compiler::{Encoded, EncodedResources, type_url};

/// The xDS types Sextant serves, in push order (make before break).
pub const PUSH_ORDER: [&str; 4] = [
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
];

/// CDS and LDS are wildcard types: an empty subscription means "everything".
pub fn is_wildcard_type(url: &str) -> bool {
    url == type_url::CLUSTER || url == type_url::LISTENER
}

/// The resources of one type.
pub fn resources_of<'a>(all: &'a EncodedResources, url: &str) -> &'a [Encoded] {
    match url {
        type_url::CLUSTER => &all.clusters,
        type_url::ENDPOINT => &all.endpoints,
        type_url::LISTENER => &all.listeners,
        type_url::ROUTE => &all.routes,
        _ => &[],
    }
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
    names: Option<BTreeSet<String>>,
    version: Option<String>,
    nonce: Option<String>,
    nacked: Option<String>,
    force: bool,
    status: TypeStatus,
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

fn any(url: &str, e: &Encoded) -> Any {
    Any {
        type_url: url.to_owned(),
        value: e.bytes.to_vec(),
    }
}

impl Sotw {
    /// Handles one request; returns the response to send, if any.
    pub fn on_request(
        &mut self,
        req: DiscoveryRequest,
        all: &EncodedResources,
    ) -> Option<DiscoveryResponse> {
        let url = req.type_url.clone();
        if !PUSH_ORDER.contains(&url.as_str()) {
            return None;
        }
        let state = self.types.entry(url.clone()).or_default();
        if !req.response_nonce.is_empty()
            && state.nonce.as_deref() != Some(req.response_nonce.as_str())
        {
            self.events.push(Event::Stale { type_url: url });
            return None;
        }
        let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        let wildcard = is_wildcard_type(&url) && (names.is_empty() || names.contains("*"));
        let subscription = if wildcard { None } else { Some(names) };
        if let Some(err) = &req.error_detail {
            if let Some(v) = state.version.clone() {
                state.nacked = Some(v.clone());
                state.status.nack = Some((v, err.message.clone()));
            }
            self.events.push(Event::Nack {
                type_url: url.clone(),
                error: err.message.clone(),
            });
            // A NACK is also the only message carrying names that changed meanwhile.
            if state.names != subscription {
                state.names = subscription;
                return self.respond(&url, all, true);
            }
            return None;
        }
        let initial = req.response_nonce.is_empty();
        if !initial {
            state.status.acked_version = Some(req.version_info.clone());
            state.status.acked_at = Some(SystemTime::now());
            self.events.push(Event::Ack {
                type_url: url.clone(),
            });
        }
        let changed = state.names != subscription;
        state.names = subscription;
        if initial || changed || state.force {
            state.force = false;
            return self.respond(&url, all, true);
        }
        None
    }

    /// Handles new resources: the responses to send, in push order.
    pub fn on_update(&mut self, all: &EncodedResources) -> Vec<DiscoveryResponse> {
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

    fn respond(
        &mut self,
        url: &str,
        all: &EncodedResources,
        always: bool,
    ) -> Option<DiscoveryResponse> {
        let state = self.types.get_mut(url)?;
        let available = resources_of(all, url);
        let placeholders: Vec<Encoded>;
        let items: Vec<&Encoded> = match &state.names {
            None => available.iter().collect(),
            Some(names) => {
                let by_name: HashMap<&str, &Encoded> =
                    available.iter().map(|e| (e.name.as_str(), e)).collect();
                placeholders = names
                    .iter()
                    .filter(|n| !by_name.contains_key(n.as_str()))
                    .filter_map(|n| placeholder(url, n))
                    .collect();
                let mut items: Vec<&Encoded> = names
                    .iter()
                    .filter_map(|n| by_name.get(n.as_str()).copied())
                    .collect();
                items.extend(placeholders.iter());
                items.sort_by(|a, b| a.name.cmp(&b.name));
                items
            }
        };
        let version = version_of(&items);
        let unchanged = state.version.as_deref() == Some(version.as_str());
        let rejected = state.nacked.as_deref() == Some(version.as_str());
        // An explicit request (first, new names, warming) is always answered; a plain update
        // never resends what the proxy rejected.
        if !always && (rejected || unchanged) {
            return None;
        }
        self.nonces += 1;
        let nonce = format!("{}-{version}", self.nonces);
        state.version = Some(version.clone());
        state.nonce = Some(nonce.clone());
        state.status.record_sent(&version, &nonce, items.len());
        let response = DiscoveryResponse {
            version_info: version,
            resources: items.iter().map(|e| any(url, e)).collect(),
            type_url: url.to_owned(),
            nonce,
            ..Default::default()
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
    pub fn on_request(
        &mut self,
        req: DeltaDiscoveryRequest,
        all: &EncodedResources,
    ) -> Option<DeltaDiscoveryResponse> {
        let url = req.type_url.clone();
        if !PUSH_ORDER.contains(&url.as_str()) {
            return None;
        }
        let state = self.types.entry(url.clone()).or_default();
        let first = !state.started;
        if first {
            state.started = true;
            // Reconnect: the proxy already holds these.
            for (name, version) in &req.initial_resource_versions {
                state
                    .sent
                    .insert(name.clone(), u64::from_str_radix(version, 16).ok());
                if !is_wildcard_type(&url) {
                    state.names.insert(name.clone());
                }
            }
            if is_wildcard_type(&url) && req.resource_names_subscribe.is_empty() {
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
                    type_url: url.clone(),
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
                    type_url: url.clone(),
                    error: err.message.clone(),
                });
            } else {
                for (name, _) in std::mem::take(&mut state.last) {
                    state.rejected.remove(&name);
                }
                state.status.acked_version = state.status.sent_version.clone();
                state.status.acked_at = Some(SystemTime::now());
                self.events.push(Event::Ack {
                    type_url: url.clone(),
                });
            }
        }
        self.respond(&url, all, explicit)
    }

    /// Handles new resources: the responses to send, in push order.
    pub fn on_update(&mut self, all: &EncodedResources) -> Vec<DeltaDiscoveryResponse> {
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

    fn respond(
        &mut self,
        url: &str,
        all: &EncodedResources,
        always: bool,
    ) -> Option<DeltaDiscoveryResponse> {
        let state = self.types.get_mut(url)?;
        let available = resources_of(all, url);
        let by_name: HashMap<&str, &Encoded> =
            available.iter().map(|e| (e.name.as_str(), e)).collect();
        let placeholders: Vec<Encoded> = state
            .names
            .iter()
            .filter(|n| !by_name.contains_key(n.as_str()))
            .filter_map(|n| placeholder(url, n))
            .collect();
        let wanted: Vec<&Encoded> = if state.wildcard {
            available.iter().collect()
        } else {
            state
                .names
                .iter()
                .filter_map(|n| by_name.get(n.as_str()).copied())
                .chain(placeholders.iter())
                .collect()
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
        let response = DeltaDiscoveryResponse {
            system_version_info: version,
            resources: changed
                .iter()
                .map(|e| Resource {
                    name: e.name.clone(),
                    version: e.version(),
                    resource: Some(any(url, e)),
                    ..Default::default()
                })
                .collect(),
            type_url: url.to_owned(),
            removed_resources: removed,
            nonce,
            ..Default::default()
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
