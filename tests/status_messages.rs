//! The analysis in the status Sextant writes: a VirtualService routing to a subset that no
//! DestinationRule defines gets Istio's IST0101 in `status.validationMessages`, and loses it
//! when a DestinationRule defines the subset. kubectl applies the objects to the test API
//! server, `sextant serve` (the one replica, so the Lease holder) watches it.

use std::time::Duration;

use serde_json::{Value, json};
use sextant_testing::{Serve, kubectl, repo, wait_for};

#[path = "kube_cluster.rs"]
mod kube_cluster;
use kube_cluster::Cluster;

const ROUTE_TO_V9: &str = r#"apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v9}}]
"#;

const RULE_WITH_V9: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v9, labels: {version: v9}}]
"#;

#[test]
fn a_missing_subset_shows_in_the_status_until_a_rule_defines_it() {
    let Some(k) = kubectl() else { return };
    let dir = std::env::temp_dir().join(format!("sextant-status-msgs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cluster = Cluster::start(&dir, 0);
    cluster.kubectl(&k, &["apply", "-f", repo("crds").to_str().expect("utf-8")]);
    let apply = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        cluster.kubectl(&k, &["apply", "-f", path.to_str().expect("utf-8")]);
    };
    apply("route.yaml", ROUTE_TO_V9);
    let serve = Serve::new();
    let _sextant = cluster.serve(&serve, &dir.join("sextant.log"), &[]);
    let status = || {
        let text = cluster.kubectl(&k, &["get", "vs", "reviews", "-o", "json"]);
        let object: Value = serde_json::from_str(&text).expect("JSON");
        object["status"].clone()
    };

    let written = wait_for("IST0101 in the status", Duration::from_secs(30), || {
        let status = status();
        (status["validationMessages"]
            .as_array()
            .is_some_and(|m| !m.is_empty()))
        .then_some(status)
    });
    assert_eq!(
        written["validationMessages"],
        json!([{
            "type": {"code": "IST0101", "name": "ReferencedResourceNotFound"},
            "level": "ERROR",
            "documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0101/",
            "description": "Referenced host+subset in destinationrule not found: \"reviews+v9\"",
        }])
    );
    // Accepted all the same: the analysis says what is wrong around it, not with it.
    assert_eq!(written["conditions"][0]["status"], "True");

    apply("rule.yaml", RULE_WITH_V9);
    wait_for("the message gone", Duration::from_secs(30), || {
        let status = status();
        (status["validationMessages"] == json!([])).then_some(())
    });
    assert_eq!(status()["conditions"][0]["status"], "True");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the analysis costs the Lease holder per published snapshot (it runs once per
/// snapshot, `sextant_index::analysis::by_object`), at W-M, W-M-S and W-L; a measurement, not
/// a check of speed: run with
/// `cargo test --release -p sextant-tests --test status_messages -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn analysis_cost_per_snapshot_at_w_m() {
    use sextant_synthetic::{W_L, W_M, W_M_S};
    for (name, shape) in [("W-M", W_M), ("W-M-S", W_M_S), ("W-L", W_L)] {
        let (snapshot, _) = sextant_synthetic::index(&shape).publish();
        // The synthetic mesh is consistent: its routes name subsets its rules define.
        assert!(
            sextant_index::analysis::by_object(&snapshot).is_empty(),
            "{name}"
        );
        let rounds = 50;
        let mut times: Vec<Duration> = (0..rounds)
            .map(|_| {
                let start = std::time::Instant::now();
                let found = sextant_index::analysis::by_object(&snapshot);
                let took = start.elapsed();
                std::hint::black_box(found);
                took
            })
            .collect();
        times.sort();
        println!(
            "{name}: {} services, {} Pods, {} VirtualServices, {} DestinationRules, {} Sidecars: analysis per snapshot median {:?}, p90 {:?}, max {:?} ({rounds} rounds)",
            snapshot.services.len(),
            snapshot.workloads.len(),
            snapshot.virtual_services.len(),
            snapshot.destination_rules.len(),
            snapshot.sidecars.len(),
            times[rounds / 2],
            times[rounds * 9 / 10],
            times[rounds - 1],
        );
    }
}
