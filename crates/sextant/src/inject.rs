//! Sidecar injection (`POST /inject` on the webhook port): a Pod being created gets a plain
//! Envoy sidecar and an init container running `sextant iptables`, as Istio's injector gives
//! it istio-proxy and istio-init. The sidecar is Envoy alone, with no agent: its bootstrap
//! is written here and passed inline, it authenticates to the secure xDS port with the Pod's
//! projected service-account token (Envoy's Google gRPC client re-reads it for every
//! stream), and Istio's annotations shape it as they shape Istio's (`annotations`), over the
//! mesh config's `defaultConfig`. It is a regular container that outlives the application by
//! a `preStop` sleep (`drain`), or a Kubernetes native sidecar, an init container that keeps
//! running and holds the application until Envoy is configured.
//!
//! [`inject`] is a pure function of the Pod, its namespace and the [`InjectConfig`]: JSON
//! Patch operations and warnings, a reason for leaving the Pod as it is, or the malformed
//! annotations that make injection fail (as in Istio, the Pod is then refused), and the
//! values the Pod could not start with: what `istio-init` would refuse (`capture`), an
//! argument longer than Linux takes. An [`Injector`] gives it the mesh config in force when
//! each Pod is created. What a Pod may make it read and answer is bounded (`proxyMetadata`,
//! the annotations' size, [`MAX_PATCH_BYTES`]), and building is linear in what it reads.

use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};

pub mod annotations;
mod args;
pub mod capture;
mod containers;
mod drain;
mod envoy;
mod patch;
pub mod proxy_config;
pub mod values;
mod warnings;
mod workload;
mod yaml;

pub use annotations::Problem;
pub use args::{Defaults, InjectArgs};
pub use proxy_config::ProxyConfig;
pub use values::Address;

/// Default Envoy image of the sidecar (`--sidecar-image`).
pub const DEFAULT_PROXY_IMAGE: &str = "docker.io/envoyproxy/envoy:v1.40.0";
/// Default image of the init container (`--sidecar-init-image`): what `make image` tags as
/// Sextant's init image (sextant with iptables, nft and ip), this version.
pub const DEFAULT_INIT_IMAGE: &str = concat!("localhost/sextant-init:", env!("CARGO_PKG_VERSION"));

/// The label or annotation that opts a Pod in or out (`"false"` opts out).
const INJECT: &str = "sidecar.istio.io/inject";
/// What injection added, as JSON; its presence marks a Pod injected.
const STATUS: &str = "sidecar.istio.io/status";
/// Bytes the JSON Patch of one Pod may have; the largest a Pod within the API server's
/// limits gets is far smaller (docs/SECURITY.md).
pub const MAX_PATCH_BYTES: usize = 2 << 20;
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
    /// Envoy's `--drain-time-s` when `drainDuration` does not set it.
    pub drain_seconds: u64,
    /// How long a regular sidecar keeps serving once its Pod is deleted when
    /// `terminationDrainDuration` does not say.
    pub termination_drain_seconds: u64,
    /// Whether sidecars are native sidecars when `sidecar.istio.io/nativeSidecar` does not
    /// say.
    pub native_sidecar: bool,
    /// The mesh config's `defaultConfig`, under each Pod's `proxy.istio.io/config`.
    pub mesh_defaults: ProxyConfig,
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
            drain_seconds: 45,
            termination_drain_seconds: 5,
            native_sidecar: false,
            mesh_defaults: ProxyConfig::default(),
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

/// The mesh config in force, as a source of it.
pub type MeshConfigSource = Arc<dyn Fn() -> Arc<sextant_model::MeshConfig> + Send + Sync>;

/// Sidecar injection as `/inject` serves it: the flags' configuration, and the mesh config's
/// `defaultConfig` as it is when each Pod is created (an edit applies to Pods created after
/// it).
#[derive(Clone)]
pub struct Injector {
    config: Arc<InjectConfig>,
    mesh: MeshConfigSource,
}

impl Injector {
    /// Injects with `config` and the mesh config `mesh` returns at each injection.
    pub fn new(config: InjectConfig, mesh: MeshConfigSource) -> Injector {
        Injector {
            config: Arc::new(config),
            mesh,
        }
    }

