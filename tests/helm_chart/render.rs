//! What the templates make of values: the mesh config as Sextant reads it, the autoscaler in
//! place of the replica count, the NetworkPolicy's rules, the spread of the replicas, and the
//! image `make image` tags.

use serde_json::{Value, json};
use sextant_testing::repo;

use super::{Scratch, app_version, chart, fails, find, objects};

/// The `mesh` key of ConfigMap `istio` among `objects`.
fn mesh(objects: &[Value]) -> String {
    let config = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "istio")
        .expect("ConfigMap istio");
    config["data"]["mesh"]
        .as_str()
        .expect("the mesh key")
        .to_owned()
}

#[test]
fn the_mesh_config_renders_every_field_set_and_sextant_reads_it() {
    let Some(helm) = sextant_testing::helm() else {
        return;
    };
    let scratch = Scratch::new("helm-mesh");
    // The defaults are Istio's, and every field is one Sextant knows.
    let defaults = sextant_index::parse::mesh_config(&mesh(&objects(&helm, &scratch, &[])))
        .expect("Sextant reads the default mesh config");
    assert!(defaults.warnings.is_empty(), "{:?}", defaults.warnings);
    // Istio's defaults (the tests do not depend on sextant-model, hence Debug for the mode).
    let config = &defaults.config;
    assert_eq!(config.root_namespace, "istio-system");
    assert_eq!(config.trust_domain, "cluster.local");
    assert_eq!(format!("{:?}", config.outbound_traffic_policy), "AllowAny");
    assert!(config.default_config.json.is_empty(), "no proxy defaults");
    let sets = [
        "meshConfig.accessLogFile=/dev/stdout",
        "meshConfig.accessLogEncoding=JSON",
        "meshConfig.defaultConfig.terminationDrainDuration=10s",
        "meshConfig.enablePrometheusMerge=true",
        "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
    ];
    // proxyMetadata holds environment variables: strings only (the schema refuses `true`).
    let metadata = "meshConfig.defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE=true";
    let mut args = vec!["--set-string", metadata];
    for set in &sets {
        args.extend(["--set", set]);
    }
    let text = mesh(&objects(&helm, &scratch, &args));
    for line in [
        "accessLogFile: /dev/stdout",
        "accessLogEncoding: JSON",
        "terminationDrainDuration: 10s",
        "enablePrometheusMerge: true",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    let read = sextant_index::parse::mesh_config(&text).expect("Sextant reads it");
    assert!(read.warnings.is_empty(), "{:?}", read.warnings);
    assert_eq!(
        format!("{:?}", read.config.outbound_traffic_policy),
        "RegistryOnly"
    );
    assert_eq!(
        read.config.default_config.proxy_metadata["ISTIO_META_DNS_CAPTURE"],
        "true"
    );
    let proxy_defaults: Value =
        serde_json::from_str(&read.config.default_config.json).expect("defaultConfig's JSON");
    assert_eq!(proxy_defaults["terminationDrainDuration"], "10s");
}

#[test]
fn the_autoscaler_takes_over_the_replica_count() {
    let Some(helm) = sextant_testing::helm() else {
        return;
    };
    let scratch = Scratch::new("helm-hpa");
    let fixed = objects(&helm, &scratch, &["--set", "replicaCount=1"]);
    assert_eq!(
        find(&fixed, "Deployment").expect("a Deployment")["spec"]["replicas"],
        1
    );
    assert!(find(&fixed, "HorizontalPodAutoscaler").is_none());
    assert!(
        find(&fixed, "PodDisruptionBudget").is_none(),
        "one replica: no budget to keep"
    );
    let scaled = objects(
        &helm,
        &scratch,
        &[
            "--set",
            "replicaCount=1",
            "--set",
            "autoscaling.enabled=true",
            "--set",
            "autoscaling.minReplicas=3",
            "--set",
            "autoscaling.behavior.scaleDown.stabilizationWindowSeconds=600",
        ],
    );
    let deployment = find(&scaled, "Deployment").expect("a Deployment");
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "the autoscaler owns the count: {}",
        deployment["spec"]
    );
    let hpa = find(&scaled, "HorizontalPodAutoscaler").expect("an autoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "sextant"})
    );
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(hpa["spec"]["maxReplicas"], 5);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"],
        json!({"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}})
    );
    assert_eq!(
        hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        600
    );
    // The budget follows the autoscaler's minimum.
    assert!(find(&scaled, "PodDisruptionBudget").is_some());

    let chart = chart();
    let (kubeconfig, home) = (scratch.kubeconfig(), scratch.0.clone());
    let template = |sets: &[&str]| {
        let mut args = vec!["template", "sextant", chart.as_str()];
        for set in sets {
            args.extend(["--set", set]);
        }
        fails(&helm, &kubeconfig, &home, &args)
    };
    let inverted = template(&[
        "autoscaling.enabled=true",
        "autoscaling.minReplicas=6",
        "autoscaling.maxReplicas=3",
    ]);
    assert!(
        inverted.contains("autoscaling.minReplicas (6) is above autoscaling.maxReplicas (3)"),
        "{inverted}"
    );
    let no_request = template(&["autoscaling.enabled=true", "resources.requests.cpu=null"]);
    assert!(
        no_request.contains("autoscaling.enabled needs resources.requests.cpu"),
        "{no_request}"
    );
}

/// The ports of one NetworkPolicy rule, as `PROTOCOL/PORT`.
fn ports(rule: &Value) -> Vec<String> {
    rule["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["protocol"].as_str().expect("protocol"),
                p["port"]
            )
        })
        .collect()
}

