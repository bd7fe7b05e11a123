//! The Helm chart with real helm 4: lint, then install, upgrade and uninstall against the test
//! API server, which stores everything the chart renders. `schema` checks values.schema.json,
//! `install` the HA values, the autoscaler and the NetworkPolicy in a cluster, `render` what
//! templates make of values, `serve` runs Sextant as the chart's Deployment says.

#[path = "helm_chart/install.rs"]
mod install;
#[path = "helm_chart/render.rs"]
mod render;
#[path = "helm_chart/schema.rs"]
mod schema;
#[path = "helm_chart/serve.rs"]
mod serve;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use sextant_testing::repo;

/// The chart's directory.
fn chart() -> String {
    repo("charts/sextant")
        .to_str()
        .expect("utf-8 path")
        .to_owned()
}

/// `tool` with its state (helm's cache, config and data) under `home`, against `kubeconfig`.
fn command(tool: &Path, kubeconfig: &Path, home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(tool);
    cmd.env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .args(args);
    cmd
}

fn run(tool: &Path, kubeconfig: &Path, home: &Path, args: &[&str]) -> String {
    sextant_testing::run(&mut command(tool, kubeconfig, home, args))
}

/// Runs a command that must fail; what it printed, standard output and error together (helm
/// lint reports on the first, helm install on the second).
fn fails(tool: &Path, kubeconfig: &Path, home: &Path, args: &[&str]) -> String {
    let out = command(tool, kubeconfig, home, args)
        .output()
        .expect("the command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{args:?} succeeded:\n{text}");
    text
}

/// A directory of its own for one test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("sextant-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }

    fn kubeconfig(&self) -> PathBuf {
        self.0.join("kubeconfig")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// helm and kubectl against a test API server of their own.
struct Cluster {
    helm: PathBuf,
    kubectl: PathBuf,
    api: Option<sextant_testapi::Handle>,
    _runtime: tokio::runtime::Runtime,
    scratch: Scratch,
}

impl Cluster {
    /// `None` when helm or kubectl is missing (outside CI).
    fn start(name: &str) -> Option<Cluster> {
        let (helm, kubectl) = (sextant_testing::helm()?, sextant_testing::kubectl()?);
        let scratch = Scratch::new(name);
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let api = runtime
            .block_on(sextant_testapi::start(sextant_testapi::Options {
                kubeconfig: Some(scratch.kubeconfig()),
                ..Default::default()
            }))
            .expect("test API server");
        Some(Cluster {
            helm,
            kubectl,
            api: Some(api),
            _runtime: runtime,
            scratch,
        })
    }

    fn helm(&self, args: &[&str]) -> String {
        run(
            &self.helm,
            &self.scratch.kubeconfig(),
            &self.scratch.0,
            args,
        )
    }

    fn helm_fails(&self, args: &[&str]) -> String {
        fails(
            &self.helm,
            &self.scratch.kubeconfig(),
            &self.scratch.0,
            args,
        )
    }

    fn kubectl(&self, args: &[&str]) -> String {
        run(
            &self.kubectl,
            &self.scratch.kubeconfig(),
            &self.scratch.0,
            args,
        )
    }

    /// `kubectl get KIND NAME -n NAMESPACE -o jsonpath=PATH`.
    fn get(&self, kind: &str, name: &str, namespace: &str, path: &str) -> String {
        let jsonpath = format!("jsonpath={path}");
        self.kubectl(&["get", kind, name, "-n", namespace, "-o", &jsonpath])
    }

    /// The JSON of one object.
    fn object(&self, kind: &str, name: &str, namespace: &str) -> Value {
        let text = self.kubectl(&["get", kind, name, "-n", namespace, "-o", "json"]);
        serde_json::from_str(&text).expect("kubectl's JSON")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(api) = self.api.take() {
            api.stop();
        }
    }
}

/// `helm template` of the chart with `args` (`--set`, `-f`): every object it renders.
fn objects(helm: &Path, scratch: &Scratch, args: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut all = vec!["template", "sextant", chart.as_str(), "-n", "istio-system"];
    all.extend(args);
    let text = run(helm, &scratch.kubeconfig(), &scratch.0, &all);
    sextant_index::manifest::parse_documents(&text)
        .expect("the chart's YAML")
        .into_iter()
        .map(|d| d.value)
        .collect()
}

/// The chart's appVersion (Chart.yaml).
fn app_version() -> String {
    let text = std::fs::read_to_string(repo("charts/sextant/Chart.yaml")).expect("Chart.yaml");
    let docs = sextant_index::manifest::parse_documents(&text).expect("Chart.yaml's YAML");
    docs[0].value["appVersion"]
        .as_str()
        .expect("appVersion")
        .to_owned()
}

/// The object of `kind` among `objects`.
fn find<'a>(objects: &'a [Value], kind: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind)
}

