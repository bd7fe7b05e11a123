//! Every cluster the control plane reads, as `/debug/clusterz` and the metrics show it: the
//! config cluster and each remote cluster, with how its watches are doing, and the client a
//! token from that cluster is reviewed with.
//!
//! A cluster is *failing* while any of its watches is (the last error is kept), *syncing*
//! until each of its watches has listed once, and *synced* after. It is *unreachable* while
//! every watch is failing, or its kubeconfig could not be used at all: that is what the grace
//! period of a remote cluster counts (one kind refused, say by RBAC, keeps the others
//! current, so it does not make the cluster's objects stale).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard},
    time::SystemTime,
};

use sextant_model::Kind;
use tokio::{sync::watch, time::Instant};

/// How a cluster's watches are doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not every watch has listed yet.
    Syncing,
    /// Every watch has listed and none is failing.
    Synced,
    /// A watch is failing, or the cluster's kubeconfig cannot be used.
    Failing,
}

impl State {
    /// Every state, for metrics that show one as 1 and the others as 0.
    pub const ALL: [State; 3] = [State::Syncing, State::Synced, State::Failing];

    /// `syncing`, `synced` or `failing`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Syncing => "syncing",
            State::Synced => "synced",
            State::Failing => "failing",
        }
    }
}

/// What became of an unreachable remote cluster's objects after the grace period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stale {
    /// Removed from the index (`--remote-stale-endpoints=remove`).
    Removed,
    /// Still served (`--remote-stale-endpoints=keep`).
    Kept,
}

/// One cluster's state at a moment.
#[derive(Clone, Debug)]
pub struct ClusterStatus {
    /// The cluster id.
    pub cluster: String,
    /// Where it comes from: the config cluster, a file or a Secret and key.
    pub origin: String,
    /// Its API server's URL, once known.
    pub server: Option<String>,
    /// How its watches are doing.
    pub state: State,
    /// The last error (a watch's, or why the kubeconfig cannot be used), while failing.
    pub error: Option<String>,
    /// Since when it has been failing without a break.
    pub failing_since: Option<SystemTime>,
    /// Objects its watches hold now, over every kind.
    pub objects: u64,
    /// Lists done (the first of each watch, then one after each restart).
    pub relists: u64,
    /// Watch errors seen.
    pub errors: u64,
    /// What became of its objects after the grace period, while it stays unreachable.
    pub stale: Option<Stale>,
}

/// A cluster the control plane reads: its watches' health and, for a remote cluster, the
/// client its tokens are reviewed with.
pub struct Cluster {
    id: String,
    origin: String,
    /// Watches it runs: unreachable once this many fail.
    kinds: usize,
    inner: Mutex<Inner>,
    /// Told of every change, for the grace period's supervisor.
    changes: watch::Sender<()>,
}

#[derive(Default)]
struct Inner {
    listed: BTreeSet<Kind>,
    failing: BTreeMap<Kind, String>,
    refused: Option<String>,
    last_error: Option<String>,
    failing_since: Option<SystemTime>,
    unreachable_since: Option<Instant>,
    objects: BTreeMap<Kind, usize>,
    relists: u64,
    errors: u64,
    stale: Option<Stale>,
    client: Option<kube::Client>,
    server: Option<String>,
}

impl Cluster {
    /// Cluster `id`, read from `origin` by `kinds` watches.
    pub fn new(id: &str, origin: impl Into<String>, kinds: usize) -> Arc<Cluster> {
        Arc::new(Cluster {
            id: id.to_owned(),
            origin: origin.into(),
            kinds,
            inner: Mutex::new(Inner::default()),
            changes: watch::Sender::new(()),
        })
    }

    /// A cluster that is not watched (a directory): synced from the start.
    pub fn fixed(id: &str, origin: impl Into<String>) -> Arc<Cluster> {
        Cluster::new(id, origin, 0)
    }

