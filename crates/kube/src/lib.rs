//! The Kubernetes source: kube-runtime watchers for every kind Sextant reads, feeding the same
//! [`Index`] as the directory source.
//!
//! - Each watch's initial list (and every relist after a restart or `410 Gone`) is buffered
//!   and replaces that kind in the index at once ([`Index::reset`]), so a relist never shows a
//!   half-empty mesh; later events apply one by one.
//! - [`Watches::synced`] turns true once every watch has finished its first list; the control
//!   plane publishes nothing before.
//! - When the API server is unreachable the watchers retry with backoff; the index (and the
//!   last published snapshot) stay as they are. Errors are logged and counted.
//! - An object that does not have the shape of its kind is skipped and reported.
//!
//! [`leader`] holds what only the Lease holder does: the election, the status writer and the
//! webhook's `caBundle`. `sextant-source` puts these watches beside the directory source and
//! debounces their change signals.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use prometheus_client::metrics::counter::Counter;

use futures_util::StreamExt;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{WatchStreamExt, watcher},
};
use sextant_index::{
    Index, Object,
    manifest::{Limits, check_value},
};
use sextant_model::{Kind, ObjectRef};

pub mod leader;
pub mod mesh_config;

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
pub const WATCHED: [(Kind, &str, &str, &str); 12] = [
    (Kind::Namespace, "", "v1", "namespaces"),
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

/// How `kind` is watched.
fn watch_config(kind: Kind) -> watcher::Config {
    let config = watcher::Config::default();
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
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts one watcher per kind; each change to the index is followed by a message on
/// `changed` (`sextant-source` debounces them).
pub fn spawn(
    client: Client,
    index: Arc<Mutex<Index>>,
    changed: mpsc::UnboundedSender<()>,
    counters: Counters,
) -> Watches {
    let (synced_tx, synced) = watch::channel(false);
    let generations = Generations::default();
    let pending = Arc::new(AtomicU64::new(WATCHED.len() as u64));
    let synced_tx = Arc::new(synced_tx);
    let tasks = WATCHED
        .iter()
        .map(|&(kind, ..)| {
            let resource = api_resource(kind);
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            tokio::spawn(run(
                kind,
                resource,
                api,
                Feed {
                    index: index.clone(),
                    generations: generations.clone(),
                    changed: changed.clone(),
                    counters: counters.clone(),
                },
                Synced {
                    pending: pending.clone(),
                    tx: synced_tx.clone(),
                    done: false,
                },
            ))
        })
        .collect();
    Watches {
        synced,
        generations,
        tasks,
    }
}

/// Where a watch delivers: the index, the generations, the change signal and the counters.
struct Feed {
    index: Arc<Mutex<Index>>,
    generations: Generations,
    changed: mpsc::UnboundedSender<()>,
    counters: Counters,
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
    }
    Object::from_json(value, "default")
        .map_err(|e| format!("{} {namespace}/{name}: {e}", resource.kind))
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

async fn run(
    kind: Kind,
    resource: ApiResource,
    api: Api<DynamicObject>,
    feed: Feed,
    mut synced: Synced,
) {
    let Feed {
        index,
        generations,
        changed,
        counters,
    } = feed;
    let mut stream = watcher(api, watch_config(kind)).default_backoff().boxed();
    let mut buffer: Vec<Object> = Vec::new();
    let mut listed: Vec<(ObjectRef, Seen)> = Vec::new();
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
    let generation = |o: &DynamicObject| o.metadata.generation.unwrap_or(1);
    let generations_of = || generations.lock().unwrap_or_else(|p| p.into_inner());
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                counters.watch_errors.inc();
                tracing::warn!(kind = %resource.kind, error = %e, "watch failed; retrying with backoff, serving the last snapshot");
                continue;
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
                heavy(|| lock().reset(kind, std::mem::take(&mut buffer)));
                tracing::info!(kind = %resource.kind, "listed");
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
                    heavy(|| lock().apply(o));
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
                lock().delete(kind, &namespace, &name);
                let _ = changed.send(());
            }
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
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn service(spec: Value) -> DynamicObject {
        let resource = api_resource(Kind::Service);
        let mut o = DynamicObject::new("reviews", &resource).within("default");
        o.data = json!({ "spec": spec });
        o
    }

    #[test]
    fn watched_objects_past_the_input_bounds_are_refused_naming_the_bound() {
        let key = "k".repeat(3000);
        let mut spec = json!({"a": 1});
        for _ in 0..100 {
            let mut level: serde_json::Map<String, Value> =
                (0..100).map(|i| (format!("s{i}"), json!(i))).collect();
            level.insert(key.clone(), spec);
            spec = Value::Object(level);
        }
        let resource = api_resource(Kind::Service);
        let err = to_object(&resource, service(spec)).expect_err("refused");
        assert!(err.contains("Service default/reviews"), "{err}");
        assert!(err.contains("--max-input-expanded-bytes"), "{err}");
    }

    #[test]
    fn watched_secrets_keep_only_what_a_credential_is_read_from() {
        let resource = api_resource(Kind::Secret);
        let mut o = DynamicObject::new("cert", &resource).within("edge");
        o.data = json!({"type": "kubernetes.io/tls",
            "data": {"tls.crt": "Q0VSVA==", "tls.key": "S0VZ", "unrelated": "x".repeat(100_000)}});
        let Ok(Object::Secret(secret)) = to_object(&resource, o) else {
            panic!("a Secret");
        };
        let shown = format!("{secret:?}");
        assert!(
            shown.contains("tls.crt") && !shown.contains("unrelated"),
            "{shown}"
        );
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(
            watch_config(Kind::Secret).field_selector.as_deref(),
            Some(SECRET_FIELD_SELECTOR)
        );
    }

    #[test]
    fn ordinary_watched_objects_are_read() {
        let resource = api_resource(Kind::Service);
        let spec = json!({"ports": [{"port": 9080, "name": "http"}]});
        assert!(to_object(&resource, service(spec)).is_ok());
    }
}
