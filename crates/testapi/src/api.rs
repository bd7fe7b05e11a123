//! The HTTP API: discovery, OpenAPI v3, CRUD with patches and the status subresource, list and
//! watch, server-side printing (`Table`) and TokenReview.

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::sync::{Mutex, broadcast::error::RecvError, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    kinds::{self, ResourceType, ServedKinds},
    patch,
    select::Selector,
    store::{Event, EventType, Key, Store, now_rfc3339, parse_rfc3339},
};

/// Largest request body accepted.
pub const MAX_BODY: usize = 3 << 20;

/// The server's state.
pub struct Server {
    pub(crate) inner: Mutex<Inner>,
    /// Bearer tokens TokenReview accepts, with their user names (`USER@AUD1,AUD2`: bound to
    /// those audiences).
    pub(crate) tokens: BTreeMap<String, String>,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) kinds: ServedKinds,
    /// Field ownership for server-side apply: by object, manager and owned leaf paths.
    pub(crate) owners: BTreeMap<Key, BTreeMap<String, std::collections::BTreeSet<String>>>,
}

impl Inner {
    /// Serves the objects of `store`, with the kinds of its CRDs.
    pub(crate) fn new(store: Store) -> Inner {
        let mut inner = Inner {
            store,
            kinds: ServedKinds::default(),
            owners: BTreeMap::new(),
        };
        inner.refresh_kinds();
        inner
    }

    /// Built-in kinds plus those of every stored CRD.
    pub(crate) fn refresh_kinds(&mut self) {
        let crds = self
            .store
            .list("apiextensions.k8s.io", "customresourcedefinitions", None)
            .map(|(_, v)| v);
        self.kinds = ServedKinds::new(crds);
    }
}

/// An error as the API server reports it: a `Status` object.
pub(crate) struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
    details: Value,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// An error about one object of `t`.
    fn about(
        t: &ResourceType,
        name: &str,
        code: StatusCode,
        reason: &'static str,
        message: String,
    ) -> ApiError {
        let mut e = ApiError::new(code, reason, message);
        e.details = json!({"name": name, "group": t.group, "kind": t.plural});
        e
    }

    fn not_found(t: &ResourceType, name: &str) -> ApiError {
        let message = format!("{} \"{name}\" not found", qualified(t));
        ApiError::about(t, name, StatusCode::NOT_FOUND, "NotFound", message)
    }

    /// The object changed since the version the request was based on.
    fn conflict(t: &ResourceType, name: &str) -> ApiError {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            qualified(t)
        );
        ApiError::about(t, name, StatusCode::CONFLICT, "Conflict", message)
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// `422 Invalid` listing every field error.
    fn invalid(t: &ResourceType, name: &str, errors: Vec<(String, String)>) -> ApiError {
        let list: Vec<String> = errors
            .iter()
            .map(|(f, m)| {
                if f.is_empty() {
                    m.clone()
                } else {
                    format!("{f}: {m}")
                }
            })
            .collect();
        let joined = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{}.{} \"{name}\" is invalid: {joined}", t.kind, t.group)
                .replace(". \"", " \""),
        );
        e.details = json!({
            "name": name, "group": t.group, "kind": t.kind,
            "causes": errors.iter().map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f})).collect::<Vec<_>>(),
        });
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if !self.details.is_null() {
            status["details"] = self.details;
        }
        (self.code, axum::Json(status)).into_response()
    }
}

/// Runs the validating webhooks that apply, before anything is stored. The server's lock is
/// released while webhooks are called (one that hangs must not stop every other request) and
/// taken again; callers check that what they read before is still current.
async fn admit<'a>(
    server: &'a Server,
    inner: tokio::sync::MutexGuard<'a, Inner>,
    target: &Target,
    q: &BTreeMap<String, String>,
    operation: &str,
    object: &Value,
    old: Option<&Value>,
) -> Result<tokio::sync::MutexGuard<'a, Inner>, ApiError> {
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
        .map_err(|d| ApiError {
            code: StatusCode::from_u16(d.code).unwrap_or(StatusCode::BAD_REQUEST),
            reason: match d.reason.as_str() {
                "Invalid" => "Invalid",
                "Forbidden" => "Forbidden",
                "InternalError" => "InternalError",
                _ => "BadRequest",
            },
            message: d.message,
            details: Value::Null,
        })?;
    Ok(server.inner.lock().await)
}

