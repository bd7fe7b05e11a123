//! Incremental (delta) ADS: responses carry the resources that changed and the names removed,
//! against what the proxy is known to hold.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use sextant_resources::{Encoded, type_url};

use super::{
    Clock, Event, Limits, Refused, TypeStatus, kept_message,
    resources::{PUSH_ORDER, ResourceSet, all_of, is_wildcard_type, known_type, select},
};

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
pub struct Delta {
    types: BTreeMap<String, DeltaType>,
    nonces: u64,
    clock: Arc<dyn Clock>,
    limits: Limits,
    /// Events since the caller last drained them.
    pub events: Vec<Event>,
}

impl Delta {
    /// A new stream's state, its statuses stamped by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Delta {
        Delta {
            types: BTreeMap::new(),
            nonces: 0,
            clock,
            limits: Limits::default(),
            events: Vec::new(),
        }
    }

    /// Keeps what the peer sends within `limits`.
    pub fn with_limits(mut self, limits: Limits) -> Delta {
        self.limits = limits;
        self
    }

    /// Whether `req` keeps its type's subscription within the limits: delta requests add to
    /// and remove from what earlier ones subscribed.
    pub fn admit(&self, req: &DeltaDiscoveryRequest) -> Result<(), Refused> {
        let held = self.types.get(&req.type_url).map(|t| &t.names);
        let added = req
            .resource_names_subscribe
            .iter()
            .filter(|n| held.is_none_or(|h| !h.contains(*n)))
            .count();
        let removed = req
            .resource_names_unsubscribe
            .iter()
            .filter(|n| held.is_some_and(|h| h.contains(*n)))
            .count();
        let names = (held.map_or(0, BTreeSet::len) + added).saturating_sub(removed);
        self.limits.admit_names(&req.type_url, names)
    }

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
                let (error, truncated) = kept_message(&err.message, self.limits.nack_message_bytes);
                state.status.nack = Some((
                    state.status.sent_version.clone().unwrap_or_default(),
                    error.clone(),
                ));
                self.events.push(Event::Nack {
                    type_url: url.to_owned(),
                    error,
                    truncated,
                });
            } else {
                for (name, _) in std::mem::take(&mut state.last) {
                    state.rejected.remove(&name);
                }
                state.status.acked_version = state.status.sent_version.clone();
                state.status.acked_at = Some(self.clock.now());
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
        state
            .status
            .record_sent(&version, &nonce, changed.len(), self.clock.now());
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
