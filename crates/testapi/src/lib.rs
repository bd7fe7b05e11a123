//! A small Kubernetes API server for tests, standing in for envtest where no kube-apiserver
//! can run. Real clients talk to it over HTTP: kubectl (discovery, OpenAPI v3 with server-side
//! field validation, client-side and server-side apply, server-side printing), kube-rs
//! (list and watch with resource versions, bookmarks and `410 Gone`), and Sextant itself.
//!
//! What it serves: the built-in kinds Sextant and its Helm chart use (`kinds::builtins`),
//! and custom resources from the CustomResourceDefinitions applied to it, validated against
//! their `openAPIV3Schema` and CEL rules (`sextant-schema`). Built-in kinds are checked for
//! unknown fields and wrong types (`builtin`), not for values. Unknown fields follow
//! `fieldValidation`: `Strict` (what kubectl sends) refuses them, `Warn` (the default) and
//! `Ignore` drop them, `Warn` with a `Warning` header. Create, get, list (with `limit` and
//! `continue`), update, delete, JSON merge patch, strategic merge patch for built-in kinds,
//! server-side apply (field ownership and conflicts for leaf fields; lists are owned whole),
//! JSON patch, the status subresource, watch, label selectors and
//! `metadata.name`/`metadata.namespace` field selectors, `Table` printing, TokenRequest
//! (`serviceaccounts/NAME/token`) issuing signed service-account tokens, TokenReview for those
//! and for configured tokens, SubjectAccessReview answered by the stored Roles, ClusterRoles
//! and their bindings (`rbac`), and calls to mutating then validating admission webhooks
//! (`clientConfig.url`, or `clientConfig.service` resolved through the Service's
//! EndpointSlices, with their rules and selectors) before anything is stored (the server's
//! lock is released while they run). Bodies are JSON (YAML for apply), or protobuf for every
//! built-in kind (helm's release Secrets, kubectl's `create` commands), decoded with the
//! Kubernetes API's own protos (`protobuf`). With a data directory its objects, and the key
//! its tokens are signed with, survive a restart.
//!
//! What it does not do: HTTPS, authentication and authorization of its own requests (every
//! request is allowed, whatever its bearer token; RBAC only answers SubjectAccessReviews),
//! binding tokens to the objects a TokenRequest names, OpenAPI schemas of built-in kinds
//! (their paths declare `fieldValidation`, so kubectl validates on the server), validation
//! of built-in values (name formats, ranges, cross-field rules), schema conversion between
//! versions of a custom resource (they must share one schema, as Istio's do), webhooks'
//! `matchConditions` and `reinvocationPolicy` (see `admission`), consistent pagination (pages
//! are cut from the current state), and garbage collection by owner references.
//!
//! Modules:
//! - `api`: the HTTP API, the server's state and what its handlers share;
//!   - `api::routes`: the one handler, from path and method to the handlers below;
//!   - `api::discovery`: `/version`, `/api`, `/apis` and OpenAPI v3 documents;
//!   - `api::crud`: get, list, create, update, delete and delete collection;
//!   - `api::defaults`: what a write fills in (a Service's cluster IP, a new CRD's status);
//!   - `api::apply`: PATCH (JSON patch, merge, strategic merge, server-side apply) and field
//!     ownership;
//!   - `api::validation`: an object checked against its type on write, `fieldValidation`;
//!   - `api::watch`: watches from a resource version or the current objects, bookmarks, `410`;
//!   - `api::review`: TokenReview, SubjectAccessReview, and admission webhooks before a write;
//!   - `api::token`: TokenRequest, the `token` subresource of ServiceAccounts;
//!   - `api::errors`: `Status` bodies, the one place failures become HTTP responses;
//! - `kinds`: the served kinds (`ServedKinds`), built-in and from CRDs;
//! - `store`: objects, resource versions, the event log watches replay, the data directory;
//! - `admission`: `AdmissionReview` calls to mutating and validating webhooks over HTTPS, by
//!   URL or by Service (`admission::service`);
//! - `json_patch`: JSON Patch (RFC 6902), for mutating webhooks' answers and PATCH requests;
//! - `builtin`: unknown-field and type checks of built-in kinds;
//! - `patch`: JSON merge, strategic merge and apply patch algorithms;
//! - `select`: label and field selectors;
//! - `table`: server-side printing (`Table`) and ages as kubectl prints them;
//! - `protobuf`: protobuf bodies of built-in kinds, decoded generically from the vendored
//!   `proto/k8s` descriptors into the kinds' JSON;
//! - `tokens`: the service-account tokens TokenRequest issues and TokenReview verifies;
//! - `rbac`: Roles, ClusterRoles and bindings evaluated for SubjectAccessReview.

pub mod admission;
pub mod api;
pub mod builtin;
pub mod json_patch;
pub mod kinds;
pub mod patch;
pub mod protobuf;
pub mod rbac;
pub mod select;
pub mod store;
pub mod table;
pub mod tokens;

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, sync::Arc};

use serde_json::json;

use crate::{
    api::{Inner, Server},
    store::{EventType, Key, Store, now_rfc3339},
};

/// How to run the server.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Address to listen on (port 0: any free port).
    pub listen: Option<SocketAddr>,
    /// Where objects are kept across restarts.
    pub data_dir: Option<PathBuf>,
    /// Where to write a kubeconfig for kubectl, helm and kube-rs.
    pub kubeconfig: Option<PathBuf>,
    /// Bearer tokens TokenReview accepts, with their user names (`USER@AUD1,AUD2`: bound to
    /// those audiences).
    pub tokens: BTreeMap<String, String>,
    /// How long each TokenReview takes to answer (zero: at once), as a loaded API server
    /// would, for tests of what waits on reviews.
    pub review_delay: std::time::Duration,
}

/// A running server.
pub struct Handle {
    /// The address it listens on.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// A kubeconfig pointing at `url`, with context `sextant-testapi` and namespace `default`.
pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sextant-testapi\n  cluster:\n    server: {url}\ncontexts:\n- name: sextant-testapi\n  context:\n    cluster: sextant-testapi\n    user: sextant-testapi\n    namespace: default\ncurrent-context: sextant-testapi\nusers:\n- name: sextant-testapi\n  user: {{}}\n"
    )
}

/// Starts the server on the current tokio runtime.
pub async fn start(options: Options) -> anyhow::Result<Handle> {
    let mut store = Store::open(options.data_dir.clone())?;
    // The namespaces every cluster has.
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let key = Key {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: ns.into(),
        };
        if store.get(&key).is_none() {
            let uid = store.uid();
            store.put(
                key,
                json!({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": ns, "uid": uid, "creationTimestamp": now_rfc3339(),
                                    "labels": {"kubernetes.io/metadata.name": ns}},
                       "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
                EventType::Added,
            );
        }
    }
    store.flush();
    let server = Arc::new(Server {
        inner: tokio::sync::Mutex::new(Inner::new(store)),
        tokens: options.tokens,
        signer: tokens::Signer::open(options.data_dir.as_deref())?,
        review_delay: options.review_delay,
    });
    let listen = options
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    if let Some(path) = &options.kubeconfig {
        std::fs::write(path, kubeconfig(&format!("http://{addr}")))?;
    }
    let app = axum::Router::new().fallback(api::handle).with_state(server);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "test API server stopped");
        }
    });
    Ok(Handle { addr, task })
}
