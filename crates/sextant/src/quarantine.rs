//! NACK isolation: when a proxy rejects a configuration, the VirtualService or DestinationRule
//! that caused it is held at its last accepted content (or left out, if it never was
//! accepted) while every other object's changes keep flowing.
//!
//! The published snapshot is the source's snapshot with the held objects laid over it. On a
//! NACK of version `Vn` by a proxy whose last ACK of that type was `Va`, the suspects are the
//! objects that changed after `Va` up to `Vn` and can contribute to the rejected type
//! (VirtualServices to routes and listeners, DestinationRules to clusters and listeners) and
//! are visible to the proxy; the newest whose content holds what Envoy's error quotes (the
//! regex at fault, say), else the newest, is held and the snapshot republished. If the proxy rejects that too, the next
//! newest is held, and so on: the culprit is narrowed by recompiling without candidates. A
//! held object is released when it changes again (or is deleted). Versions published here
//! increase with every source snapshot and every republish, so compiled resources are never
//! mistaken for another version's.
//!
//! Two rules keep a proxy from using this against others. A proxy that never ACKed the type
//! has no accepted version to go back to, so its NACK holds nothing (as with istiod). And a
//! proxy's NACK only holds objects of its own namespace (the secure port checks that the
//! node's namespace is its identity's): the team that owns an object holds it back when its
//! own proxies reject it, while proxies of other namespaces keep rejecting (and get no change
//! of that type) until then, as with istiod. One workload can thus never hold back another
//! team's objects.
//!
//! The content served for a held object is looked up in a per-object history of what was
//! published, not in recent snapshots, so it is found however many unrelated snapshots were
//! published since the proxy's ACK. If it cannot be found (the object changed more often than
//! the history keeps), nothing is held; an object is left out only if it did not exist at the
//! accepted version.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use sextant_index::Changes;
use sextant_model::{
    DestinationRule, Gateway, Kind, ObjectRef, Proxy, ProxyKind, Snapshot, VirtualService,
};
use sextant_resources::type_url;
use sextant_xds::protocol::Event;

/// Published contents kept per VirtualService, DestinationRule or Gateway, to find its content at
/// the version a proxy last ACKed. Memory: at most this many contents per live object (each an
/// `Arc` shared with the snapshots while current), plus the deleted objects below.
const HISTORY_PER_OBJECT: usize = 8;

/// Deleted objects whose history is kept beyond the live ones; past this, the deleted ones'
/// histories are forgotten (and an object unseen since is of unknown content before then).
const DELETED_HISTORIES: usize = 10_000;

/// Changes (of VirtualServices and DestinationRules) kept to find NACK suspects.
const CHANGE_LOG: usize = 64;

/// Held objects by default: far more than one mesh's teams break at once.
pub const DEFAULT_MAX_HELD_OBJECTS: usize = 100;

/// Proxies whose sent and ACKed versions are tracked; past this the one tracked longest is
/// forgotten (W-L has 5,000 proxies).
const TRACKED_PROXIES: usize = 50_000;

/// What a held object is served as.
#[derive(Clone, Debug)]
pub enum Content {
    /// A VirtualService's last accepted content.
    VirtualService(Arc<VirtualService>),
    /// A DestinationRule's last accepted content.
    DestinationRule(Arc<DestinationRule>),
    /// A Gateway's last accepted content.
    Gateway(Arc<Gateway>),
}

/// An object held back because a proxy rejected it.
#[derive(Clone, Debug)]
pub struct Held {
    /// The type the proxy rejected.
    pub type_url: String,
    /// Envoy's error text.
    pub error: String,
    /// The proxy that rejected it.
    pub proxy: String,
    /// The version the proxy rejected.
    pub rejected_version: u64,
    /// The version the served content comes from (`None`: the object is left out, it was
    /// never accepted).
    pub served_version: Option<u64>,
    /// What is served instead of the object's current content.
    pub content: Option<Content>,
}

impl Held {
    /// What the object's status says: who rejected what, Envoy's error, what is served.
    pub fn status_message(&self) -> String {
        let kind = self.type_url.rsplit('.').next().unwrap_or(&self.type_url);
        let served = match self.served_version {
            Some(_) => "its last accepted version is served instead until it changes",
            None => "it is left out (it was never accepted) until it changes",
        };
        format!(
            "proxy {} rejected the {kind} built with it: {}; {served}",
            self.proxy, self.error
        )
    }
}

