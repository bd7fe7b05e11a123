//! Push status: one clock from a user's change to the proxies' ACKs, by stage, for the
//! `sextant_push_stage_seconds` histograms and `/debug/push_status`.
//!
//! A published version goes through these stages, each timed from the end of the one before:
//! - `debounce`: the burst's first change (a notify or watch event) until the debounce let it
//!   through;
//! - `read`: reading what changed and indexing it, until the snapshot;
//! - `publish`: the snapshot until the generator published it (held objects laid over it);
//! - `send`: publishing until a proxy's response of a type was queued on its stream;
//! - `ack`: that response (the last of the type in this version) until the proxy ACKed it;
//! - `total`: the first change until that ACK.
//!
//! Every send and ACK of every proxy passes here, thousands per change, so an event takes two
//! short locks (the proxy's shard, then the versions) and allocates nothing but a proxy's first
//! entry. What is kept is bounded whatever the number of proxies: the last [`VERSIONS`]
//! versions, each with counts, log-bucketed durations per type (for p50, p99 and max) and its
//! [`NAMED`] slowest proxies; and one small entry per proxy for the version it is on.
//!
//! A proxy's first responses on a stream are its connection, not a push: they are counted
//! (`connected`) but not timed, as their delay from the version's publishing says nothing
//! about the push. Sends are attributed to the version published when they were queued: a
//! stream still sending an older version's resources when a newer one is published is counted
//! in the newer one (and gets the newer one right after).

mod quantiles;
mod view;

use std::{
    collections::{HashMap, VecDeque},
    hash::BuildHasher,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, histogram::Histogram},
};
use sextant_resources::type_url;

use quantiles::Quantiles;

/// Versions kept for `/debug/push_status`.
pub const VERSIONS: usize = 8;
/// Proxies named per version: the slowest to ACK, those still pending, those that NACKed.
pub const NAMED: usize = 5;
/// Proxies followed at most. Entries go when a stream ends; past this (streams ending without
/// being told), entries of versions no longer kept are dropped first.
pub const MAX_PROXIES: usize = 100_000;
/// Proxy entries are split over this many locks, so streams rarely wait for each other.
const SHARDS: usize = 16;

/// The types followed: those Sextant serves, in push order, then on-demand virtual hosts.
const TYPES: [&str; 6] = [
    type_url::SECRET,
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
    "type.googleapis.com/envoy.config.route.v3.VirtualHost",
];
const CLUSTERS: usize = 1;
const ENDPOINTS: usize = 2;
const LISTENERS: usize = 3;
const ROUTES: usize = 4;

fn type_index(url: &str) -> Option<usize> {
    TYPES.iter().position(|t| *t == url)
}

/// Labels of `sextant_push_stage_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// `debounce`, `read`, `publish`, `send`, `ack` or `total`.
    pub stage: String,
    /// The xDS type for `send`, `ack` and `total`; empty for the stages before a type.
    pub type_url: String,
}

/// Buckets of `sextant_push_stage_seconds`: from 100 µs (a cached proxy's send) to 10 s (a
/// large directory's read).
pub fn stage_buckets() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ])
}

/// The histograms of `sextant_push_stage_seconds`, taken from the family once so that an
/// event neither allocates labels nor looks them up.
struct Stages {
    debounce: Histogram,
    read: Histogram,
    publish: Histogram,
    send: [Histogram; TYPES.len()],
    ack: [Histogram; TYPES.len()],
    total: [Histogram; TYPES.len()],
}

impl Stages {
    fn new(family: &Family<StageLabels, Histogram, fn() -> Histogram>) -> Stages {
        let get = |stage: &str, type_url: &str| {
            family.get_or_create_owned(&StageLabels {
                stage: stage.to_owned(),
                type_url: type_url.to_owned(),
            })
        };
        Stages {
            debounce: get("debounce", ""),
            read: get("read", ""),
            publish: get("publish", ""),
            send: TYPES.map(|t| get("send", t)),
            ack: TYPES.map(|t| get("ack", t)),
            total: TYPES.map(|t| get("total", t)),
        }
    }
}

/// When the source's stages of a version ended, as `sextant_source::Timing` gives them (std
/// instants).
#[derive(Clone, Copy, Debug)]
pub struct SourceTiming {
    /// The burst's first change.
    pub first_change: Instant,
    /// The debounce let the burst through.
    pub settled: Instant,
    /// The index published the snapshot.
    pub snapshot: Instant,
}

impl SourceTiming {
    /// First change to settled.
    pub fn debounce(&self) -> Duration {
        self.settled.saturating_duration_since(self.first_change)
    }

    /// Settled to snapshot.
    pub fn read(&self) -> Duration {
        self.snapshot.saturating_duration_since(self.settled)
    }