/// Fails with a conflict when the object changed while the lock was released for webhooks.
fn unchanged_since(
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

/// `virtualservices.networking.istio.io` or `services`.
fn qualified(t: &ResourceType) -> String {
    if t.group.is_empty() {
        t.plural.clone()
    } else {
        format!("{}.{}", t.plural, t.group)
    }
}

/// A stored object and the warnings for the client.
pub(crate) struct Stored(Value, Vec<String>);

impl Stored {
    /// The response, with a `Warning` header per warning (kubectl prints them).
    fn respond(self, code: StatusCode) -> Response {
        let mut r = json_response(code, self.0);
        for w in self.1 {
            let text = format!("299 - \"{}\"", w.replace('"', "'"));
            if let Ok(v) = axum::http::HeaderValue::from_str(&text) {
                r.headers_mut().append(header::WARNING, v);
            }
        }
        r
    }
}

fn json_response(code: StatusCode, value: Value) -> Response {
    (code, axum::Json(value)).into_response()
}

/// What a resource URL names.
struct Target {
    t: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

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
        .is_some_and(|c| c.starts_with("application/vnd.kubernetes.protobuf"));
    let body = if protobuf {
        let object = crate::protobuf::decode(&body).map_err(|e| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!("protobuf body: {e}"),
            )
        })?;
        Bytes::from(object.to_string())
    } else {
        body
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let inner = server.inner.lock().await;
    match segs.as_slice() {
        ["healthz" | "readyz" | "livez"] => return Ok("ok".into_response()),
        ["version"] => {
            return Ok(json_response(
                StatusCode::OK,
                json!({"major": "1", "minor": "35", "gitVersion": "v1.35.0-sextant-testapi",
                       "platform": "linux/amd64"}),
            ));
        }
        ["api"] => {
            return Ok(json_response(
                StatusCode::OK,
                json!({"kind": "APIVersions", "versions": ["v1"],
                       "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
            ));
        }
        ["apis"] => {
            return Ok(json_response(
                StatusCode::OK,
                kinds::group_list(&inner.kinds),
            ));
        }
        ["api", "v1"] => {
            let types = inner.kinds.group_version("", "v1");
            return Ok(json_response(
                StatusCode::OK,
                kinds::resource_list("v1", &types),
            ));
        }
        ["apis", group] => {
            let list = kinds::group_list(&inner.kinds);
            return list["groups"]
                .as_array()
                .and_then(|g| g.iter().find(|g| g["name"] == *group))
                .map(|g| {
                    let mut g = g.clone();
                    g["kind"] = json!("APIGroup");
                    g["apiVersion"] = json!("v1");
                    json_response(StatusCode::OK, g)
                })
                .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "NotFound", "not found"));
        }
        ["apis", group, version] => {
            let types = inner.kinds.group_version(group, version);
            if types.is_empty() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "not found",
                ));
            }
            return Ok(json_response(
                StatusCode::OK,
                kinds::resource_list(&format!("{group}/{version}"), &types),
            ));
        }
        ["openapi", "v3"] => return Ok(json_response(StatusCode::OK, openapi_root(&inner))),
        ["openapi", "v3", rest @ ..] => {
            let (group, version) = match rest {
                ["api", v] => ("", *v),
                ["apis", g, v] => (*g, *v),
                _ => {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        "not found",
                    ));
                }
            };
            let types = inner.kinds.group_version(group, version);
            if types.is_empty() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "not found",
                ));
            }
            return Ok(json_response(StatusCode::OK, kinds::openapi_v3(&types)));
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                "not found",
            ));
        }
    };
    let target = resolve(&inner, group, version, rest)?;
    drop(inner);
    let method = parts.method.clone();
    let headers = parts.headers;
    match (method, &target.name) {
        (Method::GET, None) if is_true(&query, "watch") => watch(&server, &target, &query).await,
        (Method::GET, None) => list(&server, &target, &query, &headers).await,
        (Method::GET, Some(name)) => get(&server, &target, name, &headers).await,
        (Method::POST, None) if target.t.create_only => review(&server, &target, &body),
        (Method::POST, None) => create(&server, &target, &query, &body).await,
        (Method::PUT, Some(name)) => update(&server, &target, name, &query, &body).await,
        (Method::PATCH, Some(name)) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            patch_object(&server, &target, name, &query, &content_type, &body).await
        }
        (Method::DELETE, Some(name)) => delete(&server, &target, name).await,
        (Method::DELETE, None) => delete_collection(&server, &target, &query).await,
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    }
}

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
    let (name, status) = match tail {
        [] => (None, false),
        [name] => (Some((*name).to_owned()), false),
        [name, "status"] if t.status => (Some((*name).to_owned()), true),
        _ => return Err(not_found()),
    };
    if t.namespaced && namespace.is_none() && name.is_some() {
        return Err(not_found());
    }
    Ok(Target {
        t,
        namespace,
        name,
        status,
    })
}

