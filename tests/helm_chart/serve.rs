//! The chart's Deployment, run unchanged: `sextant serve` with the flags and environment the
//! chart renders, against the objects the chart installed (its RBAC-named webhook
//! configurations, its mesh config), becomes ready and keeps the webhooks' caBundles.

use std::time::Duration;

use serde_json::Value;
use sextant_testing::{Process, Serve, sextant_bin, wait_for};

use super::{Cluster, chart};

const NS: &str = "istio-system";

/// Flags Serve sets itself (127.0.0.1 and free ports, as several tests run at once).
const PORT_FLAGS: &[&str] = &[
    "--xds-port=",
    "--secure-xds-port=",
    "--admin-port=",
    "--webhook-port=",
];

#[test]
fn sextant_runs_with_what_the_chart_installs() {
    let Some(cluster) = Cluster::start("helm-serve") else {
        return;
    };
    let chart = chart();
    cluster.helm(&[
        "install",
        "sextant",
        &chart,
        "-n",
        NS,
        "--create-namespace",
        "--set",
        "meshConfig.accessLogFile=/dev/stdout",
        "--set",
        "meshConfig.defaultConfig.terminationDrainDuration=10s",
    ]);
    let deployment = cluster.object("deploy", "sextant", NS);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("a flag"))
        .collect();
    assert_eq!(args[0], "serve");
    let flags: Vec<&str> = args[1..]
        .iter()
        .copied()
        .filter(|a| !PORT_FLAGS.iter().any(|p| a.starts_with(p)))
        .collect();
    let env: Vec<&Value> = container["env"].as_array().expect("env").iter().collect();
    assert_eq!(
        env[1]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );

    let serve = Serve::new();
    let log = cluster.scratch.0.join("sextant.log");
    let _sextant = Process(
        serve
            .command(&sextant_bin())
            .args(&flags)
            .env("KUBECONFIG", cluster.scratch.kubeconfig())
            .env("POD_NAME", "sextant-0")
            .env("POD_NAMESPACE", NS)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("sextant serve starts"),
    );
    let shown_log = || std::fs::read_to_string(&log).unwrap_or_default();
    if let Err(e) = serve.wait_ready(Duration::from_secs(30)) {
        panic!("{e}\nsextant's log:\n{}", shown_log());
    }
    // The Lease holder fills in the caBundle of both webhook configurations the chart made,
    // by the names the chart passes and grants.
    for (kind, name) in [
        ("validatingwebhookconfiguration", "sextant-validator"),
        ("mutatingwebhookconfiguration", "sextant-sidecar-injector"),
    ] {
        wait_for(
            &format!("the caBundle of {kind} {name}"),
            Duration::from_secs(40),
            || {
                let bundle = cluster.get(kind, name, NS, "{.webhooks[0].clientConfig.caBundle}");
                (bundle.len() > 100).then_some(())
            },
        );
    }
    // An upgrade after the Lease holder wrote the caBundle: helm's apply leaves alone the
    // field another manager owns in each webhook (the API server keys webhooks by name), as
    // against a real API server, and the bundle stays.
    cluster.helm(&[
        "upgrade",
        "sextant",
        &chart,
        "-n",
        NS,
        "--reuse-values",
        "--set",
        "logLevel=debug",
    ]);
    for (kind, name) in [
        ("validatingwebhookconfiguration", "sextant-validator"),
        ("mutatingwebhookconfiguration", "sextant-sidecar-injector"),
    ] {
        wait_for(
            &format!("the caBundle of {kind} {name} after the upgrade"),
            Duration::from_secs(40),
            || {
                let bundle = cluster.get(kind, name, NS, "{.webhooks[0].clientConfig.caBundle}");
                (bundle.len() > 100).then_some(())
            },
        );
    }
    // The chart's mesh config was read without complaint: no field of it is unknown to
    // Sextant, and none is refused.
    let text = shown_log();
    assert!(text.contains("mesh settings at start"), "{text}");
    for complaint in [
        "cannot read the mesh config",
        "starting with the default mesh config",
        "mesh config: ",
    ] {
        assert!(!text.contains(complaint), "{complaint} in\n{text}");
    }
}
