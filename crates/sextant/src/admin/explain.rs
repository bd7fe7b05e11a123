//! `/debug/explain?proxyID=NODE_ID&host=H&port=P[&path=..&method=..&header=K:V&address=IP&sni=..]`:
//! follows one request through the configuration the proxy is sent (a connected proxy's own,
//! else one compiled from the node id alone, as `/debug/config_dump` does) with the matcher
//! `sextant explain` runs offline, and answers the explanation as JSON.
//!
//! Anyone who reaches the admin port may ask, so the query is bounded (length and headers)
//! and explanations share `/debug/config_dump`'s budget of work at once (`--max-debug-dumps`):
//! each decodes the proxy's whole configuration.

use axum::{
    extract::{Query, State},
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
};
use sextant_compiler::Resources;
use sextant_resources::Encoded;
use sextant_xds::{Generator, proxy_from_node};

use super::Admin;
use crate::cmd::explain::{self, live};

pub(super) async fn explain(
    State(a): State<Admin>,
    uri: Uri,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    if uri.query().map_or(0, str::len) > live::MAX_QUERY_BYTES {
        a.generator.metrics.bounded("debug_explain_query");
        return (
            StatusCode::URI_TOO_LONG,
            format!("query longer than {} bytes", live::MAX_QUERY_BYTES),
        )
            .into_response();
    }
    let (id, mut request) = match live::from_query(&pairs) {
        Ok(x) => x,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let connection = a.connections.list().into_iter().find(|c| c.proxy == id);
    let warnings = connection.as_ref().map(not_running).unwrap_or_default();
    let known = connection.and_then(|_| a.generator.compiled_proxy(&id));
    let configuration = if known.is_some() {
        "what the connected proxy is sent"
    } else {
        "compiled from the node id alone (the proxy is not connected)"
    };
    let proxy = match known {
        Some(p) => p,
        None => {
            let node = envoy_types::pb::envoy::config::core::v3::Node {
                id: id.clone(),
                ..Default::default()
            };
            match proxy_from_node(&node) {
                Ok(p) => a.generator.complete(p),
                Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
            }
        }
    };
    let Ok(turn) = a.dumps.clone().try_acquire_owned() else {
        a.generator.metrics.bounded("debug_dumps");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many config dumps and explanations being built at once (--max-debug-dumps); try again",
        )
            .into_response();
    };
    let generator = a.generator.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let encoded = generator.resources(&proxy).merged();
        let resources = Resources {
            clusters: encoded.clusters.iter().map(Encoded::decode).collect(),
            endpoints: encoded.endpoints.iter().map(Encoded::decode).collect(),
            listeners: encoded.listeners.iter().map(Encoded::decode).collect(),
            routes: encoded.routes.iter().map(Encoded::decode).collect(),
        };
        if request.address.is_none() && explain::listener::captured(&resources.listeners) {
            request.address =
                explain::service_address(&generator.snapshot(), &request.host, &proxy.namespace);
        }
        let mut e = explain::explain(&resources, &proxy.id, &request);
        e.configuration = configuration.to_owned();
        e.warnings = warnings;
        e
    })
    .await;
    match answer {
        Ok(e) => axum::Json(e).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The types whose latest configuration a connected proxy does not run: the explanation
/// follows what it is sent, and Envoy keeps the last version it accepted.
fn not_running(c: &sextant_xds::Connection) -> Vec<String> {
    c.types
        .iter()
        .filter_map(|(url, s)| {
            let kind = crate::cmd::proxy_status::short_type(url);
            let sent = s.sent_version.as_deref()?;
            match &s.nack {
                Some((version, error)) if version == sent => Some(format!(
                    "the proxy rejected {kind} version {version} ({error}): Envoy still runs the \
                     last {kind} it accepted, which this explanation does not follow"
                )),
                _ if s.acked_version.as_deref() != Some(sent) => Some(format!(
                    "the proxy has not yet acknowledged {kind} version {sent}: Envoy may still \
                     run an older one"
                )),
                _ => None,
            }
        })
        .collect()
}
