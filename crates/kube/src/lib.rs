//! The Kubernetes source: kube-runtime watchers for every kind Sextant reads, feeding the same
//! [`Index`] as the directory source.
//!
//! - Each watch's initial list (and every relist after a restart or `410 Gone`) is buffered
//!   and replaces that kind in the index at once ([`Index::reset`]), so a relist never shows a
//!   half-empty mesh; later events apply one by one.
//! - [`Watches::synced`] turns true once every watch has finished its first list; the control
//!   plane publishes nothing before.
//! - When the API server is unreachable a failed watch is started again after a backoff, and
//!   lists again; the index (and the last published snapshot) stay as they are until that
//!   list replaces them. Errors are logged, counted and shown per cluster ([`clusters`]).
//! - An object that does not have the shape of its kind is skipped and reported.
//!
//! [`leader`] holds what only the Lease holder does: the election, the status writer and the
//! webhook's `caBundle`. [`remote`] runs the watches of remote clusters, registered by Secrets
//! or kubeconfig files, into the same index under their cluster ids. `sextant-source` puts
//! these watches beside the directory source and debounces their change signals.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use prometheus_client::metrics::counter::Counter;

use futures_util::StreamExt;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::watcher,
};
use tracing::Instrument;

use crate::clusters::{Cluster, Stale};
use sextant_index::{
    Index, Object,
    manifest::{Limits, check_value},
};
use sextant_model::{Kind, ObjectRef};

pub mod client;
pub mod clusters;
pub mod leader;
pub mod mesh_config;
pub mod remote;

/// What the watches saw of every VirtualService, DestinationRule, Gateway and Sidecar, for
/// the status writer.
pub type Generations = Arc<Mutex<std::collections::BTreeMap<ObjectRef, Seen>>>;

/// One configuration object as last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// `metadata.generation`.
    pub generation: i64,
    /// Why it could not be read at all (it does not have the shape of its kind), so the index
    /// kept its previous version or nothing.
    pub unreadable: Option<String>,
}
use tokio::sync::{mpsc, watch};

/// The kinds watched: group, the version read, and the plural of each.
pub const WATCHED: [(Kind, &str, &str, &str); 13] = [
    (Kind::Namespace, "", "v1", "namespaces"),
    (Kind::Node, "", "v1", "nodes"),
    (Kind::Pod, "", "v1", "pods"),
    (Kind::Service, "", "v1", "services"),
    (
        Kind::EndpointSlice,
        "discovery.k8s.io",
        "v1",
        "endpointslices",
    ),
    (
        Kind::DestinationRule,
        "networking.istio.io",
        "v1",
        "destinationrules",
    ),
    (
        Kind::VirtualService,
        "networking.istio.io",
        "v1",
        "virtualservices",
    ),
    (
        Kind::PeerAuthentication,
        "security.istio.io",
        "v1",
        "peerauthentications",
    ),
    (Kind::Gateway, "networking.istio.io", "v1", "gateways"),
    (Kind::Sidecar, "networking.istio.io", "v1", "sidecars"),
    (
        Kind::ServiceEntry,
        "networking.istio.io",
        "v1",
        "serviceentries",
    ),
    (
        Kind::WorkloadEntry,
        "networking.istio.io",
        "v1",
        "workloadentries",
    ),
    // Every namespace's: a Gateway names a Secret in its pod's namespace.
    (Kind::Secret, "", "v1", "secrets"),
];

/// Secret types that never hold a gateway credential and can be large (Helm keeps every
/// release in one): the API server leaves them out of the watch, as for istiod.
const SECRET_FIELD_SELECTOR: &str =
    "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";

/// How `kind` is watched: listed in pages, so that each response is bounded
/// ([`client`]).
fn watch_config(kind: Kind) -> watcher::Config {
    let config = watcher::Config::default().page_size(client::PAGE_SIZE);
    if kind == Kind::Secret {
        config.fields(SECRET_FIELD_SELECTOR)
    } else {
        config
    }
}

