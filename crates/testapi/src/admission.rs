//! Calls to admission webhooks before an object is stored, as the API server makes them:
//! first every MutatingWebhookConfiguration's webhooks (configurations in name order, webhooks
//! in their order), each seeing the object as the previous ones patched it, then every
//! ValidatingWebhookConfiguration's. A webhook is called when one of its `rules` matches the
//! operation, group, version, resource and `scope`, its `namespaceSelector` matches the labels
//! of the object's Namespace as stored (of the object itself for a Namespace; cluster-scoped
//! objects always match) and its `objectSelector` the object's labels (or the old object's,
//! on UPDATE). It is sent an `AdmissionReview` v1 over HTTPS (trusting its `caBundle`); a
//! denial fails the request with the webhook's message, and a webhook that cannot be reached,
//! times out (`timeoutSeconds`, 10 by default) or answers something other than a review of
//! this request fails it too unless its `failurePolicy` is `Ignore`. A mutating webhook's
//! `JSONPatch` is applied (`json_patch`); a patch that does not apply, or leaves an object
//! that is not a valid one of its kind, fails the request whatever the failure policy, naming
//! the webhook. Stricter than the API server, which drops them, an unknown field a patch adds
//! is such a failure, so that a test of a webhook sees its mistakes. `warnings` reach the
//! client as `Warning` headers.
//!
//! A webhook is reached by `clientConfig.url`, or by `clientConfig.service` resolved through
//! the Service's EndpointSlices (`service`); a Service with no ready endpoint is a failure of
//! the call, to which the failure policy applies.
//!
//! Not supported: `matchConditions`; `reinvocationPolicy` (each mutating webhook is
//! called once, as with `Never`, even when a later one changed the object); `matchPolicy`
//! (rules match the version served, never an equivalent one).

use std::{sync::Arc, time::Duration};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

pub use self::service::{ServiceRef, Services};
use crate::{json_patch, kinds::ResourceType, select::Selector};

mod service;

/// Why a request was not admitted: HTTP status, reason and message for the client.
pub struct Denied {
    /// HTTP status.
    pub code: u16,
    /// `Status.reason`.
    pub reason: String,
    /// `Status.message`.
    pub message: String,
}

impl Denied {
    /// A failure of the API server about webhook `name` (`500 InternalError`).
    fn internal(name: &str, error: impl std::fmt::Display) -> Denied {
        Denied {
            code: 500,
            reason: "InternalError".into(),
            message: format!("Internal error occurred: webhook \"{name}\": {error}"),
        }
    }
}

/// One write under review: what the webhooks are told, and what they have changed so far.
pub struct Review<'a> {
    /// The type written.
    pub t: &'a ResourceType,
    /// `CREATE` or `UPDATE`.
    pub operation: &'a str,
    /// The object, as the mutating webhooks called so far have left it.
    pub object: Value,
    /// The object as stored, on UPDATE.
    pub old: Option<&'a Value>,
    /// The request's namespace (empty for a cluster-scoped kind).
    pub namespace: &'a str,
    /// The labels of that Namespace as stored (`None`: there is no such Namespace).
    pub namespace_labels: Option<Value>,
    /// What the webhooks warned of, for the client.
    pub warnings: Vec<String>,
    /// The addresses of the services webhooks are configured by.
    pub services: Services,
}

