//! Pods built to hurt the injector or the Pod itself: `proxyMetadata` that would rewrite the
//! bootstrap or flood the answer, and values the injector used to admit that left the Pod
//! unable to start (an argument past Linux's limit, `sextant iptables` refusing its own
//! arguments or environment). Each is refused at admission, naming the Pod, the annotation
//! and the cause; what `/inject` admits, `sextant iptables` runs.

use std::process::Command;

use serde_json::{Value, json};
use sextant::inject::{
    InjectConfig, Outcome,
    annotations::MAX_ANNOTATIONS_BYTES,
    capture::MAX_ARG_STRLEN,
    inject,
    proxy_config::{MAX_METADATA_ENTRIES, MAX_METADATA_VALUE_BYTES},
};

use super::pods::{container, injected, productpage, proxy_of};

/// productpage's Pod with `annotations`.
fn annotated(annotations: Value) -> Value {
    let mut pod = productpage();
    pod["metadata"]["annotations"] = annotations;
    pod
}

/// productpage's Pod with `proxyMetadata` in `proxy.istio.io/config`, as JSON.
fn with_metadata(metadata: Value) -> Value {
    annotated(json!({"proxy.istio.io/config": json!({"proxyMetadata": metadata}).to_string()}))
}

/// The message refusing `pod`, which names the Pod and `annotation`.
fn refusal(pod: &Value, annotation: &str) -> String {
    let error = inject(pod, "default", &InjectConfig::default()).expect_err("refused");
    let message = error.to_string();
    assert!(
        message.contains("productpage-v1-5d8f9c7b6-"),
        "names the Pod: {message}"
    );
    assert!(message.contains(annotation), "{message}");
    assert!(message.len() < 4096, "{} bytes", message.len());
    message
}

#[test]
fn proxy_metadata_cannot_redefine_what_the_bootstrap_reads_from_the_pod() {
    for name in [
        "SERVICE_ACCOUNT",
        "POD_NAME",
        "POD_NAMESPACE",
        "INSTANCE_IP",
    ] {
        let pod = with_metadata(
            json!({name: "bookinfo\nadmin: {address: {socket_address: {address: 0.0.0.0}}}"}),
        );
        let message = refusal(&pod, "proxy.istio.io/config");
        assert!(
            message.contains(&format!("proxyMetadata: {name} is set by the injector")),
            "{message}"
        );
    }
}

#[test]
fn no_metadata_value_reaches_the_bootstrap_unquoted() {
    let value = "x\"\nadmin: {address: {socket_address: {address: 0.0.0.0}}}\n#";
    let out = injected(
        &with_metadata(json!({"ISTIO_META_X": value})),
        &InjectConfig::default(),
    );
    let proxy = proxy_of(&out.pod);
    let yaml = proxy["args"][1].as_str().expect("the bootstrap");
    // One key `admin`, the injector's, and the value whole under node metadata.
    assert_eq!(
        yaml.lines().filter(|l| l.starts_with("admin:")).count(),
        1,
        "{yaml}"
    );
    let bootstrap = super::pods::bootstrap_of(proxy);
    assert_eq!(bootstrap["node"]["metadata"]["X"], value);
    assert_eq!(
        bootstrap["admin"]["address"]["socket_address"]["address"],
        "127.0.0.1"
    );
}

#[test]
fn proxy_metadata_past_its_bounds_is_refused_naming_the_bound() {
    let many: serde_json::Map<String, Value> = (0..=MAX_METADATA_ENTRIES)
        .map(|i| (format!("ISTIO_META_K{i}"), json!("v")))
        .collect();
    let message = refusal(&with_metadata(Value::Object(many)), "proxy.istio.io/config");
    assert!(
        message.contains(&format!(
            "more than the injector's bound of {MAX_METADATA_ENTRIES}"
        )),
        "{message}"
    );

    let long = "v".repeat(MAX_METADATA_VALUE_BYTES + 1);
    let message = refusal(
        &with_metadata(json!({"ISTIO_META_NOTES": long})),
        "proxy.istio.io/config",
    );
    assert!(message.contains("ISTIO_META_NOTES"), "{message}");
    assert!(
        message.contains(&format!("{MAX_METADATA_VALUE_BYTES} bytes per value")),
        "{message}"
    );

    let message = refusal(
        &with_metadata(json!({"A": "a\u{0}b"})),
        "proxy.istio.io/config",
    );
    assert!(message.contains("control character"), "{message}");
}