/// The API resource Sextant reads `kind` as.
pub fn api_resource(kind: Kind) -> ApiResource {
    let (group, version, plural) = WATCHED
        .iter()
        .find(|w| w.0 == kind)
        .map(|&(_, g, v, p)| (g, v, p))
        .unwrap_or(("", "v1", ""));
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind.as_str()),
        plural,
    )
}

/// Counters the control plane exports (clones share their values).
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Watch errors (API server unreachable, watch failures); each is retried with backoff.
    pub watch_errors: Counter,
    /// Objects skipped because they do not have the shape of their kind.
    pub malformed: Counter,
    /// Relists (initial lists included).
    pub relists: Counter,
}

/// Running watches.
pub struct Watches {
    /// True once every watch has completed its first list.
    pub synced: watch::Receiver<bool>,
    /// Generations of the configuration objects.
    pub generations: Generations,
    /// The cluster watched, and how its watches are doing.
    pub cluster: Arc<Cluster>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts one watcher per kind of [`WATCHED`] on the config cluster; each change to the index
/// is followed by a message on `changed` (`sextant-source` debounces them).
pub fn spawn(
    client: Client,
    index: Arc<Mutex<Index>>,
    changed: mpsc::UnboundedSender<()>,
    counters: Counters,
) -> Watches {
    let id = index
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .cluster_id()
        .to_owned();
    let cluster = Cluster::new(&id, "config cluster", WATCHED.len());
    let kinds: Vec<Kind> = WATCHED.iter().map(|w| w.0).collect();
    start(
        Target::Local,
        &kinds,
        client,
        Feed {
            index,
            generations: Generations::default(),
            changed,
            counters,
            cluster,
        },
    )
}

/// Starts the watches of remote cluster `cluster`: the kinds a remote cluster contributes
/// ([`sextant_index::REMOTE_KINDS`]), into the index under its id while `registered` holds.
fn spawn_remote(
    client: Client,
    index: Arc<Mutex<Index>>,
    changed: mpsc::UnboundedSender<()>,
    counters: Counters,
    cluster: Arc<Cluster>,
    registered: Registered,
) -> Watches {
    start(
        Target::Remote(cluster.id().into(), registered),
        &sextant_index::REMOTE_KINDS,
        client,
        Feed {
            index,
            generations: Generations::default(),
            changed,
            counters,
            cluster,
        },
    )
}

/// Starts a watcher of each of `kinds` feeding `target`'s objects.
fn start(target: Target, kinds: &[Kind], client: Client, feed: Feed) -> Watches {
    let (synced_tx, synced) = watch::channel(false);
    let pending = Arc::new(AtomicU64::new(kinds.len() as u64));
    let synced_tx = Arc::new(synced_tx);
    let generations = feed.generations.clone();
    let cluster = feed.cluster.clone();
    let tasks = kinds
        .iter()
        .map(|&kind| {
            let resource = api_resource(kind);
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let span = tracing::info_span!("watch", cluster = %cluster.id(), kind = %resource.kind);
            tokio::spawn(
                run(
                    kind,
                    resource,
                    api,
                    target.clone(),
                    feed.clone(),
                    Synced {
                        pending: pending.clone(),
                        tx: synced_tx.clone(),
                        done: false,
                    },
                )
                .instrument(span),
            )
        })
        .collect();
    Watches {
        synced,
        generations,
        cluster,
        tasks,
    }
}

/// Whether a remote cluster's registration still holds. Cleared under the index's lock just
/// before its objects are removed, and read under that lock before each change: a watch task
/// still running when the cluster is stopped (aborting a task does not interrupt a poll
/// under way) cannot bring the cluster back into the index afterwards.
#[derive(Clone, Debug)]
pub(crate) struct Registered(Arc<std::sync::atomic::AtomicBool>);

impl Registered {
    pub(crate) fn new() -> Registered {
        Registered(Arc::new(std::sync::atomic::AtomicBool::new(true)))
    }

    /// Ends the registration; `index` is the index's guard, so no change is under way.
    pub(crate) fn end(&self, _index: &mut Index) {
        self.0.store(false, Ordering::SeqCst);
    }

