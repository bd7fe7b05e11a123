//! Remote clusters: one control plane for several clusters, as istiod's multicluster secret
//! controller does it. Each remote cluster is registered by a Secret key or a kubeconfig
//! file ([`secret`]); its Services, EndpointSlices, Pods, Namespaces and Nodes are watched
//! into the same index under its cluster id (configuration comes only from the config
//! cluster), and its client reviews the tokens of workloads that name it (`clusterid`).
//!
//! - A Secret added, changed (other kubeconfig bytes) or deleted starts, restarts or stops its
//!   clusters' watches at runtime. Deleting forgets the cluster's objects at once; a restart
//!   keeps them until the new watches list.
//! - At most `max_clusters` remote clusters are watched: those running keep their place.
//!   A running cluster keeps its id against later registrations of it. Refused registrations
//!   (past the bound, unreadable, an id taken) are counted and a few shown, nothing more.
//! - A bad edit of a working registration (an unreadable kubeconfig) is refused and the
//!   cluster goes on running with the kubeconfig it had.
//! - Every response of a remote API server is bounded ([`crate::client`]).
//! - A cluster whose watches all fail (its API server unreachable) keeps its objects; after
//!   the grace period of continuous failure they are removed or kept ([`StaleEndpoints`]).
//!   When it answers again its relist replaces them.
//! - Nothing waits for a remote cluster: one that never answers is shown failing and the
//!   control plane serves the rest.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Duration,
};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, watcher},
};
use sextant_index::Index;
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::Instrument;

use crate::{
    Counters, Registered,
    client::ResponseBounds,
    clusters::{Cluster, Clusters, Refusal, Refused, Stale},
};

pub mod secret;

pub use secret::{LABELS, MAX_KUBECONFIG_BYTES, Origin, Registration};

/// Default `--max-remote-clusters`.
pub const DEFAULT_MAX_CLUSTERS: usize = 64;

/// Default `--remote-grace-period-seconds`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);

/// What becomes of an unreachable remote cluster's objects once the grace period has passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleEndpoints {
    /// Removed: traffic no longer goes to endpoints nobody can vouch for.
    Remove,
    /// Kept: the endpoints are served as last seen until the cluster answers again.
    Keep,
}

/// How remote clusters are run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The config cluster's id: a registration naming it is refused.
    pub local: String,
    /// Remote clusters watched at most.
    pub max_clusters: usize,
    /// Continuous failure after which `stale` applies.
    pub grace: Duration,
    /// What then becomes of the cluster's objects.
    pub stale: StaleEndpoints,
    /// How much one response of a remote API server may make Sextant hold.
    pub bounds: ResponseBounds,
}

/// Where remote clusters' watches deliver.
#[derive(Clone)]
struct Feed {
    index: Arc<Mutex<Index>>,
    changed: mpsc::UnboundedSender<()>,
    counters: Counters,
}

/// The remote clusters (clones share them). Dropping the last clone stops every watch.
#[derive(Clone)]
pub struct RemoteClusters {
    inner: Arc<Mutex<Manager>>,
}

struct Manager {
    settings: Settings,
    feed: Feed,
    clusters: Clusters,
    /// `--remote-kubeconfig`, in the order given.
    files: Vec<Registration>,
    /// What each Secret registers, by the label it was found with and its name.
    secrets: BTreeMap<(usize, String), Found>,
    /// Secrets seen so far: the order of arrival of the next.
    arrivals: u64,
    running: BTreeMap<String, Running>,
    secret_watches: Vec<JoinHandle<()>>,
}

impl Drop for Manager {
    fn drop(&mut self) {
        for t in &self.secret_watches {
            t.abort();
        }
    }
}

/// What one Secret registers, and when it was first seen.
struct Found {
    arrival: u64,
    registrations: Vec<Registration>,
}

