//! The admin HTTP server (port 15014): health, metrics and debug views.

use std::{collections::HashMap, sync::Arc, time::SystemTime};

use axum::{
    Router,
    body::Body,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use sextant_resources::List;
use sextant_xds::{Connections, Generator, proxy_from_node};
use tokio::sync::Semaphore;

use sextant_kube::clusters::{ClusterStatus, Clusters, Stale};

use crate::generator::XdsGenerator;

mod explain;

/// Default `/debug/config_dump` responses built at once (`--max-debug-dumps`).
pub const DEFAULT_DEBUG_DUMPS: usize = 2;
/// Default entries per page of the list views (`--debug-page-size`).
pub const DEFAULT_PAGE_SIZE: usize = 1_000;
/// The header naming the `start` of the next page when a list view has more.
pub const NEXT_START: &str = "x-sextant-next-start";

#[derive(Clone)]
struct Admin {
    generator: Arc<XdsGenerator>,
    connections: Arc<Connections>,
    clusters: ClusterList,
    dumps: Arc<Semaphore>,
    page_size: usize,
    /// This control plane's name in `/debug/syncz` (see [`instance_name`]).
    instance: Arc<str>,
}

/// The name `sextant proxy-status` shows for this control plane: the Pod's name (`POD_NAME`,
/// as the chart sets it, else `HOSTNAME`, which a Pod's containers get), else the host's.
pub fn instance_name() -> String {
    ["POD_NAME", "HOSTNAME"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok())
        .chain(std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "sextant".to_owned())
}

/// How much the debug views may render at once.
#[derive(Clone, Copy, Debug)]
pub struct DebugBounds {
    /// `/debug/config_dump` responses built at once; more are refused with 429.
    pub dumps: usize,
    /// Entries per page of `/debug/syncz`, `/debug/registryz` and `/debug/configz`.
    pub page_size: usize,
}

impl Default for DebugBounds {
    fn default() -> Self {
        DebugBounds {
            dumps: DEFAULT_DEBUG_DUMPS,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

/// The clusters read, for `/debug/clusterz` and the remote cluster metrics.
#[derive(Clone, Default)]
pub struct ClusterList {
    /// The config cluster's id.
    pub local: String,
    /// Every cluster, the config cluster's included.
    pub clusters: Clusters,
}

/// The admin routes.
pub fn router(
    generator: Arc<XdsGenerator>,
    connections: Arc<Connections>,
    clusters: ClusterList,
    bounds: DebugBounds,
) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/live", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/debug/syncz", get(syncz))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/configz", get(configz))
        .route("/debug/registryz", get(registryz))
        .route("/debug/clusterz", get(clusterz))
        .route("/debug/push_status", get(push_status))
        .route("/debug/explain", get(explain::explain))
        .with_state(Admin {
            generator,
            connections,
            clusters,
            dumps: Arc::new(Semaphore::new(bounds.dumps)),
            page_size: bounds.page_size.max(1),
            instance: instance_name().into(),
        })
}

async fn ready(State(a): State<Admin>) -> Response {
    if a.generator.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: initial sync not done",
        )
            .into_response()
    }
}

async fn metrics(State(a): State<Admin>) -> Response {
    a.generator
        .metrics
        .connected_proxies
        .set(a.connections.list().len() as i64);
    a.generator
        .metrics
        .set_clusters(&a.clusters.clusters.list(), &a.clusters.local);
    a.generator
        .metrics
        .remote_registrations_refused
        .set(i64::try_from(a.clusters.clusters.refused().count).unwrap_or(i64::MAX));
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        a.generator.metrics.render(),
    )
        .into_response()
}

fn secs(t: Option<SystemTime>) -> Value {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(Value::Null, |d| json!(d.as_secs_f64()))
}

/// The objects held back after NACKs, as `/debug/syncz` and `/debug/configz` show them.
fn held(a: &Admin) -> Value {
    a.generator
        .held()
        .into_iter()
        .map(|(id, h)| {
            json!({
                "kind": format!("{:?}", id.kind), "namespace": id.namespace, "name": id.name,
                "type_url": h.type_url, "error": h.error, "rejected_by": h.proxy,
                "rejected_version": h.rejected_version.to_string(),
                "served": match h.served_version {
                    Some(v) => format!("content of version {v}"),
                    None => "left out (never accepted)".to_owned(),
                },
            })
        })
        .collect()
}

