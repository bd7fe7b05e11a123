//! `sextant analyze` against the test API server, the objects applied by real kubectl: the
//! findings in istioctl's words and levels, its exit codes, `-o json` and `-o yaml`,
//! namespaces, and local files analyzed with the cluster's objects.

use std::{path::PathBuf, process::Command};

use sextant_testing::{kubectl, repo};

#[path = "kube_cluster.rs"]
mod kube_cluster;
use kube_cluster::Cluster;

/// `reviews` in `default`, routed to a subset (v9) its DestinationRule does not define, and in
/// `prod` a VirtualService bound to a Gateway that does not offer its host (a warning).
const MESH: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v9}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: prod}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [api.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: prod}
spec:
  hosts: [web.example.com]
  gateways: [edge]
  http:
  - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v1}}]
"#;

const MISSING_SUBSET: &str = "Error [IST0101] (VirtualService default/reviews) Referenced host+subset in destinationrule not found: \"reviews+v9\"";

/// The test API server holding the CRDs and [`MESH`], applied with kubectl.
struct Fixture {
    cluster: Cluster,
    dir: PathBuf,
}

impl Fixture {
    fn start(name: &str) -> Option<Fixture> {
        let k = kubectl()?;
        let dir =
            std::env::temp_dir().join(format!("sextant-analyze-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cluster = Cluster::start(&dir, 0);
        cluster.kubectl(&k, &["apply", "-f", repo("crds").to_str().expect("utf-8")]);
        let mesh = dir.join("mesh.yaml");
        std::fs::write(&mesh, MESH).expect("write");
        cluster.kubectl(&k, &["apply", "-f", mesh.to_str().expect("utf-8")]);
        Some(Fixture { cluster, dir })
    }

    /// `sextant analyze ARGS`: its exit code and standard output.
    fn analyze(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(sextant_testing::sextant_bin())
            .arg("analyze")
            .args(args)
            .env("KUBECONFIG", self.cluster.kubeconfig())
            .env("HOME", &self.dir)
            .output()
            .expect("sextant analyze runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let code = out.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 79,
            "exit {code}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (code, stdout)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cluster.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn analyze_reports_a_missing_subset_as_istioctl_does_and_fails() {
    let Some(f) = Fixture::start("table") else {
        return;
    };
    // The kubeconfig names no namespace: `default` is analyzed.
    let (code, out) = f.analyze(&[]);
    assert_eq!(out, format!("{MISSING_SUBSET}\n"));
    assert_eq!(code, 79);
}

#[test]
fn analyze_shows_every_namespace_with_all_namespaces() {
    let Some(f) = Fixture::start("all") else {
        return;
    };
    let (code, out) = f.analyze(&["-A"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines.contains(&MISSING_SUBSET), "{out}");
    assert!(
        lines.contains(&"Warning [IST0132] (VirtualService prod/web) one or more host [web.example.com] defined in VirtualService prod/web not found in Gateway prod/edge."),
        "{out}"
    );
    assert_eq!(code, 79);
}

#[test]
fn warnings_fail_only_at_a_warning_failure_threshold() {
    let Some(f) = Fixture::start("threshold") else {
        return;
    };
    let (code, out) = f.analyze(&["-n", "prod"]);
    assert!(
        out.starts_with("Warning [IST0132] (VirtualService prod/web)"),
        "{out}"
    );
    assert_eq!(code, 0);
    let (code, _) = f.analyze(&["-n", "prod", "--failure-threshold", "Warning"]);
    assert_eq!(code, 79);
    let (code, out) = f.analyze(&["-n", "prod", "--output-threshold", "Error"]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "✔ No validation issues found when analyzing namespace: prod.\n"
        )
    );
}

#[test]
fn analyze_prints_json_and_yaml() {
    let Some(f) = Fixture::start("formats") else {
        return;
    };
    let (code, out) = f.analyze(&["-o", "json"]);
    assert_eq!(code, 79);
    let value: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        value,
        serde_json::json!([{
            "code": "IST0101",
            "level": "Error",
            "origin": "VirtualService default/reviews",
            "message": "Referenced host+subset in destinationrule not found: \"reviews+v9\"",
            "field": "spec.http[0].route[0].destination.subset",
            "documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0101/",
        }])
    );
    let (_, out) = f.analyze(&["-o", "yaml"]);
    let docs = sextant_index::manifest::parse_documents(&out).expect("YAML");
    assert_eq!(docs.len(), 1, "{out}");
    assert_eq!(docs[0].value, value);
}

#[test]
fn a_local_file_defining_the_subset_replaces_the_clusters_rule() {
    let Some(f) = Fixture::start("files") else {
        return;
    };
    let rule = f.dir.join("rule.yaml");
    std::fs::write(
        &rule,
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets: [{name: v9, labels: {version: v9}}]\n",
    )
    .expect("write");
    let (code, out) = f.analyze(&["-f", rule.to_str().expect("utf-8")]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "✔ No validation issues found when analyzing namespace: default.\n"
        )
    );
}

#[test]
fn a_subset_is_judged_without_any_destination_rule_as_the_status_judges_it() {
    // The cluster's lists are complete: with no DestinationRule at all, a routed subset is
    // defined nowhere (the issue's own example, which the status reports too).
    let Some(f) = Fixture::start("no-rule") else {
        return;
    };
    let k = kubectl().expect("kubectl");
    f.cluster.kubectl(
        &k,
        &["delete", "destinationrule", "reviews", "-n", "default"],
    );
    let (code, out) = f.analyze(&[]);
    assert_eq!(out, format!("{MISSING_SUBSET}\n"));
    assert_eq!(code, 79);
}
