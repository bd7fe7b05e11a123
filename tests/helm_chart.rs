//! The Helm chart with real helm 4: lint, then install, upgrade and uninstall against the test
//! API server, which stores everything the chart renders.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use sextant_testing::repo;

fn run(tool: &Path, kubeconfig: &Path, home: &Path, args: &[&str]) -> String {
    sextant_testing::run(
        Command::new(tool)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", home)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .args(args),
    )
}

#[test]
fn the_chart_installs_upgrades_and_uninstalls() {
    let (Some(helm), Some(kubectl)) = (sextant_testing::helm(), sextant_testing::kubectl()) else {
        return;
    };
    let chart = repo("charts/sextant");
    let chart = chart.to_str().expect("utf-8");
    let dir: PathBuf = std::env::temp_dir().join(format!("sextant-helm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = dir.join("kubeconfig");
    run(&helm, &kubeconfig, &dir, &["lint", "--strict", chart]);
    // The chart ships the CRDs `make crds` generates.
    for crd in ["virtualservices", "destinationrules"] {
        let name = format!("{crd}.networking.istio.io.yaml");
        assert_eq!(
            std::fs::read_to_string(repo("crds").join(&name)).expect("crds/"),
            std::fs::read_to_string(repo("charts/sextant/crds").join(&name)).expect("chart crds/"),
            "charts/sextant/crds/{name} differs from crds/ (run `make crds`)"
        );
    }

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let api = runtime
        .block_on(sextant_testapi::start(sextant_testapi::Options {
            kubeconfig: Some(kubeconfig.clone()),
            ..Default::default()
        }))
        .expect("test API server");
    let helm_ = |args: &[&str]| run(&helm, &kubeconfig, &dir, args);
    let kubectl_ = |args: &[&str]| run(&kubectl, &kubeconfig, &dir, args);
    let out = helm_(&[
        "install",
        "sextant",
        chart,
        "-n",
        "istio-system",
        "--create-namespace",
    ]);
    assert!(out.contains("STATUS: deployed"), "{out}");
    // What Sextant needs from the cluster is there.
    let args = kubectl_(&[
        "get",
        "deploy",
        "sextant",
        "-n",
        "istio-system",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].args}",
    ]);
    for flag in [
        "serve",
        "--webhook-config=sextant-validator",
        "--injector-webhook-config=sextant-sidecar-injector",
        "--service-name=sextant",
        "--remote-stale-endpoints=remove",
    ] {
        assert!(args.contains(flag), "{flag} in {args}");
    }
    let env = kubectl_(&[
        "get",
        "deploy",
        "sextant",
        "-n",
        "istio-system",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[*].name}",
    ]);
    assert_eq!(env, "POD_NAME POD_NAMESPACE");
    let rules = kubectl_(&["get", "clusterrole", "sextant", "-o", "json"]);
    for needed in [
        "virtualservices/status",
        "sidecars/status",
        "endpointslices",
        "validatingwebhookconfigurations",
        "mutatingwebhookconfigurations",
        "nodes",
    ] {
        assert!(rules.contains(needed), "{needed} in {rules}");
    }
    let webhook = kubectl_(&[
        "get",
        "validatingwebhookconfiguration",
        "sextant-validator",
        "-o",
        "jsonpath={.webhooks[0].clientConfig.service.name}",
    ]);
    assert_eq!(webhook, "sextant");
    // Sidecar injection is registered by default: Istio's four selectors, all on /inject.
    let injector = kubectl_(&[
        "get",
        "mutatingwebhookconfiguration",
        "sextant-sidecar-injector",
        "-o",
        "jsonpath={range .webhooks[*]}{.clientConfig.service.path}{\" \"}{end}",
    ]);
    assert_eq!(injector.trim(), "/inject /inject /inject /inject");
    kubectl_(&["get", "crd", "virtualservices.networking.istio.io"]);
    kubectl_(&["get", "crd", "sidecars.networking.istio.io"]);
    // The mesh config, with Istio's defaults, where Sextant watches for it.
    let mesh = |kubectl_: &dyn Fn(&[&str]) -> String| {
        kubectl_(&[
            "get",
            "configmap",
            "istio",
            "-n",
            "istio-system",
            "-o",
            "jsonpath={.data.mesh}",
        ])
    };
    let defaults = mesh(&kubectl_);
    for line in [
        "rootNamespace: istio-system",
        "trustDomain: cluster.local",
        "mode: ALLOW_ANY",
    ] {
        assert!(defaults.contains(line), "{line} in {defaults}");
    }
    assert!(!args.contains("--trust-domain"), "{args}");
    kubectl_(&["get", "pdb", "sextant", "-n", "istio-system"]);

    let out = helm_(&[
        "upgrade",
        "sextant",
        chart,
        "-n",
        "istio-system",
        "--set",
        "replicaCount=3",
        "--set",
        "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
        "--set",
        "multiCluster.clusterNetworks.west=network-2",
    ]);
    assert!(out.contains("REVISION: 2"), "{out}");
    let args = kubectl_(&[
        "get",
        "deploy",
        "sextant",
        "-n",
        "istio-system",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].args}",
    ]);
    assert!(args.contains("--cluster-network=west=network-2"), "{args}");
    let replicas = kubectl_(&[
        "get",
        "deploy",
        "sextant",
        "-n",
        "istio-system",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "3");
    let upgraded = mesh(&kubectl_);
    assert!(upgraded.contains("mode: REGISTRY_ONLY"), "{upgraded}");
    helm_(&["uninstall", "sextant", "-n", "istio-system"]);
    let left = kubectl_(&["get", "deploy,svc,sa", "-n", "istio-system", "-o", "name"]);
    assert_eq!(left.trim(), "", "uninstall removes what the chart made");
    api.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `helm template` with `--set` values: the Deployment's flags and what RBAC grants.
fn rendered(helm: &Path, dir: &Path, sets: &[&str]) -> (Vec<String>, String) {
    let chart = repo("charts/sextant");
    let mut args = vec!["template", "sextant", chart.to_str().expect("utf-8")];
    for set in sets {
        args.extend(["--set", set]);
    }
    let text = run(helm, &dir.join("kubeconfig"), dir, &args);
    let docs = sextant_index::manifest::parse_documents(&text).expect("the chart's YAML");
    let deployment = docs
        .iter()
        .find(|d| d.value["kind"] == "Deployment")
        .expect("a Deployment");
    let flags = deployment.value["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("text").to_owned())
        .collect();
    let kinds = docs
        .iter()
        .map(|d| d.value["kind"].as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(",");
    let rules = docs
        .iter()
        .find(|d| d.value["kind"] == "ClusterRole")
        .expect("a ClusterRole")
        .value["rules"]
        .to_string();
    (flags, format!("{kinds}\n{rules}"))
}

#[test]
fn the_chart_renders_without_sidecar_resources_or_without_the_injector() {
    let Some(helm) = sextant_testing::helm() else {
        return;
    };
    let dir: PathBuf =
        std::env::temp_dir().join(format!("sextant-helm-values-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    // No resources for the sidecar: each flag is empty, which sets none.
    let (flags, _) = rendered(&helm, &dir, &["sidecar.resources=null"]);
    for flag in [
        "--sidecar-cpu-request=",
        "--sidecar-memory-request=",
        "--sidecar-cpu-limit=",
        "--sidecar-memory-limit=",
    ] {
        assert!(flags.iter().any(|f| f == flag), "{flag} in {flags:?}");
    }
    let (flags, _) = rendered(&helm, &dir, &["sidecar.resources.limits=null"]);
    assert!(
        flags.iter().any(|f| f == "--sidecar-cpu-request=100m"),
        "{flags:?}"
    );
    assert!(
        flags.iter().any(|f| f == "--sidecar-cpu-limit="),
        "{flags:?}"
    );
    // Without the injector: no configuration, no caBundle to keep and no right to it.
    let (flags, objects) = rendered(
        &helm,
        &dir,
        &["sidecarInjector.enabled=false", "sidecar.native=true"],
    );
    assert!(
        flags.iter().any(|f| f == "--injector-webhook-config="),
        "{flags:?}"
    );
    assert!(flags.iter().any(|f| f == "--sidecar-native"), "{flags:?}");
    assert!(
        !objects.contains("MutatingWebhookConfiguration"),
        "{objects}"
    );
    assert!(
        !objects.contains("mutatingwebhookconfigurations"),
        "{objects}"
    );
    let (defaults, objects) = rendered(&helm, &dir, &[]);
    assert!(
        objects.contains("MutatingWebhookConfiguration"),
        "{objects}"
    );
    assert!(
        !defaults.iter().any(|f| f == "--sidecar-native"),
        "{defaults:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
