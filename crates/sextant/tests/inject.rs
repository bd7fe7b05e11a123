//! Golden tests of sidecar injection. Istio's own manifests (`fixtures/inject/`, copied
//! unmodified: see `SOURCE.txt`) give the Pods: each Deployment's pod template, as its
//! ReplicaSet would create the Pod (a generated name, the ReplicaSet as controller, the
//! `pod-template-hash` label). The injector's JSON Patch is applied and the patched Pod is the
//! snapshot; the annotation cases show what each annotation changes. The injected Envoy's
//! arguments, with Kubernetes' `$(VAR)` expansion done, must pass real Envoy's
//! `--mode validate`, and must be what `sextant bootstrap` writes for the same proxy.

use std::{collections::BTreeMap, path::Path, process::Command};

use base64::Engine;
use serde_json::{Value, json};
use sextant::inject::{InjectConfig, Outcome, Skip, inject};

#[path = "inject/hostile.rs"]
mod hostile;
#[path = "inject/kubelet.rs"]
mod kubelet;
#[path = "inject/lifecycle.rs"]
mod lifecycle;
#[path = "inject/mesh_defaults.rs"]
mod mesh_defaults;
#[path = "inject/pods.rs"]
mod pods;
#[path = "inject/round_trip.rs"]
mod round_trip;

use kubelet::envoy_args;
use pods::{
    Injected, apply, bootstrap_of, container, injected, productpage, proxy_of, sample_pods,
};

#[test]
fn istio_sample_pods_are_injected() {
    let config = InjectConfig::default();
    let pods = sample_pods();
    assert_eq!(pods.len(), 7, "sleep and bookinfo's six Deployments");
    for (name, pod) in pods {
        let out = injected(&pod, &config);
        assert!(out.warnings.is_empty(), "{name}: {:?}", out.warnings);
        insta::with_settings!({
            snapshot_path => "fixtures/inject/snapshots",
            prepend_module_to_snapshot => false,
            description => format!("the {name} Deployment's Pod, injected"),
        }, {
            // As YAML text, so that the inline bootstrap reads as a block, not one string.
            insta::assert_snapshot!(name, sextant_index::manifest::to_yaml(&[out.pod]));
        });
    }
}

#[test]
fn injecting_an_injected_pod_changes_nothing() {
    let config = InjectConfig::default();
    for (name, pod) in sample_pods() {
        let once = injected(&pod, &config).pod;
        assert_eq!(
            inject(&once, "default", &config),
            Ok(Outcome::Skipped(Skip::AlreadyInjected)),
            "{name}"
        );
    }
}

