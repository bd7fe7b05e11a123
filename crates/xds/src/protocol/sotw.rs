//! State-of-the-world ADS: one response carries every subscribed resource of a type, except
//! updates of named types, which carry what changed since the proxy's basis.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, Weak},
};

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use sextant_resources::{Body, Encoded, type_url};

use super::{
    Clock, Event, Limits, Refused, TypeStatus, kept_message,
    resources::{PUSH_ORDER, ResourceSet, all_of, is_wildcard_type, known_type, select},
};

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

/// Subscribed names, shared by every stream that asked for the same list (a scope's proxies
/// all ask for the same load assignments), so a proxy's state stays small.
pub type Names = Arc<BTreeSet<String>>;

/// The pool that makes equal subscriptions one [`Names`]: one per server, shared by its
/// streams (a clone is the same pool). It holds the sets weakly, so a set no stream uses goes.
#[derive(Clone, Default)]
pub struct Interner(Arc<Mutex<HashMap<u64, Weak<BTreeSet<String>>>>>);

impl Interner {
    /// The shared set of `names`.
    pub fn intern(&self, names: &[bytes::Bytes]) -> Names {
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
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
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
pub struct Sotw {
    types: BTreeMap<String, SotwType>,
    nonces: u64,
    names: Interner,
    clock: Arc<dyn Clock>,
    limits: Limits,
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
    /// A new stream's state, its subscriptions kept in `names` (the server's pool) and its
    /// statuses stamped by `clock`.
    pub fn new(names: Interner, clock: Arc<dyn Clock>) -> Sotw {
        Sotw {
            types: BTreeMap::new(),
            nonces: 0,
            names,
            clock,
            limits: Limits::default(),
            events: Vec::new(),
        }
    }

    /// Keeps what the peer sends within `limits`.
    pub fn with_limits(mut self, limits: Limits) -> Sotw {
        self.limits = limits;
        self
    }

    /// Whether `req` stays within the limits: a state-of-the-world request carries its
    /// type's whole subscription.
    pub fn admit(&self, req: &SotwRequest) -> Result<(), Refused> {
        self.limits
            .admit_names(&req.type_url, req.resource_names.len())
    }

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
            Some(self.names.intern(&req.resource_names))
        };
        if let Some(err) = &req.error_detail {
            let (error, truncated) = kept_message(&err.message, self.limits.nack_message_bytes);
            if let Some(v) = state.version.clone() {
                state.nacked = Some(v.clone());
                state.status.nack = Some((v, error.clone()));
            }
            // Envoy may have applied part of what it rejected: what it holds is unknown, so
            // the next update carries every subscribed resource.
            state.basis = None;
            self.events.push(Event::Nack {
                type_url: url.to_owned(),
                error,
                truncated,
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
            state.status.acked_at = Some(self.clock.now());
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
        state
            .status
            .record_sent(&version, &nonce, sent.len(), self.clock.now());
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
