//! Sidecar injection end to end: `sextant serve` watching the test API server, its
//! MutatingWebhookConfiguration registered (selectors as Istio's chart has them, the URL of
//! this replica's webhook port) without a caBundle, which the Lease holder fills in; then Pods
//! created with real kubectl are injected, or left alone, as Istio's injector would treat
//! them. Each test is one behaviour with a cluster and a `sextant serve` of its own.

use std::{path::PathBuf, time::Duration};

use serde_json::{Value, json};
use sextant_testing::{Process, Serve, helm, kubectl, repo};

#[path = "kube_cluster.rs"]
mod kube_cluster;
use kube_cluster::Cluster;

/// The name `sextant serve` keeps the caBundle of (`--injector-webhook-config`'s default).
const INJECTOR: &str = "sextant-sidecar-injector";

/// Istio's sleep sample as a Pod: the pod template of its Deployment, unchanged, named
/// `name`.
fn sleep_pod(name: &str) -> Value {
    let text = std::fs::read_to_string(repo("tests/fixtures/istio/samples/sleep/sleep.yaml"))
        .expect("the sleep sample");
    let docs = sextant_index::manifest::parse_documents(&text).expect("YAML");
    let deployment = docs
        .iter()
        .find(|d| d.value["kind"] == "Deployment")
        .expect("the sample's Deployment");
    let template = &deployment.value["spec"]["template"];
    let mut metadata = template["metadata"].clone();
    metadata["name"] = json!(name);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
}

/// A test API server, `sextant serve` holding its Lease, and the injector registered with its
/// caBundle filled in.
struct Injection {
    cluster: Cluster,
    kubectl: PathBuf,
    dir: PathBuf,
    _sextant: Process,
}

