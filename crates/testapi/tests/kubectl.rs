//! Real kubectl 1.35 against the test API server: CRDs, Istio's bookinfo manifests unchanged,
//! strict validation without `--validate=false`, printer columns, patches, and objects that
//! survive a restart of the server with a data directory.

use std::path::PathBuf;

use sextant_testing::{kubectl, repo};

fn samples(path: &str) -> PathBuf {
    repo("tests/fixtures/istio/samples/bookinfo").join(path)
}

#[path = "support/api.rs"]
mod api;
use api::{Api, temp_dir};

#[test]
fn kubectl_applies_istio_manifests_unchanged_and_objects_survive_a_restart() {
    let Some(k) = kubectl() else { return };
    let dir = temp_dir("testapi-kubectl");
    let api = Api::start(&dir);
    let crds = repo("crds");
    let out = api.ok(&k, &["apply", "-f", crds.to_str().expect("path")]);
    assert!(
        out.contains("virtualservices.networking.istio.io created"),
        "{out}"
    );
    let resources = api.ok(&k, &["api-resources", "--api-group=networking.istio.io"]);
    assert!(
        resources.contains("virtualservices") && resources.contains("vs"),
        "{resources}"
    );

    // Bookinfo: Services, ServiceAccounts, Deployments (built-in kinds), then Istio's
    // networking samples, all with kubectl's default strict validation.
    let bookinfo = samples("platform/kube/bookinfo.yaml");
    api.ok(&k, &["apply", "-f", bookinfo.to_str().expect("path")]);
    for f in [
        "networking/virtual-service-all-v1.yaml",
        "networking/destination-rule-all.yaml",
    ] {
        api.ok(&k, &["apply", "-f", samples(f).to_str().expect("path")]);
    }
    let table = api.ok(&k, &["get", "vs"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "GATEWAYS", "HOSTS", "AGE"], "{table}");
    assert!(table.contains("[\"reviews\"]"), "{table}");
    // A change: the object's generation counts it.
    api.ok(
        &k,
        &[
            "apply",
            "-f",
            samples("networking/virtual-service-reviews-50-v3.yaml")
                .to_str()
                .expect("path"),
        ],
    );
    let generation = api.ok(
        &k,
        &[
            "get",
            "vs",
            "reviews",
            "-o",
            "jsonpath={.metadata.generation}",
        ],
    );
    assert_eq!(generation, "2");
    // Services get a cluster IP, as from a real API server.
    let ip = api.ok(
        &k,
        &["get", "svc", "reviews", "-o", "jsonpath={.spec.clusterIP}"],
    );
    assert!(ip.starts_with("10.96."), "{ip}");
    // Re-applying is a no-op; a strategic merge patch merges ports by port.
    let again = api.ok(&k, &["apply", "-f", bookinfo.to_str().expect("path")]);
    assert!(again.contains("service/reviews unchanged"), "{again}");
    api.ok(
        &k,
        &[
            "patch",
            "svc",
            "reviews",
            "-p",
            r#"{"spec":{"ports":[{"port":9080,"targetPort":9999}]}}"#,
        ],
    );
    let ports = api.ok(
        &k,
        &[
            "get",
            "svc",
            "reviews",
            "-o",
            "jsonpath={.spec.ports[*].targetPort}",
        ],
    );
    assert_eq!(ports, "9999");

    // A VirtualService the CRD schema rejects: kubectl prints every field error.
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n      weight: fifty\n    bogus: 1\n",
    )
    .expect("write");
    let out = api.kubectl(&k, &["apply", "-f", bad.to_str().expect("path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("The VirtualService \"bad\" is invalid"),
        "{stderr}"
    );
    assert!(stderr.contains("spec.http[0].route[0].weight"), "{stderr}");
    assert!(stderr.contains("spec.http[0].bogus"), "{stderr}");

    // Built-in kinds are checked strictly too: an unknown field is refused.
    let svc = dir.join("svc.yaml");
    std::fs::write(
        &svc,
        "apiVersion: v1\nkind: Service\nmetadata: {name: odd}\nspec:\n  ports: [{port: 80, portz: 81}]\n",
    )
    .expect("write");
    let out = api.kubectl(&k, &["apply", "-f", svc.to_str().expect("path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("spec.ports[0].portz"), "{stderr}");

    // A restart with the same data directory keeps every object.
    let kubeconfig = api.kubeconfig.clone();
    drop(api);
    let api = Api::start(&dir);
    assert_eq!(api.kubeconfig, kubeconfig);
    let names = api.ok(
        &k,
        &["get", "vs", "-o", "jsonpath={.items[*].metadata.name}"],
    );
    assert_eq!(names, "details productpage ratings reviews");
    let generation = api.ok(
        &k,
        &[
            "get",
            "vs",
            "reviews",
            "-o",
            "jsonpath={.metadata.generation}",
        ],
    );
    assert_eq!(generation, "2");
    // Deleting the CRD deletes its objects.
    api.ok(
        &k,
        &["delete", "crd", "virtualservices.networking.istio.io"],
    );
    let out = api.kubectl(&k, &["get", "vs"]);
    assert!(!out.status.success());
    drop(api);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What multi-cluster tests do with kubectl: Nodes with topology labels, and a token for a
/// ServiceAccount (`kubectl create token`) that this server's TokenReview accepts.
#[test]
fn kubectl_applies_nodes_and_creates_tokens_that_token_review_accepts() {
    let Some(k) = kubectl() else { return };
    let dir = temp_dir("testapi-kubectl-nodes");
    let api = Api::start(&dir);
    let nodes = dir.join("nodes.yaml");
    std::fs::write(
        &nodes,
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n  labels:\n    topology.kubernetes.io/region: us-east1\n    topology.kubernetes.io/zone: us-east1-b\n---\napiVersion: v1\nkind: Node\nmetadata:\n  name: node-b\n  labels:\n    topology.kubernetes.io/region: us-west1\n    topology.kubernetes.io/zone: us-west1-a\n",
    )
    .expect("write");
    let out = api.ok(&k, &["apply", "-f", nodes.to_str().expect("path")]);
    assert!(out.contains("node/node-a created"), "{out}");
    let east = api.ok(
        &k,
        &[
            "get",
            "nodes",
            "-l",
            "topology.kubernetes.io/region=us-east1",
            "-o",
            "name",
        ],
    );
    assert_eq!(east.trim(), "node/node-a");
    let again = api.ok(&k, &["apply", "-f", nodes.to_str().expect("path")]);
    assert!(again.contains("node/node-a unchanged"), "{again}");

    api.ok(&k, &["create", "namespace", "istio-system"]);
    api.ok(
        &k,
        &["create", "serviceaccount", "reader", "-n", "istio-system"],
    );
    let token = api.ok(
        &k,
        &[
            "create",
            "token",
            "reader",
            "-n",
            "istio-system",
            "--duration=24h",
            "--audience=istio-ca",
        ],
    );
    let review = dir.join("review.json");
    std::fs::write(
        &review,
        format!(
            r#"{{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {{"token": "{}", "audiences": ["istio-ca"]}}}}"#,
            token.trim()
        ),
    )
    .expect("write");
    // `--raw`: kubectl validates typed creates against OpenAPI v2 for kinds without a PATCH
    // path, which this server does not serve.
    let reviewed = api.ok(
        &k,
        &[
            "create",
            "--raw",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            "-f",
            review.to_str().expect("path"),
        ],
    );
    let reviewed: serde_json::Value = serde_json::from_str(&reviewed).expect("JSON");
    assert_eq!(
        reviewed["status"]["user"]["username"], "system:serviceaccount:istio-system:reader",
        "{reviewed}"
    );
    // The token says what it was asked for: 24 hours, for istio-ca.
    let claims = token.trim().split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims)
            .expect("base64"),
    )
    .expect("JSON");
    assert_eq!(claims["aud"], serde_json::json!(["istio-ca"]));
    let lifetime = claims["exp"].as_u64().unwrap_or(0) - claims["iat"].as_u64().unwrap_or(0);
    assert_eq!(lifetime, 24 * 3600, "{claims}");
}