/// The held objects `proxy` rejected: each stream shows its own, so a page of syncz is not
/// every held object times every stream.
fn held_by(held: &Value, proxy: &str) -> Value {
    held.as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["rejected_by"] == proxy)
        .cloned()
        .collect()
}

/// `?start=N&limit=M` of a list view, `limit` at most the page size.
/// A malformed `start` or `limit` (or a `limit` of 0, whose next page would be itself) is a
/// 400 naming the parameter.
fn page(a: &Admin, q: &HashMap<String, String>) -> Result<(usize, usize), String> {
    let number = |k: &str| -> Result<Option<usize>, String> {
        q.get(k)
            .map(|v| match v.parse::<usize>() {
                Ok(n) if k != "limit" || n > 0 => Ok(n),
                _ if k == "limit" => {
                    Err(format!("?limit={v}: expected a whole number of at least 1"))
                }
                _ => Err(format!("?{k}={v}: expected a whole number")),
            })
            .transpose()
    };
    let start = number("start")?.unwrap_or(0);
    let limit = number("limit")?.map_or(a.page_size, |l| l.min(a.page_size));
    Ok((start, limit))
}

/// The page `(start, limit)` of `items`, and the start of the next page if there is one.
fn paged<T>(
    items: impl ExactSizeIterator<Item = T>,
    (start, limit): (usize, usize),
) -> (Vec<T>, Option<usize>) {
    let total = items.len();
    let page: Vec<T> = items.skip(start).take(limit).collect();
    let end = start.saturating_add(page.len());
    (page, (end < total).then_some(end))
}

/// `body` as JSON, with the next page's start in [`NEXT_START`] when there is more.
fn json_page(body: Value, next: Option<usize>) -> Response {
    let mut response = axum::Json(body).into_response();
    if let Some(next) = next {
        response.headers_mut().insert(NEXT_START, next.into());
    }
    response
}

