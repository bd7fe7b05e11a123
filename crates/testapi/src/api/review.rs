//! The reviews this server takes part in: TokenReview, answered from the tokens it was given;
//! SubjectAccessReview, answered by the RBAC objects it stores; and AdmissionReview, sent to
//! the mutating and validating webhooks that apply before a write is stored.

use std::collections::BTreeMap;

use axum::{http::StatusCode, response::Response};
use serde_json::{Value, json};
use tokio::sync::MutexGuard;

use super::{
    ApiError, Inner, Server, Subresource, Target, json_response, routes::parse_body,
    validation::validate,
};
use crate::{
    kinds::ResourceType,
    store::Key,
    tokens::{self, Claims},
};

/// What admission leaves of a write: the server's lock, taken again; the object as the
/// mutating webhooks changed it; the warnings for the client.
pub(super) struct Admitted<'a> {
    pub(super) inner: MutexGuard<'a, Inner>,
    pub(super) object: Value,
    pub(super) warnings: Vec<String>,
}

/// Runs the mutating, then the validating webhooks that apply, before anything is stored
/// (`crate::admission`). The server's lock is released while webhooks are called (one that
/// hangs must not stop every other request) and taken again; callers check that what they
/// read before is still current.
pub(super) async fn admit<'a>(
    server: &'a Server,
    inner: MutexGuard<'a, Inner>,
    target: &Target,
    q: &BTreeMap<String, String>,
    operation: &str,
    object: Value,
    old: Option<&Value>,
) -> Result<Admitted<'a>, ApiError> {
    let configs = |plural: &str| -> Vec<Value> {
        inner
            .store
            .list("admissionregistration.k8s.io", plural, None)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let mutating = configs("mutatingwebhookconfigurations");
    let validating = configs("validatingwebhookconfigurations");
    // Without webhooks the write validates the object; with them, as in the API server, the
    // schema comes first and the webhooks see the object as it would be stored.
    if target.subresource == Subresource::Status || (mutating.is_empty() && validating.is_empty()) {
        return Ok(Admitted {
            inner,
            object,
            warnings: Vec::new(),
        });
    }
    let mut object = object;
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut warnings = validate(&target.t, &mut object, &name, q)?;
    let namespace = if target.t.namespaced {
        let namespace = target
            .namespace
            .clone()
            .or_else(|| object["metadata"]["namespace"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "default".into());
        // The API server fills the request's namespace in before admission.
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.insert("namespace".into(), json!(namespace));
        }
        namespace
    } else {
        String::new()
    };
    let namespace_key = Key {
        group: String::new(),
        plural: "namespaces".into(),
        namespace: String::new(),
        name: namespace.clone(),
    };
    let namespace_labels = inner
        .store
        .get(&namespace_key)
        .map(|ns| ns["metadata"]["labels"].clone());
    let services =
        crate::admission::Services::resolve(mutating.iter().chain(&validating), &inner.store);
    drop(inner);
    let mut review = crate::admission::Review {
        t: &target.t,
        operation,
        object,
        old,
        namespace: &namespace,
        namespace_labels,
        warnings: Vec::new(),
        services,
    };
    // What a webhook's patch leaves must be an object of the kind, unknown fields included.
    let strict = BTreeMap::from([("fieldValidation".to_owned(), "Strict".to_owned())]);
    review
        .mutate(&mutating, |patched| {
            validate(&target.t, patched, &name, &strict)
                .map(drop)
                .map_err(|e| e.message().to_owned())
        })
        .await?;
    review.validate(&validating).await?;
    warnings.append(&mut review.warnings);
    Ok(Admitted {
        inner: server.inner.lock().await,
        object: review.object,
        warnings,
    })
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

/// TokenReview: tokens configured on the command line authenticate as their user, and tokens
/// this server issued (TokenRequest) as their service account while it exists and the token
/// has not expired.
pub(super) async fn token_review(
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
        Some(entry) => configured(entry, &asked),
        None => match server.signer.verify(token) {
            Some(claims) => issued(server, &claims, asked).await,
            None => json!({"authenticated": false, "error": "invalid bearer token"}),
        },
    };
    r["apiVersion"] = json!(target.t.api_version());
    r["kind"] = json!("TokenReview");
    Ok(json_response(StatusCode::CREATED, r))
}

