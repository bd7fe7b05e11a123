//! Sidecar injection (`POST /inject` on the webhook port): a Pod being created gets a plain
//! Envoy sidecar and an init container running `sextant iptables`, as Istio's injector gives
//! it istio-proxy and istio-init. The sidecar is Envoy alone, with no agent: its bootstrap
//! is written here and passed inline, it authenticates to the secure xDS port with the Pod's
//! projected service-account token (Envoy's Google gRPC client re-reads it for every
//! stream), and Istio's annotations shape it as they shape Istio's (`annotations`).
//!
//! [`inject`] is a pure function of the Pod, its namespace and the [`InjectConfig`]: JSON
//! Patch operations and warnings, a reason for leaving the Pod as it is, or the malformed
//! annotations that make injection fail (as in Istio, the Pod is then refused).

use base64::Engine;
use serde_json::{Value, json};

pub mod annotations;
mod args;
mod containers;
mod envoy;
mod patch;
pub mod proxy_config;
pub mod values;
mod workload;

pub use annotations::Problem;
pub use args::{Defaults, InjectArgs};
pub use values::Address;

/// Default Envoy image of the sidecar (`--sidecar-image`).
pub const DEFAULT_PROXY_IMAGE: &str = "docker.io/envoyproxy/envoy:v1.40.0";
/// Default image of the init container (`--sidecar-init-image`): Sextant's, this version.
pub const DEFAULT_INIT_IMAGE: &str =
    concat!("ghcr.io/sextant-mesh/sextant:", env!("CARGO_PKG_VERSION"));

/// The label or annotation that opts a Pod in or out (`"false"` opts out).
const INJECT: &str = "sidecar.istio.io/inject";
/// What injection added, as JSON; its presence marks a Pod injected.
const STATUS: &str = "sidecar.istio.io/status";
/// Namespaces never injected, as Istio's `IgnoredNamespaces`.
const IGNORED_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// CPU and memory for the sidecar, each optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// `requests.cpu`.
    pub cpu_request: Option<String>,
    /// `requests.memory`.
    pub memory_request: Option<String>,
    /// `limits.cpu`.
    pub cpu_limit: Option<String>,
    /// `limits.memory`.
    pub memory_limit: Option<String>,
}

/// How sidecars are made, before each Pod's annotations.
#[derive(Clone, Debug)]
pub struct InjectConfig {
    /// Envoy's image.
    pub proxy_image: String,
    /// The image of `istio-init` (Sextant's, with `sextant iptables`).
    pub init_image: String,
    /// The secure xDS port as Pods reach it.
    pub xds_address: Address,
    /// The name Sextant's certificate carries when the address's host is not it.
    pub xds_server_name: Option<String>,
    /// The sidecar's resources when no annotation sets them.
    pub resources: Resources,
    /// Envoy's log level.
    pub log_level: String,
    /// Envoy's per-component log levels (`misc:error`), empty for none.
    pub component_log_level: String,
    /// Envoy's worker threads; 0 for one per core.
    pub concurrency: u32,
    /// Envoy's `--drain-time-s` when `terminationDrainDuration` does not set it.
    pub drain_seconds: u64,
    /// The proxy's user and group id, whose traffic iptables lets out uncaptured.
    pub uid: u32,
    /// This cluster's id (node metadata `CLUSTER_ID`).
    pub cluster_id: String,
    /// This cluster's network, if it has one (node metadata `NETWORK`).
    pub network: Option<String>,
    /// The cluster's DNS suffix, for the node id.
    pub domain_suffix: String,
}

impl Default for InjectConfig {
    /// Istio's defaults, with Sextant in `istio-system`.
    fn default() -> Self {
        InjectConfig {
            proxy_image: DEFAULT_PROXY_IMAGE.to_owned(),
            init_image: DEFAULT_INIT_IMAGE.to_owned(),
            xds_address: Address {
                host: "sextant.istio-system.svc".to_owned(),
                port: 15012,
            },
            xds_server_name: None,
            resources: Resources {
                cpu_request: Some("100m".to_owned()),
                memory_request: Some("128Mi".to_owned()),
                cpu_limit: Some("2000m".to_owned()),
                memory_limit: Some("1024Mi".to_owned()),
            },
            log_level: "warning".to_owned(),
            component_log_level: "misc:error".to_owned(),
            concurrency: 2,
            drain_seconds: 5,
            uid: 1337,
            cluster_id: "Kubernetes".to_owned(),
            network: None,
            domain_suffix: "cluster.local".to_owned(),
        }
    }
}

