//! How the sidecar starts and stops with its Pod: as a native sidecar (an init container
//! that keeps running), or as a regular container that outlives the application by a
//! `preStop` sleep of `terminationDrainDuration`, within the Pod's grace period.

use serde_json::{Value, json};
use sextant::inject::InjectConfig;

use super::pods::{injected, productpage, proxy_of};

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// Envoy's flag `flag`'s value.
fn envoy_flag<'a>(proxy: &'a Value, flag: &str) -> Option<&'a str> {
    let args = proxy["args"].as_array().expect("args");
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1).and_then(Value::as_str)
}

fn status(pod: &Value) -> Value {
    let text = pod["metadata"]["annotations"]["sidecar.istio.io/status"]
        .as_str()
        .expect("the status annotation");
    serde_json::from_str(text).expect("JSON")
}

#[test]
fn a_native_sidecar_runs_between_istio_init_and_the_pods_own_init_containers() {
    let mut pod = productpage();
    pod["metadata"]["annotations"]["sidecar.istio.io/nativeSidecar"] = json!("true");
    pod["spec"]["initContainers"] = json!([{"name": "migrate", "image": "app"}]);
    let out = injected(&pod, &InjectConfig::default());
    let pod = &out.pod;
    // Capture first, then Envoy, so the Pod's own init containers are in the mesh.
    assert_eq!(
        names(pod, "initContainers"),
        ["istio-init", "istio-proxy", "migrate"]
    );
    assert_eq!(names(pod, "containers"), ["productpage"]);
    let proxy = proxy_of(pod);
    assert_eq!(proxy["restartPolicy"], "Always");
    // What holds the containers after it until Envoy has its configuration.
    assert_eq!(
        proxy["startupProbe"]["httpGet"],
        json!({"path": "/healthz/ready", "port": 15021})
    );
    // Kubernetes stops it after the application: no sleep, no longer grace period.
    assert!(proxy.get("lifecycle").is_none(), "{proxy}");
    assert!(pod["spec"].get("terminationGracePeriodSeconds").is_none());
    let status = status(pod);
    assert_eq!(
        status["initContainers"],
        json!(["istio-init", "istio-proxy"])
    );
    assert_eq!(status["containers"], Value::Null);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn the_flag_makes_sidecars_native_unless_the_pod_says_false() {
    let native = InjectConfig {
        native_sidecar: true,
        ..InjectConfig::default()
    };
    let mut pod = productpage();
    pod["metadata"]["annotations"]["proxy.istio.io/config"] =
        json!("holdApplicationUntilProxyStarts: true");
    let out = injected(&pod, &native);
    assert_eq!(
        names(&out.pod, "initContainers"),
        ["istio-init", "istio-proxy"]
    );
    // A native sidecar really holds the application: no warning that nothing does.
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    pod["metadata"]["annotations"]["sidecar.istio.io/nativeSidecar"] = json!("false");
    let regular = injected(&pod, &native);
    assert_eq!(names(&regular.pod, "initContainers"), ["istio-init"]);
    assert_eq!(
        names(&regular.pod, "containers"),
        ["istio-proxy", "productpage"]
    );
    assert!(
        regular
            .warnings
            .iter()
            .any(|w| w.contains("holdApplicationUntilProxyStarts")),
        "{:?}",
        regular.warnings
    );
}

#[test]
fn a_native_sidecar_without_interception_is_the_first_init_container() {
    let mut pod = productpage();
    pod["metadata"]["annotations"] = json!({
        "sidecar.istio.io/nativeSidecar": "true",
        "sidecar.istio.io/interceptionMode": "NONE",
    });
    pod["spec"]["initContainers"] = json!([{"name": "migrate", "image": "app"}]);
    let out = injected(&pod, &InjectConfig::default());
    assert_eq!(
        names(&out.pod, "initContainers"),
        ["istio-proxy", "migrate"]
    );
}

#[test]
fn a_regular_sidecar_keeps_serving_for_the_termination_drain_and_envoy_drains_for_drain_duration() {
    let config = InjectConfig::default();
    let out = injected(&productpage(), &config);
    let proxy = proxy_of(&out.pod);
    // Istio's defaults: terminationDrainDuration 5s, drainDuration 45s.
    assert_eq!(
        proxy["lifecycle"],
        json!({"preStop": {"sleep": {"seconds": 5}}})
    );
    assert_eq!(envoy_flag(proxy, "--drain-time-s"), Some("45"));
    assert!(
        out.pod["spec"]
            .get("terminationGracePeriodSeconds")
            .is_none()
    );

    let mut pod = productpage();
    pod["metadata"]["annotations"]["proxy.istio.io/config"] =
        json!("terminationDrainDuration: 40s\ndrainDuration: 2.5s");
    let out = injected(&pod, &config);
    let proxy = proxy_of(&out.pod);
    assert_eq!(proxy["lifecycle"]["preStop"]["sleep"]["seconds"], 40);
    assert_eq!(envoy_flag(proxy, "--drain-time-s"), Some("3"));
    // Kubernetes' default grace period (30 s) is shorter: the Pod gets the drain's.
    assert_eq!(out.pod["spec"]["terminationGracePeriodSeconds"], 40);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn a_grace_period_the_pod_sets_is_kept_and_bounds_the_sleep() {
    let config = InjectConfig::default();
    let mut pod = productpage();
    pod["metadata"]["annotations"]["proxy.istio.io/config"] =
        json!("terminationDrainDuration: 20s");
    pod["spec"]["terminationGracePeriodSeconds"] = json!(12);
    let out = injected(&pod, &config);
    assert_eq!(out.pod["spec"]["terminationGracePeriodSeconds"], 12);
    // The API server refuses a sleep longer than the grace period.
    assert_eq!(
        proxy_of(&out.pod)["lifecycle"]["preStop"]["sleep"]["seconds"],
        12
    );
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("terminationGracePeriodSeconds (12)") && w.contains("20s")),
        "{:?}",
        out.warnings
    );
    // A Pod stopped at once: the sidecar does not sleep at all.
    pod["spec"]["terminationGracePeriodSeconds"] = json!(0);
    let out = injected(&pod, &config);
    assert!(proxy_of(&out.pod).get("lifecycle").is_none());
    // No drain: nothing to wait for.
    let mut none = productpage();
    none["metadata"]["annotations"]["proxy.istio.io/config"] =
        json!("terminationDrainDuration: 0s");
    let out = injected(&none, &config);
    assert!(proxy_of(&out.pod).get("lifecycle").is_none());
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}