/// What an object was published as, from a version on (`None`: absent).
type Entry = (u64, Option<Content>);

/// What one object was published as, oldest first.
#[derive(Default)]
struct History {
    /// Versions from this one on are all known: before the first entry, the object was absent.
    known_from: u64,
    entries: VecDeque<Entry>,
    /// The last version whose snapshot had the object.
    seen: u64,
}

/// An object's content at a version.
enum Past {
    /// It did not exist.
    Absent,
    /// It was published with this content.
    Was(Content),
    /// No longer known.
    Unknown,
}

/// What one proxy was sent and ACKed, by type (published versions).
#[derive(Default)]
struct Track {
    /// The version of the last resources computed for the proxy.
    resources: u64,
    sent: HashMap<String, u64>,
    acked: HashMap<String, u64>,
}

/// What a NACK or a source snapshot asks the generator to publish.
pub type Publish = (Arc<Snapshot>, Changes);

/// The held objects and what is needed to find them.
pub struct Quarantine {
    max_held: usize,
    /// The source's newest snapshot.
    source: Arc<Snapshot>,
    /// The newest published version.
    version: u64,
    held: BTreeMap<ObjectRef, Held>,
    /// What each VirtualService and DestinationRule was published as.
    history: HashMap<ObjectRef, History>,
    /// Objects without a history may have existed before this version.
    forgotten: u64,
    /// Configuration objects changed by each published version, oldest first.
    log: VecDeque<(u64, Vec<ObjectRef>)>,
    proxies: HashMap<String, Track>,
    /// Tracked proxies, in the order they were first seen.
    order: VecDeque<String>,
    /// NACKs of versions older than this are from before the last hold and are ignored.
    last_hold: u64,
}

/// What `observe` learned: a NACK it could not act on (no suspect, or the bound).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Holding another object would pass the bound.
    TooManyHeld,
}

impl Quarantine {
    /// Holds at most `max_held` objects at once.
    pub fn new(max_held: usize) -> Self {
        Quarantine {
            max_held,
            source: Arc::new(Snapshot::default()),
            version: 0,
            held: BTreeMap::new(),
            history: HashMap::new(),
            forgotten: 0,
            log: VecDeque::new(),
            proxies: HashMap::new(),
            order: VecDeque::new(),
            last_hold: 0,
        }
    }

    /// The held objects.
    pub fn held(&self) -> &BTreeMap<ObjectRef, Held> {
        &self.held
    }

    /// What the status of each held object says.
    pub fn status_messages(&self) -> BTreeMap<ObjectRef, String> {
        self.held
            .iter()
            .map(|(id, h)| (id.clone(), h.status_message()))
            .collect()
    }

    /// The snapshot to publish for the source's `snapshot`: held objects that changed again
    /// are released, the rest laid over it.
    pub fn publish(&mut self, snapshot: Arc<Snapshot>, changes: Changes) -> Publish {
        self.held.retain(|id, _| !changes.configs.contains(id));
        self.source = snapshot;
        self.held.retain(|id, _| present(&self.source, id));
        let configs = changes.configs.iter().cloned().collect();
        let mut changes = changes;
        if !self.held.is_empty() {
            // Held contents replace some of what the index saw: which hosts they touch is
            // not known from here.
            changes
                .virtual_service_hosts
                .insert((String::new(), String::new()));
        }
        (self.overlay(configs), changes)
    }

    /// Notes the version of the resources computed for `proxy`.
    pub fn resources(&mut self, proxy: &Proxy, version: u64) {
        if !self.proxies.contains_key(&proxy.id) {
            while self.proxies.len() >= TRACKED_PROXIES {
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                self.proxies.remove(&oldest);
            }
            self.order.push_back(proxy.id.clone());
        }
        self.proxies.entry(proxy.id.clone()).or_default().resources = version;
    }

