//! Compiles the mesh model into the Envoy v3 resources an Istio sidecar would receive.
//!
//! `compile(&Snapshot, &Proxy)` is a pure, deterministic function: no clock, no globals that
//! affect output, no cache inside. One module per xDS type (`cds`, `eds`, `lds`, `rds`);
//! `policy` applies DestinationRule traffic policy to clusters and `routes` translates
//! VirtualService rules. Names and defaults follow istiod (see `istio-compat.md` in the design
//! notes). Istio-proxy-only extensions (`istio.*` filters) are never emitted, so every resource
//! is accepted by stock Envoy. `json` renders resources with Envoy's field names and `bootstrap`
//! inlines them into a static Envoy bootstrap for `envoy --mode validate`.

pub mod bootstrap;
mod cache;
mod cds;
mod context;
mod eds;
pub mod json;
mod lds;
mod policy;
mod proto;
mod rds;
mod routes;
mod wire;

use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
    route::v3::RouteConfiguration,
};
use sextant_model::{Proxy, Snapshot};

pub use cache::ScopeCache;
pub use context::{Context, Part};
pub use rds::Memo;

/// Type URLs of the resources the compiler produces.
pub mod type_url {
    /// CDS.
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// EDS.
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// LDS.
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// RDS.
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// SDS.
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
}

/// Istio's SDS names, which TLS contexts refer to and the control plane serves.
pub mod secret {
    /// The workload certificate and key.
    pub const WORKLOAD: &str = "default";
    /// The trust bundle.
    pub const ROOT: &str = "ROOTCA";
}

/// Everything one proxy receives, each list sorted by resource name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// CDS.
    pub clusters: Vec<Cluster>,
    /// EDS, one per EDS cluster.
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// LDS.
    pub listeners: Vec<Listener>,
    /// RDS.
    pub routes: Vec<RouteConfiguration>,
}

/// One resource encoded once: its name, protobuf bytes (shared, cheap to clone) and a content
/// hash used as its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Resource name.
    pub name: String,
    /// Protobuf encoding of the resource (not wrapped in `Any`).
    pub body: Body,
    /// xxh3 of the encoding.
    pub hash: u64,
}

/// A resource's encoding: one buffer, or parts sent one after the other. A route
/// configuration is kept as parts (one per virtual host) so that the parts are shared between
/// scopes and reused when a snapshot changes other virtual hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// The whole encoding.
    One(bytes::Bytes),
    /// The encoding is the concatenation of the parts; `len` is their total size.
    Parts {
        /// In order.
        parts: std::sync::Arc<[bytes::Bytes]>,
        /// Total size.
        len: usize,
    },
}

impl Body {
    /// Encoded size.
    pub fn len(&self) -> usize {
        match self {
            Body::One(b) => b.len(),
            Body::Parts { len, .. } => *len,
        }
    }

    /// Whether the encoding is empty (a message with every field at its default).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffers to send, in order.
    pub fn chunks(&self) -> &[bytes::Bytes] {
        match self {
            Body::One(b) => std::slice::from_ref(b),
            Body::Parts { parts, .. } => parts,
        }
    }

    /// The encoding in one buffer (copied when in parts).
    pub fn to_bytes(&self) -> bytes::Bytes {
        match self {
            Body::One(b) => b.clone(),
            Body::Parts { parts, len } => {
                let mut out = Vec::with_capacity(*len);
                for p in parts.iter() {
                    out.extend_from_slice(p);
                }
                out.into()
            }
        }
    }

    fn hash(&self) -> u64 {
        match self {
            Body::One(b) => xxhash_rust::xxh3::xxh3_64(b),
            Body::Parts { parts, .. } => {
                let mut h = xxhash_rust::xxh3::Xxh3::new();
                for p in parts.iter() {
                    h.update(p);
                }
                h.digest()
            }
        }
    }
}

impl Encoded {
    /// Encodes one message.
    pub fn new<M: prost::Message>(name: &str, message: &M) -> Encoded {
        Encoded::from_bytes(name, message.encode_to_vec())
    }

    /// Wraps already encoded bytes.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Encoded {
        Encoded::from_body(name, Body::One(bytes.into()))
    }

    /// Wraps an encoding made of parts.
    pub fn from_parts(name: &str, parts: Vec<bytes::Bytes>) -> Encoded {
        let len = parts.iter().map(bytes::Bytes::len).sum();
        Encoded::from_body(
            name,
            Body::Parts {
                parts: parts.into(),
                len,
            },
        )
    }

    fn from_body(name: &str, body: Body) -> Encoded {
        Encoded {
            name: name.to_owned(),
            hash: body.hash(),
            body,
        }
    }

    /// Decodes the resource (for display and tests).
    pub fn decode<M: prost::Message + Default>(&self) -> M {
        M::decode(self.body.to_bytes()).expect("the compiler encodes valid messages")
    }

    /// The version string sent to Envoy.
    pub fn version(&self) -> String {
        format!("{:016x}", self.hash)
    }
}

