//! The mesh config's `defaultConfig` under each Pod's `proxy.istio.io/config`, as Istio lays
//! them: read from the mesh config as Sextant reads it, and taken as it is when each Pod is
//! created (through the webhook's own routes).

use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{Value, json};
use sextant::inject::{InjectConfig, Injector, proxy_config};
use sextant_model::MeshConfig;

use super::pods::{apply, injected, productpage, proxy_of};

/// A mesh config from its YAML, as the `istio` ConfigMap's `mesh` key holds it.
fn mesh(yaml: &str) -> MeshConfig {
    sextant_index::parse::mesh_config(yaml)
        .expect("a valid mesh config")
        .config
}

/// The injector's configuration with `mesh`'s `defaultConfig`.
fn with_defaults(mesh: &MeshConfig) -> InjectConfig {
    let (mesh_defaults, skipped) = proxy_config::mesh_defaults(&mesh.default_config);
    assert!(skipped.is_empty(), "{skipped:?}");
    InjectConfig {
        mesh_defaults,
        ..InjectConfig::default()
    }
}

fn envoy_flag(proxy: &Value, flag: &str) -> Option<String> {
    let args = proxy["args"].as_array().expect("args");
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1).and_then(Value::as_str).map(str::to_owned)
}

fn env(proxy: &Value, name: &str) -> Option<String> {
    let vars = proxy["env"].as_array().expect("env");
    let var = vars.iter().find(|e| e["name"] == name)?;
    var["value"].as_str().map(str::to_owned)
}

const MESH: &str = "defaultConfig:
  concurrency: 4
  holdApplicationUntilProxyStarts: true
  terminationDrainDuration: 8s
  discoveryAddress: sextant.mesh.svc:15012
  proxyMetadata: {TEAM: mesh, ISTIO_META_DNS_CAPTURE: \"true\"}
  tracing: {sampling: 1}
";

#[test]
fn mesh_defaults_apply_to_pods_and_the_pods_own_fields_win() {
    let config = with_defaults(&mesh(MESH));
    let plain = injected(&productpage(), &config);
    let proxy = proxy_of(&plain.pod);
    assert_eq!(envoy_flag(proxy, "--concurrency").as_deref(), Some("4"));
    assert_eq!(proxy["lifecycle"]["preStop"]["sleep"]["seconds"], 8);
    assert_eq!(env(proxy, "TEAM").as_deref(), Some("mesh"));
    // holdApplicationUntilProxyStarts: the sidecar first.
    assert_eq!(plain.pod["spec"]["containers"][0]["name"], "istio-proxy");
    let bootstrap = super::pods::bootstrap_of(proxy);
    let target = &bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]["google_grpc"]["target_uri"];
    assert_eq!(target, "sextant.mesh.svc:15012");
    // What the mesh sets is attributed to it; fields it sets that are not honoured (tracing)
    // are the mesh config reader's to report, not each Pod's.
    let warnings = plain.warnings.join("\n");
    assert!(
        warnings.contains("meshConfig.defaultConfig: proxyMetadata TEAM")
            && warnings.contains("meshConfig.defaultConfig: proxyMetadata ISTIO_META_DNS_CAPTURE")
            && warnings.contains("meshConfig.defaultConfig: holdApplicationUntilProxyStarts"),
        "{warnings}"
    );
    assert!(!warnings.contains("tracing"), "{warnings}");

    let mut pod = productpage();
    pod["metadata"]["annotations"]["proxy.istio.io/config"] =
        json!("concurrency: 1\nholdApplicationUntilProxyStarts: false\nproxyMetadata: {TEAM: pod}");
    let own = injected(&pod, &config);
    let proxy = proxy_of(&own.pod);
    assert_eq!(envoy_flag(proxy, "--concurrency").as_deref(), Some("1"));
    assert_eq!(env(proxy, "TEAM").as_deref(), Some("pod"));
    // Merged entry by entry: the mesh's other metadata stays.
    assert_eq!(
        env(proxy, "ISTIO_META_DNS_CAPTURE").as_deref(),
        Some("true")
    );
    assert_eq!(proxy["lifecycle"]["preStop"]["sleep"]["seconds"], 8);
    assert_eq!(own.pod["spec"]["containers"][0]["name"], "productpage");
    assert!(
        own.warnings
            .iter()
            .any(|w| w.starts_with("proxy.istio.io/config: proxyMetadata TEAM")),
        "{:?}",
        own.warnings
    );
}

#[test]
fn a_mesh_default_that_cannot_be_used_is_left_out_without_refusing_pods() {
    let (defaults, skipped) = proxy_config::mesh_defaults(
        &mesh("defaultConfig: {concurrency: lots, interceptionMode: NONE}").default_config,
    );
    assert_eq!(defaults.concurrency, None);
    assert_eq!(defaults.interception_mode.as_deref(), Some("NONE"));
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    let config = InjectConfig {
        mesh_defaults: defaults,
        ..InjectConfig::default()
    };
    let out = injected(&productpage(), &config);
    assert!(
        out.pod["spec"].get("initContainers").is_none(),
        "no capture under NONE"
    );
    assert!(
        out.warnings
            .iter()
            .any(|w| w.starts_with("meshConfig.defaultConfig interceptionMode: NONE differs")),
        "{:?}",
        out.warnings
    );
}

/// POSTs a review of `pod` to `/inject` at `addr`; the Pod as the patch leaves it.
async fn inject_over_http(addr: std::net::SocketAddr, pod: &Value) -> Value {
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u1", "namespace": "default", "operation": "CREATE", "object": pod}});
    let body = serde_json::to_vec(&review).expect("JSON");
    let (status, answer) = sextant_testing::http::send(
        addr,
        axum::http::Method::POST,
        "/inject",
        "application/json",
        body,
    )
    .await
    .expect("the webhook answers");
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&answer).expect("JSON");
    let patch = answer["response"]["patch"].as_str().expect("a patch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("base64");
    apply(
        pod,
        &serde_json::from_slice::<Vec<Value>>(&patch).expect("ops"),
    )
}

#[test]
fn the_webhook_injects_with_the_mesh_config_in_force_when_each_pod_is_created() {
    let current = Arc::new(Mutex::new(Arc::new(MeshConfig::default())));
    let source = current.clone();
    let injector = Injector::new(
        InjectConfig::default(),
        Arc::new(move || source.lock().expect("not poisoned").clone()),
    );
    let router = sextant::webhook::router(
        sextant::webhook::Budget::default(),
        Arc::new(sextant::metrics::Metrics::new()),
        injector,
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        let before = inject_over_http(addr, &productpage()).await;
        let flag = |pod: &Value| envoy_flag(proxy_of(pod), "--concurrency");
        assert_eq!(flag(&before).as_deref(), Some("2"), "the flag's default");
        *current.lock().expect("not poisoned") = Arc::new(mesh("defaultConfig: {concurrency: 6}"));
        let after = inject_over_http(addr, &productpage()).await;
        assert_eq!(flag(&after).as_deref(), Some("6"), "the mesh config's, now");
    });
}