/// The query parameters (percent-decoded, `+` as a space; a repeated key keeps its last).
fn parse_query(uri: &axum::http::Uri) -> BTreeMap<String, String> {
    axum::extract::Query::<BTreeMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

fn is_true(q: &BTreeMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true" || v == "1")
}

fn key_of(t: &ResourceType, namespace: Option<&str>, name: &str) -> Key {
    Key {
        group: t.group.clone(),
        plural: t.plural.clone(),
        namespace: if t.namespaced {
            namespace.unwrap_or_default().to_owned()
        } else {
            String::new()
        },
        name: name.to_owned(),
    }
}

/// The object as served at `t`'s version (stored objects of a multi-version CRD differ only in
/// `apiVersion`: this server converts no schemas).
fn at_version(t: &ResourceType, mut object: Value) -> Value {
    object["apiVersion"] = json!(t.api_version());
    object
}

fn selectors(q: &BTreeMap<String, String>) -> Result<(Selector, Selector), ApiError> {
    let labels = Selector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(format!("labelSelector: {e}")))?;
    let fields = Selector::parse(q.get("fieldSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(format!("fieldSelector: {e}")))?;
    if let Some(f) = fields.unsupported_fields().first() {
        return Err(ApiError::bad_request(format!(
            "fieldSelector: field label not supported: {f}"
        )));
    }
    Ok((labels, fields))
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

async fn get(
    server: &Server,
    target: &Target,
    name: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let inner = server.inner.lock().await;
    let key = key_of(&target.t, target.namespace.as_deref(), name);
    let object = inner
        .store
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&target.t, name))?;
    let object = at_version(&target.t, object);
    if wants_table(headers) {
        let rv = inner.store.resource_version();
        return Ok(json_response(
            StatusCode::OK,
            crate::table::table(&target.t, &[object], rv),
        ));
    }
    Ok(json_response(StatusCode::OK, object))
}

async fn list(
    server: &Server,
    target: &Target,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(q)?;
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    // `continue`: the namespace/name of the last object of the previous page. Pages are read
    // from the current state (this server keeps no snapshots for consistent paging).
    // The token is `namespace/name` of the last object returned; compared as a pair, in the
    // store's order (as strings, `istio/x` would sort after `istio-system/y`).
    let after: Option<(String, String)> = q.get("continue").filter(|c| !c.is_empty()).map(|c| {
        let (ns, name) = c.split_once('/').unwrap_or(("", c));
        (ns.to_owned(), name.to_owned())
    });
    let inner = server.inner.lock().await;
    let mut matching = inner
        .store
        .list(
            &target.t.group,
            &target.t.plural,
            target.namespace.as_deref(),
        )
        .filter(|(k, _)| {
            after
                .as_ref()
                .is_none_or(|(ns, name)| (&k.namespace, &k.name) > (ns, name))
        })
        .filter(|(_, o)| labels.matches_labels(o) && fields.matches_fields(o));
    let mut items = Vec::new();
    let mut last = None;
    // Items after this page (the one the loop stopped at included).
    let mut remaining = 0;
    for (k, o) in matching.by_ref() {
        if limit.is_some_and(|l| items.len() == l) {
            remaining = 1;
            break;
        }
        items.push(at_version(&target.t, o.clone()));
        last = Some(format!("{}/{}", k.namespace, k.name));
    }
    remaining += matching.count();
    let rv = inner.store.resource_version();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let (true, Some(last)) = (remaining > 0, last) {
        meta["continue"] = json!(last);
        meta["remainingItemCount"] = json!(remaining);
    }
    if wants_table(headers) {
        let mut table = crate::table::table(&target.t, &items, rv);
        table["metadata"] = meta;
        return Ok(json_response(StatusCode::OK, table));
    }
    Ok(json_response(
        StatusCode::OK,
        json!({
            "kind": format!("{}List", target.t.kind),
            "apiVersion": target.t.api_version(),
            "metadata": meta,
            "items": items,
        }),
    ))
}

/// Parses a request body: JSON, or YAML for `apply-patch+yaml`.
fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
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

/// Checks an object against its type: kind, apiVersion, the CRD schema or the built-in type,
/// and a CRD's own definition. Unknown fields follow `fieldValidation` (`q`): `Strict` refuses
/// them, `Warn` (the default) and `Ignore` drop them from the object, `Warn` with a warning.
/// Returns the warnings.
fn validate(
    t: &ResourceType,
    object: &mut Value,
    name: &str,
    q: &BTreeMap<String, String>,
) -> Result<Vec<String>, ApiError> {
    let mode = q.get("fieldValidation").map_or("Warn", String::as_str);
    let (unknown, mut errors) = field_errors(t, object);
    if unknown.is_empty() || mode == "Strict" {
        errors.extend(unknown.iter().map(|f| (f.clone(), UNKNOWN.to_owned())));
        return if errors.is_empty() {
            Ok(Vec::new())
        } else {
            Err(ApiError::invalid(t, name, errors))
        };
    }
    for field in &unknown {
        prune(object, field);
    }
    // Checked again without them (CEL rules run only on a structurally valid object).
    let (_, errors) = field_errors(t, object);
    if !errors.is_empty() {
        return Err(ApiError::invalid(t, name, errors));
    }
    Ok(if mode == "Ignore" {
        Vec::new()
    } else {
        unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect()
    })
}

/// The message of an unknown field, from `sextant-schema` and `builtin`.
const UNKNOWN: &str = sextant_schema::UNKNOWN_FIELD;

/// Unknown fields, and every other error as `(field, message)`.
fn field_errors(t: &ResourceType, object: &Value) -> (Vec<String>, Vec<(String, String)>) {
    let mut errors = Vec::new();
    if object["kind"].as_str() != Some(t.kind.as_str()) {
        errors.push((
            "kind".to_owned(),
            format!("Invalid value: {}: must be {}", object["kind"], t.kind),
        ));
    }
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    if !(api_version == t.api_version()
        || (!t.group.is_empty() && api_version.starts_with(&format!("{}/", t.group))))
    {
        errors.push((
            "apiVersion".to_owned(),
            format!(
                "Invalid value: \"{api_version}\": must be {}",
                t.api_version()
            ),
        ));
    }
    if let Some(schema) = t.custom.as_ref().and_then(|c| c.schema.as_ref()) {
        for e in schema.validate(object) {
            errors.push((e.path, e.message));
        }
    } else {
        errors.extend(crate::builtin::check(&t.kind, object));
    }
    if t.kind == "CustomResourceDefinition"
        && let Err(e) = kinds::from_crd(object)
    {
        let (field, message) = e.split_once(": ").unwrap_or(("", &e));
        errors.push((field.to_owned(), message.to_owned()));
    }
    let (unknown, errors): (Vec<_>, Vec<_>) = errors.into_iter().partition(|(_, m)| m == UNKNOWN);
    (unknown.into_iter().map(|(f, _)| f).collect(), errors)
}

/// Removes the field at `path` (`spec.http[0].bogus`, `metadata.labels[a.b/c]`).
fn prune(object: &mut Value, path: &str) {
    let mut segments = Vec::new();
    for part in path.split('.') {
        // `name[0][key]`: the name, then each bracketed index or key.
        let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !name.is_empty() {
            segments.push(name.to_owned());
        }
        while let Some(end) = rest.find(']') {
            segments.push(rest[1..end].to_owned());
            rest = &rest[end + 1..];
        }
    }
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut v = object;
    for seg in parents {
        v = match v {
            Value::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(x) => x,
                None => return,
            },
            Value::Object(m) => match m.get_mut(seg) {
                Some(x) => x,
                None => return,
            },
            _ => return,
        };
    }
    if let Value::Object(m) = v {
        m.remove(last);
    }
}