impl Injection {
    /// `None` when kubectl is missing outside CI.
    fn start(name: &str) -> Option<Injection> {
        let kubectl = kubectl()?;
        let helm = helm()?;
        let dir = std::env::temp_dir().join(format!("sextant-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cluster = Cluster::start(&dir, 0);
        cluster.kubectl(
            &kubectl,
            &["apply", "-f", repo("crds").to_str().expect("utf-8")],
        );
        // The webhook port is fixed before the start: the configuration names it.
        let serve = Serve::new();
        let config = dir.join("injector.yaml");
        std::fs::write(
            &config,
            kube_cluster::chart_injector_config(
                &helm,
                &format!("https://127.0.0.1:{}/inject", serve.webhook),
            ),
        )
        .expect("write");
        cluster.kubectl(&kubectl, &["apply", "-f", config.to_str().expect("utf-8")]);
        let sextant = cluster.serve(&serve, &dir.join("sextant.log"), &[]);
        let injection = Injection {
            cluster,
            kubectl,
            dir,
            _sextant: sextant,
        };
        let filled = sextant_testing::try_wait_for(
            "the Lease holder fills every caBundle of the injector",
            Duration::from_secs(40),
            || {
                let bundles = injection.kubectl(&[
                    "get",
                    "mutatingwebhookconfiguration",
                    INJECTOR,
                    "-o",
                    "jsonpath={range .webhooks[*]}{.clientConfig.caBundle}{\"\\n\"}{end}",
                ]);
                let lines: Vec<&str> = bundles.lines().collect();
                (lines.len() == 4 && lines.iter().all(|b| b.len() > 100)).then_some(())
            },
        );
        if let Err(e) = filled {
            panic!("{e}\nsextant's log:\n{}", injection.log());
        }
        Some(injection)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sextant.log")).unwrap_or_default()
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.cluster.kubectl(&self.kubectl, args)
    }

    /// Creates namespace `name` with `labels` (`key=value`).
    fn namespace(&self, name: &str, labels: &[&str]) {
        self.kubectl(&["create", "namespace", name]);
        if !labels.is_empty() {
            let mut args = vec!["label", "namespace", name];
            args.extend(labels);
            self.kubectl(&args);
        }
    }

    /// Applies `object` (written to a file, as a user would) in `namespace`; kubectl's output.
    fn apply(&self, namespace: &str, object: &Value) -> String {
        let name = object["metadata"]["name"].as_str().expect("a name");
        let file = self.dir.join(format!("{namespace}-{name}.json"));
        std::fs::write(&file, object.to_string()).expect("write");
        self.kubectl(&[
            "apply",
            "-n",
            namespace,
            "-f",
            file.to_str().expect("utf-8"),
        ])
    }

    /// The Pod as stored.
    fn pod(&self, namespace: &str, name: &str) -> Value {
        let json = self.kubectl(&["get", "pod", name, "-n", namespace, "-o", "json"]);
        serde_json::from_str(&json).expect("a Pod as JSON")
    }

    /// Creates `pod` with kubectl and returns it as stored, failing with sextant's log when
    /// kubectl fails.
    fn create(&self, namespace: &str, pod: &Value) -> Value {
        let name = pod["metadata"]["name"].as_str().expect("a name");
        let file = self.dir.join(format!("{namespace}-{name}.json"));
        std::fs::write(&file, pod.to_string()).expect("write");
        let out = self
            .cluster
            .kubectl_command(
                &self.kubectl,
                &[
                    "create",
                    "-n",
                    namespace,
                    "-f",
                    file.to_str().expect("utf-8"),
                ],
            )
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl create {name}: {}\nsextant's log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        self.pod(namespace, name)
    }
}

impl Drop for Injection {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The named container of `list` (`spec.containers` or `spec.initContainers`).
fn container<'a>(pod: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    pod["spec"][list]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

/// The names of a Pod's containers and init containers.
fn names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// Whether `pod` went through the injector: the sidecar, or Istio's status annotation.
fn injected(pod: &Value) -> bool {
    container(pod, "containers", "istio-proxy").is_some()
        || container(pod, "initContainers", "istio-proxy").is_some()
        || !pod["metadata"]["annotations"]["sidecar.istio.io/status"].is_null()
}

#[test]
fn the_sleep_pod_in_a_namespace_labelled_for_injection_gets_istio_init_istio_proxy_and_volumes() {
    let Some(mesh) = Injection::start("inject-sleep") else {
        return;
    };
    mesh.namespace("apps", &["istio-injection=enabled"]);
    let sample = sleep_pod("sleep");
    mesh.apply("apps", &sample);
    let pod = mesh.pod("apps", "sleep");

    let init = container(&pod, "initContainers", "istio-init").expect("istio-init");
    assert_eq!(init["command"], json!(["sextant"]), "{init}");
    assert_eq!(init["args"][0], "iptables", "{init}");
    assert!(injected(&pod), "{pod}");
    let proxy = container(&pod, "containers", "istio-proxy")
        .or_else(|| container(&pod, "initContainers", "istio-proxy"))
        .expect("istio-proxy");
    assert!(
        proxy["image"].as_str().is_some_and(|i| i.contains("envoy")),
        "{proxy}"
    );
    // The application's container is as the sample wrote it.
    assert_eq!(
        container(&pod, "containers", "sleep"),
        sample["spec"]["containers"].get(0),
        "{pod}"
    );
    let volumes: Vec<&Value> = pod["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .collect();
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).copied();
    assert_eq!(volume("secret-volume"), sample["spec"]["volumes"].get(0));
    let token = volume("istio-token").expect("the istio-token volume");
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"], "istio-ca",
        "{token}"
    );
    let root = volume("istiod-ca-cert").expect("the istiod-ca-cert volume");
    assert_eq!(root["configMap"]["name"], "istio-ca-root-cert", "{root}");
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["security.istio.io/tlsMode"], "istio", "{labels}");
    assert_eq!(labels["app"], "sleep", "{labels}");

    // What the API server stored is a valid Pod: kubectl applies it back (strict field
    // validation of the whole object) and the server keeps it.
    let yaml = mesh.kubectl(&["get", "pod", "sleep", "-n", "apps", "-o", "yaml"]);
    let file = mesh.dir.join("sleep-back.yaml");
    std::fs::write(&file, yaml).expect("write");
    mesh.kubectl(&["apply", "-f", file.to_str().expect("utf-8")]);
    assert_eq!(mesh.pod("apps", "sleep")["spec"], pod["spec"]);
}

#[test]
fn pods_that_opt_out_or_live_in_an_unlabelled_namespace_are_left_alone() {
    let Some(mesh) = Injection::start("inject-none") else {
        return;
    };
    mesh.namespace("apps", &["istio-injection=enabled"]);
    mesh.namespace("plain", &[]);
    let mut by_label = sleep_pod("by-label");
    by_label["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false");
    let mut by_annotation = sleep_pod("by-annotation");
    by_annotation["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "false"});
    for (namespace, sent) in [
        ("apps", by_label),
        ("apps", by_annotation),
        ("plain", sleep_pod("unlabelled")),
    ] {
        let stored = mesh.create(namespace, &sent);
        let name = &sent["metadata"]["name"];
        assert!(!injected(&stored), "{name}: {stored}");
        assert_eq!(stored["spec"], sent["spec"], "{name}");
        assert_eq!(
            stored["metadata"]["labels"], sent["metadata"]["labels"],
            "{name}"
        );
    }
}

#[test]
fn a_pod_labelled_for_injection_in_an_unlabelled_namespace_is_injected() {
    let Some(mesh) = Injection::start("inject-object") else {
        return;
    };
    mesh.namespace("plain", &[]);
    let mut pod = sleep_pod("opted-in");
    pod["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("true");
    let stored = mesh.create("plain", &pod);
    assert!(injected(&stored), "{stored}");
    assert_eq!(names(&stored, "initContainers")[0], "istio-init");
    assert_eq!(
        stored["metadata"]["labels"]["security.istio.io/tlsMode"],
        "istio"
    );
}

#[test]
fn annotations_reach_the_init_containers_arguments_and_the_proxys_resources() {
    let Some(mesh) = Injection::start("inject-annotations") else {
        return;
    };
    mesh.namespace("apps", &["istio-injection=enabled"]);
    let mut pod = sleep_pod("annotated");
    pod["metadata"]["annotations"] = json!({
        "traffic.sidecar.istio.io/excludeOutboundPorts": "9000,9001",
        "traffic.sidecar.istio.io/excludeInboundPorts": "8443",
        "sidecar.istio.io/proxyCPU": "250m",
        "sidecar.istio.io/proxyMemory": "96Mi",
        "sidecar.istio.io/proxyCPULimit": "1",
        "sidecar.istio.io/proxyMemoryLimit": "512Mi",
    });
    let stored = mesh.create("apps", &pod);
    let init = container(&stored, "initContainers", "istio-init").expect("istio-init");
    let args: Vec<&str> = init["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let after = |flag: &str| {
        args.iter()
            .position(|a| *a == flag)
            .and_then(|i| args.get(i + 1))
            .copied()
    };
    assert_eq!(after("-o"), Some("9000,9001"), "{args:?}");
    assert!(
        after("-d").is_some_and(|d| d.split(',').any(|p| p == "8443")),
        "{args:?}"
    );
    let proxy = container(&stored, "containers", "istio-proxy")
        .or_else(|| container(&stored, "initContainers", "istio-proxy"))
        .expect("istio-proxy");
    assert_eq!(
        proxy["resources"],
        json!({"requests": {"cpu": "250m", "memory": "96Mi"},
               "limits": {"cpu": "1", "memory": "512Mi"}}),
        "{proxy}"
    );
}