    /// Snapshot to `published`.
    pub fn publish(&self, published: Instant) -> Duration {
        published.saturating_duration_since(self.snapshot)
    }
}

impl From<sextant_source::Timing> for SourceTiming {
    fn from(t: sextant_source::Timing) -> Self {
        SourceTiming {
            first_change: t.first_change.into_std(),
            settled: t.settled.into_std(),
            snapshot: t.snapshot.into_std(),
        }
    }
}

/// The push status of the last versions and the stage histograms they feed.
pub struct PushStatus {
    stages: Stages,
    versions: Mutex<VecDeque<Box<Version>>>,
    proxies: [Mutex<HashMap<Arc<str>, ProxyPush>>; SHARDS],
    hasher: std::collections::hash_map::RandomState,
}

/// What happened to one version.
#[derive(Clone)]
struct Version {
    version: u64,
    published: Instant,
    published_at: SystemTime,
    /// The source's stages; `None` for a version published without a source change (an
    /// object held back after a NACK, the first publish).
    source: Option<SourceTiming>,
    /// Proxies whose first responses on their stream were of this version.
    connected: u32,
    /// Proxies pushed this version: sent something, and what became of it.
    sent: u32,
    acked: u32,
    nacked: u32,
    /// Moved on to a newer version before ACKing this one.
    superseded: u32,
    /// Their stream ended before they ACKed.
    disconnected: u32,
    types: [TypeRecord; TYPES.len()],
    /// The slowest proxies to ACK everything, slowest first.
    slowest: Vec<Slow>,
    /// The first proxies that NACKed.
    nacked_by: Vec<Arc<str>>,
}

impl Version {
    fn new(version: u64, source: Option<SourceTiming>) -> Box<Version> {
        Box::new(Version {
            version,
            published: Instant::now(),
            published_at: SystemTime::now(),
            source,
            connected: 0,
            sent: 0,
            acked: 0,
            nacked: 0,
            superseded: 0,
            disconnected: 0,
            types: Default::default(),
            slowest: Vec::with_capacity(NAMED + 1),
            nacked_by: Vec::with_capacity(NAMED),
        })
    }

    /// Where the clock starts: the first change, or the publishing without one.
    fn first_change(&self) -> Instant {
        self.source.map_or(self.published, |s| s.first_change)
    }

    /// Puts `slow` among the slowest if it is (replacing the proxy's earlier entry).
    fn rank(&mut self, slow: Slow) {
        self.slowest.retain(|s| s.proxy != slow.proxy);
        let at = self.slowest.partition_point(|s| s.total >= slow.total);
        if at < NAMED {
            self.slowest.insert(at, slow);
            self.slowest.truncate(NAMED);
        }
    }
}

/// One type's sends and ACKs in one version.
#[derive(Clone, Default)]
struct TypeRecord {
    sent: u32,
    acked: u32,
    nacked: u32,
    send: Quantiles,
    ack: Quantiles,
    total: Quantiles,
}

/// A proxy that ACKed everything of a version, with its stages.
#[derive(Clone)]
struct Slow {
    proxy: Arc<str>,
    /// Publishing until its first response was queued.
    send: Duration,
    /// That response until its last ACK.
    ack: Duration,
    /// The first change until its last ACK.
    total: Duration,
}

/// One proxy on the version it was last sent.
struct ProxyPush {
    id: Arc<str>,
    version: u64,
    /// Whether this version is timed for it (not its connection, nor a version no longer kept).
    timed: bool,
    /// The version's clock, copied so that ACKs need not look it up.
    published: Instant,
    first_change: Instant,
    first_sent: Option<Instant>,
    types: [TypeState; TYPES.len()],
    /// Types sent and not yet ACKed or NACKed, a bit each.
    outstanding: u8,
    /// Types whose ACK this version's record has counted, a bit each (a type sent twice in
    /// one version, as endpoints after clusters, is ACKed twice but counted once).
    counted: u8,
    nacked: bool,
    /// Every type sent was ACKed (and counted so).
    complete: bool,
    /// Per type, the snapshot versions of its last response and of the last one ACKed; kept
    /// across versions (a type unchanged by a version is not sent again).
    snapshots: [SnapshotVersions; TYPES.len()],
}

/// The snapshot versions of what a proxy was last sent of a type and last ACKed of it, for
/// `sextant proxy-status`: the version a proxy holds, where the type's own version is a hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotVersions {
    /// The version published when its last response of the type was queued.
    pub sent: Option<u64>,
    /// The version of the last response it ACKed.
    pub acked: Option<u64>,
}

#[derive(Clone, Copy, Default)]
struct TypeState {
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
}