impl Review<'_> {
    /// Calls the mutating webhooks of `configs` (MutatingWebhookConfigurations) in order and
    /// applies their patches; `check` decides whether a patched object is still a valid
    /// object of its kind (the error says why not).
    pub async fn mutate(
        &mut self,
        configs: &[Value],
        check: impl Fn(&mut Value) -> Result<(), String>,
    ) -> Result<(), Denied> {
        for (name, hook) in webhooks(configs) {
            let Some(response) = self.call(name, hook).await? else {
                continue;
            };
            let Some(patch) = response.get("patch").filter(|p| !p.is_null()) else {
                continue;
            };
            if response["patchType"] != "JSONPatch" {
                return Err(Denied::internal(
                    name,
                    format!(
                        "the response has a patch of patchType {}: only \"JSONPatch\" is supported",
                        response["patchType"]
                    ),
                ));
            }
            let patch: Value = patch
                .as_str()
                .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
                .and_then(|p| serde_json::from_slice(&p).ok())
                .ok_or_else(|| Denied::internal(name, "the patch is not base64-encoded JSON"))?;
            let mut object = self.object.clone();
            json_patch::apply(&mut object, &patch)
                .map_err(|e| Denied::internal(name, format!("JSON Patch: {e}")))?;
            check(&mut object).map_err(|e| {
                Denied::internal(name, format!("the patched object is not valid: {e}"))
            })?;
            self.object = object;
        }
        Ok(())
    }

    /// Calls the validating webhooks of `configs` (ValidatingWebhookConfigurations).
    pub async fn validate(&mut self, configs: &[Value]) -> Result<(), Denied> {
        for (name, hook) in webhooks(configs) {
            self.call(name, hook).await?;
        }
        Ok(())
    }

    /// Calls `hook` when it applies: its response when it allowed the request, `None` when it
    /// does not apply or failed and its failure policy ignores that.
    async fn call(&mut self, name: &str, hook: &Value) -> Result<Option<Value>, Denied> {
        if !self.applies(name, hook)? {
            return Ok(None);
        }
        let t = self.t;
        let uid = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": t.group, "version": t.version, "kind": t.kind},
                "resource": {"group": t.group, "version": t.version, "resource": t.plural},
                "requestKind": {"group": t.group, "version": t.version, "kind": t.kind},
                "requestResource": {"group": t.group, "version": t.version, "resource": t.plural},
                "name": self.object["metadata"]["name"], "namespace": self.namespace,
                "operation": self.operation, "object": self.object,
                "oldObject": self.old.cloned().unwrap_or(Value::Null),
                "userInfo": {"username": "sextant-testapi"}, "dryRun": false,
            },
        });
        let timeout = Duration::from_secs(hook["timeoutSeconds"].as_u64().unwrap_or(10));
        let answered = match tokio::time::timeout(
            timeout,
            call(&hook["clientConfig"], &self.services, &review),
        )
        .await
        {
            Ok(answer) => answer.and_then(|a| response_to(a, &uid)),
            Err(_) => Err(format!("timed out after {timeout:?}")),
        };
        let response = match answered {
            Ok(r) => r,
            Err(error) if hook["failurePolicy"] == "Ignore" => {
                tracing::warn!(webhook = name, %error, "webhook failed; ignored by its failurePolicy");
                return Ok(None);
            }
            Err(error) => {
                return Err(Denied {
                    code: 500,
                    reason: "InternalError".into(),
                    message: format!(
                        "Internal error occurred: failed calling webhook \"{name}\": {error}"
                    ),
                });
            }
        };
        self.warnings.extend(
            response["warnings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|w| w.as_str().map(str::to_owned)),
        );
        if response["allowed"] != json!(true) {
            let status = &response["status"];
            let message = match status["message"].as_str().filter(|m| !m.is_empty()) {
                Some(m) => format!("admission webhook \"{name}\" denied the request: {m}"),
                None => {
                    format!("admission webhook \"{name}\" denied the request without explanation")
                }
            };
            return Err(Denied {
                code: status["code"].as_u64().map_or(400, |c| c as u16),
                reason: status["reason"].as_str().unwrap_or("BadRequest").to_owned(),
                message,
            });
        }
        Ok(Some(response))
    }

    /// Whether `hook` is to be called: a rule matches, then its selectors. A namespace
    /// selector on an object whose Namespace does not exist is an error, unless the object
    /// selector rules the hook out (the API server's order).
    fn applies(&self, name: &str, hook: &Value) -> Result<bool, Denied> {
        let t = self.t;
        let ruled_in = hook["rules"].as_array().into_iter().flatten().any(|r| {
            matches(&r["operations"], self.operation)
                && matches(&r["apiGroups"], &t.group)
                && matches(&r["apiVersions"], &t.version)
                && r["resources"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|v| v == "*" || v == "*/*" || *v == t.plural))
                && match r["scope"].as_str() {
                    Some("Cluster") => !t.namespaced,
                    Some("Namespaced") => t.namespaced,
                    _ => true,
                }
        });
        if !ruled_in {
            return Ok(false);
        }
        let selector = |field: &str| {
            Selector::from_object(&hook[field])
                .map_err(|e| Denied::internal(name, format!("{field}.{e}")))
        };
        let namespaces = selector("namespaceSelector")?;
        let in_namespace = if namespaces.is_empty() {
            Ok(true)
        } else if t.group.is_empty() && t.plural == "namespaces" {
            Ok(namespaces.matches_labels(&self.object))
        } else if !t.namespaced {
            Ok(true)
        } else {
            match &self.namespace_labels {
                Some(labels) => Ok(namespaces.matches(|k| labels.get(k).and_then(Value::as_str))),
                None => Err(Denied {
                    code: 404,
                    reason: "NotFound".into(),
                    message: format!("namespaces \"{}\" not found", self.namespace),
                }),
            }
        };
        if matches!(in_namespace, Ok(false)) {
            return Ok(false);
        }
        let objects = selector("objectSelector")?;
        let object_matches = objects.is_empty()
            || [Some(&self.object), self.old]
                .into_iter()
                .flatten()
                .any(|o| objects.matches_labels(o));
        if !object_matches {
            return Ok(false);
        }
        in_namespace
    }
}