/// Everything but metadata and status: what `metadata.generation` counts changes of.
fn spec_of(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(m) = o.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    o
}

/// The defaults the API server gives a Service: type ClusterIP, an allocated cluster IP from
/// 10.96.0.0/16, TCP ports whose target port is the port.
fn default_service(store: &Store, object: &mut Value) {
    let spec = &mut object["spec"];
    if spec["type"].is_null() {
        spec["type"] = json!("ClusterIP");
    }
    if spec["sessionAffinity"].is_null() {
        spec["sessionAffinity"] = json!("None");
    }
    if let Some(ports) = spec["ports"].as_array_mut() {
        for p in ports {
            if p["protocol"].is_null() {
                p["protocol"] = json!("TCP");
            }
            if p["targetPort"].is_null() {
                p["targetPort"] = p["port"].clone();
            }
        }
    }
    if spec["type"] != "ExternalName" && spec["clusterIP"].is_null() {
        let used: std::collections::HashSet<String> = store
            .list("", "services", None)
            .filter_map(|(_, s)| s["spec"]["clusterIP"].as_str().map(str::to_owned))
            .collect();
        if let Some(ip) = (2..65_534u32)
            .map(|i| format!("10.96.{}.{}", i / 256, i % 256))
            .find(|ip| !used.contains(ip))
        {
            spec["clusterIP"] = json!(ip);
        }
    }
    if spec["clusterIPs"].is_null() && spec["clusterIP"].is_string() {
        spec["clusterIPs"] = json!([spec["clusterIP"].clone()]);
    }
}

/// The leaf fields of an object as paths (`spec.holderIdentity`); lists are leaves. Identity
/// fields (apiVersion, kind, name, namespace) are nobody's.
fn leaves(v: &Value) -> Vec<(String, &Value)> {
    fn walk<'a>(v: &'a Value, path: &mut String, out: &mut Vec<(String, &'a Value)>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    walk(child, path, out);
                    path.truncate(len);
                }
            }
            _ => out.push((path.clone(), v)),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut String::new(), &mut out);
    out.retain(|(p, _)| {
        !matches!(
            p.as_str(),
            "apiVersion" | "kind" | "metadata.name" | "metadata.namespace"
        )
    });
    out
}