impl ProxyPush {
    fn new(id: &str, version: u64, now: Instant) -> ProxyPush {
        ProxyPush {
            id: Arc::from(id),
            version,
            timed: false,
            published: now,
            first_change: now,
            first_sent: None,
            types: Default::default(),
            outstanding: 0,
            counted: 0,
            nacked: false,
            complete: false,
            snapshots: Default::default(),
        }
    }

    /// On `version` from now, untimed, nothing sent yet (its id kept, not allocated again).
    fn reset(&mut self, version: u64, now: Instant) {
        self.version = version;
        self.timed = false;
        self.published = now;
        self.first_change = now;
        self.first_sent = None;
        self.types = Default::default();
        self.outstanding = 0;
        self.counted = 0;
        self.nacked = false;
        self.complete = false;
    }

    /// Whether it still owes the version an answer.
    fn pending(&self) -> bool {
        self.timed && self.outstanding != 0 && !self.nacked
    }

    /// A send after everything of the version was ACKed that still belongs to its push: the
    /// endpoints Envoy asks for while warming the clusters sent, the routes of the listeners.
    fn follows_up(&self, i: usize) -> bool {
        let sent = |t: usize| self.types[t].first_sent.is_some();
        self.types[i].first_sent.is_none()
            && ((i == ENDPOINTS && sent(CLUSTERS)) || (i == ROUTES && sent(LISTENERS)))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PushStatus {
    /// Push status feeding the histograms of `family` (`sextant_push_stage_seconds`).
    pub fn new(family: &Family<StageLabels, Histogram, fn() -> Histogram>) -> PushStatus {
        PushStatus {
            stages: Stages::new(family),
            versions: Mutex::new(VecDeque::with_capacity(VERSIONS + 1)),
            proxies: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            hasher: Default::default(),
        }
    }

    fn shard(&self, proxy: &str) -> MutexGuard<'_, HashMap<Arc<str>, ProxyPush>> {
        lock(&self.proxies[self.hasher.hash_one(proxy) as usize % SHARDS])
    }

    /// Records that `version` is being published now, with the source's stages when a source
    /// change made it. Call before the streams can hear of it, so that every send finds it.
    pub fn published(&self, version: u64, source: Option<SourceTiming>) {
        let record = Version::new(version, source);
        let published = record.published;
        {
            let mut versions = lock(&self.versions);
            // Nothing new (a re-read that found what was there).
            if versions.iter().any(|v| v.version >= version) {
                return;
            }
            versions.push_back(record);
            while versions.len() > VERSIONS {
                versions.pop_front();
            }
        }
        if let Some(s) = source {
            let stages = &self.stages;
            stages.debounce.observe(secs(s.debounce()));
            stages.read.observe(secs(s.read()));
            stages.publish.observe(secs(s.publish(published)));
        }
    }

    /// Records a response of `type_url` queued for `proxy` while `version` is published.
    pub fn sent(&self, proxy: &str, type_url: &str, version: u64) {
        let Some(i) = type_index(type_url) else {
            return;
        };
        let now = Instant::now();
        let mut shard = self.shard(proxy);
        if !shard.contains_key(proxy) {
            if shard.len() >= MAX_PROXIES / SHARDS {
                self.prune(&mut shard);
            }
            let mut entry = ProxyPush::new(proxy, version, now);
            entry.snapshots[i].sent = Some(version);
            shard.insert(entry.id.clone(), entry);
            // Its connection: counted, not timed.
            self.record(version, |v| v.connected += 1);
            return;
        }
        let p = shard.get_mut(proxy).expect("present: checked above");
        p.snapshots[i].sent = Some(version);
        if p.version != version {
            self.move_on(p, version, now);
        }
        if !p.timed {
            return;
        }
        if p.complete {
            if !p.follows_up(i) {
                // Not part of this version's push (a wake without a new version, a secret
                // renewed): the proxy stays counted as having ACKed it.
                return;
            }
            p.complete = false;
            self.record(version, |v| v.acked = v.acked.saturating_sub(1));
        }
        p.types[i].last_sent = Some(now);
        p.outstanding |= 1 << i;
        if p.types[i].first_sent.is_some() {
            return;
        }
        p.types[i].first_sent = Some(now);
        let first = p.first_sent.is_none();
        p.first_sent.get_or_insert(now);
        let send = now.saturating_duration_since(p.published);
        self.stages.send[i].observe(secs(send));
        self.record(version, |v| {
            v.sent += u32::from(first);
            v.types[i].sent += 1;
            v.types[i].send.record(send);
        });
    }

    /// Updates the record of `version`, if it is kept.
    fn record(&self, version: u64, update: impl FnOnce(&mut Version)) {
        if let Some(v) = lock(&self.versions)
            .iter_mut()
            .find(|v| v.version == version)
        {
            update(v);
        }
    }

    /// Moves `p` to `version`: what it still owed the one before is counted superseded.
    fn move_on(&self, p: &mut ProxyPush, version: u64, now: Instant) {
        let mut versions = lock(&self.versions);
        if p.pending()
            && let Some(v) = versions.iter_mut().find(|v| v.version == p.version)
        {
            v.superseded += 1;
        }
        let record = match versions.iter().find(|v| v.version == version) {
            Some(v) => Some((v.published, v.first_change())),
            // Published without `published` (an object held back after a NACK): kept from
            // its first send on, when it is the newest.
            None if versions.back().is_none_or(|v| v.version < version) => {
                versions.push_back(Version::new(version, None));
                if versions.len() > VERSIONS {
                    versions.pop_front();
                }
                Some((now, now))
            }
            None => None,
        };
        drop(versions);
        p.reset(version, now);
        if let Some((published, first_change)) = record {
            p.timed = true;
            p.published = published;
            p.first_change = first_change;
        }
    }

    /// Records `proxy` ACKing its last response of `type_url`.
    pub fn acked(&self, proxy: &str, type_url: &str) {
        let Some(i) = type_index(type_url) else {
            return;
        };
        let now = Instant::now();
        let mut shard = self.shard(proxy);
        let Some(p) = shard.get_mut(proxy) else {
            return;
        };
        // Before the checks below: a connection's first responses are ACKed untimed.
        p.snapshots[i].acked = p.snapshots[i].sent;
        if p.outstanding & (1 << i) == 0 {
            return;
        }
        p.outstanding &= !(1 << i);
        if !p.timed {
            return;
        }
        let last_sent = p.types[i].last_sent.unwrap_or(now);
        let ack = now.saturating_duration_since(last_sent);
        let total = now.saturating_duration_since(p.first_change);
        self.stages.ack[i].observe(secs(ack));
        self.stages.total[i].observe(secs(total));
        let done = p.outstanding == 0 && !p.nacked;
        p.complete |= done;
        let first_sent = p.first_sent.unwrap_or(now);
        let first_ack = p.counted & (1 << i) == 0;
        p.counted |= 1 << i;
        self.record(p.version, |v| {
            let t = &mut v.types[i];
            if first_ack {
                t.acked += 1;
                t.ack.record(ack);
                t.total.record(total);
            }
            if done {
                v.acked += 1;
                v.rank(Slow {
                    proxy: p.id.clone(),
                    send: first_sent.saturating_duration_since(p.published),
                    ack: now.saturating_duration_since(first_sent),
                    total,
                });
            }
        });
    }

    /// Records `proxy` rejecting its last response of `type_url`.
    pub fn nacked(&self, proxy: &str, type_url: &str) {
        let Some(i) = type_index(type_url) else {
            return;
        };
        let mut shard = self.shard(proxy);
        let Some(p) = shard.get_mut(proxy) else {
            return;
        };
        if p.outstanding & (1 << i) == 0 {
            return;
        }
        p.outstanding &= !(1 << i);
        let first = p.timed && !p.nacked;
        p.nacked = true;
        if !p.timed {
            return;
        }
        self.record(p.version, |v| {
            v.types[i].nacked += 1;
            if first {
                v.nacked += 1;
                if v.nacked_by.len() < NAMED {
                    v.nacked_by.push(p.id.clone());
                }
            }
        });
    }

    /// Per type URL (of the types followed, those sent at least once), the snapshot versions
    /// `proxy` was last sent and last ACKed; empty for a proxy not followed.
    pub fn snapshot_versions(&self, proxy: &str) -> Vec<(&'static str, SnapshotVersions)> {
        let shard = self.shard(proxy);
        let Some(p) = shard.get(proxy) else {
            return Vec::new();
        };
        TYPES
            .iter()
            .zip(p.snapshots)
            .filter(|(_, v)| v.sent.is_some())
            .map(|(t, v)| (*t, v))
            .collect()
    }

    /// Forgets `proxy`, whose stream ended; what it still owed its version is counted
    /// disconnected.
    pub fn disconnected(&self, proxy: &str) {
        let Some(p) = self.shard(proxy).remove(proxy) else {
            return;
        };
        if p.pending() {
            self.record(p.version, |v| v.disconnected += 1);
        }
    }

    /// Makes room in a full shard: entries of versions no longer kept first (their streams
    /// ended unseen, or have had nothing new since), else every entry.
    fn prune(&self, shard: &mut HashMap<Arc<str>, ProxyPush>) {
        let oldest = lock(&self.versions).front().map_or(0, |v| v.version);
        shard.retain(|_, p| p.version >= oldest);
        if shard.len() >= MAX_PROXIES / SHARDS {
            shard.clear();
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests;