/// The webhooks of `configs`, each with its name, in the order they are called.
fn webhooks(configs: &[Value]) -> impl Iterator<Item = (&str, &Value)> {
    configs
        .iter()
        .flat_map(|c| c["webhooks"].as_array().into_iter().flatten())
        .map(|h| (h["name"].as_str().unwrap_or_default(), h))
}

fn matches(list: &Value, value: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|v| v == "*" || v == value))
}

/// The `response` of an answer, if the answer is an AdmissionReview v1 for request `uid`.
fn response_to(mut answer: Value, uid: &str) -> Result<Value, String> {
    if answer["apiVersion"] != "admission.k8s.io/v1" || answer["kind"] != "AdmissionReview" {
        return Err(format!(
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {}, Kind={}",
            answer["apiVersion"], answer["kind"]
        ));
    }
    let response = answer["response"].take();
    if !response.is_object() {
        return Err("webhook response was absent".into());
    }
    if response["uid"] != uid {
        return Err(format!(
            "expected response.uid=\"{uid}\", got {}",
            response["uid"]
        ));
    }
    Ok(response)
}

/// Where a webhook is called: the address to dial, the name its certificate must hold, the
/// `Host` header and the path.
struct Endpoint {
    dial: (String, u16),
    server_name: String,
    authority: String,
    path: String,
}

/// The endpoint of `clientConfig`: its `url`, or its `service` as `services` resolved it.
fn endpoint(client_config: &Value, services: &Services) -> Result<Endpoint, String> {
    if let Some(service) = ServiceRef::of(client_config) {
        let service = service?;
        let address = services.address(&service)?;
        let host = service.host();
        return Ok(Endpoint {
            dial: (address.ip().to_string(), address.port()),
            authority: format!("{host}:{}", service.port),
            server_name: host,
            path: service.path,
        });
    }
    let url = client_config["url"]
        .as_str()
        .ok_or("clientConfig: exactly one of url or service is required")?;
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("the webhook URL {url}: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err("the webhook URL must be https".to_owned());
    }
    let host = uri.host().ok_or("the webhook URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(Endpoint {
        dial: (host.to_owned(), uri.port_u16().unwrap_or(443)),
        server_name: host.to_owned(),
        authority: uri.authority().map_or(host, |a| a.as_str()).to_owned(),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
    })
}