fn value_at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// A server-side apply that would change fields another manager owns is refused, as the API
/// server does (unless forced).
fn check_conflicts(
    inner: &Inner,
    key: &Key,
    manager: &str,
    current: &Value,
    applied: &Value,
    t: &ResourceType,
    name: &str,
) -> Result<(), ApiError> {
    let Some(owned) = inner.owners.get(key) else {
        return Ok(());
    };
    let mut conflicts = Vec::new();
    for (path, value) in leaves(applied) {
        if value_at(current, &path).is_none_or(|v| v == value) {
            continue;
        }
        for (other, fields) in owned {
            if other != manager && fields.contains(&path) {
                conflicts.push(format!("conflict with \"{other}\": .{path}"));
            }
        }
    }
    if conflicts.is_empty() {
        return Ok(());
    }
    Err(ApiError {
        details: json!({"name": name, "group": t.group, "kind": t.plural,
            "causes": conflicts.iter().map(|c| json!({"reason": "FieldManagerConflict", "message": c})).collect::<Vec<_>>()}),
        ..ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                conflicts.join(", ")
            ),
        )
    })
}

/// An update (or non-apply patch) takes the fields it changes from their owners; fields it
/// removes are nobody's.
fn record_update(
    inner: &mut Inner,
    key: &Key,
    q: &BTreeMap<String, String>,
    old: &Value,
    new: &Value,
) {
    let Some(owned) = inner.owners.get_mut(key) else {
        return;
    };
    let before: BTreeMap<String, &Value> = leaves(old).into_iter().collect();
    let after: BTreeMap<String, &Value> = leaves(new).into_iter().collect();
    let manager = q.get("fieldManager").map_or("unknown", String::as_str);
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|p| before.get(*p) != after.get(*p))
        .collect();
    for fields in owned.values_mut() {
        for p in &changed {
            fields.remove(*p);
        }
    }
    let mine = owned.entry(manager.to_owned()).or_default();
    for p in changed {
        if after.contains_key(p) {
            mine.insert(p.clone());
        }
    }
}

/// Marks a new CRD as accepted and established, as kubectl and helm wait for.
fn establish(object: &mut Value) {
    let now = now_rfc3339();
    object["status"] = json!({
        "acceptedNames": object["spec"]["names"].clone(),
        "storedVersions": kinds::storage_version(object).into_iter().collect::<Vec<_>>(),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    });
}

async fn create(
    server: &Server,
    target: &Target,
    q: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let object = parse_body(body)?;
    let inner = server.inner.lock().await;
    let mut inner = admit(server, inner, target, q, "CREATE", &object, None).await?;
    let created = create_locked(&mut inner, target, q, object)?;
    Ok(created.respond(StatusCode::CREATED))
}