/// Resources of one type, sorted by name; shared by every scope with the same list.
pub type List = std::sync::Arc<[Encoded]>;

/// A proxy's resources, encoded. Two are equal when their resources are (whatever the memo).
#[derive(Clone, Debug, Default)]
pub struct EncodedResources {
    /// CDS.
    pub clusters: List,
    /// EDS.
    pub endpoints: List,
    /// LDS.
    pub listeners: List,
    /// RDS.
    pub routes: List,
    /// Where the route configurations' virtual hosts came from, for [`recompile_part`].
    pub memo: rds::Memo,
}

impl PartialEq for EncodedResources {
    fn eq(&self, other: &Self) -> bool {
        self.clusters == other.clusters
            && self.endpoints == other.endpoints
            && self.listeners == other.listeners
            && self.routes == other.routes
    }
}

impl Eq for EncodedResources {}

impl EncodedResources {
    /// Total encoded size in bytes.
    pub fn size(&self) -> usize {
        [
            &self.clusters,
            &self.endpoints,
            &self.listeners,
            &self.routes,
        ]
        .iter()
        .flat_map(|l| l.iter())
        .map(|e| e.body.len())
        .sum()
    }
}

/// Compiles and encodes the full configuration of `proxy` from `snapshot`. This is what the
/// xDS server sends; every resource is encoded exactly once.
pub fn compile_encoded(snapshot: &Snapshot, proxy: &Proxy) -> EncodedResources {
    compile_part(snapshot, proxy, Part::All)
}

/// Compiles one part of a proxy's configuration (see [`Part`]); the outbound part of proxies
/// with the same [`scope`] is identical.
pub fn compile_part(snapshot: &Snapshot, proxy: &Proxy, part: Part) -> EncodedResources {
    build(snapshot, proxy, part, None, None)
}

/// What changed in the mesh since a part was compiled, as far as the rest can be reused.
/// Anything else (services, DestinationRules, settings) needs a compilation anew.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rebuild {
    /// Services whose endpoints changed: their clusters and load assignments are rebuilt.
    pub endpoints: std::collections::BTreeSet<String>,
    /// VirtualServices changed: listeners are rebuilt, and in route configurations the
    /// virtual hosts of services whose VirtualService changed.
    pub routing: bool,
}

/// Rebuilds `previous` (the same part of the same proxy, compiled from an earlier snapshot)
/// for `snapshot`, given that everything that changed in between is described by `rebuild`.
/// The result is what [`compile_part`] would return, at a fraction of the cost.
pub fn recompile_part(
    snapshot: &Snapshot,
    proxy: &Proxy,
    part: Part,
    previous: &EncodedResources,
    rebuild: &Rebuild,
) -> EncodedResources {
    build(snapshot, proxy, part, Some((previous, rebuild)), None)
}

/// The outbound part of a scope, as [`compile_part`] (or [`recompile_part`] from `previous`)
/// would build it, sharing with other scopes through `cache`: clusters and load assignments
/// built once per snapshot for scopes that depend on the same inputs, and one copy of
/// identical resources and lists. Scopes compile concurrently; the cache is locked only to
/// build or find clusters and to intern.
pub fn compile_scope(
    snapshot: &Snapshot,
    scope: &Proxy,
    previous: Option<(&EncodedResources, &Rebuild)>,
    cache: &std::sync::Mutex<ScopeCache>,
) -> EncodedResources {
    let mut out = build(snapshot, scope, Part::Outbound, previous, Some(cache));
    lock(cache).intern(&mut out);
    out
}

fn lock(cache: &std::sync::Mutex<ScopeCache>) -> std::sync::MutexGuard<'_, ScopeCache> {
    // A panic while it was held leaves at worst an entry missing.
    cache.lock().unwrap_or_else(|p| p.into_inner())
}