#[test]
fn a_flood_of_metadata_is_refused_before_it_costs_anything() {
    // The filed attack: 80,000 entries, 2.4 MB, took 8.9 s to inject.
    let flood: serde_json::Map<String, Value> = (0..80_000)
        .map(|i| (format!("ISTIO_META_K{i}"), json!("v")))
        .collect();
    let pod = with_metadata(Value::Object(flood));
    let message = refusal(&pod, "proxy.istio.io/config");
    // Refused by the annotations' size, which is measured before any entry is read.
    assert!(
        message.contains(&format!(
            "more than the {MAX_ANNOTATIONS_BYTES} the API server allows"
        )),
        "{message}"
    );
}

#[test]
fn the_largest_metadata_within_the_bounds_is_injected() {
    // As many entries as allowed, as large as the annotations allow (environment only: as
    // node metadata they would pass the bootstrap's argument limit).
    let value = "m".repeat(MAX_ANNOTATIONS_BYTES / MAX_METADATA_ENTRIES - 64);
    let entries: serde_json::Map<String, Value> = (0..MAX_METADATA_ENTRIES)
        .map(|i| (format!("K{i}"), json!(value)))
        .collect();
    let pod = with_metadata(Value::Object(entries));
    let out = injected(&pod, &InjectConfig::default());
    assert_eq!(
        proxy_of(&out.pod)["env"].as_array().expect("env").len(),
        4 + MAX_METADATA_ENTRIES
    );
    // No time is asserted (a loaded machine made it flaky): the webhook's own 2 s budget is
    // attacked in tests/bounds/webhook.rs, and building is one pass over the entries.
}

#[test]
fn arguments_longer_than_linux_takes_refuse_the_pod() {
    // Nine 15 KiB values: each within its bound, together past MAX_ARG_STRLEN in the
    // bootstrap (the filed case was one 130 KiB value, now past the value's own bound).
    let value = "n".repeat(15 << 10);
    let entries: serde_json::Map<String, Value> = (0..9)
        .map(|i| (format!("ISTIO_META_NOTE{i}"), json!(value)))
        .collect();
    let message = refusal(
        &with_metadata(Value::Object(entries)),
        "proxy.istio.io/config",
    );
    assert!(message.contains("MAX_ARG_STRLEN"), "{message}");
    assert!(message.contains("--config-yaml"), "{message}");

    // One istio-init argument: a port list of 140 KB.
    let ports: Vec<String> = (0..24_000).map(|i| (1 + i % 65_000).to_string()).collect();
    let ports = ports.join(",");
    assert!(ports.len() >= MAX_ARG_STRLEN);
    let pod = annotated(json!({"traffic.sidecar.istio.io/excludeOutboundPorts": ports}));
    let message = refusal(&pod, "traffic.sidecar.istio.io/excludeOutboundPorts");
    assert!(message.contains("istio-init's argument -o"), "{message}");
}

