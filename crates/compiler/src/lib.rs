//! Compiles the mesh model into the Envoy v3 resources an Istio sidecar would receive.
//!
//! `compile(&Snapshot, &Proxy)` is a pure, deterministic function: no clock and no globals
//! that affect output. Caching wraps it from outside: `ScopeCache` shares what scopes with the
//! same inputs compile to, keyed by exactly those inputs. One module per xDS type (`cds`,
//! `eds`, `lds`, `rds`); `policy` applies DestinationRule traffic policy to clusters and
//! `routes` translates VirtualService rules. Names and defaults follow istiod. Istio-proxy-only extensions (`istio.*` filters) are never emitted, so every resource
//! is accepted by stock Envoy. `json` renders resources with Envoy's field names and `bootstrap`
//! inlines them into a static Envoy bootstrap for `envoy --mode validate`. What it produces
//! is `sextant-resources`' vocabulary (`Encoded`, `Body`, `List`, `EncodedResources`, type URLs,
//! SDS names); resources are assembled from shared parts with that crate's
//! `wire` helpers, and `EncodedResources::memo` carries `rds`' record of virtual host origins.

pub mod bootstrap;
mod cache;
mod cds;
mod context;
mod dns;
mod eds;
mod egress;
mod gateway;
mod gateway_routes;
mod grpc;
mod hcm;
mod inbound;
pub mod json;
mod lds;
mod locality;
mod policy;
mod proto;
mod rds;
mod routes;
pub mod vhds;

use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
    route::v3::RouteConfiguration,
};
use sextant_model::{Proxy, Snapshot};

pub use cache::ScopeCache;
pub use context::{Context, Part};
// The encoded-resource vocabulary is `sextant-resources`'; re-exported for the callers that
// know it by the compiler's name.
use sextant_resources::{Encoded, EncodedResources, List, Memo};

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
    /// The hosts of the changed VirtualServices, before and after, as `(namespace, resolved
    /// host)`; `("", "")` when some are not known. A scope whose Sidecar imports none of
    /// them is kept as it was.
    pub virtual_service_hosts: std::collections::BTreeSet<(String, String)>,
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
    lock(cache).intern(&mut out, previous.map(|(p, _)| p));
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
    // Only VirtualServices changed, none of which the proxy's Sidecar imports: nothing it
    // gets can differ. Decided before the proxy's view is built, which costs a pass over
    // every service (W-L: 10,000 per scope, for each of 100 scopes, on every change).
    if let Some((previous, rebuild)) = previous
        && rebuild.endpoints.is_empty()
        && !proxy.proxyless
        && context::ignores_virtual_service_hosts(snapshot, proxy, &rebuild.virtual_service_hosts)
    {
        return previous.clone();
    }
    let ctx = Context::new(snapshot, proxy, part);
    if proxy.proxyless {
        return grpc::part(&ctx);
    }
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
    let (clusters, endpoints) = match (cache, previous) {
        // Only VirtualServices changed: the previous lists stay as they are, shared already.
        // Looking them up would build and compare a key over every visible service.
        (_, Some((previous, rebuild))) if rebuild.endpoints.is_empty() => {
            (previous.clusters.clone(), previous.endpoints.clone())
        }
        (Some(cache), _) => {
            let key = cache::cluster_key(&ctx);
            lock(cache).clusters(snapshot.version, key, clusters)
        }
        (None, _) => clusters(),
    };
    if ctx.is_router() {
        return gateway_part(&ctx, clusters, endpoints);
    }
    let (listeners, routes, memo) = match previous {
        Some((previous, rebuild)) if !rebuild.routing => (
            previous.listeners.clone(),
            previous.routes.clone(),
            previous.memo.clone(),
        ),
        _ => {
            // A set without the compiler's origins (merged parts) reuses no virtual host.
            let none = rds::Origins::default();
            let previous = previous.map(|(p, _)| rds::Previous {
                routes: &p.routes,
                origins: p.memo.get().unwrap_or(&none),
            });
            let (routes, origins) = rds::route_configurations(&ctx, previous.as_ref());
            let memo = Memo::new(origins);
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

/// A gateway's part: the outbound clusters and load assignments as for a sidecar, and its
/// Gateways' listeners, routes and SNI-DNAT clusters, built anew each time (gateways are few).
fn gateway_part(ctx: &Context<'_>, clusters: List, endpoints: List) -> EncodedResources {
    if !ctx.outbound() {
        return EncodedResources::default();
    }
    let slots = gateway::merge(ctx);
    let sni = gateway_routes::sni_dnat_clusters(ctx, &slots);
    let clusters = if sni.is_empty() {
        clusters
    } else {
        let mut all: Vec<Encoded> = clusters.iter().cloned().chain(sni).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all.dedup_by(|a, b| a.name == b.name);
        all.into()
    };
    let listeners: Vec<Encoded> = gateway::listeners(ctx, &slots)
        .iter()
        .map(|l| Encoded::new(&l.name, l))
        .collect();
    EncodedResources {
        clusters,
        endpoints,
        listeners: listeners.into(),
        routes: gateway_routes::route_configurations(ctx, &slots).into(),
        memo: Memo::default(),
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
    // A gateway's listeners depend on the Services selecting it, so on all of its labels.
    if p.kind != sextant_model::ProxyKind::Router {
        p.labels.retain(|k, _| snapshot.label_keys.contains(k));
    }
    p.workload_name = String::new();
    // Load assignments depend on where the proxy is only when the mesh makes them.
    if !snapshot.locality_aware {
        p.locality = sextant_model::Locality::default();
    }
    if !snapshot.multi_network {
        p.network = String::new();
    }
    if !snapshot.cluster_aware {
        p.cluster_id = String::new();
    }
    p.ips = vec![std::net::IpAddr::from([0, 0, 0, 0])];
    p.id = String::new();
    p.service_account = None;
    p.workload_service_account = None;
    p.identity = None;
    p
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