    /// The cluster id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Plain fields, consistent whatever a panicking holder did.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes `inner`, then brings the failing and unreachable times up to date and tells
    /// the supervisor.
    fn update(&self, change: impl FnOnce(&mut Inner)) {
        {
            let mut inner = self.inner();
            change(&mut inner);
            let failing = inner.refused.is_some() || !inner.failing.is_empty();
            if !failing {
                inner.failing_since = None;
            } else if inner.failing_since.is_none() {
                inner.failing_since = Some(SystemTime::now());
            }
            let unreachable =
                inner.refused.is_some() || (self.kinds > 0 && inner.failing.len() >= self.kinds);
            if !unreachable {
                inner.unreachable_since = None;
                inner.stale = None;
            } else if inner.unreachable_since.is_none() {
                inner.unreachable_since = Some(Instant::now());
            }
        }
        self.changes.send_modify(|_| {});
    }

    /// A watch of `kind` starts a list.
    pub fn relisting(&self) {
        self.update(|i| i.relists += 1);
    }

    /// A watch of `kind` has listed `objects`: it is no longer failing.
    pub fn listed(&self, kind: Kind, objects: usize) {
        self.update(|i| {
            i.listed.insert(kind);
            i.failing.remove(&kind);
            i.objects.insert(kind, objects);
        });
    }

    /// The watch of `kind` holds `objects` now.
    pub fn holds(&self, kind: Kind, objects: usize) {
        let mut inner = self.inner();
        inner.objects.insert(kind, objects);
    }

    /// The watch of `kind` failed with `error`; it retries.
    pub fn failed(&self, kind: Kind, error: String) {
        self.update(|i| {
            i.errors += 1;
            i.last_error = Some(error.clone());
            i.failing.insert(kind, error);
        });
    }

    /// The cluster cannot be read at all (its kubeconfig, or a bound): failing, unreachable.
    pub fn refuse(&self, error: String) {
        self.update(|i| {
            i.last_error = Some(error.clone());
            i.refused = Some(error);
        });
    }

    /// What became of its objects after the grace period: once removed it holds none (its
    /// watches count again from their next list).
    pub fn set_stale(&self, stale: Stale) {
        let mut inner = self.inner();
        inner.stale = Some(stale);
        if stale == Stale::Removed {
            inner.objects.clear();
        }
    }

    /// What became of its objects after the grace period, while it stays unreachable.
    pub fn stale(&self) -> Option<Stale> {
        self.inner().stale
    }

    /// Its API server is `url` (for errors and `/debug/clusterz`).
    pub fn set_server(&self, url: impl Into<String>) {
        self.inner().server = Some(url.into());
    }

    /// Its API server's URL, once known.
    pub fn server(&self) -> Option<String> {
        self.inner().server.clone()
    }

    /// Since when every watch has been failing (or the cluster refused), if so now.
    pub fn unreachable_since(&self) -> Option<Instant> {
        self.inner().unreachable_since
    }

    /// Told of each change of state.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changes.subscribe()
    }

    /// Reviews this cluster's tokens with `client` from now on.
    pub fn set_client(&self, client: kube::Client) {
        self.inner().client = Some(client);
    }

    /// The client its tokens are reviewed with, once connected.
    pub fn client(&self) -> Option<kube::Client> {
        self.inner().client.clone()
    }

    /// The state now.
    pub fn status(&self) -> ClusterStatus {
        let inner = self.inner();
        let state = if inner.refused.is_some() || !inner.failing.is_empty() {
            State::Failing
        } else if inner.listed.len() < self.kinds {
            State::Syncing
        } else {
            State::Synced
        };
        let error = match state {
            State::Failing => inner.refused.clone().or_else(|| inner.last_error.clone()),
            _ => None,
        };
        ClusterStatus {
            cluster: self.id.clone(),
            origin: self.origin.clone(),
            server: inner.server.clone(),
            state,
            error,
            failing_since: inner.failing_since,
            objects: inner.objects.values().map(|&n| n as u64).sum(),
            relists: inner.relists,
            errors: inner.errors,
            stale: inner.stale,
        }
    }
}