fn create_locked(
    inner: &mut Inner,
    target: &Target,
    q: &BTreeMap<String, String>,
    mut object: Value,
) -> Result<Stored, ApiError> {
    let t = &target.t;
    if !object.is_object() {
        return Err(ApiError::bad_request("the request body must be an object"));
    }
    let mut name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if name.is_empty() {
        match object["metadata"]["generateName"].as_str() {
            Some(prefix) => {
                let uid = inner.store.uid();
                name = format!("{prefix}{}", &uid[..5]);
                object["metadata"]["name"] = json!(name);
            }
            None => {
                return Err(ApiError::invalid(
                    t,
                    "",
                    vec![(
                        "metadata.name".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                ));
            }
        }
    }
    let namespace = if t.namespaced {
        let from_body = object["metadata"]["namespace"]
            .as_str()
            .filter(|ns| !ns.is_empty())
            .map(str::to_owned);
        let ns = match (&target.namespace, from_body) {
            (Some(p), Some(b)) if *p != b => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (Some(p), _) => p.clone(),
            (None, Some(b)) => b,
            (None, None) => "default".to_owned(),
        };
        let ns_key = Key {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: ns.clone(),
        };
        if inner.store.get(&ns_key).is_none() {
            return Err(ApiError {
                details: json!({"name": ns, "kind": "namespaces"}),
                ..ApiError::new(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("namespaces \"{ns}\" not found"),
                )
            });
        }
        object["metadata"]["namespace"] = json!(ns);
        Some(ns)
    } else {
        if let Some(m) = object["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        None
    };
    let warnings = validate(t, &mut object, &name, q)?;
    let key = key_of(t, namespace.as_deref(), &name);
    if inner.store.get(&key).is_some() {
        let message = format!("{} \"{name}\" already exists", qualified(t));
        return Err(ApiError::about(
            t,
            &name,
            StatusCode::CONFLICT,
            "AlreadyExists",
            message,
        ));
    }
    if t.status
        && let Some(m) = object.as_object_mut()
    {
        m.remove("status");
    }
    if t.kind == "Service" && t.group.is_empty() {
        default_service(&inner.store, &mut object);
    }
    let uid = inner.store.uid();
    let meta = &mut object["metadata"];
    meta["uid"] = json!(uid);
    meta["creationTimestamp"] = json!(now_rfc3339());
    meta["generation"] = json!(1);
    if let Some(m) = meta.as_object_mut() {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    if t.kind == "CustomResourceDefinition" {
        establish(&mut object);
    }
    if is_dry_run(q) {
        return Ok(Stored(at_version(t, object), warnings));
    }
    let stored = inner.store.put(key, object, EventType::Added);
    if t.kind == "CustomResourceDefinition" {
        inner.refresh_kinds();
    }
    Ok(Stored(at_version(t, stored), warnings))
}

/// Replaces an object (or its status) after checks; shared by update and patch.
fn replace_locked(
    inner: &mut Inner,
    target: &Target,
    name: &str,
    q: &BTreeMap<String, String>,
    old: &Value,
    mut new: Value,
) -> Result<Stored, ApiError> {
    let t = &target.t;
    if !new.is_object() {
        return Err(ApiError::bad_request("the request body must be an object"));
    }
    if new["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let sent_rv = new["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    let old_rv = old["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    if !sent_rv.is_empty() && sent_rv != old_rv {
        return Err(ApiError::conflict(t, name));
    }
    if target.status {
        // Only the status changes.
        let status = new.get("status").cloned();
        new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    } else if t.status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    // Fields the server owns.
    for k in ["uid", "creationTimestamp", "namespace", "name"] {
        match old["metadata"].get(k) {
            Some(v) => new["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    if let Some(m) = new["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    if t.kind == "Service" && t.group.is_empty() && new["spec"]["clusterIP"].is_null() {
        // Allocated on create, kept when a client leaves it out.
        for k in ["clusterIP", "clusterIPs"] {
            new["spec"][k] = old["spec"][k].clone();
        }
        default_service(&inner.store, &mut new);
    }
    let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
    new["metadata"]["generation"] = json!(if spec_of(&new) != spec_of(old) {
        generation + 1
    } else {
        generation
    });
    if new["apiVersion"].is_null() {
        new["apiVersion"] = json!(t.api_version());
    }
    if new["kind"].is_null() {
        new["kind"] = json!(t.kind);
    }
    let warnings = validate(t, &mut new, name, q)?;
    if t.kind == "CustomResourceDefinition" && !target.status {
        establish(&mut new);
    }
    if is_dry_run(q) {
        return Ok(Stored(at_version(t, new), warnings));
    }
    let key = key_of(t, target.namespace.as_deref(), name);
    record_update(inner, &key, q, old, &new);
    let stored = inner.store.put(key, new, EventType::Modified);
    if t.kind == "CustomResourceDefinition" {
        inner.refresh_kinds();
    }
    Ok(Stored(at_version(t, stored), warnings))
}

async fn update(
    server: &Server,
    target: &Target,
    name: &str,
    q: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let new = parse_body(body)?;
    let inner = server.inner.lock().await;
    let key = key_of(&target.t, target.namespace.as_deref(), name);
    let Some(old) = inner.store.get(&key).cloned() else {
        return Err(ApiError::not_found(&target.t, name));
    };
    let mut inner = admit(server, inner, target, q, "UPDATE", &new, Some(&old)).await?;
    unchanged_since(&inner, &target.t, &key, &old)?;
    let out = replace_locked(&mut inner, target, name, q, &old, new)?;
    Ok(out.respond(StatusCode::OK))
}

async fn patch_object(
    server: &Server,
    target: &Target,
    name: &str,
    q: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let p = parse_body(body)?;
    let inner = server.inner.lock().await;
    let key = key_of(&target.t, target.namespace.as_deref(), name);
    let old = inner.store.get(&key).cloned();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let builtin = target.t.custom.is_none();
    let Some(old) = old else {
        if media == "application/apply-patch+yaml" && !target.status {
            let mut object = p.clone();
            object["metadata"]["name"] = json!(name);
            let mut inner = admit(server, inner, target, q, "CREATE", &object, None).await?;
            let created = create_locked(&mut inner, target, q, object)?;
            let manager = q.get("fieldManager").cloned().unwrap_or_default();
            claim_applied(&mut inner, key, q, manager, &p);
            return Ok(created.respond(StatusCode::CREATED));
        }
        return Err(ApiError::not_found(&target.t, name));
    };
    let mut new = at_version(&target.t, old.clone());
    // For an apply: its manager, who owns the fields it applied once the patch is stored.
    let mut applier = None;
    match media {
        "application/merge-patch+json" => patch::merge(&mut new, &p),
        "application/strategic-merge-patch+json" if builtin => {
            patch::strategic(&target.t.kind, &mut new, &p).map_err(ApiError::bad_request)?;
        }
        "application/apply-patch+yaml" => {
            let manager = q.get("fieldManager").cloned().ok_or_else(|| {
                ApiError::bad_request("PATCH with apply requires the fieldManager parameter")
            })?;
            if !is_true(q, "force") {
                check_conflicts(&inner, &key, &manager, &new, &p, &target.t, name)?;
            }
            let kind = builtin.then_some(target.t.kind.as_str());
            patch::apply(kind, &mut new, &p);
            applier = Some(manager);
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/apply-patch+yaml{} (got {other:?})",
                    if builtin {
                        ", application/strategic-merge-patch+json"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    // A patch carries no resource version unless it asks for the precondition.
    if p["metadata"]["resourceVersion"].is_null() {
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    }
    let mut inner = admit(server, inner, target, q, "UPDATE", &new, Some(&old)).await?;
    unchanged_since(&inner, &target.t, &key, &old)?;
    let out = replace_locked(&mut inner, target, name, q, &old, new)?;
    if let Some(manager) = applier {
        claim_applied(&mut inner, key, q, manager, &p);
    }
    Ok(out.respond(StatusCode::OK))
}

/// Server-side apply: `manager` owns the fields its patch `applied`, and no other manager
/// does any more. A dry run stores nothing, and claims nothing either.
fn claim_applied(
    inner: &mut Inner,
    key: Key,
    q: &BTreeMap<String, String>,
    manager: String,
    applied: &Value,
) {
    if is_dry_run(q) {
        return;
    }
    let applied: Vec<String> = leaves(applied).into_iter().map(|(path, _)| path).collect();
    let owned = inner.owners.entry(key).or_default();
    for (other, fields) in owned.iter_mut() {
        if *other != manager {
            for f in &applied {
                fields.remove(f);
            }
        }
    }
    owned.entry(manager).or_default().extend(applied);
}

fn is_dry_run(q: &BTreeMap<String, String>) -> bool {
    q.get("dryRun").is_some_and(|d| d == "All")
}

async fn delete(server: &Server, target: &Target, name: &str) -> Result<Response, ApiError> {
    let mut inner = server.inner.lock().await;
    let key = key_of(&target.t, target.namespace.as_deref(), name);
    let Some(old) = inner.store.get(&key).cloned() else {
        return Err(ApiError::not_found(&target.t, name));
    };
    let gone = delete_locked(&mut inner, &target.t, key, old);
    Ok(json_response(StatusCode::OK, gone))
}

/// Deletes one object and what goes with it: a namespace's objects, a CRD's objects.
fn delete_locked(inner: &mut Inner, t: &ResourceType, key: Key, old: Value) -> Value {
    let dependents: Vec<(Key, Value)> = match t.kind.as_str() {
        "Namespace" => inner
            .store
            .list_all()
            .filter(|(k, _)| k.namespace == key.name)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        "CustomResourceDefinition" => {
            let group = old["spec"]["group"].as_str().unwrap_or_default().to_owned();
            let plural = old["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            inner
                .store
                .list(&group, &plural, None)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }
        _ => Vec::new(),
    };
    for (k, v) in dependents {
        inner.store.put(k, v, EventType::Deleted);
    }
    inner.owners.remove(&key);
    let gone = inner.store.put(key, old, EventType::Deleted);
    if t.kind == "CustomResourceDefinition" {
        inner.refresh_kinds();
    }
    at_version(t, gone)
}

async fn delete_collection(
    server: &Server,
    target: &Target,
    q: &BTreeMap<String, String>,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(q)?;
    let mut inner = server.inner.lock().await;
    let doomed: Vec<(Key, Value)> = inner
        .store
        .list(
            &target.t.group,
            &target.t.plural,
            target.namespace.as_deref(),
        )
        .filter(|(_, o)| labels.matches_labels(o) && fields.matches_fields(o))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut items = Vec::new();
    for (k, v) in doomed {
        items.push(delete_locked(&mut inner, &target.t, k, v));
    }
    Ok(json_response(
        StatusCode::OK,
        json!({"kind": format!("{}List", target.t.kind), "apiVersion": target.t.api_version(),
               "metadata": {}, "items": items}),
    ))
}

/// TokenReview: tokens configured on the command line authenticate as their user.
fn review(server: &Server, target: &Target, body: &[u8]) -> Result<Response, ApiError> {
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

fn openapi_root(inner: &Inner) -> Value {
    let mut paths = serde_json::Map::new();
    for t in inner.kinds.iter() {
        let gv = if t.group.is_empty() {
            format!("api/{}", t.version)
        } else {
            format!("apis/{}/{}", t.group, t.version)
        };
        if paths.contains_key(&gv) {
            continue; // one document per group version, whatever its number of kinds
        }
        // The hash lets kubectl cache a document until it changes.
        let doc = kinds::openapi_v3(&inner.kinds.group_version(&t.group, &t.version));
        let hash = format!("{:016X}", crate::store::fnv1a(doc.to_string().as_bytes()));
        paths.insert(
            gv.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

/// A watch: past events (or the current objects) then live ones, as JSON lines, until the
/// timeout or the client leaves.
async fn watch(
    server: &Arc<Server>,
    target: &Target,
    q: &BTreeMap<String, String>,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(q)?;
    let bookmarks = is_true(q, "allowWatchBookmarks");
    let initial_events = is_true(q, "sendInitialEvents");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let t = target.t.clone();
    let namespace = target.namespace.clone();
    // The event a watcher with these selectors sees: an object that starts matching is
    // ADDED, one that stops matching is DELETED.
    let seen_as = move |e: &Event| -> Option<&'static str> {
        if e.key.group != t.group
            || e.key.plural != t.plural
            || namespace.as_ref().is_some_and(|n| e.key.namespace != *n)
        {
            return None;
        }
        let matches = |o: &Value| labels.matches_labels(o) && fields.matches_fields(o);
        let now = matches(&e.object);
        let before = e.previous.as_ref().is_some_and(matches);
        match (e.kind, before, now) {
            (EventType::Deleted, _, true) | (_, true, false) => Some("DELETED"),
            (EventType::Deleted, _, false) | (_, false, false) => None,
            (_, true, true) => Some("MODIFIED"),
            (_, false, true) => Some("ADDED"),
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let inner = server.inner.lock().await;
    let requested = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .map(|v| v.parse::<u64>())
        .transpose()
        .map_err(|_| ApiError::bad_request("resourceVersion: must be a number"))?;
    let t = target.t.clone();
    let line = move |kind: &str, object: Value| -> Bytes {
        let mut s = json!({"type": kind, "object": object}).to_string();
        s.push('\n');
        Bytes::from(s)
    };
    let mut first: Vec<Bytes> = Vec::new();
    let now = inner.store.resource_version();
    let live = match requested.filter(|_| !initial_events) {
        Some(rv) => match inner.store.since(rv) {
            Some((past, live)) => {
                for e in &past {
                    if let Some(kind) = seen_as(e) {
                        first.push(line(kind, at_version(&t, e.object.clone())));
                    }
                }
                live
            }
            None => {
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "Expired", "code": 410,
                    "message": format!("too old resource version: {rv} ({now})")});
                first.push(line("ERROR", status));
                drop(inner);
                for b in first {
                    let _ = tx.send(Ok(b)).await;
                }
                return Ok(stream_response(rx));
            }
        },
        None => {
            let (_, live) = inner
                .store
                .since(now)
                .expect("the current version is in the log");
            for (_, o) in inner.store.list(
                &target.t.group,
                &target.t.plural,
                target.namespace.as_deref(),
            ) {
                let e = Event {
                    rv: now,
                    kind: EventType::Added,
                    key: Key {
                        group: target.t.group.clone(),
                        plural: target.t.plural.clone(),
                        namespace: o["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or_default()
                            .into(),
                        name: String::new(),
                    },
                    object: o.clone(),
                    previous: None,
                };
                if seen_as(&e).is_some() {
                    first.push(line("ADDED", at_version(&t, e.object)));
                }
            }
            if initial_events && bookmarks {
                first.push(line(
                    "BOOKMARK",
                    json!({"kind": t.kind, "apiVersion": t.api_version(),
                           "metadata": {"resourceVersion": now.to_string(),
                                        "annotations": {"k8s.io/initial-events-end": "true"}}}),
                ));
            }
            live
        }
    };
    drop(inner);
    let mut live = live;
    tokio::spawn(async move {
        for b in first {
            if tx.send(Ok(b)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_rv = now;
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    let b = line("BOOKMARK", json!({"kind": t.kind, "apiVersion": t.api_version(),
                        "metadata": {"resourceVersion": last_rv.to_string()}}));
                    if tx.send(Ok(b)).await.is_err() {
                        return;
                    }
                }
                event = live.recv() => match event {
                    Ok(e) => {
                        last_rv = last_rv.max(e.rv);
                        if let Some(kind) = seen_as(&e).filter(|_| e.rv > now) {
                            let b = line(kind, at_version(&t, e.object.clone()));
                            if tx.send(Ok(b)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "reason": "Expired", "code": 410,
                            "message": "the watch fell behind; list again"});
                        let _ = tx.send(Ok(line("ERROR", status))).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
    Ok(stream_response(rx))
}

fn stream_response(rx: mpsc::Receiver<Result<Bytes, Infallible>>) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Age as kubectl prints it (`45s`, `3m`, `5h`, `2d`).
pub fn age(created: &str) -> String {
    let Some(then) = parse_rfc3339(created) else {
        return "<unknown>".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(then);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}