fn build(
    snapshot: &Snapshot,
    proxy: &Proxy,
    part: Part,
    previous: Option<(&EncodedResources, &Rebuild)>,
    cache: Option<&std::sync::Mutex<ScopeCache>>,
) -> EncodedResources {
    let ctx = Context::new(snapshot, proxy, part);
    let clusters = || match previous {
        // Services and rules are as before: only the clusters of changed endpoints change.
        Some((previous, rebuild)) => {
            let mut clusters = previous.clusters.clone();
            let mut endpoints = previous.endpoints.clone();
            if !rebuild.endpoints.is_empty() {
                let ctx = Context::restricted(snapshot, proxy, part, Some(&rebuild.endpoints));
                let (fresh, eds) = cds::clusters(&ctx);
                let fresh_endpoints = eds::load_assignments(&ctx, &eds);
                splice(&mut clusters, fresh, &rebuild.endpoints);
                splice(&mut endpoints, fresh_endpoints, &rebuild.endpoints);
            }
            (clusters, endpoints)
        }
        None => {
            let (clusters, eds) = cds::clusters(&ctx);
            let endpoints = eds::load_assignments(&ctx, &eds);
            (clusters.into(), endpoints.into())
        }
    };
    let (clusters, endpoints) = match cache {
        Some(cache) => {
            let key = cache::cluster_key(&ctx);
            lock(cache).clusters(snapshot.version, key, clusters)
        }
        None => clusters(),
    };
    let (listeners, routes, memo) = match previous {
        Some((previous, rebuild)) if !rebuild.routing => (
            previous.listeners.clone(),
            previous.routes.clone(),
            previous.memo.clone(),
        ),
        _ => {
            let previous = previous.map(|(p, _)| rds::Previous {
                routes: &p.routes,
                memo: &p.memo,
            });
            let (routes, memo) = rds::route_configurations(&ctx, previous.as_ref());
            (encode_listeners(&ctx).into(), routes.into(), memo)
        }
    };
    // Every list sorted by name: streams look resources up by binary search.
    EncodedResources {
        clusters,
        endpoints,
        listeners,
        routes,
        memo,
    }
}

/// The service host of an `outbound|PORT|SUBSET|HOST` name.
fn outbound_host(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("outbound|")?;
    rest.splitn(3, '|').nth(2)
}

/// Replaces the resources of `hosts` in the sorted `list` with `fresh`.
fn splice(list: &mut List, fresh: Vec<Encoded>, hosts: &std::collections::BTreeSet<String>) {
    let of_hosts = |e: &Encoded| outbound_host(&e.name).is_some_and(|h| hosts.contains(h));
    let mut spliced: Vec<Encoded> = list.iter().filter(|e| !of_hosts(e)).cloned().collect();
    spliced.extend(fresh.into_iter().filter(of_hosts));
    spliced.sort_by(|a, b| a.name.cmp(&b.name));
    *list = spliced.into();
}

fn encode_listeners(ctx: &Context<'_>) -> Vec<Encoded> {
    let mut listeners: Vec<Encoded> = lds::listeners(ctx)
        .iter()
        .map(|l| Encoded::new(&l.name, l))
        .collect();
    listeners.sort_by(|a, b| a.name.cmp(&b.name));
    listeners
}

/// The proxy as far as its outbound configuration depends on it: workload identity and
/// addresses dropped, labels reduced to the keys the configuration reads.
pub fn scope(snapshot: &Snapshot, proxy: &Proxy) -> Proxy {
    let mut p = proxy.clone();
    p.labels.retain(|k, _| snapshot.label_keys.contains(k));
    p.workload_name = String::new();
    p.ips = vec![std::net::IpAddr::from([0, 0, 0, 0])];
    p.id = String::new();
    p.service_account = None;
    p.workload_service_account = None;
    p.identity = None;
    p
}

impl EncodedResources {
    /// Merges two parts (each sorted by name) into one sorted set.
    pub fn merge(&self, other: &EncodedResources) -> EncodedResources {
        fn join(a: &[Encoded], b: &[Encoded]) -> Vec<Encoded> {
            let mut out: Vec<Encoded> = a.iter().chain(b).cloned().collect();
            out.sort_by(|x, y| x.name.cmp(&y.name));
            out.dedup_by(|x, y| x.name == y.name);
            out
        }
        EncodedResources {
            clusters: join(&self.clusters, &other.clusters).into(),
            endpoints: join(&self.endpoints, &other.endpoints).into(),
            listeners: join(&self.listeners, &other.listeners).into(),
            routes: join(&self.routes, &other.routes).into(),
            memo: rds::Memo::default(),
        }
    }
}

/// The same configuration as messages, for display, JSON and tests.
pub fn compile(snapshot: &Snapshot, proxy: &Proxy) -> Resources {
    let encoded = compile_encoded(snapshot, proxy);
    Resources {
        clusters: encoded.clusters.iter().map(Encoded::decode).collect(),
        endpoints: encoded.endpoints.iter().map(Encoded::decode).collect(),
        listeners: encoded.listeners.iter().map(Encoded::decode).collect(),
        routes: encoded.routes.iter().map(Encoded::decode).collect(),
    }
}
