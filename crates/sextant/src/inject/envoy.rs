//! The sidecar's command line: Envoy alone, its bootstrap inline (`--config-yaml`), built by
//! the same library function as `sextant bootstrap --xds-token ... --sidecar-listeners`, so
//! the two cannot drift. What only the running Pod knows (its IP, name, namespace and service
//! account) reaches the bootstrap through Kubernetes' `$(VAR)` expansion of container
//! arguments, from environment variables the downward API sets.

use std::collections::HashMap;

use sextant_compiler::{bootstrap, json};

use super::{
    InjectConfig, Problem,
    annotations::{PROXY_CONFIG, Settings},
    capture::MAX_ARG_STRLEN,
    values::Address,
};

/// The Pod's IP (`status.podIP`).
pub const INSTANCE_IP: &str = "INSTANCE_IP";
/// The Pod's name (`metadata.name`).
pub const POD_NAME: &str = "POD_NAME";
/// The Pod's namespace (`metadata.namespace`).
pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
/// The Pod's service account (`spec.serviceAccountName`).
pub const SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
/// The variables the injector sets on `istio-proxy` from the downward API, which its
/// bootstrap references. A later entry of the same name in `env` would win, and Kubernetes
/// would paste its value into the bootstrap: `proxyMetadata` may not name them.
pub const DOWNWARD_API: [&str; 4] = [INSTANCE_IP, POD_NAME, POD_NAMESPACE, SERVICE_ACCOUNT];
/// The longest value a downward-API variable expands to (a DNS subdomain: the Pod's or its
/// service account's name).
pub const DOWNWARD_API_MAX_LEN: usize = 253;

/// Where the projected service-account token is mounted.
pub const TOKEN_DIR: &str = "/var/run/secrets/tokens";
/// Where `istio-ca-root-cert` is mounted.
pub const ROOT_CERT_DIR: &str = "/var/run/secrets/istio";

/// Envoy's admin port (on 127.0.0.1 only).
const ADMIN_PORT: u32 = 15000;

/// What the bootstrap of one Pod's sidecar depends on beyond the settings.
pub struct Node<'a> {
    /// The network the Pod is on, if any.
    pub network: Option<&'a str>,
    /// The workload's name (node metadata `WORKLOAD_NAME`).
    pub workload: &'a str,
    /// The Pod's app and version labels as node metadata `LABELS` (`app=A,version=V`), which
    /// the sidecar's stats tags read (`source_app`, `source_version`); empty for none.
    pub labels: String,
}