    /// Follows what `proxy` was sent and ACKed; on a NACK it can blame, holds the suspect
    /// and returns the snapshot to publish.
    pub fn observe(&mut self, proxy: &Proxy, event: &Event) -> Result<Option<Publish>, Refusal> {
        let Some(track) = self.proxies.get_mut(&proxy.id) else {
            return Ok(None);
        };
        match event {
            Event::Sent { type_url, .. } => {
                track.sent.insert(type_url.clone(), track.resources);
            }
            Event::Ack { type_url } => {
                if let Some(v) = track.sent.get(type_url).copied() {
                    track.acked.insert(type_url.clone(), v);
                }
            }
            Event::Nack {
                type_url, error, ..
            } => {
                let Some(rejected) = track.sent.get(type_url).copied() else {
                    return Ok(None);
                };
                let accepted = track.acked.get(type_url).copied();
                return self.blame(proxy, type_url, error, rejected, accepted);
            }
            Event::Refused { .. } | Event::Stale { .. } => {}
        }
        Ok(None)
    }

    fn blame(
        &mut self,
        proxy: &Proxy,
        type_url: &str,
        error: &str,
        rejected: u64,
        accepted: Option<u64>,
    ) -> Result<Option<Publish>, Refusal> {
        if rejected < self.last_hold {
            return Ok(None);
        }
        let Some(accepted) = accepted else {
            tracing::debug!(
                proxy = %proxy.id, %type_url,
                "nothing held back: the proxy never accepted this type, so there is nothing to \
                 go back to; it gets no change of this type until the object is fixed"
            );
            return Ok(None);
        };
        let Some(suspect) = self.suspect(proxy, type_url, error, rejected, accepted) else {
            return Ok(None);
        };
        if self.held.len() >= self.max_held {
            return Err(Refusal::TooManyHeld);
        }
        let served = match self.past(&suspect, accepted) {
            Past::Was(content) => Some((accepted, content)),
            Past::Absent => None,
            Past::Unknown => {
                tracing::warn!(
                    object = %suspect, proxy = %proxy.id, %type_url, %error, accepted,
                    "nothing held back: the content the proxy accepted is no longer known (the \
                     object changed too often since)"
                );
                return Ok(None);
            }
        };
        tracing::warn!(
            object = %suspect, proxy = %proxy.id, %type_url, %error,
            served = ?served.as_ref().map(|(v, _)| v),
            "a proxy rejected a configuration: holding the object that changed last"
        );
        self.held.insert(
            suspect.clone(),
            Held {
                type_url: type_url.to_owned(),
                error: error.to_owned(),
                proxy: proxy.id.clone(),
                rejected_version: rejected,
                served_version: served.as_ref().map(|(v, _)| *v),
                content: served.map(|(_, c)| c),
            },
        );
        let mut changes = Changes::default();
        changes.configs.insert(suspect.clone());
        changes
            .virtual_service_hosts
            .insert((String::new(), String::new()));
        let snapshot = self.overlay(vec![suspect]);
        self.last_hold = snapshot.version;
        Ok(Some((snapshot, changes)))
    }

    /// The object to blame: among those of `proxy`'s own namespace changed after `accepted` up
    /// to `rejected` (and not back to what it was at `accepted`) that can contribute to
    /// `type_url` for `proxy` and are not held yet, the newest whose content
    /// holds something Envoy's `error` quotes (its messages quote the regex or name at
    /// fault), else the newest.
    fn suspect(
        &self,
        proxy: &Proxy,
        type_url: &str,
        error: &str,
        rejected: u64,
        accepted: u64,
    ) -> Option<ObjectRef> {
        let kinds: &[Kind] = match type_url {
            type_url::ROUTE => &[Kind::VirtualService, Kind::Gateway],
            type_url::CLUSTER => &[Kind::DestinationRule],
            type_url::LISTENER => &[Kind::VirtualService, Kind::DestinationRule, Kind::Gateway],
            _ => &[],
        };
        let mut candidates: Vec<&ObjectRef> = Vec::new();
        for (_, ids) in self
            .log
            .iter()
            .rev()
            .filter(|(v, _)| *v > accepted && *v <= rejected)
        {
            for id in ids.iter().rev() {
                // A gateway serves the Gateways of every namespace that select it: it holds
                // those back too (each team's Gateway on its own).
                if kinds.contains(&id.kind)
                    && (id.namespace == proxy.namespace || id.kind == Kind::Gateway)
                    && !self.held.contains_key(id)
                    && !candidates.contains(&id)
                    && contributes(&self.source, proxy, id)
                    && !self.unchanged_since(id, accepted)
                {
                    candidates.push(id);
                }
            }
        }
        let quoted: Vec<&str> = error
            .split('\'')
            .skip(1)
            .step_by(2)
            .filter(|q| q.len() >= 3)
            .collect();
        candidates
            .iter()
            .find(|id| {
                let content = describe(&self.source, id);
                quoted
                    .iter()
                    .any(|q| content.contains(q) || content.contains(&q.escape_debug().to_string()))
            })
            .or(candidates.first())
            .map(|id| (*id).clone())
    }

