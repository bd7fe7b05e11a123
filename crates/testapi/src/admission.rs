//! Calls to registered validating admission webhooks before an object is stored, as the API
//! server makes them: every ValidatingWebhookConfiguration whose rules match the operation,
//! group, version and resource is sent an `AdmissionReview` over HTTPS (trusting its
//! `caBundle`); a denial fails the request with the webhook's message, and a webhook that
//! cannot be reached fails it too unless its `failurePolicy` is `Ignore`. Only `clientConfig.url`
//! is supported (a `service` reference has no cluster network to resolve here); selectors
//! (`namespaceSelector`, `objectSelector`) and `matchConditions` are not evaluated.

use std::{sync::Arc, time::Duration};

use base64::Engine;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

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

/// POSTs the review to `clientConfig.url` and returns the answer.
async fn call(client_config: &Value, review: &Value) -> Result<Value, String> {
    let url = client_config["url"]
        .as_str()
        .ok_or("only clientConfig.url is supported by sextant-testapi")?;
    let rest = url
        .strip_prefix("https://")
        .ok_or("the webhook URL must be https")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/"), |(a, p)| (a, p));
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|e| format!("port: {e}"))?),
        None => (authority, 443),
    };
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
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let body = review.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // A peer closing without close_notify still delivered its answer.
    let _ = tls.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the webhook sent no HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let rest = &raw[split + 4..];
    let code = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    if code != "200" {
        return Err(format!("the webhook answered HTTP {code}"));
    }
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    serde_json::from_slice(&body).map_err(|e| format!("the webhook's answer is not JSON: {e}"))
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..line]);
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let tail = &rest[line + 2..];
        if n == 0 || tail.len() < n {
            break;
        }
        out.extend_from_slice(&tail[..n]);
        rest = tail.get(n + 2..).unwrap_or_default();
    }
    out
}
