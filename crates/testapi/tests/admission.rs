//! Admission webhooks over real HTTPS: a small webhook server in the test, registered with
//! MutatingWebhookConfigurations and a ValidatingWebhookConfiguration whose rules and
//! selectors choose what each is called for. Mutations are applied before validation, a
//! patch that fails or leaves an invalid object fails the request naming the webhook,
//! denials and failure policies are honoured, and warnings reach the client.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{Json, extract::Path, routing::post};
use base64::Engine;
use serde_json::{Value, json};
use sextant_testapi::{Handle, Options, start};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

#[path = "support/call.rs"]
mod support;
use support::call;

/// TLS connections for axum: each accepted TCP connection after its handshake.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// What the webhook server was asked: `PATH NAMESPACE/NAME`, in order.
type Calls = Arc<Mutex<Vec<String>>>;

/// The answer of the test's webhook at `/{behaviour}` to `review`.
fn answer(behaviour: &str, review: &Value) -> Value {
    let request = &review["request"];
    let uid = request["uid"].clone();
    let patch = |ops: Value| {
        json!({"uid": uid, "allowed": true, "patchType": "JSONPatch",
               "patch": base64::engine::general_purpose::STANDARD.encode(ops.to_string())})
    };
    let response = match behaviour {
        "inject" => {
            let mut r = patch(json!([
                {"op": "add", "path": "/metadata/labels/injected", "value": "yes"},
                {"op": "add", "path": "/spec/containers/-",
                 "value": {"name": "sidecar", "image": "proxy:1", "args": ["--ns", request["namespace"]]}},
            ]));
            r["warnings"] = json!(["a sidecar was added"]);
            r
        }
        "check" => {
            let has_sidecar = request["object"]["spec"]["containers"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["name"] == "sidecar"));
            json!({"uid": uid, "allowed": has_sidecar,
                   "status": {"code": 403, "reason": "Forbidden", "message": "no sidecar"}})
        }
        "bad-patch" => patch(json!([{"op": "remove", "path": "/data/missing"}])),
        "unknown-field" => patch(json!([{"op": "add", "path": "/data", "value": {"k": "v"}},
                                        {"op": "add", "path": "/bogus", "value": 1}])),
        "wrong-type" => patch(json!([{"op": "replace", "path": "/data", "value": [1]}])),
        "deny" => json!({"uid": uid, "allowed": false,
                         "status": {"code": 403, "reason": "Forbidden", "message": "no, thanks"}}),
        "wrong-uid" => json!({"uid": "someone-else", "allowed": true}),
        other => panic!("no behaviour {other}"),
    };
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// The webhook server on a free port, and the PEM of the certificate it presents.
async fn webhook_server(calls: Calls) -> (SocketAddr, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("a certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("a server configuration");
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = tcp.local_addr().expect("an address");
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    };
    let app = axum::Router::new().route(
        "/{behaviour}",
        post(
            move |Path(behaviour): Path<String>, Json(review): Json<Value>| {
                let calls = calls.clone();
                async move {
                    let request = &review["request"];
                    calls.lock().expect("calls").push(format!(
                        "{behaviour} {}/{}",
                        request["namespace"].as_str().unwrap_or_default(),
                        request["name"].as_str().unwrap_or_default()
                    ));
                    Json(answer(&behaviour, &review))
                }
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, certified.cert.pem())
}

/// Webhook `NAME.test.io` at `/{behaviour}` of the test's server.
fn hook(addr: SocketAddr, pem: &str, name: &str, behaviour: &str, rest: Value) -> Value {
    let mut h = json!({
        "name": format!("{name}.test.io"),
        "clientConfig": {"url": format!("https://{addr}/{behaviour}"),
                         "caBundle": base64::engine::general_purpose::STANDARD.encode(pem)},
        "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": "Fail",
    });
    if let (Some(h), Some(rest)) = (h.as_object_mut(), rest.as_object()) {
        h.extend(rest.clone());
    }
    h
}

/// A ConfigMap hook named after the label that chooses it, `hook: LABEL`.
fn configmap_hook(
    addr: SocketAddr,
    pem: &str,
    label: &str,
    behaviour: &str,
    policy: &str,
) -> Value {
    hook(
        addr,
        pem,
        label,
        behaviour,
        json!({"failurePolicy": policy,
               "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""],
                          "apiVersions": ["v1"], "resources": ["configmaps"]}],
               "objectSelector": {"matchLabels": {"hook": label}}}),
    )
}