#[test]
fn the_chart_installs_upgrades_and_uninstalls() {
    let Some(cluster) = Cluster::start("helm") else {
        return;
    };
    let chart = chart();
    cluster.helm(&["lint", "--strict", &chart]);
    // The chart ships the CRDs `make crds` generates.
    for crd in ["virtualservices", "destinationrules"] {
        let name = format!("{crd}.networking.istio.io.yaml");
        assert_eq!(
            std::fs::read_to_string(repo("crds").join(&name)).expect("crds/"),
            std::fs::read_to_string(repo("charts/sextant/crds").join(&name)).expect("chart crds/"),
            "charts/sextant/crds/{name} differs from crds/ (run `make crds`)"
        );
    }
    let ns = "istio-system";
    let out = cluster.helm(&["install", "sextant", &chart, "-n", ns, "--create-namespace"]);
    assert!(out.contains("STATUS: deployed"), "{out}");
    // The notes say how to check the install.
    for step in [
        "kubectl -n istio-system rollout status deployment/sextant",
        "port-forward deployment/sextant 15014:15014",
        "curl -s http://127.0.0.1:15014/ready",
        "validatingwebhookconfiguration sextant-validator",
        "sextant proxy-status --server 127.0.0.1:15014",
        "kind: VirtualService",
    ] {
        assert!(out.contains(step), "{step} in the notes:\n{out}");
    }
    // What Sextant needs from the cluster is there.
    let containers = "{.spec.template.spec.containers[0]";
    let args = cluster.get("deploy", "sextant", ns, &format!("{containers}.args}}"));
    for flag in [
        "serve",
        "--webhook-config=sextant-validator",
        "--injector-webhook-config=sextant-sidecar-injector",
        "--service-name=sextant",
        "--remote-stale-endpoints=remove",
    ] {
        assert!(args.contains(flag), "{flag} in {args}");
    }
    let env = cluster.get(
        "deploy",
        "sextant",
        ns,
        &format!("{containers}.env[*].name}}"),
    );
    assert_eq!(env, "POD_NAME POD_NAMESPACE");
    let image = cluster.get("deploy", "sextant", ns, &format!("{containers}.image}}"));
    let tagged = format!("localhost/sextant:{}", app_version());
    assert_eq!(image, tagged, "what `make image` tags");
    let rules = cluster.kubectl(&["get", "clusterrole", "sextant", "-o", "json"]);
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
    let webhook = cluster.get(
        "validatingwebhookconfiguration",
        "sextant-validator",
        ns,
        "{.webhooks[0].clientConfig.service.name}",
    );
    assert_eq!(webhook, "sextant");
    // Sidecar injection is registered by default: Istio's four selectors, all on /inject.
    let injector = cluster.get(
        "mutatingwebhookconfiguration",
        "sextant-sidecar-injector",
        ns,
        "{range .webhooks[*]}{.clientConfig.service.path}{\" \"}{end}",
    );
    assert_eq!(injector.trim(), "/inject /inject /inject /inject");
    cluster.kubectl(&["get", "crd", "virtualservices.networking.istio.io"]);
    cluster.kubectl(&["get", "crd", "sidecars.networking.istio.io"]);
    // The mesh config, with Istio's defaults, where Sextant watches for it.
    let defaults = cluster.get("configmap", "istio", ns, "{.data.mesh}");
    for line in [
        "rootNamespace: istio-system",
        "trustDomain: cluster.local",
        "mode: ALLOW_ANY",
        "accessLogFile: \"\"",
        "accessLogEncoding: TEXT",
    ] {
        assert!(defaults.contains(line), "{line} in {defaults}");
    }
    assert!(!args.contains("--trust-domain"), "{args}");
    cluster.kubectl(&["get", "pdb", "sextant", "-n", ns]);
    // Neither optional object is there by default.
    let optional = cluster.kubectl(&["get", "hpa,networkpolicy", "-n", ns, "-o", "name"]);
    assert_eq!(optional.trim(), "");

    let out = cluster.helm(&[
        "upgrade",
        "sextant",
        &chart,
        "-n",
        ns,
        "--set",
        "replicaCount=3",
        "--set",
        "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
        "--set",
        "multiCluster.clusterNetworks.west=network-2",
    ]);
    assert!(out.contains("REVISION: 2"), "{out}");
    let args = cluster.get("deploy", "sextant", ns, &format!("{containers}.args}}"));
    assert!(args.contains("--cluster-network=west=network-2"), "{args}");
    assert_eq!(
        cluster.get("deploy", "sextant", ns, "{.spec.replicas}"),
        "3"
    );
    let upgraded = cluster.get("configmap", "istio", ns, "{.data.mesh}");
    assert!(upgraded.contains("mode: REGISTRY_ONLY"), "{upgraded}");
    cluster.helm(&["uninstall", "sextant", "-n", ns]);
    let left = cluster.kubectl(&["get", "deploy,svc,sa", "-n", ns, "-o", "name"]);
    assert_eq!(left.trim(), "", "uninstall removes what the chart made");
}