/// Every stream, per type what was sent and ACKed (versions, and the snapshot versions they
/// came from), its last NACK, and the objects it rejected that are held; paged.
async fn syncz(State(a): State<Admin>, Query(q): Query<HashMap<String, String>>) -> Response {
    let held = held(&a);
    let range = match page(&a, &q) {
        Ok(range) => range,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let latest = a.generator.snapshot().version;
    let push = &a.generator.metrics.push_status;
    let (connections, next) = paged(a.connections.list().into_iter(), range);
    let list: Vec<Value> = connections
        .into_iter()
        .map(|c| {
            let snapshots = push.snapshot_versions(&c.proxy);
            let types: serde_json::Map<String, Value> = c
                .types
                .into_iter()
                .map(|(url, s)| {
                    let snapshot = snapshots
                        .iter()
                        .find(|(t, _)| *t == url)
                        .map(|(_, v)| *v)
                        .unwrap_or_default();
                    let status = json!({
                        "sent_version": s.sent_version, "sent_nonce": s.sent_nonce,
                        "sent_at": secs(s.sent_at), "acked_version": s.acked_version,
                        "acked_at": secs(s.acked_at), "responses": s.responses,
                        "resources": s.resources,
                        "last_nack": s.nack.map(|(v, e)| json!({"version": v, "error": e})),
                        "sent_snapshot": snapshot.sent, "acked_snapshot": snapshot.acked,
                    });
                    (url, status)
                })
                .collect();
            let cluster = a.generator.compiled_proxy(&c.proxy).map(|p| p.cluster_id);
            json!({"proxy": c.proxy, "protocol": c.protocol, "identity": c.identity,
                   "connected_since": secs(Some(c.connected_at)), "types": types,
                   "held": held_by(&held, &c.proxy), "cluster": cluster,
                   "control_plane": &*a.instance, "latest_snapshot": latest})
        })
        .collect();
    json_page(Value::Array(list), next)
}

async fn config_dump(State(a): State<Admin>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(id) = q.get("proxy").or_else(|| q.get("proxyID")) else {
        return (StatusCode::BAD_REQUEST, "missing ?proxy=NODE_ID").into_response();
    };
    let node = envoy_types::pb::envoy::config::core::v3::Node {
        id: id.clone(),
        ..Default::default()
    };
    // A connected proxy's configuration depends on what its stream said (metadata, locality,
    // network, cluster): dump it for that proxy. Any other id is compiled from the id alone,
    // and the response says so.
    let connected = a.connections.list().iter().any(|c| c.proxy == *id);
    let known = connected.then(|| a.generator.compiled_proxy(id)).flatten();
    let compiled_for = if known.is_some() {
        "connected proxy"
    } else {
        "node id only (not connected)"
    };
    let proxy = match known {
        Some(p) => p,
        None => match proxy_from_node(&node) {
            Ok(p) => a.generator.complete(p),
            Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
        },
    };
    let Ok(turn) = a.dumps.clone().try_acquire_owned() else {
        a.generator.metrics.bounded("debug_dumps");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many config dumps being built at once (--max-debug-dumps); try again",
        )
            .into_response();
    };
    // Compiled and rendered on a blocking thread, one resource at a time, into a stream of
    // chunks the client reads at its own pace: memory is one resource, not the whole dump.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::convert::Infallible>>(4);
    let generator = a.generator.clone();
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let resources = generator.resources(&proxy).merged();
        let lists: [(&str, &str, &List); 4] = [
            (
                "clusters",
                "envoy.config.cluster.v3.Cluster",
                &resources.clusters,
            ),
            (
                "endpoints",
                "envoy.config.endpoint.v3.ClusterLoadAssignment",
                &resources.endpoints,
            ),
            (
                "listeners",
                "envoy.config.listener.v3.Listener",
                &resources.listeners,
            ),
            (
                "routes",
                "envoy.config.route.v3.RouteConfiguration",
                &resources.routes,
            ),
        ];
        let _ = dump(&lists, |chunk| tx.blocking_send(Ok(chunk)).ok());
    });
    (
        [
            ("content-type", "application/json"),
            ("x-sextant-compiled-for", compiled_for),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}

/// Writes `lists` (key, message type, resources) as one JSON object, a chunk per resource,
/// through `send`; stops (`None`) when `send` does (the client went away).
fn dump(lists: &[(&str, &str, &List)], mut send: impl FnMut(Vec<u8>) -> Option<()>) -> Option<()> {
    for (i, (key, full_name, list)) in lists.iter().enumerate() {
        send(format!("{}\"{key}\":[", if i == 0 { "{" } else { "]," }).into_bytes())?;
        for (j, resource) in list.iter().enumerate() {
            let json =
                sextant_compiler::json::encoded_to_json(full_name, &resource.body.to_bytes());
            let mut chunk = if j == 0 { Vec::new() } else { b",".to_vec() };
            serde_json::to_writer(&mut chunk, &json).ok()?;
            send(chunk)?;
        }
    }
    send(b"]}".to_vec())
}

/// The snapshot's configuration; each list is paged with the same `?start&limit`.
async fn configz(State(a): State<Admin>, Query(q): Query<HashMap<String, String>>) -> Response {
    let s = a.generator.snapshot();
    let range = match page(&a, &q) {
        Ok(range) => range,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let (vs, n1) = paged(s.virtual_services.iter().map(|v| v.id.to_string()), range);
    let (dr, n2) = paged(s.destination_rules.iter().map(|d| d.id.to_string()), range);
    let (invalid, n3) = paged(
        s.invalid
            .iter()
            .map(|(o, e)| json!({"object": o.to_string(), "errors": e})),
        range,
    );
    let (warnings, n4) = paged(
        s.warnings
            .iter()
            .map(|(o, e)| json!({"object": o.to_string(), "warnings": e})),
        range,
    );
    let next = [n1, n2, n3, n4].into_iter().flatten().min();
    json_page(
        json!({"version": s.version, "virtual_services": vs, "destination_rules": dr,
               "invalid": invalid, "held": held(&a), "warnings": warnings}),
        next,
    )
}

async fn registryz(State(a): State<Admin>, Query(q): Query<HashMap<String, String>>) -> Response {
    let s = a.generator.snapshot();
    let range = match page(&a, &q) {
        Ok(range) => range,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let (services, next) = paged(s.services.values(), range);
    let mut list: Vec<Value> = services.into_iter().map(|svc| {
        let endpoints = s.endpoints(&svc.hostname);
        json!({
            "hostname": svc.hostname,
            "ports": svc.ports.iter().map(|p| json!({"name": p.name, "port": p.port, "protocol": format!("{:?}", p.protocol)})).collect::<Vec<_>>(),
            "endpoints": endpoints.iter().map(|e| e.address.to_string()).collect::<Vec<_>>(),
            "endpoint_details": endpoints.iter().map(|e| json!({
                "address": e.address.to_string(), "cluster": e.cluster_id, "network": e.network,
                "locality": e.locality.label(),
            })).collect::<Vec<_>>(),
        })
    }).collect();
    // The east-west gateways once, after the first page's services: an entry without a
    // hostname, so that readers looking services up by hostname are not disturbed.
    if range.0 == 0 {
        list.push(
            json!({"network_gateways": s.network_gateways.iter().map(|g| json!({
            "network": g.network, "cluster": g.cluster_id, "address": g.address.to_string(),
            "port": g.port,
        })).collect::<Vec<_>>()}),
        );
    }
    json_page(Value::Array(list), next)
}

/// What became of the last versions published, stage by stage from the user's change to each
/// proxy's ACK, with the slowest, pending and NACKing proxies named; bounded whatever the
/// number of proxies (see [`crate::push_status`]), so not paged.
async fn push_status(State(a): State<Admin>) -> Response {
    axum::Json(a.generator.metrics.push_status.view()).into_response()
}

/// Every cluster read (the config cluster and each remote one) with how its watches are
/// doing, then the registrations refused (`state: refused`, a few examples, each with the
/// number refused in all); bounded by `--max-remote-clusters` and
/// [`sextant_kube::clusters::REFUSED_EXAMPLES`], so not paged.
async fn clusterz(State(a): State<Admin>) -> Response {
    let local = &a.clusters.local;
    let mut clusters = a.clusters.clusters.list();
    // The config cluster first, then the remote ones by id.
    clusters.sort_by_key(|c| &c.cluster != local);
    let mut list: Vec<Value> = clusters
        .iter()
        .map(|c| {
            let mut entry = cluster_json(c);
            entry["config_cluster"] = json!(&c.cluster == local);
            entry
        })
        .collect();
    let refused = a.clusters.clusters.refused();
    list.extend(refused.examples.iter().map(|r| {
        json!({"cluster": r.cluster, "origin": r.origin, "state": "refused", "error": r.reason,
               "config_cluster": false, "refused_registrations": refused.count})
    }));
    axum::Json(Value::Array(list)).into_response()
}

fn cluster_json(c: &ClusterStatus) -> Value {
    json!({
        "cluster": c.cluster, "origin": c.origin, "server": c.server, "state": c.state.as_str(),
        "error": c.error, "failing_since": secs(c.failing_since), "objects": c.objects,
        "relists": c.relists, "errors": c.errors,
        "stale_objects": c.stale.map(|s| match s {
            Stale::Removed => "removed after the grace period",
            Stale::Kept => "kept after the grace period",
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(page_size: usize) -> Admin {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let generator = Arc::new(XdsGenerator::new(metrics));
        Admin {
            generator,
            connections: Arc::new(Connections::default()),
            clusters: ClusterList::default(),
            dumps: Arc::new(Semaphore::new(1)),
            page_size,
            instance: "sextant-0".into(),
        }
    }

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pages_end_and_bad_parameters_are_refused() {
        let a = admin(2);
        let range = page(&a, &query(&[("limit", "5")])).expect("a page");
        assert_eq!(range, (0, 2), "the limit is at most the page size");
        assert_eq!(paged(0..5, range), (vec![0, 1], Some(2)));
        assert_eq!(paged(0..5, (4, 2)), (vec![4], None));
        for bad in [("limit", "0"), ("limit", "abc"), ("start", "-1")] {
            let refused = page(&a, &query(&[bad])).expect_err("refused");
            assert!(refused.starts_with(&format!("?{}=", bad.0)), "{refused}");
        }
    }
}
