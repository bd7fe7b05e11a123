//! TokenRequest: `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token` issues a token for
//! an existing ServiceAccount (`tokens`), which this server's TokenReview then accepts.
//! Bound objects (`spec.boundObjectRef`) are echoed, not checked: a token outlives the Pod or
//! Secret it names.

use axum::{http::StatusCode, response::Response};
use serde_json::{Value, json};

use super::{ApiError, Server, Target, json_response, key_of, routes::parse_body};
use crate::{
    kinds::ResourceType,
    store::rfc3339,
    tokens::{self, Claims},
};

/// What a TokenRequest asks for when it names no expiry (the API server's default).
const DEFAULT_EXPIRATION_SECONDS: u64 = 3600;

/// The API server's bounds on `spec.expirationSeconds`.
const MIN_EXPIRATION_SECONDS: u64 = 600;
const MAX_EXPIRATION_SECONDS: u64 = 1 << 32;

pub(super) async fn token_request(
    server: &Server,
    target: &Target,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let request = parse_body(body)?;
    let invalid = |field: &str, message: String| {
        ApiError::invalid(
            &token_request_type(),
            name,
            vec![(field.to_owned(), message)],
        )
    };
    if !request["kind"].is_null() && request["kind"] != "TokenRequest" {
        return Err(invalid(
            "kind",
            format!("Invalid value: {}: must be TokenRequest", request["kind"]),
        ));
    }
    // Types are checked; unknown fields are ignored, as with `fieldValidation=Ignore`.
    if let Err(e) = serde_json::from_value::<k8s_openapi::api::authentication::v1::TokenRequest>(
        with_type_meta(&request),
    ) {
        return Err(ApiError::bad_request(format!("TokenRequest: {e}")));
    }
    let spec = &request["spec"];
    let expiration = match &spec["expirationSeconds"] {
        Value::Null => DEFAULT_EXPIRATION_SECONDS,
        v => v.as_u64().unwrap_or(0),
    };
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            "spec.expirationSeconds",
            format!(
                "Invalid value: {}: may not specify a duration less than 10 minutes",
                spec["expirationSeconds"]
            ),
        ));
    }
    if expiration > MAX_EXPIRATION_SECONDS {
        return Err(invalid(
            "spec.expirationSeconds",
            format!(
                "Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"
            ),
        ));
    }
    let mut audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences = tokens::api_audiences();
    }
    let namespace = target.namespace.clone().unwrap_or_default();
    let uid = {
        let inner = server.inner.lock().await;
        let account = inner
            .store
            .get(&key_of(&target.t, Some(&namespace), name))
            .ok_or_else(|| ApiError::not_found(&target.t, name))?;
        account["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let issued = tokens::now();
    let claims = Claims {
        namespace: namespace.clone(),
        service_account: name.to_owned(),
        uid,
        audiences: audiences.clone(),
        issued,
        expires: issued + expiration,
    };
    let token = server.signer.issue(&claims);
    let mut spec = json!({"audiences": audiences, "expirationSeconds": expiration});
    if let Some(bound) = request["spec"].get("boundObjectRef") {
        spec["boundObjectRef"] = bound.clone();
    }
    Ok(json_response(
        StatusCode::CREATED,
        json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace,
                         "creationTimestamp": rfc3339(issued)},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": rfc3339(claims.expires)},
        }),
    ))
}

/// The request with `apiVersion` and `kind` filled in where the client left them out (kubectl
/// sends both; a bare `{"spec": ...}` is accepted, as by the API server).
fn with_type_meta(request: &Value) -> Value {
    let mut r = request.clone();
    if r["apiVersion"].is_null() {
        r["apiVersion"] = json!("authentication.k8s.io/v1");
    }
    if r["kind"].is_null() {
        r["kind"] = json!("TokenRequest");
    }
    r
}

/// TokenRequest as a type, for error messages (`TokenRequest.authentication.k8s.io "NAME" is
/// invalid: ...`).
fn token_request_type() -> ResourceType {
    ResourceType {
        group: "authentication.k8s.io".into(),
        version: "v1".into(),
        kind: "TokenRequest".into(),
        plural: "tokenrequests".into(),
        singular: "tokenrequest".into(),
        namespaced: true,
        short_names: Vec::new(),
        categories: Vec::new(),
        status: false,
        create_only: true,
        custom: None,
    }
}