#[test]
fn values_that_would_leave_the_pod_unable_to_start_are_refused_by_name() {
    let config = |text: &str| json!({"proxy.istio.io/config": text});
    let cases = [
        (
            config("terminationDrainDuration: 4294967296s"),
            "proxy.istio.io/config",
            "2^32 seconds",
        ),
        (
            config("drainDuration: 99999999999999999999s"),
            "proxy.istio.io/config",
            "2^32 seconds",
        ),
        (
            json!({"sidecar.istio.io/componentLogLevel": "misc:error,nosuch:debug"}),
            "sidecar.istio.io/componentLogLevel",
            "\"nosuch\"",
        ),
        (
            json!({"sidecar.istio.io/proxyCPU": "-100m"}),
            "sidecar.istio.io/proxyCPU",
            "negative",
        ),
        (
            json!({"sidecar.istio.io/proxyMemoryLimit": "-1Gi"}),
            "sidecar.istio.io/proxyMemoryLimit",
            "negative",
        ),
    ];
    for (annotations, annotation, why) in cases {
        let message = refusal(&annotated(annotations), annotation);
        assert!(message.contains(why), "{message}");
    }
    // proxyMetadata reaches istio-init's environment, where `sextant iptables` reads these.
    for (name, value, why) in [
        ("PROXY_GID", "x", "-g/--proxy-gid"),
        ("INBOUND_TUNNEL_PORT", "0", "-e/--inbound-tunnel-port"),
        (
            "ISTIO_INBOUND_TPROXY_MARK",
            "0",
            "-t/--istio-inbound-tproxy-mark",
        ),
        ("KUBE_VIRT_INTERFACES", "a;b", "-k/--kube-virt-interfaces"),
        ("ISTIO_OUTBOUND_PORTS", "http", "-q/--istio-outbound-ports"),
        ("DRY_RUN", "maybe", "$DRY_RUN"),
        (
            "ISTIO_META_DNS_CAPTURE",
            "sometimes",
            "$ISTIO_META_DNS_CAPTURE",
        ),
        ("IPTABLES_PROBE_PORT", "70000", "$IPTABLES_PROBE_PORT"),
        ("NETWORK_NAMESPACE", "/proc/1/ns/net", "$NETWORK_NAMESPACE"),
    ] {
        let message = refusal(
            &with_metadata(json!({name: value})),
            "proxy.istio.io/config",
        );
        assert!(
            message.contains(&format!("proxyMetadata {name}")),
            "{message}"
        );
        assert!(message.contains(why), "{message}");
    }
    // The annotation's flag wins over the variable, as in `sextant iptables`.
    let pod = annotated(json!({
        "traffic.sidecar.istio.io/includeOutboundPorts": "443",
        "proxy.istio.io/config": json!({"proxyMetadata": {"ISTIO_OUTBOUND_PORTS": "http"}}).to_string(),
    }));
    assert!(matches!(
        inject(&pod, "default", &InjectConfig::default()),
        Ok(Outcome::Injected(_))
    ));
}