    /// `id`'s published content at `version`.
    fn past(&self, id: &ObjectRef, version: u64) -> Past {
        let Some(h) = self.history.get(id) else {
            return if version >= self.forgotten {
                Past::Absent
            } else {
                Past::Unknown
            };
        };
        match h.entries.iter().rev().find(|(v, _)| *v <= version) {
            Some((_, Some(content))) => Past::Was(content.clone()),
            Some((_, None)) => Past::Absent,
            None if version >= h.known_from => Past::Absent,
            None => Past::Unknown,
        }
    }

    /// Whether `id`'s content at `version` is its current content in the source (it changed
    /// and changed back: holding it would change nothing).
    fn unchanged_since(&self, id: &ObjectRef, version: u64) -> bool {
        let Past::Was(old) = self.past(id, version) else {
            return false;
        };
        match old {
            Content::VirtualService(v) => self
                .source
                .virtual_services
                .iter()
                .any(|c| c.id == *id && (Arc::ptr_eq(c, &v) || **c == *v)),
            Content::DestinationRule(d) => self
                .source
                .destination_rules
                .iter()
                .any(|c| c.id == *id && (Arc::ptr_eq(c, &d) || **c == *d)),
            Content::Gateway(g) => self
                .source
                .gateways
                .iter()
                .any(|c| c.id == *id && (Arc::ptr_eq(c, &g) || **c == *g)),
        }
    }

    /// Notes what each VirtualService and DestinationRule is published as in `snapshot`.
    fn record(&mut self, snapshot: &Snapshot) {
        let version = snapshot.version;
        let contents = snapshot
            .virtual_services
            .iter()
            .map(|v| (&v.id, Content::VirtualService(v.clone())))
            .chain(
                snapshot
                    .destination_rules
                    .iter()
                    .map(|d| (&d.id, Content::DestinationRule(d.clone()))),
            )
            .chain(
                snapshot
                    .gateways
                    .iter()
                    .map(|g| (&g.id, Content::Gateway(g.clone()))),
            );
        for (id, content) in contents {
            if !self.history.contains_key(id) {
                let known_from = self.forgotten;
                let new = History {
                    known_from,
                    ..History::default()
                };
                self.history.insert(id.clone(), new);
            }
            let Some(h) = self.history.get_mut(id) else {
                continue;
            };
            h.seen = version;
            let current = matches!(h.entries.back(), Some((_, Some(c))) if same(c, &content));
            if !current {
                push(h, (version, Some(content)));
            }
        }
        let mut deleted = 0;
        for h in self.history.values_mut() {
            if h.seen != version {
                if matches!(h.entries.back(), Some((_, Some(_)))) {
                    push(h, (version, None));
                }
                deleted += 1;
            }
        }
        if deleted > DELETED_HISTORIES {
            self.history.retain(|_, h| h.seen == version);
            self.forgotten = version;
        }
    }

    /// The source's snapshot with the held objects laid over it, as the next version;
    /// `configs` are the objects this version changes.
    fn overlay(&mut self, configs: Vec<ObjectRef>) -> Arc<Snapshot> {
        let version = self.source.version.max(self.version + 1);
        self.version = version;
        let snapshot = if self.held.is_empty() && self.source.version == version {
            self.source.clone()
        } else {
            let mut s = Snapshot::clone(&self.source);
            s.version = version;
            lay_over(&mut s, &self.held);
            Arc::new(s)
        };
        let configs: Vec<ObjectRef> = configs
            .into_iter()
            .filter(|c| {
                matches!(
                    c.kind,
                    Kind::VirtualService | Kind::DestinationRule | Kind::Gateway
                )
            })
            .collect();
        if !configs.is_empty() {
            self.log.push_back((version, configs));
        }
        while self.log.len() > CHANGE_LOG {
            self.log.pop_front();
        }
        self.record(&snapshot);
        snapshot
    }
}