/// The test API server with the webhooks registered, and namespaces `injected` (labelled
/// `injection: enabled`) and `plain`.
struct Setup {
    api: Handle,
    calls: Calls,
}

impl Setup {
    async fn start() -> Setup {
        let api = start(Options::default()).await.expect("starts");
        let calls = Calls::default();
        let (addr, pem) = webhook_server(calls.clone()).await;
        let pods = json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                          "resources": ["pods"], "scope": "Namespaced"});
        let selected = json!({
            "rules": [pods],
            "namespaceSelector": {"matchExpressions": [
                {"key": "injection", "operator": "In", "values": ["enabled"]}]},
            "objectSelector": {"matchExpressions": [
                {"key": "inject", "operator": "NotIn", "values": ["false"]}]}});
        let failing = [
            "bad-patch",
            "unknown-field",
            "wrong-type",
            "deny",
            "wrong-uid",
        ]
        .map(|b| configmap_hook(addr, &pem, b, b, "Fail"));
        let configs = [
            (
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
                json!({"apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "MutatingWebhookConfiguration", "metadata": {"name": "a-injector"},
                    "webhooks": [hook(addr, &pem, "inject", "inject", selected.clone())]}),
            ),
            (
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
                json!({"apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "MutatingWebhookConfiguration", "metadata": {"name": "b-configmaps"},
                    "webhooks": failing}),
            ),
            (
                "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
                json!({"apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "checker"},
                    "webhooks": [hook(addr, &pem, "check", "check", selected),
                                 configmap_hook(addr, &pem, "ignored", "wrong-uid", "Ignore")]}),
            ),
        ];
        for (path, config) in configs {
            let (code, body) = call(api.addr, "POST", path, "application/json", &config).await;
            assert_eq!(code, 201, "{body}");
        }
        for (name, labels) in [
            ("injected", json!({"injection": "enabled"})),
            ("plain", json!({})),
        ] {
            let ns = json!({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": name, "labels": labels}});
            let (code, body) = call(
                api.addr,
                "POST",
                "/api/v1/namespaces",
                "application/json",
                &ns,
            )
            .await;
            assert_eq!(code, 201, "{body}");
        }
        Setup { api, calls }
    }

    /// POSTs `object` to `path`: the status, the body and the `Warning` headers.
    async fn create(&self, path: &str, object: &Value) -> (u16, Value, Vec<String>) {
        use http_body_util::BodyExt;
        let response = sextant_testing::http::open(
            self.api.addr,
            http::Method::POST,
            path,
            "application/json",
            object.to_string().into_bytes(),
        )
        .await
        .expect("a response");
        let warnings = response
            .headers()
            .get_all(http::header::WARNING)
            .iter()
            .map(|v| v.to_str().expect("ASCII").to_owned())
            .collect();
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (
            status,
            serde_json::from_slice(&body).expect("JSON"),
            warnings,
        )
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("calls").clone()
    }
}

fn pod(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
           "spec": {"containers": [{"name": "app", "image": "app:1"}]}})
}

fn configmap(name: &str, hook: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "labels": {"hook": hook}}, "data": {"a": "b"}})
}