    fn holds(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Whose objects a watch feeds: the config cluster's, or a remote cluster's (by id) while it
/// is registered.
#[derive(Clone)]
enum Target {
    Local,
    Remote(Arc<str>, Registered),
}

impl Target {
    fn reset(&self, index: &mut Index, kind: Kind, objects: Vec<Object>) {
        match self {
            Target::Local => index.reset(kind, objects),
            Target::Remote(id, r) if r.holds() => index.reset_in(id, kind, objects),
            Target::Remote(..) => {}
        }
    }

    fn apply(&self, index: &mut Index, object: Object) {
        match self {
            Target::Local => index.apply(object),
            Target::Remote(id, r) if r.holds() => index.apply_in(id, object),
            Target::Remote(..) => {}
        }
    }

    fn delete(&self, index: &mut Index, kind: Kind, namespace: &str, name: &str) {
        match self {
            Target::Local => index.delete(kind, namespace, name),
            Target::Remote(id, r) if r.holds() => index.delete_in(id, kind, namespace, name),
            Target::Remote(..) => {}
        }
    }
}

/// Where a watch delivers: the index, the generations, the change signal, the counters and
/// its cluster's health.
#[derive(Clone)]
struct Feed {
    index: Arc<Mutex<Index>>,
    generations: Generations,
    changed: mpsc::UnboundedSender<()>,
    counters: Counters,
    cluster: Arc<Cluster>,
}

/// One watch's share of the "every watch has listed" signal.
struct Synced {
    pending: Arc<AtomicU64>,
    tx: Arc<watch::Sender<bool>>,
    done: bool,
}

impl Synced {
    fn listed(&mut self) {
        if !self.done {
            self.done = true;
            if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                let _ = self.tx.send(true);
            }
        }
    }
}

/// The object as the index reads it: list items come without `apiVersion` and `kind`. An
/// object past the input [`Limits`] is refused (and counted as malformed) like a file would be.
fn to_object(resource: &ApiResource, o: DynamicObject) -> Result<Object, String> {
    let name = o.metadata.name.clone().unwrap_or_default();
    let namespace = o.metadata.namespace.clone().unwrap_or_default();
    let mut value = serde_json::to_value(o).map_err(|e| e.to_string())?;
    if resource.kind == "Secret" {
        value = trim_secret(&value);
    }
    // The same bounds as manifest files and admission reviews, before the index reads it.
    check_value(&value, &Limits::current())
        .map_err(|e| format!("{} {namespace}/{name}: {e}", resource.kind))?;
    value["apiVersion"] = serde_json::json!(resource.api_version);
    value["kind"] = serde_json::json!(resource.kind);
    if resource.kind == "Pod" {
        value = trim_pod(&value);
    } else if resource.kind == "Node" {
        value = trim_node(&value);
    }
    Object::from_json(value, "default")
        .map_err(|e| format!("{} {namespace}/{name}: {e}", resource.kind))
}

/// A Node reduced to its name and labels (the topology labels give its pods' locality): a
/// relist buffers every Node, and a Node's status (images, conditions) is large.
fn trim_node(node: &serde_json::Value) -> serde_json::Value {
    let meta = &node["metadata"];
    let mut metadata = serde_json::json!({"name": meta["name"]});
    if let Some(labels) = meta.get("labels") {
        metadata["labels"] = labels.clone();
    }
    serde_json::json!({"apiVersion": node["apiVersion"], "kind": node["kind"], "metadata": metadata})
}

/// A Pod reduced to what the index reads (name, namespace, labels, service account, node,
/// container ports, addresses): a relist buffers every Pod until it completes.
fn trim_pod(pod: &serde_json::Value) -> serde_json::Value {
    use serde_json::{Value, json};
    let pick = |from: &Value, keys: &[&str]| -> Value {
        Value::Object(
            keys.iter()
                .filter_map(|k| Some(((*k).to_owned(), from.get(*k)?.clone())))
                .collect(),
        )
    };
    let containers: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| pick(c, &["name", "ports"]))
        .collect();
    let mut spec = pick(&pod["spec"], &["serviceAccountName", "nodeName"]);
    spec["containers"] = json!(containers);
    json!({
        "apiVersion": pod["apiVersion"],
        "kind": pod["kind"],
        "metadata": pick(&pod["metadata"], &["name", "namespace", "labels", "uid"]),
        "spec": spec,
        "status": pick(&pod["status"], &["podIP", "podIPs"]),
    })
}

/// A Secret reduced to the keys a credential is read from: nothing else of it is held, and a
/// Secret with other large keys is not refused for them.
fn trim_secret(secret: &serde_json::Value) -> serde_json::Value {
    use serde_json::{Value, json};
    let keep = |field: &str| -> Value {
        let map = secret[field].as_object();
        Value::Object(
            sextant_index::parse::CREDENTIAL_KEYS
                .iter()
                .filter_map(|k| Some(((*k).to_owned(), map?.get(*k)?.clone())))
                .collect(),
        )
    };
    let meta = &secret["metadata"];
    json!({
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
        "type": secret["type"],
        "data": keep("data"),
    })
}

/// Waits between a failed watch and its restart: from [`BACKOFF_MIN`], doubling to
/// [`BACKOFF_MAX`], back to the start once a list succeeds.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A watch error as `/debug/clusterz` shows it: which API server, what was being done, and
/// whether the server could not be reached at all.
fn describe(error: &watcher::Error, kind: Kind, server: Option<&str>) -> String {
    let server = server.map_or_else(
        || "the API server".to_owned(),
        |s| format!("API server {s}"),
    );
    let plural = api_resource(kind).plural;
    let (action, inner) = match error {
        watcher::Error::InitialListFailed(e) => ("listing", e),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => ("watching", e),
        other => return format!("{server}: watching {plural}: {other}"),
    };
    if let Some(cut) = client::too_large(inner) {
        return format!("{server}: {action} {plural}: {cut}");
    }
    // The messages down the chain, without repeats ("client error (Connect): tcp connect
    // error: Connection refused").
    let mut messages: Vec<String> = Vec::new();
    let mut unreachable = false;
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(inner);
    while let Some(current) = e {
        unreachable |= current.is::<std::io::Error>();
        let text = current.to_string();
        let text = text
            .strip_prefix("ServiceError: ")
            .unwrap_or(&text)
            .to_owned();
        if !messages.last().is_some_and(|m| m.contains(&text)) {
            messages.push(text);
        }
        e = current.source();
    }
    let cause = messages.join(": ");
    if unreachable {
        format!("{server} unreachable: {action} {plural} failed: {cause}")
    } else {
        format!("{server}: {action} {plural} failed: {cause}")
    }
}

/// Whether the watch failed only because its resource version is too old (410 Gone): a
/// relist, not a failure of the cluster.
fn gone(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchError(status) if status.code == 410)
}