impl InjectConfig {
    /// Checks the settings an operator gave (images, quantities, log levels), naming the
    /// flag of each that is wrong.
    pub fn check(&self) -> Result<(), String> {
        let r = &self.resources;
        let checks: [(&str, Option<&String>, values::Check); 8] = [
            ("--sidecar-image", Some(&self.proxy_image), values::image),
            (
                "--sidecar-init-image",
                Some(&self.init_image),
                values::image,
            ),
            (
                "--sidecar-cpu-request",
                r.cpu_request.as_ref(),
                values::quantity,
            ),
            (
                "--sidecar-memory-request",
                r.memory_request.as_ref(),
                values::quantity,
            ),
            (
                "--sidecar-cpu-limit",
                r.cpu_limit.as_ref(),
                values::quantity,
            ),
            (
                "--sidecar-memory-limit",
                r.memory_limit.as_ref(),
                values::quantity,
            ),
            (
                "--sidecar-log-level",
                Some(&self.log_level),
                values::log_level,
            ),
            (
                "--sidecar-component-log-level",
                Some(&self.component_log_level).filter(|l| !l.is_empty()),
                values::component_log_level,
            ),
        ];
        for (flag, value, check) in checks {
            if let Some(value) = value {
                check(value).map_err(|e| format!("{flag} {value:?}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// What injecting a Pod adds.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    /// JSON Patch operations against the Pod as sent.
    pub patch: Vec<Value>,
    /// For the user: what was accepted but not honoured.
    pub warnings: Vec<String>,
}

/// Why a Pod is left as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// A system namespace (`kube-system`, ...).
    IgnoredNamespace,
    /// `hostNetwork: true`: iptables would capture the node's traffic.
    HostNetwork,
    /// `sidecar.istio.io/inject: "false"` (the label, else the annotation).
    OptedOut,
    /// `sidecar.istio.io/status`, or a container named `istio-proxy`, is there already.
    AlreadyInjected,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Skip::IgnoredNamespace => "a system namespace",
            Skip::HostNetwork => "hostNetwork is true",
            Skip::OptedOut => "sidecar.istio.io/inject is false",
            Skip::AlreadyInjected => "already injected",
        })
    }
}

/// What [`inject`] decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The sidecar is added.
    Injected(Injection),
    /// The Pod is left as it is.
    Skipped(Skip),
}

/// Injection refused: the Pod's malformed annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectError {
    /// The Pod, `NAMESPACE/NAME`.
    pub pod: String,
    /// Every malformed annotation.
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for InjectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sidecar injection failed for Pod {}: ", self.pod)?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "invalid value {:?} for annotation {}: {}",
                p.value, p.annotation, p.reason
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for InjectError {}

/// Injects the sidecar into `pod` (a Pod being created in `namespace`).
pub fn inject(pod: &Value, namespace: &str, config: &InjectConfig) -> Result<Outcome, InjectError> {
    let metadata = &pod["metadata"];
    let labels = &metadata["labels"];
    let annotations = &metadata["annotations"];
    let spec = &pod["spec"];
    if IGNORED_NAMESPACES.contains(&namespace) {
        return Ok(Outcome::Skipped(Skip::IgnoredNamespace));
    }
    if spec["hostNetwork"] == true {
        return Ok(Outcome::Skipped(Skip::HostNetwork));
    }
    // As Istio: the label wins over the annotation; values other than true and false are
    // ignored.
    let opt = labels[INJECT].as_str().or(annotations[INJECT].as_str());
    if opt == Some("false") {
        return Ok(Outcome::Skipped(Skip::OptedOut));
    }
    let named = |field: &str| {
        spec[field]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == containers::PROXY)
    };
    if annotations.get(STATUS).is_some() || named("containers") || named("initContainers") {
        return Ok(Outcome::Skipped(Skip::AlreadyInjected));
    }
    let empty = serde_json::Map::new();
    let settings = annotations::read(annotations.as_object().unwrap_or(&empty), config).map_err(
        |problems| InjectError {
            pod: workload::display_name(pod, namespace),
            problems,
        },
    )?;
    let deployment = workload::deployment_name(pod);
    let workload_name = labels["service.istio.io/workload-name"]
        .as_str()
        .unwrap_or(&deployment);
    let network = labels["topology.istio.io/network"]
        .as_str()
        .or(config.network.as_deref());
    let node = envoy::Node {
        network,
        workload: workload_name,
    };
    let proxy = containers::proxy_container(config, &settings, &node);
    let init =
        (settings.interception != "NONE").then(|| containers::init_container(config, &settings));
    let volumes = containers::volumes();
    let hold = settings
        .proxy_config
        .hold_application_until_proxy_starts
        .unwrap_or(false);

    let mut new_labels = Vec::new();
    let mut label = |key: &str, value: String| {
        if labels[key].as_str() != Some(value.as_str()) {
            new_labels.push((key.to_owned(), value));
        }
    };
    if labels["security.istio.io/tlsMode"].is_null() {
        label("security.istio.io/tlsMode", "istio".to_owned());
    }
    label(
        "service.istio.io/canonical-name",
        workload::canonical_name(labels, &deployment),
    );
    label(
        "service.istio.io/canonical-revision",
        workload::canonical_revision(labels),
    );
    if let Some(network) = network {
        label("topology.istio.io/network", network.to_owned());
    }

    let mut new_annotations = Vec::new();
    let mut annotate = |key: &str, value: &str| {
        if annotations[key].is_null() {
            new_annotations.push((key.to_owned(), value.to_owned()));
        }
    };
    let status = json!({
        "initContainers": init.as_ref().map(|_| [containers::INIT]),
        "containers": [containers::PROXY],
        "volumes": [containers::TOKEN_VOLUME, containers::ROOT_CERT_VOLUME],
        "imagePullSecrets": null,
        "revision": "default",
    });
    annotate(STATUS, &status.to_string());
    annotate("istio.io/rev", "default");
    let first_app = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|c| c["name"].as_str());
    if let Some(app) = first_app {
        annotate("kubectl.kubernetes.io/default-container", app);
        annotate("kubectl.kubernetes.io/default-logs-container", app);
    }
    let scraped = [
        "prometheus.io/scrape",
        "prometheus.io/port",
        "prometheus.io/path",
    ]
    .iter()
    .any(|key| !annotations[*key].is_null());
    if !scraped {
        annotate("prometheus.io/scrape", "true");
        annotate(
            "prometheus.io/port",
            &sextant_compiler::bootstrap::PROMETHEUS_PORT.to_string(),
        );
        annotate("prometheus.io/path", "/stats/prometheus");
    }

    let mut patch = patch::Patch::new(pod);
    patch.set_metadata(new_labels, new_annotations);
    if let Some(init) = init {
        // Last, as Istio's: init containers before it run before traffic is captured.
        patch.append("initContainers", vec![init]);
    }
    if hold {
        patch.prepend("containers", proxy);
    } else {
        patch.append("containers", vec![proxy]);
    }
    patch.append("volumes", volumes);
    Ok(Outcome::Injected(Injection {
        patch: patch.into_ops(),
        warnings: warnings(&settings),
    }))
}