/// Adds `entry` to `h`, forgetting the oldest past the bound.
fn push(h: &mut History, entry: Entry) {
    h.entries.push_back(entry);
    while h.entries.len() > HISTORY_PER_OBJECT {
        h.entries.pop_front();
        h.known_from = h.entries.front().map_or(h.known_from, |(v, _)| *v);
    }
}

/// Whether `a` and `b` are the same content.
fn same(a: &Content, b: &Content) -> bool {
    match (a, b) {
        (Content::VirtualService(a), Content::VirtualService(b)) => Arc::ptr_eq(a, b) || a == b,
        (Content::DestinationRule(a), Content::DestinationRule(b)) => Arc::ptr_eq(a, b) || a == b,
        (Content::Gateway(a), Content::Gateway(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    }
}

/// Whether the source's snapshot has `id`.
fn present(snapshot: &Snapshot, id: &ObjectRef) -> bool {
    match id.kind {
        Kind::VirtualService => snapshot.virtual_services.iter().any(|v| v.id == *id),
        Kind::DestinationRule => snapshot.destination_rules.iter().any(|d| d.id == *id),
        Kind::Gateway => snapshot.gateways.iter().any(|g| g.id == *id),
        _ => false,
    }
}

/// Whether `id` (in the source's `snapshot`) can be part of `proxy`'s configuration: visible
/// in its namespace and, for a VirtualService, bound to the mesh (sidecars) or to gateways.
fn contributes(snapshot: &Snapshot, proxy: &Proxy, id: &ObjectRef) -> bool {
    let ns = proxy.namespace.as_str();
    match id.kind {
        Kind::VirtualService => snapshot.virtual_services.iter().any(|v| {
            v.id == *id
                && (v.is_delegate()
                    || ((v.id.namespace == ns || v.export_to.allows(ns))
                        && match proxy.kind {
                            ProxyKind::Sidecar => {
                                v.gateways.is_empty() || v.gateways.iter().any(|g| g == "mesh")
                            }
                            ProxyKind::Router => !v.gateways.is_empty(),
                        }))
        }),
        Kind::DestinationRule => snapshot
            .destination_rules
            .iter()
            .any(|d| d.id == *id && (d.id.namespace == ns || d.export_to.allows(ns))),
        Kind::Gateway => {
            proxy.kind == ProxyKind::Router
                && snapshot
                    .gateways
                    .iter()
                    .any(|g| g.id == *id && g.selects(&proxy.labels))
        }
        _ => false,
    }
}

/// `id`'s content in `snapshot`, as text to look for what Envoy's error quotes.
fn describe(snapshot: &Snapshot, id: &ObjectRef) -> String {
    match id.kind {
        Kind::VirtualService => snapshot
            .virtual_services
            .iter()
            .find(|v| v.id == *id)
            .map(|v| format!("{v:?}")),
        Kind::DestinationRule => snapshot
            .destination_rules
            .iter()
            .find(|d| d.id == *id)
            .map(|d| format!("{d:?}")),
        Kind::Gateway => snapshot
            .gateways
            .iter()
            .find(|g| g.id == *id)
            .map(|g| format!("{g:?}")),
        _ => None,
    }
    .unwrap_or_default()
}

/// Replaces each held object with what is served for it (or removes it).
fn lay_over(s: &mut Snapshot, held: &BTreeMap<ObjectRef, Held>) {
    s.virtual_services = std::mem::take(&mut s.virtual_services)
        .into_iter()
        .filter_map(|v| match held.get(&v.id) {
            None => Some(v),
            Some(h) => match &h.content {
                Some(Content::VirtualService(old)) => Some(old.clone()),
                _ => None,
            },
        })
        .collect();
    s.destination_rules = std::mem::take(&mut s.destination_rules)
        .into_iter()
        .filter_map(|d| match held.get(&d.id) {
            None => Some(d),
            Some(h) => match &h.content {
                Some(Content::DestinationRule(old)) => Some(old.clone()),
                _ => None,
            },
        })
        .collect();
    s.gateways = std::mem::take(&mut s.gateways)
        .into_iter()
        .filter_map(|g| match held.get(&g.id) {
            None => Some(g),
            Some(h) => match &h.content {
                Some(Content::Gateway(old)) => Some(old.clone()),
                _ => None,
            },
        })
        .collect();
    s.index_hosts();
}

#[cfg(test)]
#[path = "quarantine_tests.rs"]
mod tests;