/// A registered remote cluster: what it was started from, and its tasks (its watches and
/// the grace period's supervisor), stopped when dropped.
struct Running {
    origin: Origin,
    kubeconfig: Vec<u8>,
    server: Option<String>,
    registered: Registered,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl RemoteClusters {
    /// No remote clusters yet; those registered later feed `index` (and signal `changed`),
    /// and are listed in `clusters`.
    pub fn new(
        settings: Settings,
        index: Arc<Mutex<Index>>,
        changed: mpsc::UnboundedSender<()>,
        counters: Counters,
        clusters: Clusters,
    ) -> Self {
        RemoteClusters {
            inner: Arc::new(Mutex::new(Manager {
                settings,
                feed: Feed {
                    index,
                    changed,
                    counters,
                },
                clusters,
                files: Vec::new(),
                secrets: BTreeMap::new(),
                arrivals: 0,
                running: BTreeMap::new(),
                secret_watches: Vec::new(),
            })),
        }
    }

    fn manager(&self) -> MutexGuard<'_, Manager> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches cluster `cluster` through the kubeconfig file `path` (`--remote-kubeconfig`),
    /// within a tokio runtime. Refused with a reason when the id is not one a Secret data key
    /// could be, is the local cluster's or given twice, or the file cannot be read as a
    /// kubeconfig. Two ids naming the same API server are warned of.
    pub fn add_file(&self, cluster: &str, path: &Path) -> Result<(), String> {
        let mut m = self.manager();
        if let Err(e) = secret::check_cluster_id(cluster) {
            return Err(format!(
                "--remote-kubeconfig {cluster}={}: {e}",
                path.display()
            ));
        }
        if cluster == m.settings.local {
            return Err(format!(
                "--remote-kubeconfig {cluster}={}: {cluster} is the config cluster's id",
                path.display()
            ));
        }
        if m.files.iter().any(|f| f.cluster == cluster) {
            return Err(format!(
                "--remote-kubeconfig {cluster}=...: cluster {cluster} is given twice"
            ));
        }
        let bytes = read_bounded(path).map_err(|e| {
            format!(
                "--remote-kubeconfig {cluster}={}: cannot read it: {e}",
                path.display()
            )
        })?;
        let registration = Registration::new(cluster, Origin::File(path.to_owned()), bytes);
        if let Err(e) = &registration.read {
            return Err(format!("--remote-kubeconfig {cluster}: {e}"));
        }
        if let Some(other) = m
            .files
            .iter()
            .find(|f| f.server.is_some() && f.server == registration.server)
        {
            tracing::warn!(cluster, other = %other.cluster, server = ?registration.server, "two --remote-kubeconfig ids name the same API server: its objects are read twice, once under each id");
        }
        m.files.push(registration);
        m.reconcile();
        Ok(())
    }

    /// Watches the Secrets of `namespace` labelled as remote clusters (one watch per label in
    /// [`LABELS`]), within a tokio runtime. While a watch fails, the clusters it registered
    /// keep running.
    pub fn watch_secrets(&self, client: Client, namespace: &str) {
        tracing::info!(%namespace, labels = ?LABELS, "watching this namespace's Secrets for remote clusters (set by POD_NAMESPACE or --lease-namespace)");
        let weak = Arc::downgrade(&self.inner);
        let local = self.manager().settings.local.clone();
        let handles: Vec<JoinHandle<()>> = LABELS
            .iter()
            .enumerate()
            .map(|(label, key)| {
                let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
                let config = watcher::Config::default()
                    .labels(&format!("{key}=true"))
                    .page_size(crate::client::PAGE_SIZE);
                let span = tracing::info_span!("remote_secrets", label = %key, %namespace);
                tokio::spawn(
                    watch_secrets(api, config, label, local.clone(), weak.clone()).instrument(span),
                )
            })
            .collect();
        self.manager().secret_watches.extend(handles);
    }
}

/// Reads at most one byte more than [`MAX_KUBECONFIG_BYTES`] of `path`: enough to refuse it.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_KUBECONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Follows the Secrets one label selects, telling the manager (while it lives) what each
/// registers.
async fn watch_secrets(
    api: Api<Secret>,
    config: watcher::Config,
    label: usize,
    local: String,
    manager: Weak<Mutex<Manager>>,
) {
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut listed = BTreeMap::new();
    let name = |s: &Secret| s.metadata.name.clone().unwrap_or_default();
    let read = |s: &Secret| {
        if secret::is_remote_secret(s) {
            secret::registrations(s, &local)
        } else {
            Vec::new()
        }
    };
    while let Some(event) = stream.next().await {
        let Some(manager) = manager.upgrade() else {
            return;
        };
        let mut m = manager.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Err(error) => {
                tracing::warn!(%error, "watch of remote cluster Secrets failed; retrying with backoff, the registered clusters keep running");
            }
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(s)) => {
                listed.insert(name(&s), read(&s));
            }
            Ok(watcher::Event::InitDone) => {
                m.secrets
                    .retain(|(l, name), _| *l != label || listed.contains_key(name));
                for (name, found) in std::mem::take(&mut listed) {
                    m.set_secret(label, name, found);
                }
                m.reconcile();
            }
            Ok(watcher::Event::Apply(s)) => {
                m.set_secret(label, name(&s), read(&s));
                m.reconcile();
            }
            Ok(watcher::Event::Delete(s)) => {
                m.secrets.remove(&(label, name(&s)));
                m.reconcile();
            }
        }
    }
}