/// POSTs the review to the webhook over HTTPS (trusting `caBundle`) with hyper's HTTP/1.1
/// client, and returns the answer.
async fn call(client_config: &Value, services: &Services, review: &Value) -> Result<Value, String> {
    let Endpoint {
        dial: (host, port),
        server_name,
        authority,
        path,
    } = endpoint(client_config, services)?;
    let mut roots = rustls::RootCertStore::empty();
    let bundle = client_config["caBundle"].as_str().unwrap_or_default();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(bundle)
        .map_err(|e| format!("caBundle is not base64: {e}"))?;
    {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
            roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server_name = rustls::pki_types::ServerName::try_from(server_name.clone())
        .map_err(|e| format!("host {server_name}: {e}"))?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(connection);
    let request = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(review.to_string())))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!(
            "the webhook answered HTTP {}",
            response.status().as_u16()
        ));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the webhook's answer: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("the webhook's answer is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::builtins;

    fn kind(plural: &str) -> ResourceType {
        builtins()
            .into_iter()
            .find(|t| t.plural == plural)
            .expect("a built-in kind")
    }

    fn review<'a>(
        t: &'a ResourceType,
        object: Value,
        namespace_labels: Option<Value>,
    ) -> Review<'a> {
        Review {
            t,
            operation: "CREATE",
            object,
            old: None,
            namespace: if t.namespaced { "apps" } else { "" },
            namespace_labels,
            warnings: Vec::new(),
            services: Services::default(),
        }
    }

    /// Istio's injector webhook for injection by namespace label.
    fn injector(extra: Value) -> Value {
        let mut hook = json!({"name": "namespace.sidecar-injector.istio.io",
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"]}],
            "namespaceSelector": {"matchExpressions": [
                {"key": "istio-injection", "operator": "In", "values": ["enabled"]}]},
            "objectSelector": {"matchExpressions": [
                {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]}});
        if let (Some(h), Some(e)) = (hook.as_object_mut(), extra.as_object()) {
            h.extend(e.clone());
        }
        hook
    }

    fn pod(labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": labels}})
    }

    fn applies(r: &Review, hook: &Value) -> bool {
        r.applies("hook", hook)
            .unwrap_or_else(|d| panic!("{}", d.message))
    }

    #[test]
    fn rules_match_operation_group_version_resource_and_scope() {
        let pods = kind("pods");
        let r = review(
            &pods,
            pod(json!({})),
            Some(json!({"istio-injection": "enabled"})),
        );
        assert!(applies(&r, &injector(json!({}))));
        let rule = |rule: Value| json!({"rules": [rule]});
        let base = json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                          "resources": ["pods"]});
        let with = |k: &str, v: Value| {
            let mut r = base.clone();
            r[k] = v;
            rule(r)
        };
        for (hook, expected) in [
            (with("operations", json!(["UPDATE"])), false),
            (with("operations", json!(["*"])), true),
            (with("apiGroups", json!(["apps"])), false),
            (with("apiVersions", json!(["v2"])), false),
            (with("resources", json!(["services"])), false),
            (with("resources", json!(["pods/status"])), false),
            (with("resources", json!(["*/*"])), true),
            (with("scope", json!("Cluster")), false),
            (with("scope", json!("Namespaced")), true),
            (with("scope", json!("*")), true),
        ] {
            assert_eq!(applies(&r, &injector(hook.clone())), expected, "{hook}");
        }
        let namespaces = kind("namespaces");
        let ns = review(&namespaces, json!({"metadata": {"name": "apps"}}), None);
        let cluster = json!({"rules": [{"operations": ["CREATE"], "apiGroups": ["*"],
            "apiVersions": ["*"], "resources": ["*"], "scope": "Cluster"}]});
        assert!(applies(&ns, &cluster));
    }

    #[test]
    fn selectors_match_the_namespace_as_stored_and_the_object_or_its_old_self() {
        let pods = kind("pods");
        let enabled = Some(json!({"istio-injection": "enabled"}));
        let hook = injector(json!({}));
        assert!(!applies(
            &review(&pods, pod(json!({})), Some(json!({}))),
            &hook
        ));
        assert!(!applies(
            &review(&pods, pod(json!({})), Some(Value::Null)),
            &hook
        ));
        let opted_out = pod(json!({"sidecar.istio.io/inject": "false"}));
        assert!(!applies(
            &review(&pods, opted_out.clone(), enabled.clone()),
            &hook
        ));
        // On UPDATE either object matching calls the hook.
        let labelled = pod(json!({"sidecar.istio.io/inject": "true"}));
        let mut update = review(&pods, opted_out, enabled.clone());
        update.operation = "UPDATE";
        let mut hook_on_update = hook.clone();
        hook_on_update["rules"][0]["operations"] = json!(["UPDATE"]);
        assert!(!applies(&update, &hook_on_update));
        update.old = Some(&labelled);
        assert!(applies(&update, &hook_on_update));
        // A Namespace is judged by its own labels; other cluster-scoped kinds always match.
        let any = json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"],
            "resources": ["*"]}], "namespaceSelector": hook["namespaceSelector"].clone()});
        let namespaces = kind("namespaces");
        let ns = |labels: Value| {
            review(
                &namespaces,
                json!({"metadata": {"name": "apps", "labels": labels}}),
                None,
            )
        };
        assert!(applies(&ns(json!({"istio-injection": "enabled"})), &any));
        assert!(!applies(&ns(json!({})), &any));
        let nodes = kind("nodes");
        assert!(applies(
            &review(&nodes, json!({"metadata": {"name": "n"}}), None),
            &any
        ));
    }

    #[test]
    fn a_missing_namespace_or_a_bad_selector_fails_unless_the_object_selector_rules_out() {
        let pods = kind("pods");
        let hook = injector(json!({}));
        let lost = review(&pods, pod(json!({})), None);
        let denied = lost.applies("hook", &hook).expect_err("no namespace");
        assert_eq!(
            (denied.code, denied.message.as_str()),
            (404, "namespaces \"apps\" not found")
        );
        let opted_out = review(
            &pods,
            pod(json!({"sidecar.istio.io/inject": "false"})),
            None,
        );
        assert!(!applies(&opted_out, &hook));
        let bad = injector(json!({"objectSelector": {"matchExpressions": [
            {"key": "a", "operator": "Equal", "values": ["b"]}]}}));
        let r = review(
            &pods,
            pod(json!({})),
            Some(json!({"istio-injection": "enabled"})),
        );
        let denied = r
            .applies("the-hook", &bad)
            .expect_err("an invalid selector");
        assert!(
            denied
                .message
                .contains("webhook \"the-hook\": objectSelector.matchExpressions[0].operator"),
            "{}",
            denied.message
        );
    }
}