/// What the user is told about settings a plain Envoy sidecar cannot honour.
fn warnings(settings: &annotations::Settings) -> Vec<String> {
    let mut out = settings.warnings.clone();
    let proxy = &settings.proxy_config;
    for (name, _) in &proxy.proxy_metadata {
        if !name.starts_with("ISTIO_META_") {
            out.push(format!(
                "proxy.istio.io/config: proxyMetadata {name} is set in the sidecar's environment only; a plain Envoy sidecar has no istio-agent to read it"
            ));
        }
    }
    if proxy.hold_application_until_proxy_starts == Some(true) {
        out.push("proxy.istio.io/config: holdApplicationUntilProxyStarts puts the sidecar first; without istio-agent nothing holds the application until Envoy is ready".to_owned());
    }
    out
}

/// The AdmissionReview answering `review` (a Pod's creation): allowed with a JSON Patch
/// adding the sidecar, allowed unchanged, or refused naming the malformed annotations.
pub fn review_response(review: &Value, config: &InjectConfig) -> Value {
    let request = &review["request"];
    let mut response = json!({"uid": request["uid"].clone(), "allowed": true});
    let pod = &request["object"];
    let operation = request["operation"].as_str().unwrap_or("CREATE");
    // Only a Pod being created can get containers; anything else is not ours to change.
    let is_pod = pod["kind"].as_str().is_none_or(|k| k == "Pod");
    if operation == "CREATE" && is_pod && pod.is_object() {
        let namespace = pod["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
            .or(request["namespace"].as_str())
            .unwrap_or("default");
        match inject(pod, namespace, config) {
            Ok(Outcome::Injected(injection)) => {
                let patch =
                    serde_json::to_vec(&injection.patch).expect("JSON values always serialize");
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
                if !injection.warnings.is_empty() {
                    response["warnings"] = json!(injection.warnings);
                }
                tracing::info!(pod = %workload::display_name(pod, namespace), "sidecar injected");
            }
            Ok(Outcome::Skipped(why)) => {
                tracing::debug!(pod = %workload::display_name(pod, namespace), reason = %why, "sidecar not injected");
            }
            Err(error) => {
                tracing::warn!(%error, "sidecar injection refused");
                response["allowed"] = json!(false);
                response["status"] = json!({
                    "code": 400, "reason": "Invalid", "message": error.to_string(),
                });
            }
        }
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_of_any_shape_are_answered_without_panicking() {
        let config = InjectConfig::default();
        for pod in [
            json!({}),
            json!({"metadata": null, "spec": null}),
            json!({"metadata": {"annotations": [1, 2]}, "spec": {"containers": {}}}),
            json!({"metadata": {"labels": "x", "annotations": {"proxy.istio.io/config": 7}}}),
            json!({"spec": {"containers": [{"name": 3}], "volumes": "none"}}),
        ] {
            let review = json!({"request": {"uid": "u", "object": pod}});
            let answer = review_response(&review, &config);
            assert_eq!(answer["response"]["uid"], "u", "{pod}");
        }
        let refused = review_response(
            &json!({"request": {"uid": "u", "namespace": "ns", "object":
                {"metadata": {"name": "p", "annotations": {"sidecar.istio.io/proxyCPU": 7}}}}}),
            &config,
        );
        let message = refused["response"]["status"]["message"].to_string();
        assert!(
            message.contains("ns/p") && message.contains("proxyCPU"),
            "{message}"
        );
    }
}
