//! `helm lint --strict` with each values file, and installs against the test API server:
//! values-ha.yaml, then with the autoscaler and the NetworkPolicy; and an install refused by
//! the schema, which creates nothing.

use sextant_testing::repo;

use super::{Cluster, Scratch, chart, run};

const NS: &str = "istio-system";

fn values_ha() -> String {
    repo("charts/sextant/values-ha.yaml")
        .to_str()
        .expect("utf-8 path")
        .to_owned()
}

#[test]
fn the_chart_lints_strictly_with_each_values_file_and_option() {
    let Some(helm) = sextant_testing::helm() else {
        return;
    };
    let scratch = Scratch::new("helm-lint");
    let (chart, ha) = (chart(), values_ha());
    for extra in [
        &[][..],
        &["-f", &ha][..],
        &[
            "-f",
            &ha,
            "--set",
            "autoscaling.enabled=true",
            "--set",
            "networkPolicy.enabled=true",
        ][..],
    ] {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        args.extend(extra);
        let out = run(&helm, &scratch.kubeconfig(), &scratch.0, &args);
        assert!(out.contains("0 chart(s) failed"), "{extra:?}: {out}");
    }
}

#[test]
fn the_chart_installs_with_values_ha() {
    let Some(cluster) = Cluster::start("helm-ha-install") else {
        return;
    };
    let (chart, ha) = (chart(), values_ha());
    let out = cluster.helm(&[
        "install",
        "sextant",
        &chart,
        "-n",
        NS,
        "--create-namespace",
        "-f",
        &ha,
    ]);
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(
        out.contains("sextant proxy-status --server 127.0.0.1:15014"),
        "{out}"
    );
    assert_eq!(
        cluster.get("deploy", "sextant", NS, "{.spec.replicas}"),
        "3"
    );
    let spread = cluster.get(
        "deploy",
        "sextant",
        NS,
        "{.spec.template.spec.topologySpreadConstraints[*].topologyKey}",
    );
    assert_eq!(spread, "kubernetes.io/hostname topology.kubernetes.io/zone");
    assert_eq!(
        cluster.get("pdb", "sextant", NS, "{.spec.minAvailable}"),
        "2"
    );
    let memory = cluster.get(
        "deploy",
        "sextant",
        NS,
        "{.spec.template.spec.containers[0].resources.limits.memory}",
    );
    assert_eq!(memory, "2Gi");
    for (kind, name) in [
        ("validatingwebhookconfiguration", "sextant-validator"),
        ("mutatingwebhookconfiguration", "sextant-sidecar-injector"),
    ] {
        let policy = cluster.get(kind, name, NS, "{.webhooks[*].failurePolicy}");
        assert!(policy.split(' ').all(|p| p == "Fail"), "{kind}: {policy}");
    }
    let optional = cluster.kubectl(&["get", "hpa,networkpolicy", "-n", NS, "-o", "name"]);
    assert_eq!(optional.trim(), "", "neither is on in values-ha.yaml");
}

#[test]
fn the_chart_installs_with_an_autoscaler_and_a_network_policy() {
    let Some(cluster) = Cluster::start("helm-hpa-netpol") else {
        return;
    };
    let (chart, ha) = (chart(), values_ha());
    let out = cluster.helm(&[
        "install",
        "sextant",
        &chart,
        "-n",
        NS,
        "--create-namespace",
        "-f",
        &ha,
        "--set",
        "autoscaling.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.admin.from[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
    ]);
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(out.contains("get hpa sextant"), "the notes: {out}");
    assert!(
        out.contains("does not apply to port-forward"),
        "the notes: {out}"
    );
    assert_eq!(
        cluster.get("deploy", "sextant", NS, "{.spec.replicas}"),
        "",
        "the autoscaler owns the count"
    );
    let hpa = cluster.object("hpa", "sextant", NS);
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(hpa["spec"]["maxReplicas"], 6);
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "sextant");
    assert_eq!(
        hpa["spec"]["behavior"]["scaleDown"]["policies"][0]["value"],
        1
    );
    let policy = cluster.object("networkpolicy", "sextant", NS);
    let ingress = policy["spec"]["ingress"].as_array().expect("ingress");
    let ports: Vec<String> = ingress
        .iter()
        .map(|rule| rule["ports"][0]["port"].to_string())
        .collect();
    assert_eq!(ports, ["15010", "15014", "15017"]);
    assert_eq!(
        ingress[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    assert_eq!(
        cluster.get("pdb", "sextant", NS, "{.spec.minAvailable}"),
        "2"
    );

    // Turning both off removes them, and the count comes back.
    let out = cluster.helm(&["upgrade", "sextant", &chart, "-n", NS, "-f", &ha]);
    assert!(out.contains("REVISION: 2"), "{out}");
    let optional = cluster.kubectl(&["get", "hpa,networkpolicy", "-n", NS, "-o", "name"]);
    assert_eq!(optional.trim(), "");
    assert_eq!(
        cluster.get("deploy", "sextant", NS, "{.spec.replicas}"),
        "3"
    );
}

#[test]
fn an_install_with_a_value_of_the_wrong_type_is_refused_and_creates_nothing() {
    let Some(cluster) = Cluster::start("helm-refused") else {
        return;
    };
    let chart = chart();
    for (set, message) in [
        (
            "replicaCount=two",
            "at '/replicaCount': got string, want integer",
        ),
        ("ports.xds=abc", "at '/ports/xds': got string, want integer"),
    ] {
        let out = cluster.helm_fails(&[
            "install",
            "sextant",
            &chart,
            "-n",
            NS,
            "--create-namespace",
            "--set",
            set,
        ]);
        assert!(
            out.contains("values don't meet the specifications of the schema"),
            "{out}"
        );
        assert!(out.contains(message), "{set}: {message} in {out}");
    }
    let made = cluster.kubectl(&["get", "deploy,svc,sa,configmap", "-n", NS, "-o", "name"]);
    assert_eq!(made.trim(), "", "nothing installed");
    let releases = cluster.helm(&["list", "-A", "-q"]);
    assert_eq!(releases.trim(), "");
}