#[tokio::test]
async fn mutating_webhooks_patch_selected_pods_before_validating_webhooks_see_them() {
    let setup = Setup::start().await;
    let (code, created, warnings) = setup
        .create(
            "/api/v1/namespaces/injected/pods",
            &pod("web", json!({"app": "web"})),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let containers: Vec<&Value> = created["spec"]["containers"]
        .as_array()
        .expect("list")
        .iter()
        .collect();
    assert_eq!(containers.len(), 2, "{created}");
    assert_eq!(containers[1]["name"], "sidecar");
    assert_eq!(containers[1]["args"], json!(["--ns", "injected"]));
    assert_eq!(
        created["metadata"]["labels"],
        json!({"app": "web", "injected": "yes"})
    );
    assert_eq!(warnings, ["299 - \"a sidecar was added\""]);
    let (_, stored) = call(
        setup.api.addr,
        "GET",
        "/api/v1/namespaces/injected/pods/web",
        "",
        &Value::Null,
    )
    .await;
    assert_eq!(stored["spec"], created["spec"]);
    // The validating webhook saw the patched Pod (it denies one without the sidecar).
    assert_eq!(setup.calls(), ["inject injected/web", "check injected/web"]);

    // Neither webhook is called for a Pod its selectors leave out.
    for (path, labels) in [
        ("/api/v1/namespaces/plain/pods", json!({"app": "a"})),
        (
            "/api/v1/namespaces/injected/pods",
            json!({"inject": "false"}),
        ),
    ] {
        let (code, created, warnings) =
            setup.create(path, &pod("left-alone", labels.clone())).await;
        assert_eq!(code, 201, "{created}");
        assert_eq!(
            created["spec"]["containers"].as_array().map(Vec::len),
            Some(1)
        );
        assert_eq!(created["metadata"]["labels"], labels);
        assert!(warnings.is_empty(), "{warnings:?}");
    }
    assert_eq!(setup.calls().len(), 2, "{:?}", setup.calls());
    setup.api.stop();
}

#[tokio::test]
async fn a_patch_that_fails_or_leaves_an_invalid_object_fails_the_request_naming_the_webhook() {
    let setup = Setup::start().await;
    let cms = "/api/v1/namespaces/plain/configmaps";
    for (behaviour, expected) in [
        (
            "bad-patch",
            "webhook \"bad-patch.test.io\": JSON Patch: operation 0 (remove /data/missing): the path does not exist",
        ),
        (
            "unknown-field",
            "webhook \"unknown-field.test.io\": the patched object is not valid: ConfigMap \"unknown-field\" is invalid: bogus: ",
        ),
        (
            "wrong-type",
            "webhook \"wrong-type.test.io\": the patched object is not valid: ConfigMap \"wrong-type\" is invalid: strict decoding error",
        ),
    ] {
        let (code, status, _) = setup.create(cms, &configmap(behaviour, behaviour)).await;
        assert_eq!(
            (code, status["reason"].as_str()),
            (500, Some("InternalError")),
            "{status}"
        );
        let message = status["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{behaviour}: {message}");
        let (code, _) = call(
            setup.api.addr,
            "GET",
            &format!("{cms}/{behaviour}"),
            "",
            &Value::Null,
        )
        .await;
        assert_eq!(code, 404, "{behaviour} was stored");
    }
    setup.api.stop();
}

#[tokio::test]
async fn denials_and_failures_follow_the_webhook_and_its_failure_policy() {
    let setup = Setup::start().await;
    let cms = "/api/v1/namespaces/plain/configmaps";
    let (code, status, _) = setup.create(cms, &configmap("d", "deny")).await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "admission webhook \"deny.test.io\" denied the request: no, thanks"
    );
    // An answer for another request fails it where the policy is Fail...
    let (code, status, _) = setup.create(cms, &configmap("u", "wrong-uid")).await;
    assert_eq!(code, 500, "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("failed calling webhook \"wrong-uid.test.io\": expected response.uid="),
        "{message}"
    );
    // ...and is ignored where it is Ignore.
    let (code, created, _) = setup.create(cms, &configmap("i", "ignored")).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        setup.calls(),
        ["deny plain/d", "wrong-uid plain/u", "wrong-uid plain/i"]
    );
    setup.api.stop();
}
