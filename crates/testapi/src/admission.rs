//! Calls to registered validating admission webhooks before an object is stored, as the API
//! server makes them: every ValidatingWebhookConfiguration whose rules match the operation,
//! group, version and resource is sent an `AdmissionReview` over HTTPS (trusting its
//! `caBundle`); a denial fails the request with the webhook's message, and a webhook that
//! cannot be reached fails it too unless its `failurePolicy` is `Ignore`. Only `clientConfig.url`
//! is supported (a `service` reference has no cluster network to resolve here); selectors
//! (`namespaceSelector`, `objectSelector`) and `matchConditions` are not evaluated.

use std::{sync::Arc, time::Duration};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::kinds::ResourceType;

/// Why a request was not admitted: HTTP status, reason and message for the client.
pub struct Denied {
    /// HTTP status.
    pub code: u16,
    /// `Status.reason`.
    pub reason: String,
    /// `Status.message`.
    pub message: String,
}

fn matches(list: &Value, value: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|v| v == "*" || v == value))
}

/// Runs the webhooks of `configs` (the stored ValidatingWebhookConfigurations) on `object`.
pub async fn admit(
    configs: &[Value],
    t: &ResourceType,
    operation: &str,
    object: &Value,
    old: Option<&Value>,
    namespace: &str,
) -> Result<(), Denied> {
    for config in configs {
        for hook in config["webhooks"].as_array().into_iter().flatten() {
            let name = hook["name"].as_str().unwrap_or_default();
            let applies = hook["rules"].as_array().into_iter().flatten().any(|r| {
                matches(&r["operations"], operation)
                    && matches(&r["apiGroups"], &t.group)
                    && matches(&r["apiVersions"], &t.version)
                    && matches(&r["resources"], &t.plural)
            });
            if !applies {
                continue;
            }
            let review = json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {
                    "uid": format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())),
                    "kind": {"group": t.group, "version": t.version, "kind": t.kind},
                    "resource": {"group": t.group, "version": t.version, "resource": t.plural},
                    "requestKind": {"group": t.group, "version": t.version, "kind": t.kind},
                    "name": object["metadata"]["name"], "namespace": namespace,
                    "operation": operation, "object": object,
                    "oldObject": old.cloned().unwrap_or(Value::Null),
                    "userInfo": {"username": "sextant-testapi"}, "dryRun": false,
                },
            });
            let timeout = Duration::from_secs(hook["timeoutSeconds"].as_u64().unwrap_or(10));
            let fail_open = hook["failurePolicy"] == "Ignore";
            let answer = match tokio::time::timeout(timeout, call(&hook["clientConfig"], &review))
                .await
            {
                Ok(Ok(a)) => a,
                failed => {
                    let error = match failed {
                        Ok(Err(e)) => e,
                        _ => format!("timed out after {timeout:?}"),
                    };
                    if fail_open {
                        tracing::warn!(webhook = name, %error, "webhook failed; ignored by its failurePolicy");
                        continue;
                    }
                    return Err(Denied {
                        code: 500,
                        reason: "InternalError".into(),
                        message: format!(
                            "Internal error occurred: failed calling webhook \"{name}\": {error}"
                        ),
                    });
                }
            };
            let response = &answer["response"];
            if response["allowed"] != json!(true) {
                let status = &response["status"];
                return Err(Denied {
                    code: status["code"].as_u64().map_or(400, |c| c as u16),
                    reason: status["reason"].as_str().unwrap_or("BadRequest").to_owned(),
                    message: format!(
                        "admission webhook \"{name}\" denied the request: {}",
                        status["message"].as_str().unwrap_or("without explanation")
                    ),
                });
            }
        }
    }
    Ok(())
}

/// POSTs the review to `clientConfig.url` over HTTPS (trusting `caBundle`) with hyper's
/// HTTP/1.1 client, and returns the answer.
async fn call(client_config: &Value, review: &Value) -> Result<Value, String> {
    let url = client_config["url"]
        .as_str()
        .ok_or("only clientConfig.url is supported by sextant-testapi")?;
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("the webhook URL {url}: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err("the webhook URL must be https".to_owned());
    }
    let host = uri.host().ok_or("the webhook URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(443);
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
    let server_name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("host {host}: {e}"))?;
    let tcp = TcpStream::connect((host, port))
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
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host, |a| a.as_str());
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
