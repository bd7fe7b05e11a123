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

/// A proxy's resources, encoded. Two are equal when their resources are (whatever the memo).
#[derive(Clone, Debug, Default)]
pub struct EncodedResources {
    /// CDS.
    pub clusters: Vec<Encoded>,
    /// EDS.
    pub endpoints: Vec<Encoded>,
    /// LDS.
    pub listeners: Vec<Encoded>,
    /// RDS.
    pub routes: Vec<Encoded>,
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

/// Keeps one copy of identical encoded resources: most resources (a service's clusters and
/// load assignments) are the same bytes in every scope, and scopes are compiled separately.
#[derive(Debug, Default)]
pub struct Interner {
    by_hash: std::collections::HashMap<u64, bytes::Bytes>,
    prune_at: usize,
}

impl Interner {
    /// Replaces each resource's bytes with the shared copy of the same content.
    pub fn intern(&mut self, resources: &mut EncodedResources) {
        for list in [
            &mut resources.clusters,
            &mut resources.endpoints,
            &mut resources.listeners,
            &mut resources.routes,
        ] {
            for e in list.iter_mut() {
                match &mut e.body {
                    Body::One(bytes) => self.share(e.hash, bytes),
                    Body::Parts { parts, .. } => {
                        let mut shared: Vec<bytes::Bytes> = parts.to_vec();
                        for p in &mut shared {
                            self.share(xxhash_rust::xxh3::xxh3_64(p), p);
                        }
                        *parts = shared.into();
                    }
                }
            }
        }
        if self.by_hash.len() > self.prune_at {
            // Entries only the interner still holds belong to replaced resources.
            self.by_hash.retain(|_, b| !b.is_unique());
            self.prune_at = (self.by_hash.len() * 2).max(4096);
        }
    }

    /// Replaces `bytes` (whose hash is `hash`) with the shared copy of the same content.
    fn share(&mut self, hash: u64, bytes: &mut bytes::Bytes) {
        use std::collections::hash_map::Entry;
        match self.by_hash.entry(hash) {
            // Unchanged resources of a rebuilt scope are the shared copy already.
            Entry::Occupied(o)
                if o.get().as_ptr() == bytes.as_ptr() && o.get().len() == bytes.len() => {}
            Entry::Occupied(o) if *o.get() == *bytes => *bytes = o.get().clone(),
            Entry::Occupied(_) => {} // a hash collision: keep its own copy
            Entry::Vacant(v) => {
                v.insert(bytes.clone());
            }
        }
    }

    /// Distinct resources held.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
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
    let ctx = Context::new(snapshot, proxy, part);
    let (clusters, eds) = cds::clusters(&ctx);
    let endpoints = eds::load_assignments(&ctx, &eds);
    let listeners = encode_listeners(&ctx);
    let (routes, memo) = rds::route_configurations(&ctx, None);
    // Every list sorted by name: streams look resources up by binary search.
    EncodedResources {
        clusters,
        endpoints,
        listeners,
        routes,
        memo,
    }
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
/// for `snapshot`, given that everything that changed in between is described by `rebuild`. The result is what
/// [`compile_part`] would return, at a fraction of the cost.
pub fn recompile_part(
    snapshot: &Snapshot,
    proxy: &Proxy,
    part: Part,
    previous: &EncodedResources,
    rebuild: &Rebuild,
) -> EncodedResources {
    let mut out = EncodedResources {
        clusters: previous.clusters.clone(),
        endpoints: previous.endpoints.clone(),
        ..EncodedResources::default()
    };
    if !rebuild.endpoints.is_empty() {
        let ctx = Context::restricted(snapshot, proxy, part, Some(&rebuild.endpoints));
        let (clusters, eds) = cds::clusters(&ctx);
        let endpoints = eds::load_assignments(&ctx, &eds);
        splice(&mut out.clusters, clusters, &rebuild.endpoints);
        splice(&mut out.endpoints, endpoints, &rebuild.endpoints);
    }
    if rebuild.routing {
        let ctx = Context::new(snapshot, proxy, part);
        out.listeners = encode_listeners(&ctx);
        let previous = rds::Previous {
            routes: &previous.routes,
            memo: &previous.memo,
        };
        (out.routes, out.memo) = rds::route_configurations(&ctx, Some(&previous));
    } else {
        out.listeners = previous.listeners.clone();
        out.routes = previous.routes.clone();
        out.memo = previous.memo.clone();
    }
    out
}

/// The service host of an `outbound|PORT|SUBSET|HOST` name.
fn outbound_host(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("outbound|")?;
    rest.splitn(3, '|').nth(2)
}

/// Replaces the resources of `hosts` in the sorted `list` with `fresh`.
fn splice(
    list: &mut Vec<Encoded>,
    fresh: Vec<Encoded>,
    hosts: &std::collections::BTreeSet<String>,
) {
    let of_hosts = |e: &Encoded| outbound_host(&e.name).is_some_and(|h| hosts.contains(h));
    list.retain(|e| !of_hosts(e));
    list.extend(fresh.into_iter().filter(of_hosts));
    list.sort_by(|a, b| a.name.cmp(&b.name));
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
            clusters: join(&self.clusters, &other.clusters),
            endpoints: join(&self.endpoints, &other.endpoints),
            listeners: join(&self.listeners, &other.listeners),
            routes: join(&self.routes, &other.routes),
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
