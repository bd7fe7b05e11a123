//! The reviews this server takes part in: TokenReview, answered from the tokens it was given,
//! and AdmissionReview, sent to the validating webhooks that apply before a write is stored.

use std::collections::BTreeMap;

use axum::{http::StatusCode, response::Response};
use serde_json::{Value, json};
use tokio::sync::MutexGuard;

use super::{
    ApiError, Inner, Server, Target, json_response, routes::parse_body, validation::validate,
};
use crate::{kinds::ResourceType, store::Key};

/// Runs the validating webhooks that apply, before anything is stored. The server's lock is
/// released while webhooks are called (one that hangs must not stop every other request) and
/// taken again; callers check that what they read before is still current.
pub(super) async fn admit<'a>(
    server: &'a Server,
    inner: MutexGuard<'a, Inner>,
    target: &Target,
    q: &BTreeMap<String, String>,
    operation: &str,
    object: &Value,
    old: Option<&Value>,
) -> Result<MutexGuard<'a, Inner>, ApiError> {
    if target.status {
        return Ok(inner);
    }
    let configs: Vec<Value> = inner
        .store
        .list(
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            None,
        )
        .map(|(_, v)| v.clone())
        .collect();
    // Without webhooks the write validates the object; with them, as in the API server, the
    // schema comes first and the webhooks see the object as it would be stored.
    if configs.is_empty() {
        return Ok(inner);
    }
    let mut object = object.clone();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    validate(&target.t, &mut object, &name, q)?;
    let object = &object;
    drop(inner);
    let namespace = target
        .namespace
        .clone()
        .or_else(|| object["metadata"]["namespace"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            if target.t.namespaced {
                "default".into()
            } else {
                String::new()
            }
        });
    crate::admission::admit(&configs, &target.t, operation, object, old, &namespace)
        .await
        .map_err(ApiError::from)?;
    Ok(server.inner.lock().await)
}

/// Fails with a conflict when the object changed while the lock was released for webhooks.
pub(super) fn unchanged_since(
    inner: &Inner,
    t: &ResourceType,
    key: &Key,
    old: &Value,
) -> Result<(), ApiError> {
    let now = inner
        .store
        .get(key)
        .map(|o| &o["metadata"]["resourceVersion"]);
    if now == Some(&old["metadata"]["resourceVersion"]) {
        return Ok(());
    }
    Err(ApiError::conflict(t, &key.name))
}

/// TokenReview: tokens configured on the command line authenticate as their user.
pub(super) fn token_review(
    server: &Server,
    target: &Target,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut r = parse_body(body)?;
    if target.t.kind != "TokenReview" {
        return Err(ApiError::bad_request(
            "only TokenReview is create-only here",
        ));
    }
    let token = r["spec"]["token"].as_str().unwrap_or_default();
    let asked: Vec<String> = r["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    r["status"] = match server.tokens.get(token) {
        Some(entry) => {
            // `USER@AUD1,AUD2`: a token bound to those audiences; otherwise valid for any.
            let (user, bound) = match entry.split_once('@') {
                Some((u, a)) => (u, Some(a.split(',').map(str::to_owned).collect::<Vec<_>>())),
                None => (entry.as_str(), None),
            };
            let granted: Vec<String> = match &bound {
                Some(b) => asked.iter().filter(|a| b.contains(a)).cloned().collect(),
                None => asked.clone(),
            };
            let groups = if user.starts_with("system:serviceaccount:") {
                json!(["system:serviceaccounts", "system:authenticated"])
            } else {
                json!(["system:authenticated"])
            };
            if !asked.is_empty() && granted.is_empty() {
                json!({"authenticated": false,
                       "error": format!("token audiences {bound:?} are invalid for the target audiences {asked:?}")})
            } else {
                json!({"authenticated": true, "user": {"username": user, "groups": groups},
                       "audiences": granted})
            }
        }
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    r["apiVersion"] = json!(target.t.api_version());
    r["kind"] = json!("TokenReview");
    Ok(json_response(StatusCode::CREATED, r))
}
