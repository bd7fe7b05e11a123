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
    vhds::VIRTUAL_HOST,
};

/// The on-demand type, which only delta streams serve.
fn on_demand_type(url: &str) -> Option<&'static str> {
    (url == VIRTUAL_HOST).then_some(VIRTUAL_HOST)
}

/// What answers the names asked for on demand.
#[derive(Default)]
struct Answers {
    /// Resource name → the names just asked for that it answers.
    aliases: HashMap<String, Vec<String>>,
    /// Names just asked for that nothing answers.
    unresolved: Vec<String>,
}

/// The virtual hosts that answer the names a stream asked for, each once, in name order;
/// the names just asked for are noted in `answers`.
///
/// Envoy subscribes each route configuration's VHDS by namespace, without naming it to the
/// server (a first request names nothing), and holds that route configuration's updates and
/// listener back until an answer in the namespace comes: each route configuration of the set
/// not yet `announced` gets one without a body, `CONFIG/` (Envoy 1.40 matched no answer named
/// `CONFIG` alone), never every virtual host of the namespace.
fn answer<'a, R: ResourceSet + ?Sized>(
    all: &'a R,
    state: &mut DeltaType,
    answers: &mut Answers,
) -> Vec<&'a Encoded> {
    let Some(hosts) = all.virtual_hosts() else {
        answers.unresolved.extend(state.asked.iter().cloned());
        return Vec::new();
    };
    let configs: BTreeSet<&str> = all
        .lists(type_url::ROUTE)
        .into_iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    state.announced.retain(|c| configs.contains(c.as_str()));
    for config in configs {
        if state.announced.insert(config.to_owned()) && !state.asked.contains(config) {
            answers.unresolved.push(format!("{config}/"));
        }
    }
    let mut wanted: BTreeMap<&str, &Encoded> = BTreeMap::new();
    for name in &state.names {
        // A name without `CONFIG/` (a namespace) resolves to nothing.
        match hosts.resolve(name) {
            Some(e) => {
                wanted.insert(&e.name, e);
                // Hosts under a wildcard the proxy holds would be matched by the wildcard.
                for covered in hosts.covered(&e.name) {
                    wanted.entry(&covered.name).or_insert(covered);
                }
                if state.asked.contains(name) {
                    answers
                        .aliases
                        .entry(e.name.clone())
                        .or_default()
                        .push(name.clone());
                }
            }
            None if state.asked.contains(name) => answers.unresolved.push(name.clone()),
            None => {}
        }
    }
    wanted.into_values().collect()
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
    /// On-demand virtual hosts: the names each of `resources` answers (by index; missing or
    /// empty for the rest), which Envoy reads as the resource's `aliases`.
    pub aliases: Vec<Vec<String>>,
    /// On-demand virtual hosts: names asked for that nothing answers, sent as resources of
    /// that name and alias without a body.
    pub unresolved: Vec<String>,
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
    /// On-demand virtual hosts: names asked for since the last response, each to be answered
    /// (Envoy holds the request that asked until then).
    asked: BTreeSet<String>,
    /// On-demand virtual hosts: the route configurations whose namespace has been answered.
    announced: BTreeSet<String>,
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
        let url = known_type(&req.type_url).or_else(|| on_demand_type(&req.type_url))?;
        let state = self.types.entry(url.to_owned()).or_default();
        let first = !state.started;
        if first {
            state.started = true;
            // Reconnect: the proxy already holds these (for virtual hosts, the names it asked
            // for, not those of what answered them: it is sent what answers them again).
            for (name, version) in &req.initial_resource_versions {
                if url != VIRTUAL_HOST {
                    state
                        .sent
                        .insert(name.clone(), u64::from_str_radix(version, 16).ok());
                }
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
                if url == VIRTUAL_HOST {
                    state.asked.insert(name.clone());
                }
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                state.wildcard = false;
            } else {
                state.names.remove(name);
                state.sent.remove(name);
                state.asked.remove(name);
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
        for url in PUSH_ORDER.into_iter().chain([VIRTUAL_HOST]) {
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
        let mut answers = Answers::default();
        let wanted: Vec<&Encoded> = if url == VIRTUAL_HOST {
            answer(all, state, &mut answers)
        } else if state.wildcard {
            all_of(all, url)
        } else {
            select(all, url, &state.names, &mut placeholders)
        };
        // A virtual host that answers a name just asked for is sent again even if unchanged:
        // Envoy resumes the requests waiting on that name only when an answer names it.
        let changed: Vec<&Encoded> = wanted
            .iter()
            .copied()
            .filter(|e| {
                answers.aliases.contains_key(e.name.as_str())
                    || (state.sent.get(&e.name) != Some(&Some(e.hash))
                        && state.rejected.get(&e.name) != Some(&e.hash))
            })
            .collect();
        let wanted_names: BTreeSet<&str> = wanted.iter().map(|e| e.name.as_str()).collect();
        let removed: Vec<String> = state
            .sent
            .keys()
            .filter(|n| !wanted_names.contains(n.as_str()))
            .cloned()
            .collect();
        if changed.is_empty() && removed.is_empty() && answers.unresolved.is_empty() && !always {
            return None;
        }
        state.asked.clear();
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
        let aliases = if answers.aliases.is_empty() {
            Vec::new()
        } else {
            changed
                .iter()
                .map(|e| answers.aliases.remove(e.name.as_str()).unwrap_or_default())
                .collect()
        };
        let response = DeltaResponse {
            system_version_info: version,
            resources: changed.iter().map(|e| (*e).clone()).collect(),
            type_url: url,
            removed_resources: removed,
            nonce,
            aliases,
            unresolved: answers.unresolved,
        };
        self.events.push(Event::Sent {
            type_url: url.to_owned(),
            resources: response.resources.len()
                + response.removed_resources.len()
                + response.unresolved.len(),
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

    /// What is owed after a response to a request: once a route configuration was sent, the
    /// answer in its VHDS namespace that Envoy waits for (it asks for nothing by name).
    pub fn owed<R: ResourceSet + ?Sized>(&mut self, all: &R) -> Option<DeltaResponse> {
        self.respond(VIRTUAL_HOST, all, false)
    }

    /// Per-type status for `/debug/syncz`.
    pub fn status(&self) -> BTreeMap<String, TypeStatus> {
        self.types
            .iter()
            .map(|(k, v)| (k.clone(), v.status.clone()))
            .collect()
    }
}