impl Manager {
    /// Records what Secret `name` (found with label `label`) registers. A Secret keeps the
    /// place in the order of arrival it had when first seen.
    fn set_secret(&mut self, label: usize, name: String, registrations: Vec<Registration>) {
        let arrival = match self.secrets.get(&(label, name.clone())) {
            Some(found) => found.arrival,
            None => {
                self.arrivals += 1;
                self.arrivals
            }
        };
        self.secrets.insert(
            (label, name),
            Found {
                arrival,
                registrations,
            },
        );
    }

    /// Brings the running clusters in line with the registrations: stops those no longer
    /// registered, starts new ones and restarts those whose kubeconfig changed.
    ///
    /// - A running cluster keeps its id while its registration is there; another registration
    ///   of the id is refused, naming the one in use. Among new registrations the first to
    ///   arrive wins: files in the order given, then Secrets in the order they were first
    ///   seen (those of one list by name).
    /// - Those running keep their place within `--max-remote-clusters`; new ones fill what
    ///   is left; the rest are refused.
    /// - A registration whose kubeconfig cannot be read is refused; if its cluster runs
    ///   (a bad edit of a working Secret), it goes on running with the kubeconfig it has.
    /// - Of the refused only their number and a few examples are kept ([`Refused`]): no
    ///   task, entry or metric series each.
    fn reconcile(&mut self) {
        let max = self.settings.max_clusters;
        let mut refused = Refused::default();
        let mut chosen: BTreeMap<String, Registration> = BTreeMap::new();
        {
            let mut secrets: Vec<&Found> = self.secrets.values().collect();
            secrets.sort_by_key(|f| f.arrival);
            let all: Vec<&Registration> = self
                .files
                .iter()
                .chain(secrets.into_iter().flat_map(|f| &f.registrations))
                .collect();
            for r in &all {
                if self
                    .running
                    .get(&r.cluster)
                    .is_some_and(|run| run.origin == r.origin)
                {
                    chosen.insert(r.cluster.clone(), (*r).clone());
                }
            }
            let mut admitted = chosen.len();
            for r in all {
                let refuse = |reason: String| Refusal {
                    cluster: r.cluster.clone(),
                    origin: r.origin.to_string(),
                    reason,
                };
                if let Some(first) = chosen.get(&r.cluster) {
                    if first.origin != r.origin {
                        refused.add(refuse(format!(
                            "{}: cluster {} is already registered by {}; this registration is not used",
                            r.origin, r.cluster, first.origin
                        )));
                    }
                    continue;
                }
                if let Err(e) = &r.read {
                    refused.add(refuse(e.clone()));
                    continue;
                }
                if admitted >= max {
                    refused.add(refuse(format!(
                        "{}: more than --max-remote-clusters ({max}) remote clusters are registered; this one is not watched",
                        r.origin
                    )));
                    continue;
                }
                admitted += 1;
                chosen.insert(r.cluster.clone(), r.clone());
            }
        }
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|id| !chosen.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.stop(&id);
        }
        for (id, registration) in chosen {
            match (&registration.read, self.running.get(&id)) {
                (_, Some(run))
                    if run.origin == registration.origin
                        && run.kubeconfig == registration.kubeconfig => {}
                (Err(e), Some(_)) => refused.add(Refusal {
                    cluster: id,
                    origin: registration.origin.to_string(),
                    reason: format!(
                        "{e}; the cluster goes on running with its previous kubeconfig"
                    ),
                }),
                _ => self.start(registration),
            }
        }
        if refused != self.clusters.refused() {
            if refused.count > 0 {
                let examples: Vec<&str> =
                    refused.examples.iter().map(|r| r.reason.as_str()).collect();
                tracing::error!(
                    refused = refused.count,
                    ?examples,
                    "remote cluster registrations not watched (see /debug/clusterz)"
                );
            }
            self.clusters.set_refused(refused);
        }
    }

    /// Stops cluster `id`'s watches and forgets its objects.
    fn stop(&mut self, id: &str) {
        if let Some(running) = self.running.remove(id) {
            // Ended under the index's lock, then the objects removed: a watch task still
            // finishing a change cannot bring them back. Dropping `running` aborts its tasks.
            let mut index = self.feed.index.lock().unwrap_or_else(|p| p.into_inner());
            running.registered.end(&mut index);
            index.remove_cluster(id);
        }
        self.clusters.remove(id);
        let _ = self.feed.changed.send(());
        tracing::info!(cluster = %id, "remote cluster unregistered; its objects are removed");
    }

    /// Starts (or restarts) the watches of `registration`, whose kubeconfig reads.
    fn start(&mut self, registration: Registration) {
        let Registration {
            cluster: id,
            origin,
            kubeconfig,
            read,
            server,
        } = registration;
        let Ok(config) = read else {
            return;
        };
        // A restart: the old watches stop here, their objects stay until the new ones list.
        if let Some(old) = self.running.remove(&id) {
            old.registered
                .end(&mut self.feed.index.lock().unwrap_or_else(|p| p.into_inner()));
        }
        if let Some(server) = &server
            && let Some((other, _)) = self
                .running
                .iter()
                .find(|(_, r)| r.server.as_ref() == Some(server))
        {
            tracing::warn!(cluster = %id, %other, %server, "two remote cluster ids name the same API server: its objects are read twice, once under each id");
        }
        let cluster = Cluster::new(&id, origin.to_string(), sextant_index::REMOTE_KINDS.len());
        if let Some(server) = &server {
            cluster.set_server(server.clone());
        }
        self.clusters.insert(cluster.clone());
        let span = tracing::info_span!("remote_cluster", cluster = %id);
        let registered = Registered::new();
        tracing::info!(cluster = %id, %origin, server = ?server, "watching remote cluster");
        let tasks = vec![
            tokio::spawn(
                connect(
                    config,
                    cluster.clone(),
                    self.feed.clone(),
                    self.settings.bounds,
                    registered.clone(),
                )
                .instrument(span.clone()),
            ),
            tokio::spawn(
                supervise(cluster, self.settings.clone(), self.feed.clone()).instrument(span),
            ),
        ];
        self.running.insert(
            id,
            Running {
                origin,
                kubeconfig,
                server,
                registered,
                tasks,
            },
        );
    }
}