#[test]
fn pods_that_opt_out_or_cannot_be_meshed_are_left_alone() {
    let config = InjectConfig::default();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut pod = productpage();
        edit(&mut pod);
        pod
    };
    let cases = [
        (
            "label false",
            with(&|p| p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false")),
            "default",
            Skip::OptedOut,
        ),
        (
            "annotation false",
            with(&|p| p["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "false"})),
            "default",
            Skip::OptedOut,
        ),
        (
            "hostNetwork",
            with(&|p| p["spec"]["hostNetwork"] = json!(true)),
            "default",
            Skip::HostNetwork,
        ),
        (
            "kube-system",
            productpage(),
            "kube-system",
            Skip::IgnoredNamespace,
        ),
        (
            "status annotation",
            with(&|p| p["metadata"]["annotations"] = json!({"sidecar.istio.io/status": "{}"})),
            "default",
            Skip::AlreadyInjected,
        ),
        (
            "own istio-proxy",
            with(&|p| {
                p["spec"]["containers"]
                    .as_array_mut()
                    .expect("containers")
                    .push(json!({"name": "istio-proxy", "image": "mine"}))
            }),
            "default",
            Skip::AlreadyInjected,
        ),
    ];
    for (case, pod, namespace, why) in cases {
        assert_eq!(
            inject(&pod, namespace, &config),
            Ok(Outcome::Skipped(why)),
            "{case}"
        );
    }
    // The label wins over the annotation, as in Istio.
    let relabelled = with(&|p| {
        p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("true");
        p["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "false"});
    });
    assert!(matches!(
        inject(&relabelled, "default", &config),
        Ok(Outcome::Injected(_))
    ));
}

/// What an annotation case changes, in a form to review: the init container's arguments,
/// the order of the init containers and containers, the sidecar's image, resources, security
/// context and lifecycle, Envoy's flags (the bootstrap shown by its node metadata and xDS
/// target), the Pod's grace period, what metadata injection adds, and the warnings. Each case
/// but the defaults shows only what differs from them.
fn digest(out: &Injected) -> Value {
    let pod = &out.pod;
    let proxy = proxy_of(pod);
    let args: Vec<&str> = proxy["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("text"))
        .collect();
    let bootstrap = bootstrap_of(proxy);
    let flags: Vec<&str> = args.iter().skip(2).copied().collect();
    let init = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "istio-init")
        .map(|c| c["args"].clone());
    let added: Vec<&Value> = out
        .patch
        .iter()
        .filter(|op| {
            op["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/metadata"))
        })
        .collect();
    let names = |field: &str| -> Vec<Value> {
        let list = pod["spec"][field].as_array().into_iter().flatten();
        list.map(|c| c["name"].clone()).collect()
    };
    json!({
        "init": init,
        "init_containers": names("initContainers"),
        "containers": names("containers"),
        "restart_policy": proxy["restartPolicy"],
        "lifecycle": proxy["lifecycle"],
        "grace_period": pod["spec"]["terminationGracePeriodSeconds"],
        "image": proxy["image"],
        "env": proxy["env"].as_array().expect("env").iter()
            .filter(|e| e["value"].is_string()).cloned().collect::<Vec<_>>(),
        "resources": proxy["resources"],
        "securityContext": proxy["securityContext"],
        "envoy_flags": flags,
        "node_metadata": bootstrap["node"]["metadata"],
        "xds": bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]["google_grpc"]["target_uri"],
        "metadata_added": added,
        "warnings": out.warnings,
    })
}

#[test]
fn each_honoured_annotation_shapes_the_sidecar() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "include-inbound-ports",
            &[("traffic.sidecar.istio.io/includeInboundPorts", "9080")],
        ),
        (
            "exclude-inbound-ports",
            &[("traffic.sidecar.istio.io/excludeInboundPorts", "8080,9090")],
        ),
        (
            "include-outbound-ports",
            &[("traffic.sidecar.istio.io/includeOutboundPorts", "443")],
        ),
        (
            "exclude-outbound-ports",
            &[("traffic.sidecar.istio.io/excludeOutboundPorts", "5432,6379")],
        ),
        (
            "include-outbound-ip-ranges",
            &[(
                "traffic.sidecar.istio.io/includeOutboundIPRanges",
                "10.96.0.0/12,10.244.0.0/16",
            )],
        ),
        (
            "exclude-outbound-ip-ranges",
            &[(
                "traffic.sidecar.istio.io/excludeOutboundIPRanges",
                "169.254.169.254/32",
            )],
        ),
        (
            "exclude-interfaces",
            &[("traffic.sidecar.istio.io/excludeInterfaces", "eth1,net2")],
        ),
        (
            "kubevirt-interfaces",
            &[("traffic.sidecar.istio.io/kubevirtInterfaces", "net1")],
        ),
        (
            // The newer name wins, as in Istio.
            "reroute-virtual-interfaces",
            &[
                ("istio.io/reroute-virtual-interfaces", "docker0,net1"),
                ("traffic.sidecar.istio.io/kubevirtInterfaces", "net9"),
            ],
        ),
        (
            "native-sidecar",
            &[("sidecar.istio.io/nativeSidecar", "true")],
        ),
        (
            "drain",
            &[(
                "proxy.istio.io/config",
                "drainDuration: 10s\nterminationDrainDuration: 40s",
            )],
        ),
        (
            "istio-annotations-not-honoured",
            &[
                ("status.sidecar.istio.io/port", "0"),
                ("readiness.status.sidecar.istio.io/periodSeconds", "5"),
                ("sidecar.istio.io/userVolume", "{}"),
                ("sidecar.istio.io/userVolumeMount", "{}"),
                ("sidecar.istio.io/bootstrapOverride", "my-bootstrap"),
                ("sidecar.istio.io/rewriteAppHTTPProbers", "true"),
                ("sidecar.istio.io/agentLogLevel", "debug"),
                ("proxy.istio.io/overrides", "{}"),
                ("inject.istio.io/templates", "sidecar,custom"),
            ],
        ),
        (
            "interception-tproxy",
            &[("sidecar.istio.io/interceptionMode", "TPROXY")],
        ),
        (
            "interception-none",
            &[("sidecar.istio.io/interceptionMode", "NONE")],
        ),
        (
            "proxy-config",
            &[(
                "proxy.istio.io/config",
                "concurrency: 4\nterminationDrainDuration: 20s\ndiscoveryAddress: sextant.mesh.svc:15012\nholdApplicationUntilProxyStarts: true\nproxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n  EXIT_ON_ZERO_ACTIVE_CONNECTIONS: \"true\"\ntracing:\n  sampling: 10\n",
            )],
        ),
        (
            "proxy-config-json",
            &[(
                "proxy.istio.io/config",
                r#"{"concurrency": 0, "interceptionMode": "NONE"}"#,
            )],
        ),
        (
            "resources",
            &[
                ("sidecar.istio.io/proxyCPU", "250m"),
                ("sidecar.istio.io/proxyMemoryLimit", "512Mi"),
            ],
        ),
        (
            "resource-limits",
            &[
                ("sidecar.istio.io/proxyCPULimit", "1"),
                ("sidecar.istio.io/proxyMemory", "64Mi"),
            ],
        ),
        (
            "proxy-image",
            &[(
                "sidecar.istio.io/proxyImage",
                "registry.example/envoy:v1.40.1",
            )],
        ),
        (
            "log-levels",
            &[
                ("sidecar.istio.io/logLevel", "debug"),
                (
                    "sidecar.istio.io/componentLogLevel",
                    "upstream:trace,http:debug",
                ),
            ],
        ),
    ];
    let config = InjectConfig::default();
    let defaults = digest(&injected(&productpage(), &config));
    // Each case shows only what differs from the defaults.
    let changed = |d: Value| -> Value {
        let d = d.as_object().expect("a digest").clone();
        d.into_iter()
            .filter(|(k, v)| defaults[k.as_str()] != *v)
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let mut out = BTreeMap::new();
    out.insert("defaults", defaults.clone());
    for (case, annotations) in cases {
        let mut pod = productpage();
        for (k, v) in *annotations {
            pod["metadata"]["annotations"][*k] = json!(v);
        }
        out.insert(*case, changed(digest(&injected(&pod, &config))));
    }
    // productpage has scrape annotations of its own, which stay; without them, Envoy's.
    let mut unscraped = productpage();
    unscraped["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("annotations");
    out.insert(
        "prometheus-annotations-absent",
        changed(digest(&injected(&unscraped, &config))),
    );
    // A network for the cluster, and a Pod labelled with another.
    let networked = InjectConfig {
        network: Some("net-a".to_owned()),
        ..InjectConfig::default()
    };
    out.insert(
        "network",
        changed(digest(&injected(&productpage(), &networked))),
    );
    let mut labelled = productpage();
    labelled["metadata"]["labels"]["topology.istio.io/network"] = json!("net-b");
    out.insert(
        "network-label",
        changed(digest(&injected(&labelled, &networked))),
    );
    insta::with_settings!({
        snapshot_path => "fixtures/inject/snapshots",
        prepend_module_to_snapshot => false,
        description => "bookinfo's productpage Pod with each annotation",
    }, {
        insta::assert_yaml_snapshot!("annotations", out);
    });
}

#[test]
fn malformed_annotations_refuse_the_pod_naming_each() {
    let cases = [
        ("sidecar.istio.io/interceptionMode", "REDIRECTED"),
        ("traffic.sidecar.istio.io/includeInboundPorts", "http"),
        ("traffic.sidecar.istio.io/excludeInboundPorts", "80,x"),
        ("traffic.sidecar.istio.io/includeOutboundPorts", "99999"),
        ("traffic.sidecar.istio.io/excludeOutboundPorts", "-1"),
        // `sextant iptables` takes ports from 1.
        ("traffic.sidecar.istio.io/includeInboundPorts", "0"),
        ("traffic.sidecar.istio.io/excludeInboundPorts", "15020,0"),
        ("traffic.sidecar.istio.io/includeOutboundPorts", "0"),
        ("traffic.sidecar.istio.io/excludeOutboundPorts", "0,443"),
        (
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
            "10.0.0.1",
        ),
        (
            "traffic.sidecar.istio.io/excludeOutboundIPRanges",
            "10.0.0.0/40",
        ),
        ("traffic.sidecar.istio.io/excludeInterfaces", "eth0,"),
        ("istio.io/reroute-virtual-interfaces", "net1,1net"),
        ("traffic.sidecar.istio.io/kubevirtInterfaces", "a b"),
        ("sidecar.istio.io/nativeSidecar", "yes"),
        ("proxy.istio.io/config", "drainDuration: 1m"),
        ("proxy.istio.io/config", "concurrency: lots"),
        ("proxy.istio.io/config", "noSuchField: 1"),
        ("sidecar.istio.io/proxyCPU", "fast"),
        ("sidecar.istio.io/proxyMemory", "1GB"),
        ("sidecar.istio.io/proxyCPULimit", ""),
        ("sidecar.istio.io/proxyMemoryLimit", "1 Gi"),
        ("sidecar.istio.io/proxyImage", "envoy $(EVIL)"),
        ("sidecar.istio.io/logLevel", "verbose"),
        ("sidecar.istio.io/componentLogLevel", "upstream"),
    ];
    let config = InjectConfig::default();
    let mut messages = Vec::new();
    for (annotation, value) in cases {
        let mut pod = productpage();
        pod["metadata"]["annotations"] = json!({annotation: value});
        let error = inject(&pod, "default", &config).expect_err(annotation);
        let message = error.to_string();
        assert!(message.contains("productpage-v1-5d8f9c7b6-"), "{message}");
        assert!(message.contains(annotation), "{message}");
        assert!(message.contains(&format!("{value:?}")), "{message}");
        messages.push(message);
    }
    // All at once: every one is named.
    let mut pod = productpage();
    pod["metadata"]["annotations"] = json!({
        "sidecar.istio.io/logLevel": "verbose", "sidecar.istio.io/proxyCPU": "fast"});
    let error = inject(&pod, "default", &config).expect_err("two bad annotations");
    assert_eq!(error.problems.len(), 2);
    messages.push(error.to_string());
    insta::with_settings!({
        snapshot_path => "fixtures/inject/snapshots",
        prepend_module_to_snapshot => false,
        description => "why each malformed annotation refuses bookinfo's productpage Pod",
    }, {
        insta::assert_yaml_snapshot!("malformed", messages);
    });
}

fn review(pod: &Value, operation: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "3f1c", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "default", "operation": operation, "object": pod}}))
    .expect("JSON")
}