/// SubjectAccessReview: whether the user and groups of `spec` may do what its
/// `resourceAttributes` say, by the RBAC objects stored here (`crate::rbac`). Non-resource
/// requests are never allowed.
pub(super) async fn subject_access_review(
    server: &Server,
    target: &Target,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut r = parse_body(body)?;
    let spec = &r["spec"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let attributes = &spec["resourceAttributes"];
    if !attributes.is_object() && !spec["nonResourceAttributes"].is_object() {
        return Err(ApiError::bad_request(
            "spec: Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    if text(&spec["user"]).is_empty() && spec["groups"].as_array().is_none_or(Vec::is_empty) {
        return Err(ApiError::bad_request(
            "spec.user: Invalid value: at least one of user or group must be specified",
        ));
    }
    let request = crate::rbac::Request {
        user: text(&spec["user"]),
        groups: spec["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect(),
        verb: text(&attributes["verb"]),
        group: text(&attributes["group"]),
        resource: text(&attributes["resource"]),
        subresource: text(&attributes["subresource"]),
        name: text(&attributes["name"]),
        namespace: text(&attributes["namespace"]),
    };
    let allowed_by = if attributes.is_object() {
        crate::rbac::authorize(&server.inner.lock().await.store, &request)
    } else {
        None
    };
    r["status"] = match allowed_by {
        Some(reason) => json!({"allowed": true, "reason": reason}),
        None => json!({"allowed": false}),
    };
    r["apiVersion"] = json!(target.t.api_version());
    r["kind"] = json!("SubjectAccessReview");
    Ok(json_response(StatusCode::CREATED, r))
}

/// The review of a configured token, `USER` or `USER@AUD1,AUD2`.
fn configured(entry: &str, asked: &[String]) -> Value {
    // `USER@AUD1,AUD2`: a token bound to those audiences; otherwise valid for any.
    let (user, bound) = match entry.split_once('@') {
        Some((u, a)) => (u, Some(a.split(',').map(str::to_owned).collect::<Vec<_>>())),
        None => (entry, None),
    };
    let granted: Vec<String> = match &bound {
        Some(b) => asked.iter().filter(|a| b.contains(a)).cloned().collect(),
        None => asked.to_vec(),
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

/// The review of a token this server issued. As the API server does, a review that names no
/// audiences checks the server's own, and a token outlives neither its expiry nor its
/// service account (one created again under the same name has another UID).
async fn issued(server: &Server, claims: &Claims, mut asked: Vec<String>) -> Value {
    let refused = |error: String| json!({"authenticated": false, "error": error});
    if claims.expires <= tokens::now() {
        return refused("service account token has expired".into());
    }
    let key = Key {
        group: String::new(),
        plural: "serviceaccounts".into(),
        namespace: claims.namespace.clone(),
        name: claims.service_account.clone(),
    };
    let current_uid = server
        .inner
        .lock()
        .await
        .store
        .get(&key)
        .map(|a| a["metadata"]["uid"].clone());
    match current_uid {
        Some(uid) if uid == claims.uid.as_str() => {}
        Some(uid) => {
            return refused(format!(
                "service account UID ({}) does not match claim ({})",
                uid.as_str().unwrap_or_default(),
                claims.uid
            ));
        }
        None => {
            return refused(format!(
                "service account {}/{} has been deleted",
                claims.namespace, claims.service_account
            ));
        }
    }
    if asked.is_empty() {
        asked = tokens::api_audiences();
    }
    let granted: Vec<&String> = asked
        .iter()
        .filter(|a| claims.audiences.contains(a))
        .collect();
    if granted.is_empty() {
        return refused(format!(
            "token audiences {:?} is invalid for the target audiences {asked:?}",
            claims.audiences
        ));
    }
    json!({
        "authenticated": true,
        "user": {
            "username": claims.username(),
            "uid": claims.uid,
            "groups": ["system:serviceaccounts",
                       format!("system:serviceaccounts:{}", claims.namespace),
                       "system:authenticated"],
        },
        "audiences": granted,
    })
}
