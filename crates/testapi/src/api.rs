//! The HTTP API: the server's state and what every handler shares. Each job has a module of
//! its own, listed in the crate documentation.

mod apply;
mod crud;
mod defaults;
mod discovery;
mod errors;
mod review;
mod routes;
mod token;
mod validation;
mod watch;

use std::collections::{BTreeMap, BTreeSet};

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use self::errors::ApiError;
pub use self::routes::handle;
use crate::{
    kinds::{ResourceType, ServedKinds},
    select::Selector,
    store::{Key, Store},
};

/// Largest request body accepted.
pub const MAX_BODY: usize = 3 << 20;

/// The server's state.
pub struct Server {
    pub(crate) inner: Mutex<Inner>,
    /// Bearer tokens TokenReview accepts, with their user names (`USER@AUD1,AUD2`: bound to
    /// those audiences).
    pub(crate) tokens: BTreeMap<String, String>,
    /// Signs the tokens TokenRequest issues, and recognises them in TokenReview.
    pub(crate) signer: crate::tokens::Signer,
    /// How long each TokenReview takes to answer.
    pub(crate) review_delay: std::time::Duration,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) kinds: ServedKinds,
    /// Field ownership for server-side apply: by object, manager and owned leaf paths.
    pub(crate) owners: BTreeMap<Key, BTreeMap<String, BTreeSet<String>>>,
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

/// What a resource URL names.
struct Target {
    t: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Subresource,
}

/// The subresource a URL names, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subresource {
    /// The object itself.
    None,
    /// `status`: only the status is written.
    Status,
    /// `token` of a ServiceAccount: a TokenRequest.
    Token,
}

/// A stored object and the warnings for the client.
struct Stored(Value, Vec<String>);

impl Stored {
    /// The same, with `earlier` warnings (admission's) before its own.
    fn after(mut self, mut earlier: Vec<String>) -> Stored {
        earlier.append(&mut self.1);
        self.1 = earlier;
        self
    }

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

fn is_true(q: &BTreeMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true" || v == "1")
}

fn is_dry_run(q: &BTreeMap<String, String>) -> bool {
    q.get("dryRun").is_some_and(|d| d == "All")
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

/// The `labelSelector` and `fieldSelector` of a list, watch or delete collection.
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