    /// The configuration for a Pod created now. `defaultConfig` fields that cannot be used
    /// are left out and logged (the mesh config's reader does not check them).
    pub fn current(&self) -> InjectConfig {
        let mesh = (self.mesh)();
        let (mesh_defaults, skipped) = proxy_config::mesh_defaults(&mesh.default_config);
        for reason in skipped {
            tracing::warn!(%reason, "meshConfig.defaultConfig: a field is not applied to injected sidecars");
        }
        InjectConfig {
            mesh_defaults,
            ..(*self.config).clone()
        }
    }
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector")
            .field("config", &self.config)
            .finish_non_exhaustive()
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
            // Annotations are named `prefix/name`; anything else is a field of the Pod or the
            // mesh config.
            let what = if p.annotation.contains('/') {
                "annotation "
            } else {
                ""
            };
            write!(
                f,
                "invalid value {:?} for {what}{}: {}",
                values::shown(&p.value),
                p.annotation,
                p.reason
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
        labels: envoy::stats_labels(labels),
    };
    // A native sidecar outlives the application without a sleep: Kubernetes stops it last.
    let shutdown = (!settings.native).then(|| {
        let drain = settings.proxy_config.termination_drain_seconds;
        let grace = spec.get("terminationGracePeriodSeconds");
        drain::shutdown(drain, config.termination_drain_seconds, grace)
    });
    let sleep = shutdown.as_ref().and_then(|s| s.sleep_seconds);
    let proxy = containers::proxy_container(config, &settings, &node, sleep);
    let init =
        (settings.interception != "NONE").then(|| containers::init_container(config, &settings));
    // What would leave the Pod unable to start refuses it now, naming the cause.
    let annotation_map = annotations.as_object().unwrap_or(&empty);
    let mut problems = if init.is_some() {
        capture::check(config, &settings, annotation_map)
    } else {
        Vec::new()
    };
    problems.extend(envoy::check_args(&proxy, annotation_map));
    if !problems.is_empty() {
        return Err(InjectError {
            pod: workload::display_name(pod, namespace),
            problems,
        });
    }
    let volumes = containers::volumes();
    let hold = settings
        .proxy_config
        .hold_application_until_proxy_starts
        .unwrap_or(false);
    let mut warnings = settings.warnings.clone();
    warnings.extend(shutdown.as_ref().and_then(|s| s.warning.clone()));

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
    let mut init_names: Vec<&str> = init.iter().map(|_| containers::INIT).collect();
    if settings.native {
        init_names.push(containers::PROXY);
    }
    let status = json!({
        "initContainers": Some(init_names).filter(|n| !n.is_empty()),
        "containers": (!settings.native).then_some([containers::PROXY]),
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
    if settings.native {
        // First, as Istio's: capture, then Envoy, then the Pod's own init containers, which
        // are then in the mesh.
        patch.prepend("initContainers", init.into_iter().chain([proxy]).collect());
    } else {
        if let Some(init) = init {
            // Last, as Istio's: init containers before it run before traffic is captured.
            patch.append("initContainers", vec![init]);
        }
        if hold {
            patch.prepend("containers", vec![proxy]);
        } else {
            patch.append("containers", vec![proxy]);
        }
    }
    if let Some(grace) = shutdown.and_then(|s| s.grace_seconds) {
        patch.set_spec("terminationGracePeriodSeconds", json!(grace));
    }
    patch.append("volumes", volumes);
    Ok(Outcome::Injected(Injection {
        patch: patch.into_ops(),
        warnings,
    }))
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
                if patch.len() > MAX_PATCH_BYTES {
                    // Only a Pod the API server would refuse (labels or names far past its
                    // limits) gets here: what annotations add is bounded well below.
                    let message = format!(
                        "sidecar injection failed for Pod {}: the patch would be {} bytes, more than the injector's bound of {MAX_PATCH_BYTES}; the Pod's labels, names or annotations are too large",
                        workload::display_name(pod, namespace),
                        patch.len()
                    );
                    tracing::warn!(%message, "sidecar injection refused");
                    response["allowed"] = json!(false);
                    response["status"] =
                        json!({"code": 400, "reason": "Invalid", "message": message});
                    return admission_review(response);
                }
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
    admission_review(response)
}

fn admission_review(response: Value) -> Value {
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
