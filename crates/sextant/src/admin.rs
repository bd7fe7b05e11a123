//! The admin HTTP server (port 15014): health, metrics and debug views.

use std::{collections::HashMap, sync::Arc, time::SystemTime};

use axum::{
    Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use sextant_xds::{Connections, Generator, proxy_from_node};

use crate::generator::XdsGenerator;

#[derive(Clone)]
struct Admin {
    generator: Arc<XdsGenerator>,
    connections: Arc<Connections>,
}

/// The admin routes.
pub fn router(generator: Arc<XdsGenerator>, connections: Arc<Connections>) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/live", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/debug/syncz", get(syncz))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/configz", get(configz))
        .route("/debug/registryz", get(registryz))
        .with_state(Admin {
            generator,
            connections,
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

async fn syncz(State(a): State<Admin>) -> axum::Json<Value> {
    let held = held(&a);
    let list: Vec<Value> = a
        .connections
        .list()
        .into_iter()
        .map(|c| {
            let types: serde_json::Map<String, Value> = c
                .types
                .into_iter()
                .map(|(url, s)| {
                    (
                        url,
                        json!({
                            "sent_version": s.sent_version, "sent_nonce": s.sent_nonce,
                            "sent_at": secs(s.sent_at), "acked_version": s.acked_version,
                            "acked_at": secs(s.acked_at), "responses": s.responses,
                            "resources": s.resources,
                            "last_nack": s.nack.map(|(v, e)| json!({"version": v, "error": e})),
                        }),
                    )
                })
                .collect();
            json!({"proxy": c.proxy, "protocol": c.protocol, "identity": c.identity,
                   "connected_since": secs(Some(c.connected_at)), "types": types,
                   "held": held})
        })
        .collect();
    axum::Json(Value::Array(list))
}

async fn config_dump(State(a): State<Admin>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(id) = q.get("proxy").or_else(|| q.get("proxyID")) else {
        return (StatusCode::BAD_REQUEST, "missing ?proxy=NODE_ID").into_response();
    };
    let node = envoy_types::pb::envoy::config::core::v3::Node {
        id: id.clone(),
        ..Default::default()
    };
    let proxy = match proxy_from_node(&node) {
        Ok(p) => a.generator.complete(p),
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let resources = a.generator.resources(&proxy).merged();
    let decoded = sextant_compiler::Resources {
        clusters: resources
            .clusters
            .iter()
            .map(sextant_resources::Encoded::decode)
            .collect(),
        endpoints: resources
            .endpoints
            .iter()
            .map(sextant_resources::Encoded::decode)
            .collect(),
        listeners: resources
            .listeners
            .iter()
            .map(sextant_resources::Encoded::decode)
            .collect(),
        routes: resources
            .routes
            .iter()
            .map(sextant_resources::Encoded::decode)
            .collect(),
    };
    axum::Json(sextant_compiler::json::resources(&decoded)).into_response()
}

async fn configz(State(a): State<Admin>) -> axum::Json<Value> {
    let held = held(&a);
    let s = a.generator.snapshot();
    let ids = |v: Vec<String>| json!(v);
    axum::Json(json!({
        "version": s.version,
        "virtual_services": ids(s.virtual_services.iter().map(|v| v.id.to_string()).collect()),
        "destination_rules": ids(s.destination_rules.iter().map(|d| d.id.to_string()).collect()),
        "invalid": s.invalid.iter().map(|(o, e)| json!({"object": o.to_string(), "errors": e})).collect::<Vec<_>>(),
        "held": held,
        "warnings": s.warnings.iter().map(|(o, e)| json!({"object": o.to_string(), "warnings": e})).collect::<Vec<_>>(),
    }))
}

async fn registryz(State(a): State<Admin>) -> axum::Json<Value> {
    let s = a.generator.snapshot();
    axum::Json(json!(s.services.values().map(|svc| json!({
        "hostname": svc.hostname,
        "ports": svc.ports.iter().map(|p| json!({"name": p.name, "port": p.port, "protocol": format!("{:?}", p.protocol)})).collect::<Vec<_>>(),
        "endpoints": s.endpoints(&svc.hostname).iter().map(|e| e.address.to_string()).collect::<Vec<_>>(),
    })).collect::<Vec<_>>()))
}