/// Node metadata `LABELS` for the stats tags: the Pod's `app.kubernetes.io/name` (else
/// `app`) and `app.kubernetes.io/version` (else `version`), as Istio's canonical labels take
/// them. Only values a Kubernetes label may hold are kept (the API server validates labels
/// after mutating webhooks run, so a review may carry anything).
pub fn stats_labels(labels: &serde_json::Value) -> String {
    let valid = |v: &&str| {
        !v.is_empty()
            && v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    let pick = |keys: [&str; 2]| keys.iter().find_map(|k| labels[*k].as_str().filter(valid));
    [
        ("app", pick(["app.kubernetes.io/name", "app"])),
        ("version", pick(["app.kubernetes.io/version", "version"])),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
    .collect::<Vec<_>>()
    .join(",")
}

/// `$(NAME)`: a reference Kubernetes expands in container arguments.
fn var(name: &str) -> String {
    format!("$({name})")
}

/// Text Kubernetes leaves as it is: `$$` expands to `$`, so every `$` is doubled and no
/// `$(...)` in a user's value becomes a reference.
fn literal(text: &str) -> String {
    text.replace('$', "$$")
}

/// The arguments of the `istio-proxy` container's `envoy`.
pub fn args(config: &InjectConfig, settings: &Settings, node: &Node<'_>) -> Vec<String> {
    let proxy = &settings.proxy_config;
    let mut args = vec![
        "--config-yaml".to_owned(),
        bootstrap_yaml(config, settings, node),
        "--disable-hot-restart".to_owned(),
        "--drain-time-s".to_owned(),
        proxy
            .drain_seconds
            .unwrap_or(config.drain_seconds)
            .to_string(),
        "--drain-strategy".to_owned(),
        "immediate".to_owned(),
        // Access logs reach the file (or `kubectl logs`) within a second, as under Istio's
        // agent; Envoy's own default holds them up to 10 s.
        "--file-flush-interval-msec".to_owned(),
        "1000".to_owned(),
    ];
    // 0 is every core: Envoy's own default.
    let concurrency = proxy.concurrency.unwrap_or(config.concurrency);
    if concurrency > 0 {
        args.extend(["--concurrency".to_owned(), concurrency.to_string()]);
    }
    args.extend(["-l".to_owned(), settings.log_level.clone()]);
    if !settings.component_log_level.is_empty() {
        args.extend([
            "--component-log-level".to_owned(),
            settings.component_log_level.clone(),
        ]);
    }
    args
}

/// The bootstrap as YAML: ADS over TLS to the control plane, authenticated by the Pod's
/// projected token; node id and metadata as Istio's injector and agent set them; the
/// Prometheus and readiness listeners.
fn bootstrap_yaml(config: &InjectConfig, settings: &Settings, node: &Node<'_>) -> String {
    let node_id = format!(
        "sidecar~{}~{}.{}~{}.svc.{}",
        var(INSTANCE_IP),
        var(POD_NAME),
        var(POD_NAMESPACE),
        var(POD_NAMESPACE),
        literal(&config.domain_suffix),
    );
    let mut metadata = vec![
        ("NAMESPACE".to_owned(), var(POD_NAMESPACE)),
        ("SERVICE_ACCOUNT".to_owned(), var(SERVICE_ACCOUNT)),
        ("INSTANCE_IPS".to_owned(), var(INSTANCE_IP)),
        (
            "INTERCEPTION_MODE".to_owned(),
            settings.interception.clone(),
        ),
        ("CLUSTER_ID".to_owned(), literal(&config.cluster_id)),
    ];
    if let Some(network) = node.network {
        metadata.push(("NETWORK".to_owned(), literal(network)));
    }
    if !node.workload.is_empty() {
        metadata.push(("WORKLOAD_NAME".to_owned(), literal(node.workload)));
    }
    if !node.labels.is_empty() {
        metadata.push(("LABELS".to_owned(), literal(&node.labels)));
    }
    // As istio-agent does: ISTIO_META_X in the sidecar's environment is node metadata X,
    // over what the injector sets. One pass, each key found by its index: linear in the
    // entries however many there are.
    let mut index: HashMap<String, usize> = metadata
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.clone(), i))
        .collect();
    for (name, value) in &settings.proxy_config.proxy_metadata {
        if let Some(key) = name.strip_prefix("ISTIO_META_").filter(|k| !k.is_empty()) {
            match index.get(key) {
                Some(&i) => metadata[i].1 = literal(value),
                None => {
                    index.insert(key.to_owned(), metadata.len());
                    metadata.push((key.to_owned(), literal(value)));
                }
            }
        }
    }
    let Address { host, port } = settings
        .proxy_config
        .discovery_address
        .as_ref()
        .unwrap_or(&config.xds_address);
    let mut b = bootstrap::dynamic_bootstrap(
        &node_id,
        &metadata,
        &literal(host),
        *port,
        false,
        ADMIN_PORT,
        Some(&bootstrap::XdsTls {
            root_cert: format!("{ROOT_CERT_DIR}/root-cert.pem"),
            client: None,
            token: Some(format!("{TOKEN_DIR}/istio-token")),
            server_name: config.xds_server_name.as_deref().map(literal),
        }),
    );
    bootstrap::add_sidecar_listeners(&mut b, ADMIN_PORT);
    // Every string double-quoted and escaped: no value can leave its scalar, even once
    // Kubernetes has pasted the downward API's values into it.
    super::yaml::to_yaml(&json::to_json(&b))
}

/// The length `arg` can have once Kubernetes has expanded it: each `$(VAR)` a downward-API
/// value of at most [`DOWNWARD_API_MAX_LEN`] bytes (`$$` shrinks, so this is an upper bound).
fn expanded_len(arg: &str) -> usize {
    arg.len() + arg.matches("$(").count() * DOWNWARD_API_MAX_LEN
}

/// Why the `istio-proxy` container `proxy` could not be started: an argument of `envoy`
/// (the inline bootstrap, in practice) longer than Linux takes. Its `ISTIO_META_` values are
/// most of the bootstrap, so the problem names `proxy.istio.io/config` when the Pod has it.
pub fn check_args(
    proxy: &serde_json::Value,
    annotations: &serde_json::Map<String, serde_json::Value>,
) -> Vec<Problem> {
    let longest = proxy["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .map(expanded_len)
        .max()
        .unwrap_or(0);
    if longest < MAX_ARG_STRLEN {
        return Vec::new();
    }
    let reason = format!(
        "the sidecar's bootstrap, envoy's --config-yaml argument, would be up to {longest} bytes once Kubernetes fills in the Pod's name, namespace, IP and service account, more than Linux takes in one argument ({MAX_ARG_STRLEN} with its end, MAX_ARG_STRLEN): the sidecar could not start; its ISTIO_META_ proxyMetadata values are most of it"
    );
    let config = annotations
        .get(PROXY_CONFIG)
        .and_then(serde_json::Value::as_str);
    vec![Problem {
        annotation: if config.is_some() {
            PROXY_CONFIG
        } else {
            "metadata.labels"
        }
        .to_owned(),
        value: config.unwrap_or_default().to_owned(),
        reason,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_in_values_stay_literal() {
        assert_eq!(literal("a$(B)c$$"), "a$$(B)c$$$$");
        assert_eq!(var(POD_NAME), "$(POD_NAME)");
    }

    #[test]
    fn stats_labels_take_the_canonical_labels_first_and_only_valid_values() {
        let labels = serde_json::json!({
            "app": "reviews", "app.kubernetes.io/name": "reviews-api",
            "version": "v2", "other": "x",
        });
        assert_eq!(stats_labels(&labels), "app=reviews-api,version=v2");
        let hostile = serde_json::json!({"app": "a,b=c", "version": "v1\nx"});
        assert_eq!(stats_labels(&hostile), "");
        assert_eq!(stats_labels(&serde_json::json!({})), "");
    }
}