/// Examples of refused registrations kept, whatever their number.
pub const REFUSED_EXAMPLES: usize = 8;

/// Remote cluster registrations not watched: past `--max-remote-clusters`, with a kubeconfig
/// that cannot be read, or naming an id registered already. Only their number and the first
/// [`REFUSED_EXAMPLES`] are kept: a Secret with thousands of keys costs no more than one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    /// Registrations refused now.
    pub count: usize,
    /// The first few of them.
    pub examples: Vec<Refusal>,
}

/// One refused registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The cluster id it names.
    pub cluster: String,
    /// Where it comes from (a file, or a Secret and key).
    pub origin: String,
    /// Why it is not watched.
    pub reason: String,
}

impl Refused {
    /// Counts `refusal`, keeping it if there are few yet.
    pub fn add(&mut self, refusal: Refusal) {
        self.count += 1;
        if self.examples.len() < REFUSED_EXAMPLES {
            self.examples.push(refusal);
        }
    }
}

/// Every cluster known now, by id, and the registrations refused (clones share them).
#[derive(Clone, Default)]
pub struct Clusters {
    map: Arc<Mutex<BTreeMap<String, Arc<Cluster>>>>,
    refused: Arc<Mutex<Refused>>,
}

impl Clusters {
    fn map(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Cluster>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The registrations refused now are `refused`.
    pub fn set_refused(&self, refused: Refused) {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = refused;
    }

    /// The registrations refused now.
    pub fn refused(&self) -> Refused {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Adds `cluster`, replacing one of the same id.
    pub fn insert(&self, cluster: Arc<Cluster>) {
        self.map().insert(cluster.id.clone(), cluster);
    }

    /// Forgets cluster `id`.
    pub fn remove(&self, id: &str) {
        self.map().remove(id);
    }

    /// Cluster `id`, if known.
    pub fn get(&self, id: &str) -> Option<Arc<Cluster>> {
        self.map().get(id).cloned()
    }

    /// Every cluster's state, by id.
    pub fn list(&self) -> Vec<ClusterStatus> {
        let clusters: Vec<Arc<Cluster>> = self.map().values().cloned().collect();
        clusters.iter().map(|c| c.status()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_syncing_until_every_watch_lists_and_failing_while_one_fails() {
        let c = Cluster::new("B", "test", 2);
        assert_eq!(c.status().state, State::Syncing);
        c.listed(Kind::Service, 3);
        c.listed(Kind::Pod, 2);
        let s = c.status();
        assert_eq!((s.state, s.objects), (State::Synced, 5));
        c.failed(Kind::Pod, "connection refused".into());
        let s = c.status();
        assert_eq!(s.state, State::Failing);
        assert_eq!(s.error.as_deref(), Some("connection refused"));
        assert!(s.failing_since.is_some());
        // One kind failing keeps the others current: not unreachable.
        assert_eq!(c.unreachable_since(), None);
        c.failed(Kind::Service, "connection refused".into());
        assert!(c.unreachable_since().is_some());
        c.listed(Kind::Service, 3);
        c.listed(Kind::Pod, 2);
        let s = c.status();
        assert_eq!((s.state, s.error, s.errors), (State::Synced, None, 2));
        assert_eq!(c.unreachable_since(), None);
    }

    #[test]
    fn a_refused_cluster_is_failing_and_unreachable() {
        let c = Cluster::new("B", "test", 5);
        c.refuse("Secret istio-system/b key B: not a kubeconfig".into());
        let s = c.status();
        assert_eq!(s.state, State::Failing);
        assert!(s.error.expect("error").contains("key B"));
        assert!(c.unreachable_since().is_some());
    }
}