async fn run(
    kind: Kind,
    resource: ApiResource,
    api: Api<DynamicObject>,
    target: Target,
    feed: Feed,
    mut synced: Synced,
) {
    let Feed {
        index,
        generations,
        changed,
        counters,
        cluster,
    } = feed;
    let mut buffer: Vec<Object> = Vec::new();
    let mut listed: Vec<(ObjectRef, Seen)> = Vec::new();
    // What the watch holds, to count it (names only).
    let mut held: HashSet<(String, String)> = HashSet::new();
    let lock = || index.lock().unwrap_or_else(|p| p.into_inner());
    let is_config = matches!(
        kind,
        Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Gateway
            | Kind::Sidecar
            | Kind::ServiceEntry
            | Kind::WorkloadEntry
    );
    let id = |o: &DynamicObject| ObjectRef {
        kind,
        namespace: o.metadata.namespace.clone().unwrap_or_default(),
        name: o.metadata.name.clone().unwrap_or_default(),
    };
    let key = |o: &Object| {
        let meta = o.metadata();
        (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    };
    let generation = |o: &DynamicObject| o.metadata.generation.unwrap_or(1);
    let generations_of = || generations.lock().unwrap_or_else(|p| p.into_inner());
    let mut backoff = BACKOFF_MIN;
    // A failed watch is dropped and started anew after a backoff, so that it lists again:
    // the list that succeeds is what says the cluster is back (a resumed watch says nothing
    // until an object changes), and it replaces what the cluster held while away.
    loop {
        let mut stream = watcher(api.clone(), watch_config(kind)).boxed();
        let mut relist_at_once = false;
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) if gone(&e) => {
                    tracing::debug!(error = %e, "watch expired; listing again");
                    relist_at_once = true;
                    break;
                }
                Err(e) => {
                    counters.watch_errors.inc();
                    let error = describe(&e, kind, cluster.server().as_deref());
                    cluster.failed(kind, error.clone());
                    if cluster.stale() == Some(Stale::Removed) {
                        tracing::warn!(%error, retry_in = ?backoff, "watch failed; retrying with backoff (the cluster's objects were removed after the grace period)");
                    } else {
                        tracing::warn!(%error, retry_in = ?backoff, "watch failed; retrying with backoff, serving the last snapshot");
                    }
                    break;
                }
            };
            // The object as the index reads it, and what the status writer should know of it.
            let object = |o: DynamicObject| {
                let seen = is_config.then(|| (id(&o), generation(&o)));
                let read = to_object(&resource, o);
                if let Err(e) = &read {
                    counters.malformed.inc();
                    tracing::warn!(error = %e, "skipping object");
                }
                let seen = seen.map(|(id, generation)| {
                    let unreadable = read.as_ref().err().cloned();
                    (
                        id,
                        Seen {
                            generation,
                            unreadable,
                        },
                    )
                });
                (read.ok(), seen)
            };
            match event {
                watcher::Event::Init => {
                    counters.relists.inc();
                    cluster.relisting();
                    buffer.clear();
                    listed.clear();
                }
                watcher::Event::InitApply(o) => {
                    let (object, seen) = heavy(|| object(o));
                    listed.extend(seen);
                    buffer.extend(object);
                }
                watcher::Event::InitDone => {
                    if is_config {
                        let mut g = generations_of();
                        g.retain(|k, _| k.kind != kind);
                        g.extend(listed.drain(..));
                    }
                    held = buffer.iter().map(key).collect();
                    heavy(|| target.reset(&mut lock(), kind, std::mem::take(&mut buffer)));
                    cluster.listed(kind, held.len());
                    tracing::info!(objects = held.len(), "listed");
                    backoff = BACKOFF_MIN;
                    synced.listed();
                    let _ = changed.send(());
                }
                watcher::Event::Apply(o) => {
                    // Reading and validating an object (regexes, schema) is CPU work.
                    let (object, seen) = heavy(|| object(o));
                    if let Some((id, seen)) = seen {
                        generations_of().insert(id, seen);
                    }
                    if let Some(o) = object {
                        held.insert(key(&o));
                        cluster.holds(kind, held.len());
                        heavy(|| target.apply(&mut lock(), o));
                    }
                    // An unreadable object changes no configuration, but its status does.
                    let _ = changed.send(());
                }
                watcher::Event::Delete(o) => {
                    if is_config {
                        generations_of().remove(&id(&o));
                    }
                    let name = o.metadata.name.clone().unwrap_or_default();
                    let namespace = o.metadata.namespace.clone().unwrap_or_default();
                    target.delete(&mut lock(), kind, &namespace, &name);
                    held.remove(&(namespace, name));
                    cluster.holds(kind, held.len());
                    let _ = changed.send(());
                }
            }
        }
        drop(stream);
        if !relist_at_once {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Runs CPU-heavy `f` (parsing and validating objects, indexing, publishing) without holding
/// up the runtime: on a multi-threaded runtime the worker first hands its other tasks (probes,
/// streams) to another thread. Outside one, `f` just runs.
pub fn heavy<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests;
