//! `sextant validate` as a user runs it: exit codes, compiler-style lines, JSON output.

use std::{
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
};

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/validate")
        .join(name)
        .display()
        .to_string()
}

fn sextant(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sextant runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("sextant finishes")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn valid_input_exits_zero_with_reference_warnings_and_notes() {
    let out = sextant(&["validate", "-f", &fixture("mesh.yaml")], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let file = fixture("mesh.yaml");
    assert!(
        text.contains(&format!(
            "{file}:37: warning: VirtualService default/reviews: spec.http[0].route[1].destination.subset: [IST0101] Referenced host+subset in destinationrule not found: \"reviews+v3\""
        )),
        "{text}"
    );
    assert!(
        text.contains(": note: skipping Deployment (apps/v1)"),
        "{text}"
    );
}

#[test]
fn warnings_fail_only_with_strict() {
    let out = sextant(&["validate", "--strict", "-f", &fixture("mesh.yaml")], None);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn invalid_input_exits_one_and_points_at_each_field() {
    let out = sextant(&["validate", "-f", &fixture("invalid.yaml")], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let file = fixture("invalid.yaml");
    assert!(
        text.contains(&format!(
            "{file}:13: error: VirtualService prod/reviews: spec.http[0].route[0].weight: weight -5 < 0"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{file}:17: error: VirtualService prod/reviews: spec.http[0].timeout:"
        )),
        "{text}"
    );
}

#[test]
fn json_output_lists_diagnostics_for_tools() {
    let out = sextant(
        &["validate", "-o", "json", "-f", &fixture("invalid.yaml")],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let diags = report["diagnostics"].as_array().expect("diagnostics");
    assert!(
        diags
            .iter()
            .any(|d| d["field"] == "spec.http[0].route[0].weight"
                && d["severity"] == "error"
                && d["line"] == 13
                && d["object"] == "VirtualService prod/reviews")
    );
    assert_eq!(report["checked"], 1);
}

#[test]
fn stdin_and_directories_are_read() {
    let text = std::fs::read_to_string(fixture("invalid.yaml")).expect("fixture");
    let out = sextant(&["validate", "-f", "-"], Some(&text));
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("<stdin>:13: error:"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/validate");
    let out = sextant(&["validate", "-f", &dir.display().to_string()], None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the directory holds invalid.yaml"
    );
}

#[test]
fn unreadable_input_and_bad_usage_exit_two() {
    let out = sextant(&["validate", "-f", "/nonexistent/file.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file.yaml"));
    let out = sextant(&["validate"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = sextant(&["validate", "-o", "xml", "-f", "x"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn malformed_yaml_is_an_error_with_its_line() {
    let out = sextant(&["validate", "-f", "-"], Some("a: 1\nb: [unclosed\n"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("<stdin>:"), "{}", stdout(&out));
}

#[test]
fn peer_authentications_are_validated_with_their_field_paths() {
    let input = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: ok, namespace: default}\nspec: {mtls: {mode: STRICT}}\n---\napiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: bad, namespace: default}\nspec:\n  portLevelMtls:\n    \"70000\": {mode: DISABLE}\n---\napiVersion: security.istio.io/v1alpha1\nkind: PeerAuthentication\nmetadata: {name: old}\nspec: {}\n";
    let out = sextant(&["validate", "-f", "-"], Some(input));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("error: PeerAuthentication default/bad: spec: Invalid value: portLevelMtls requires selector"),
        "{text}"
    );
    assert!(
        text.contains("PeerAuthentication default/bad: spec.portLevelMtls: Invalid value: port must be between 1-65535"),
        "{text}"
    );
    assert!(
        text.contains("PeerAuthentication is not served at security.istio.io/v1alpha1; use security.istio.io/v1 or v1beta1"),
        "{text}"
    );
    assert!(!text.contains("default/ok"), "{text}");
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(["proxy-config", "all", "-o", "json", "--config-dir"])
        .arg(&examples)
        .args([
            "--proxy",
            "sidecar~127.0.1.1~productpage-v1-0.default~default.svc.cluster.local",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sextant runs");
    // Close the pipe before it writes, as `| head -c 0` does (it compiles first).
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("sextant finishes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

fn istio_sample(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/istio")
        .join(path)
        .display()
        .to_string()
}

#[test]
fn istios_bookinfo_gateway_validates_cleanly() {
    let file = istio_sample("samples/bookinfo/networking/bookinfo-gateway.yaml");
    let out = sextant(&["validate", "--strict", "-f", &file], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.is_empty(), "{text}");
}

#[test]
fn gateways_are_validated_and_their_references_analysed() {
    let input = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: front, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bad, namespace: edge}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [reviews]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: edge}
spec:
  hosts: [shop.example.com, other.example.com]
  gateways: [front, edge/missing]
  http:
  - route: [{destination: {host: shop}}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: edge, labels: {app: client}}
---
apiVersion: v1
kind: Secret
metadata: {name: shop-cert, namespace: edge}
data: {tls.crt: Q0VSVA==, tls.key: \"%%%\"}
";
    let out = sextant(&["validate", "-f", "-"], Some(input));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for expected in [
        "<stdin>:17: error: Gateway edge/bad: spec.servers[0].hosts[0]: short names (non FQDN) are not allowed",
        "<stdin>:24: warning: VirtualService edge/shop: spec.gateways[1]: [IST0101] Referenced gateway not found: \"edge/missing\"",
        "<stdin>:23: warning: VirtualService edge/shop: spec.hosts: [IST0132] one or more host [other.example.com] defined in VirtualService edge/shop not found in Gateway edge/front.",
        "<stdin>:5: warning: Gateway edge/front: spec.selector: [IST0101] Referenced selector not found: \"istio=ingressgateway\"",
        "<stdin>:35: error: Secret edge/shop-cert: data[tls.key]: the value of key \"tls.key\" is not valid base64",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(!text.contains("%%%"), "{text}");
}

#[test]
fn sidecars_are_validated_and_analysed_against_each_other_and_pods() {
    let input = "\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: prod}
spec:
  egress:
  - hosts: [\"./*\"]
---
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata: {name: second, namespace: prod}
spec:
  egress:
  - hosts: [\"istio-system/*\"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ratings, namespace: prod}
spec:
  workloadSelector: {labels: {app: ratings}}
  egress:
  - hosts: [\"./*\"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ratings-v1, namespace: prod}
spec:
  workloadSelector: {labels: {version: v1}}
  egress:
  - hosts: [\"./*\"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: nobody, namespace: prod}
spec:
  workloadSelector: {labels: {app: nobody}}
  egress:
  - hosts: [\"./*\"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: bad, namespace: prod}
spec:
  workloadSelector: {labels: {app: x}}
  egress:
  - hosts: [reviews]
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-1, namespace: prod, labels: {app: ratings, version: v1}}
";
    let out = sextant(&["validate", "-f", "-"], Some(input));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for expected in [
        "<stdin>:1: warning: Sidecar prod/default: [IST0111] The Sidecars [default second] in namespace \"prod\" have no workload selector, which can lead to undefined behavior.",
        "<stdin>:8: warning: Sidecar prod/second: [IST0111] The Sidecars [default second] in namespace \"prod\" have no workload selector, which can lead to undefined behavior.",
        "<stdin>:19: warning: Sidecar prod/ratings: spec.workloadSelector: [IST0110] The Sidecars [ratings ratings-v1] in namespace \"prod\" select the same workload pod \"ratings-1\", which can lead to undefined behavior.",
        "<stdin>:35: warning: Sidecar prod/nobody: spec.workloadSelector: [IST0101] Referenced selector not found: \"app=nobody\"",
        "<stdin>:45: error: Sidecar prod/bad: spec.egress[0].hosts[0]: host must be of form namespace/dnsName",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn service_entries_get_istios_analysis_codes() {
    let out = sextant(&["validate", "-f", &fixture("service-entries.yaml")], None);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains(
            "service-entries.yaml:7: warning: ServiceEntry default/a: spec.ports[0]: [IST0134] ServiceEntry addresses are required for this protocol."
        ),
        "{text}"
    );
    assert_eq!(
        text.matches("[IST0177] Multiple ServiceEntries (default/a, default/b) define the same host \"db.example.com\" and port 5432 with conflicting protocols (HTTP, TCP).")
            .count(),
        2,
        "{text}"
    );
}
