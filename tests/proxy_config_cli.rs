//! `sextant proxy-config` as a user runs it, on the bundled example mesh.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

const PROXY: &str = "sidecar~127.0.1.1~productpage-v1-0.default~default.svc.cluster.local";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn run(args: &[&str]) -> Output {
    Command::new(sextant_testing::sextant_bin())
        .args(["proxy-config"])
        .args(args)
        .args([
            "--config-dir",
            examples().to_str().expect("utf-8 path"),
            "--proxy",
            PROXY,
        ])
        .output()
        .expect("sextant runs")
}

#[test]
fn table_lists_istio_named_clusters() {
    let out = run(&["clusters"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("SERVICE FQDN"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("reviews.default.svc.cluster.local")
                && l.contains(" v2 ")
                && l.contains("outbound")
                && l.contains("EDS")
                && l.contains("reviews.default")),
        "{text}"
    );
}

#[test]
fn json_uses_envoy_field_names() {
    let out = run(&["routes", "-o", "json"]);
    assert!(out.status.success());
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let vhosts = routes[0]["virtual_hosts"]
        .as_array()
        .expect("virtual_hosts");
    let reviews = vhosts
        .iter()
        .find(|v| v["name"] == "reviews.default.svc.cluster.local:9080")
        .expect("reviews vhost");
    assert_eq!(
        reviews["routes"][0]["route"]["cluster"],
        "outbound|9080|v1|reviews.default.svc.cluster.local"
    );
    assert!(
        reviews["domains"]
            .as_array()
            .expect("domains")
            .iter()
            .any(|d| d == "reviews")
    );
}

#[test]
fn envoy_static_output_is_accepted_by_envoy() {
    let out = run(&[
        "all",
        "-o",
        "envoy-static",
        "--meta",
        "INTERCEPTION_MODE=NONE",
    ]);
    assert!(out.status.success());
    let Some(envoy) = sextant_testing::envoy() else {
        return;
    };
    let file = std::env::temp_dir().join(format!("sextant-pc-{}.yaml", std::process::id()));
    std::fs::write(&file, &out.stdout).expect("write");
    let check = Command::new(envoy)
        .args(["--mode", "validate", "--use-dynamic-base-id", "-c"])
        .arg(&file)
        .output()
        .expect("envoy runs");
    let _ = std::fs::remove_file(&file);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn yaml_carries_what_json_does() {
    let json: serde_json::Value =
        serde_json::from_slice(&run(&["clusters", "-o", "json"]).stdout).expect("JSON");
    let out = run(&["clusters", "-o", "yaml"]);
    assert!(out.status.success());
    let yaml = String::from_utf8_lossy(&out.stdout);
    let docs = sextant_index::manifest::parse_documents(&yaml).expect("YAML");
    assert_eq!(docs[0].value, json);
}