#[test]
fn the_webhook_answers_with_a_base64_json_patch() {
    let config = InjectConfig::default();
    let mut pod = productpage();
    // Pods created by a controller carry no namespace; the request names it.
    pod["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("namespace");
    let answer =
        sextant::webhook::inject_answer(&review(&pod, "CREATE"), &config).expect("an answer");
    let response = &answer["response"];
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(response["uid"], "3f1c");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .expect("base64");
    let ops: Vec<Value> = serde_json::from_slice(&patch).expect("a JSON Patch");
    let patched = apply(&pod, &ops);
    assert_eq!(
        patched["metadata"]["labels"]["security.istio.io/tlsMode"],
        "istio"
    );
    let proxy = container(&patched, "containers", "istio-proxy");
    assert_eq!(
        bootstrap_of(proxy)["node"]["metadata"]["NAMESPACE"],
        "$(POD_NAMESPACE)"
    );

    // Updates and opted-out Pods are allowed unchanged.
    let update =
        sextant::webhook::inject_answer(&review(&pod, "UPDATE"), &config).expect("an answer");
    assert_eq!(update["response"], json!({"uid": "3f1c", "allowed": true}));
    pod["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false");
    let skipped =
        sextant::webhook::inject_answer(&review(&pod, "CREATE"), &config).expect("an answer");
    assert_eq!(skipped["response"], json!({"uid": "3f1c", "allowed": true}));

    // A malformed annotation refuses the Pod, naming it.
    pod["metadata"]["labels"]
        .as_object_mut()
        .expect("labels")
        .remove("sidecar.istio.io/inject");
    pod["metadata"]["annotations"] = json!({"sidecar.istio.io/interceptionMode": "BOGUS"});
    let refused =
        sextant::webhook::inject_answer(&review(&pod, "CREATE"), &config).expect("an answer");
    assert_eq!(refused["response"]["allowed"], false);
    let message = refused["response"]["status"]["message"]
        .as_str()
        .expect("a message");
    assert!(
        message.contains("sidecar.istio.io/interceptionMode") && message.contains("\"BOGUS\""),
        "{message}"
    );

    // Warnings reach the user.
    pod["metadata"]["annotations"] = json!({"proxy.istio.io/config": "meshId: m1"});
    let warned =
        sextant::webhook::inject_answer(&review(&pod, "CREATE"), &config).expect("an answer");
    assert_eq!(warned["response"]["allowed"], true);
    let warnings = warned["response"]["warnings"].to_string();
    assert!(warnings.contains("meshId"), "{warnings}");

    assert!(sextant::webhook::inject_answer(b"{}", &config).is_err());
}

#[test]
fn injected_envoy_arguments_pass_envoy_validate() {
    let Some(envoy) = sextant_testing::envoy() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("sextant-inject-{}", std::process::id()));
    for file in ["istio/root-cert.pem", "tokens/istio-token"] {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("mount directory");
        std::fs::write(&path, "").expect("mounted file");
    }
    let config = InjectConfig::default();
    let mut pods = sample_pods();
    for (case, annotation, value) in [
        (
            "productpage-tproxy",
            "sidecar.istio.io/interceptionMode",
            "TPROXY",
        ),
        (
            "productpage-none",
            "sidecar.istio.io/interceptionMode",
            "NONE",
        ),
        (
            "productpage-config",
            "proxy.istio.io/config",
            "concurrency: 0\nproxyMetadata: {ISTIO_META_X: \"a$(b)c$$d\"}",
        ),
        (
            "productpage-logs",
            "sidecar.istio.io/componentLogLevel",
            "upstream:debug,http:trace",
        ),
    ] {
        let mut pod = productpage();
        pod["metadata"]["annotations"] = json!({annotation: value});
        pods.push((case.to_owned(), pod));
    }
    let mut failures = Vec::new();
    for (name, pod) in pods {
        let out = injected(&pod, &config);
        let proxy = container(&out.pod, "containers", "istio-proxy");
        let account = pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let args = envoy_args(proxy, &format!("{name}-0"), account, &dir);
        let run = Command::new(&envoy)
            .args(["--mode", "validate", "--use-dynamic-base-id"])
            .args(&args)
            .output()
            .expect("envoy runs");
        if !run.status.success() {
            failures.push(format!(
                "{name}: {}{}",
                String::from_utf8_lossy(&run.stdout),
                String::from_utf8_lossy(&run.stderr)
            ));
        }
        if name == "productpage-config" {
            // A user's `$(...)` stays literal through the expansion.
            assert!(args[1].contains("a$(b)c$$d"), "{}", args[1]);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "Envoy rejected:\n{}",
        failures.join("\n")
    );
}

#[test]
fn sextant_bootstrap_writes_the_injected_bootstrap() {
    let out = injected(&productpage(), &InjectConfig::default());
    let proxy = container(&out.pod, "containers", "istio-proxy");
    let dir = Path::new("/var/run/secrets");
    let args = envoy_args(proxy, "productpage-v1-0", "bookinfo-productpage", dir);
    let docs = sextant_index::manifest::parse_documents(&args[1]).expect("YAML");
    let injected = &docs[0].value;
    let run = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args([
            "bootstrap",
            "--node-id",
            "sidecar~10.1.2.3~productpage-v1-0.default~default.svc.cluster.local",
            "--interception",
            "REDIRECT",
            "--xds-address",
            "sextant.istio-system.svc:15012",
            "--xds-root-cert",
            "/var/run/secrets/istio/root-cert.pem",
            "--xds-token",
            "/var/run/secrets/tokens/istio-token",
            "--sidecar-listeners",
            "--cluster-id",
            "Kubernetes",
            "--meta",
            "NAMESPACE=default",
            "--meta",
            "SERVICE_ACCOUNT=bookinfo-productpage",
            "--meta",
            "INSTANCE_IPS=10.1.2.3",
            "--meta",
            "WORKLOAD_NAME=productpage-v1",
            "--meta",
            "LABELS=app=productpage,version=v1",
        ])
        .output()
        .expect("sextant bootstrap runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = String::from_utf8(run.stdout).expect("UTF-8");
    let written = &sextant_index::manifest::parse_documents(&text).expect("YAML")[0].value;
    assert_eq!(written, injected);
}

/// The annotations the injector reads.
const READ: &[&str] = &[
    "sidecar.istio.io/interceptionMode",
    "traffic.sidecar.istio.io/includeInboundPorts",
    "traffic.sidecar.istio.io/excludeInboundPorts",
    "traffic.sidecar.istio.io/includeOutboundPorts",
    "traffic.sidecar.istio.io/excludeOutboundPorts",
    "traffic.sidecar.istio.io/includeOutboundIPRanges",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    "traffic.sidecar.istio.io/excludeInterfaces",
    "proxy.istio.io/config",
    "sidecar.istio.io/proxyCPU",
    "sidecar.istio.io/proxyMemoryLimit",
    "sidecar.istio.io/proxyImage",
    "sidecar.istio.io/logLevel",
    "sidecar.istio.io/componentLogLevel",
    "sidecar.istio.io/inject",
    "sidecar.istio.io/nativeSidecar",
    "istio.io/reroute-virtual-interfaces",
    "traffic.sidecar.istio.io/kubevirtInterfaces",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Whatever the annotations say, injection either refuses naming each bad one, leaves
    /// the Pod alone, or yields a patch that applies and marks the Pod injected.
    #[test]
    fn any_annotations_inject_once_or_are_refused_by_name(
        annotations in proptest::collection::btree_map(
            proptest::sample::select(READ),
            "[ -~]{0,24}|\\*|[0-9,]{1,12}|REDIRECT|TPROXY|NONE|100m|concurrency: [0-9]|true|false|eth[0-9]",
            0..5,
        )
    ) {
        let config = InjectConfig::default();
        let mut pod = productpage();
        pod["metadata"]["annotations"] = json!(annotations);
        match inject(&pod, "default", &config) {
            Ok(Outcome::Injected(i)) => {
                let once = apply(&pod, &i.patch);
                proptest::prop_assert_eq!(
                    inject(&once, "default", &config),
                    Ok(Outcome::Skipped(Skip::AlreadyInjected))
                );
            }
            Ok(Outcome::Skipped(why)) => proptest::prop_assert_eq!(why, Skip::OptedOut),
            Err(error) => {
                proptest::prop_assert!(!error.problems.is_empty());
                for problem in &error.problems {
                    proptest::prop_assert_eq!(
                        annotations.get(problem.annotation.as_str()).map(|v| v.as_str()),
                        Some(problem.value.as_str())
                    );
                }
            }
        }
    }
}
