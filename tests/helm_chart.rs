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