#[test]
fn the_network_policy_opens_each_port_to_its_callers_only() {
    let Some(helm) = sextant_testing::helm() else {
        return;
    };
    let scratch = Scratch::new("helm-netpol");
    assert!(find(&objects(&helm, &scratch, &[]), "NetworkPolicy").is_none());
    let rendered = objects(
        &helm,
        &scratch,
        &[
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "networkPolicy.admin.from[0].namespaceSelector.matchLabels.name=monitoring",
            "--set",
            "networkPolicy.apiServer.to[0].ipBlock.cidr=10.0.0.1/32",
            "--set",
            "networkPolicy.extraEgress[0].ports[0].port=8443",
            "--set",
            "ports.admin=9014",
        ],
    );
    let policy = find(&rendered, "NetworkPolicy").expect("a NetworkPolicy");
    let spec = &policy["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "sextant", "app.kubernetes.io/instance": "sextant"})
    );
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
    let ingress = spec["ingress"].as_array().expect("ingress rules");
    assert_eq!(ingress.len(), 3, "{ingress:?}");
    // xDS from any source by default; the admin port from monitoring; the webhooks from
    // anywhere, as the API server's address is unknown.
    assert_eq!(ports(&ingress[0]), ["TCP/15010", "TCP/15012"]);
    assert!(ingress[0].get("from").is_none(), "{}", ingress[0]);
    assert_eq!(ports(&ingress[1]), ["TCP/9014"]);
    assert_eq!(
        ingress[1]["from"],
        json!([{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}])
    );
    assert_eq!(ports(&ingress[2]), ["TCP/15017"]);
    assert!(ingress[2].get("from").is_none(), "{}", ingress[2]);
    let egress = spec["egress"].as_array().expect("egress rules");
    assert_eq!(egress.len(), 3, "{egress:?}");
    assert_eq!(ports(&egress[0]), ["TCP/443", "TCP/6443"]);
    assert_eq!(
        egress[0]["to"],
        json!([{"ipBlock": {"cidr": "10.0.0.1/32"}}])
    );
    assert_eq!(ports(&egress[1]), ["UDP/53", "TCP/53"]);
    assert!(egress[1].get("to").is_none(), "{}", egress[1]);
    assert_eq!(egress[2], json!({"ports": [{"port": 8443}]}));
}

#[test]
fn values_ha_spreads_three_replicas_over_nodes_and_zones() {
    let Some(helm) = sextant_testing::helm() else {
        return;
    };
    let scratch = Scratch::new("helm-ha");
    let ha = repo("charts/sextant/values-ha.yaml");
    let rendered = objects(&helm, &scratch, &["-f", ha.to_str().expect("utf-8")]);
    let pod = &find(&rendered, "Deployment").expect("a Deployment")["spec"];
    assert_eq!(pod["replicas"], 3);
    let spread = pod["template"]["spec"]["topologySpreadConstraints"]
        .as_array()
        .expect("spread constraints");
    let keys: Vec<&str> = spread
        .iter()
        .map(|c| c["topologyKey"].as_str().expect("key"))
        .collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    for constraint in spread {
        // The release's own Pods, though values-ha.yaml cannot name the release.
        assert_eq!(
            constraint["labelSelector"]["matchLabels"], pod["selector"]["matchLabels"],
            "{constraint}"
        );
    }
    let budget = find(&rendered, "PodDisruptionBudget").expect("a budget");
    assert_eq!(budget["spec"]["minAvailable"], 2);
    let resources = &pod["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(resources["requests"]["memory"], "1Gi");
    assert_eq!(resources["limits"]["memory"], "2Gi");
    assert!(
        resources["limits"].get("cpu").is_none(),
        "no cpu limit: {resources}"
    );
}

#[test]
fn the_default_image_is_the_one_make_image_tags() {
    let Some(helm) = sextant_testing::helm() else {
        return;
    };
    // `make image` tags localhost/sextant:VERSION and localhost/sextant-init:VERSION (the
    // init container, which holds iptables) with the crate's version; the chart's
    // appVersion must be that version for the default tag to name the image.
    let cargo = std::fs::read_to_string(repo("Cargo.toml")).expect("Cargo.toml");
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .expect("the workspace version")
        .trim_matches('"');
    assert_eq!(app_version(), version, "Chart.yaml appVersion");
    let scratch = Scratch::new("helm-image");
    let rendered = objects(&helm, &scratch, &[]);
    let container = &find(&rendered, "Deployment").expect("a Deployment")["spec"]["template"]["spec"]
        ["containers"][0];
    assert_eq!(container["image"], format!("localhost/sextant:{version}"));
    let args = container["args"].to_string();
    assert!(
        args.contains(&format!(
            "--sidecar-init-image=localhost/sextant-init:{version}"
        )),
        "{args}"
    );
}