/// Makes a client from `config`, its responses bounded by `bounds`, and runs the cluster's
/// watches until aborted.
async fn connect(
    config: Kubeconfig,
    cluster: Arc<Cluster>,
    feed: Feed,
    bounds: ResponseBounds,
    registered: Registered,
) {
    let origin = cluster.status().origin;
    let client = match kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())
        .and_then(|c| crate::client::bounded(c, bounds).map_err(|e| e.to_string()))
    {
        Ok(client) => client,
        Err(e) => {
            let error = format!("{origin}: the kubeconfig cannot be used: {e}");
            tracing::error!(%error, "remote cluster not watched");
            cluster.refuse(error);
            return;
        }
    };
    cluster.set_client(client.clone());
    let _watches = crate::spawn_remote(
        client,
        feed.index,
        feed.changed,
        feed.counters,
        cluster,
        registered,
    );
    // The watches stop when this task is aborted (dropping them).
    std::future::pending::<()>().await;
}

/// Applies the grace period: once every watch of `cluster` has failed for `settings.grace`
/// without a break, removes its objects or keeps them (logged either way), then waits for it
/// to answer again.
async fn supervise(cluster: Arc<Cluster>, settings: Settings, feed: Feed) {
    let mut changes = cluster.subscribe();
    loop {
        let Some(since) = cluster.unreachable_since() else {
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            () = tokio::time::sleep_until(since + settings.grace) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        if cluster.unreachable_since() != Some(since) {
            continue;
        }
        match settings.stale {
            StaleEndpoints::Remove => {
                feed.index
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove_cluster(cluster.id());
                cluster.set_stale(Stale::Removed);
                let _ = feed.changed.send(());
                tracing::warn!(grace = ?settings.grace, "remote cluster unreachable past the grace period; its objects are removed until it answers again");
            }
            StaleEndpoints::Keep => {
                cluster.set_stale(Stale::Kept);
                tracing::warn!(grace = ?settings.grace, "remote cluster unreachable past the grace period; its objects are kept (--remote-stale-endpoints=keep)");
            }
        }
        while cluster.unreachable_since() == Some(since) {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