/// `helm template` with `--set` values: the Deployment's flags, and the kinds rendered with
/// what RBAC grants.
fn rendered(helm: &Path, scratch: &Scratch, sets: &[&str]) -> (Vec<String>, String) {
    let mut args = Vec::new();
    for set in sets {
        args.extend(["--set", set]);
    }
    let docs = objects(helm, scratch, &args);
    let deployment = find(&docs, "Deployment").expect("a Deployment");
    let flags = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("text").to_owned())
        .collect();
    let kinds = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(",");
    let rules = find(&docs, "ClusterRole").expect("a ClusterRole")["rules"].to_string();
    (flags, format!("{kinds}\n{rules}"))
}

#[test]
fn the_chart_renders_without_sidecar_resources_or_without_the_injector() {
    let Some(helm) = sextant_testing::helm() else {
        return;
    };
    let scratch = Scratch::new("helm-values");
    // No resources for the sidecar: each flag is empty, which sets none.
    let (flags, _) = rendered(&helm, &scratch, &["sidecar.resources=null"]);
    for flag in [
        "--sidecar-cpu-request=",
        "--sidecar-memory-request=",
        "--sidecar-cpu-limit=",
        "--sidecar-memory-limit=",
    ] {
        assert!(flags.iter().any(|f| f == flag), "{flag} in {flags:?}");
    }
    let (flags, _) = rendered(&helm, &scratch, &["sidecar.resources.limits=null"]);
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
        &scratch,
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
    let (defaults, objects) = rendered(&helm, &scratch, &[]);
    assert!(
        objects.contains("MutatingWebhookConfiguration"),
        "{objects}"
    );
    assert!(
        !defaults.iter().any(|f| f == "--sidecar-native"),
        "{defaults:?}"
    );
}
