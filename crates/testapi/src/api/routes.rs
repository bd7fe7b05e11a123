//! The one handler: decodes the request, serves health and discovery paths, resolves a
//! resource path to its type, namespace and name, and dispatches by method to CRUD, patch,
//! watch or review.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    body::Bytes,
    extract::{Request, State},
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::Value;

use super::{
    ApiError, Inner, MAX_BODY, Server, Subresource, Target, apply, crud, discovery, is_true,
    review, token, watch,
};

/// The one handler: routes by path.
pub async fn handle(State(server): State<Arc<Server>>, req: Request) -> Response {
    let response = match route(server.clone(), req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    server.inner.lock().await.store.flush();
    response
}

async fn route(server: Arc<Server>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parse_query(&parts.uri);
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("request body larger than {MAX_BODY} bytes"),
        )
    })?;
    let protobuf = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/vnd.kubernetes.protobuf"))
        && !body.is_empty();
    let body = if protobuf {
        let object = crate::protobuf::decode(&body).map_err(|e| match e {
            crate::protobuf::Error::Malformed(e) => {
                ApiError::bad_request(format!("the protobuf body does not decode: {e}"))
            }
            crate::protobuf::Error::Unsupported(e) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!("protobuf body: {e}"),
            ),
        })?;
        Bytes::from(object.to_string())
    } else {
        body
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let inner = server.inner.lock().await;
    if let ["healthz" | "readyz" | "livez"] = segs.as_slice() {
        return Ok("ok".into_response());
    }
    if let Some(served) = discovery::serve(&inner.kinds, &segs) {
        return served;
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::path_not_found()),
    };
    let target = resolve(&inner, group, version, rest)?;
    drop(inner);
    let method = parts.method.clone();
    let headers = parts.headers;
    match (method, &target.name) {
        (Method::POST, Some(name)) if target.subresource == Subresource::Token => {
            token::token_request(&server, &target, name, &body).await
        }
        (_, Some(_)) if target.subresource == Subresource::Token => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
        (Method::GET, None) if is_true(&query, "watch") => {
            watch::watch(&server, &target, &query).await
        }
        (Method::GET, None) => crud::list(&server, &target, &query, &headers).await,
        (Method::GET, Some(name)) => crud::get(&server, &target, name, &headers).await,
        (Method::POST, None) if target.t.kind == "SubjectAccessReview" => {
            review::subject_access_review(&server, &target, &body).await
        }
        (Method::POST, None) if target.t.create_only => {
            tokio::time::sleep(server.review_delay).await;
            review::token_review(&server, &target, &body).await
        }
        (Method::POST, None) => crud::create(&server, &target, &query, &body).await,
        (Method::PUT, Some(name)) => crud::update(&server, &target, name, &query, &body).await,
        (Method::PATCH, Some(name)) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            apply::patch_object(&server, &target, name, &query, &content_type, &body).await
        }
        (Method::DELETE, Some(name)) => crud::delete(&server, &target, name).await,
        (Method::DELETE, None) => crud::delete_collection(&server, &target, &query).await,
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// The resource a path under a group version names: its type, namespace, name and whether
/// it is the status subresource.
fn resolve(inner: &Inner, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "the server could not find the requested resource ({group}/{version} {rest:?})"
            ),
        )
    };
    let (namespace, plural, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if inner
                .kinds
                .find(group, version, plural)
                .is_some_and(|t| t.namespaced) =>
        {
            (Some((*ns).to_owned()), *plural, tail)
        }
        [plural, tail @ ..] => (None, *plural, tail),
        [] => return Err(not_found()),
    };
    let t = inner
        .kinds
        .find(group, version, plural)
        .ok_or_else(not_found)?;
    let (name, subresource) = match tail {
        [] => (None, Subresource::None),
        [name] => (Some((*name).to_owned()), Subresource::None),
        [name, "status"] if t.status => (Some((*name).to_owned()), Subresource::Status),
        [name, "token"] if t.issues_tokens() => (Some((*name).to_owned()), Subresource::Token),
        _ => return Err(not_found()),
    };
    if t.namespaced && namespace.is_none() && name.is_some() {
        return Err(not_found());
    }
    Ok(Target {
        t,
        namespace,
        name,
        subresource,
    })
}

/// The query parameters (percent-decoded, `+` as a space; a repeated key keeps its last).
fn parse_query(uri: &axum::http::Uri) -> BTreeMap<String, String> {
    axum::extract::Query::<BTreeMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

/// Parses a request body: JSON, or YAML for `apply-patch+yaml`.
pub(super) fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the request body is neither JSON nor UTF-8 YAML"))?;
    let docs = sextant_index::manifest::parse_documents(text)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))?;
    match docs.as_slice() {
        [one] => Ok(one.value.clone()),
        _ => Err(ApiError::bad_request(
            "the request body must hold exactly one object",
        )),
    }
}