#[test]
fn json_with_surrogate_pair_escapes_is_read() {
    let pod = annotated(
        json!({"proxy.istio.io/config": r#"{"proxyMetadata": {"ISTIO_META_FACE": "\ud83d\ude00"}}"#}),
    );
    let out = injected(&pod, &InjectConfig::default());
    let env = &proxy_of(&out.pod)["env"];
    let face = env
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "ISTIO_META_FACE");
    assert_eq!(face.map(|e| e["value"].clone()), Some(json!("\u{1f600}")));
}

/// What `istio-init` runs for the injected `pod`: `sextant iptables` with its arguments and
/// environment, printing its rules instead of applying them. Whether it succeeds, and what
/// it said.
fn run_istio_init(pod: &Value) -> (bool, String) {
    let init = container(pod, "initContainers", "istio-init");
    let args: Vec<&str> = init["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("text"))
        .collect();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sextant"));
    command
        .env_clear()
        .args(&args)
        .args(["--dry-run", "--backend", "nft", "--ipv6", "off"]);
    for entry in init["env"].as_array().into_iter().flatten() {
        command.env(
            entry["name"].as_str().expect("a name"),
            entry["value"].as_str().expect("a value"),
        );
    }
    let out = command.output().expect("sextant runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn what_the_injector_admits_sextant_iptables_runs() {
    // The attacker's differential: each annotation and variable with values `sextant
    // iptables` may read otherwise than the injector did.
    let values = [
        "0",
        "65535",
        " 80",
        "80 ",
        "80,,81",
        ",",
        " ",
        "",
        "*",
        "1-100",
        "+80",
        "080",
        "00000000080",
        "10.0.0.0/8",
        "10.0.0.1/32",
        "::/0",
        "10.0.0.0/08",
        "10.0.0.0/+8",
        "0.0.0.0/0,::/0",
        "::ffff:10.0.0.1/128",
        "1.2.3.4/ 8",
        "eth0",
        "eth0,",
        "a-b.c_d",
        "lo",
        "aaaaaaaaaaaaaaa",
        "aaaaaaaaaaaaaaaa",
        "eth0@1",
    ];
    let annotations = [
        "traffic.sidecar.istio.io/excludeInboundPorts",
        "traffic.sidecar.istio.io/includeInboundPorts",
        "traffic.sidecar.istio.io/excludeOutboundPorts",
        "traffic.sidecar.istio.io/includeOutboundPorts",
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        "traffic.sidecar.istio.io/excludeInterfaces",
        "istio.io/reroute-virtual-interfaces",
    ];
    let variables = [
        "PROXY_GID",
        "INBOUND_TUNNEL_PORT",
        "ISTIO_INBOUND_TPROXY_MARK",
        "ISTIO_INBOUND_TPROXY_ROUTE_TABLE",
        "KUBE_VIRT_INTERFACES",
        "ISTIO_OUTBOUND_PORTS",
        "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",
        "ISTIO_EXCLUDE_INTERFACES",
        "DROP_INVALID",
        "DUAL_STACK",
        "ISTIO_DUAL_STACK",
        "INVALID_DROP",
        "IPTABLES_PROBE_PORT",
    ];
    let mut pods: Vec<(String, Value)> = Vec::new();
    for value in values {
        for annotation in annotations {
            pods.push((
                format!("{annotation}={value:?}"),
                annotated(json!({annotation: value})),
            ));
        }
        for variable in variables {
            pods.push((
                format!("proxyMetadata {variable}={value:?}"),
                with_metadata(json!({variable: value})),
            ));
        }
    }
    for switch in ["true", "FALSE", "1", "", "yes please"] {
        pods.push((
            format!("CLEANUP_ONLY={switch:?}"),
            with_metadata(json!({"CLEANUP_ONLY": switch})),
        ));
    }
    let config = InjectConfig::default();
    let mut admitted = 0;
    let mut failures = Vec::new();
    for (case, pod) in pods {
        let Ok(Outcome::Injected(injection)) = inject(&pod, "default", &config) else {
            continue;
        };
        admitted += 1;
        let patched = super::pods::apply(&pod, &injection.patch);
        let (ran, said) = run_istio_init(&patched);
        if !ran {
            failures.push(format!("{case}: {said}"));
        }
    }
    assert!(admitted > 100, "{admitted} admitted");
    assert!(
        failures.is_empty(),
        "admitted, but istio-init fails:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_largest_answer_stays_within_its_bound() {
    // What makes the answer largest per byte of annotation: quotes (escaped in the JSON of
    // both containers' environment) and, within the bootstrap's argument, node metadata
    // (escaped again in its YAML). Single-quoted YAML takes them one byte each.
    let quotes = "\"".repeat(14 << 10);
    let mut text = String::new();
    for i in 0..4 {
        text.push_str(&format!("  ISTIO_META_Q{i}: '{quotes}'\n"));
    }
    let mut i = 0;
    while text.len() + 1100 < MAX_ANNOTATIONS_BYTES - 64 {
        text.push_str(&format!("  K{i}: '{}'\n", "\"".repeat(1000)));
        i += 1;
    }
    let pod = annotated(json!({"proxy.istio.io/config": format!("proxyMetadata:\n{text}")}));
    let review = serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview", "request": {"uid": "u", "operation": "CREATE",
        "namespace": "default", "object": pod}}))
    .expect("JSON");
    let answer =
        sextant::webhook::inject_answer(&review, &InjectConfig::default()).expect("an answer");
    assert_eq!(
        answer["response"]["allowed"], true,
        "{}",
        answer["response"]["status"]
    );
    let size = serde_json::to_vec(&answer).expect("JSON").len();
    // docs/SECURITY.md: at most 1.8 MiB for 256 KiB of annotations.
    assert!(size < 1_800 << 10, "the answer is {size} bytes");
    assert!(size > 1_200 << 10, "not the worst case: {size} bytes");
}

#[test]
fn a_patch_past_its_bound_refuses_the_pod() {
    // Labels the API server would refuse (a value over 63 characters) can only come straight
    // to the webhook port; the canonical revision copies this one into the patch.
    let mut pod = productpage();
    pod["metadata"]["labels"]["version"] = json!("v".repeat(2_200_000));
    let review = serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview", "request": {"uid": "u", "operation": "CREATE",
        "namespace": "default", "object": pod}}))
    .expect("JSON");
    let answer =
        sextant::webhook::inject_answer(&review, &InjectConfig::default()).expect("an answer");
    assert_eq!(answer["response"]["allowed"], false);
    assert!(answer["response"].get("patch").is_none());
    let message = answer["response"]["status"]["message"]
        .as_str()
        .expect("a message");
    assert!(message.contains("productpage-v1-5d8f9c7b6-"), "{message}");
    assert!(
        message.contains("the injector's bound of 2097152"),
        "{message}"
    );
}
