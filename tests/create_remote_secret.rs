//! `sextant create-remote-secret` as a user runs it: against a test API server standing for
//! the remote cluster, it prepares a ServiceAccount with read access and prints a Secret whose
//! kubeconfig carries that account's token; the token authenticates against the remote
//! cluster, and kubectl applies the Secret to another test API server standing for the
//! control plane's cluster.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};
use sextant_testing::kubectl;

#[path = "kube_cluster.rs"]
mod kube_cluster;
use kube_cluster::Cluster;

const NAMESPACE: &str = "istio-system";
const ACCOUNT: &str = "sextant-reader-service-account";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sextant-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn create_remote_secret(name: &str, kubeconfig: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(sextant_testing::sextant_bin());
    c.args(["create-remote-secret", "--name", name, "--kubeconfig"])
        .arg(kubeconfig)
        .args(extra)
        // The command's own kubeconfig must not come from the environment.
        .env_remove("KUBECONFIG");
    c
}

/// What one run printed: the Secret and, inside it, the remote cluster's kubeconfig.
struct Printed {
    text: String,
    secret: Value,
    kubeconfig: Value,
}

impl Printed {
    fn of(text: String) -> Printed {
        let docs = sextant_index::manifest::parse_documents(&text)
            .unwrap_or_else(|e| panic!("the output is YAML: {e}\n{text}"));
        let [doc] = docs.as_slice() else {
            panic!("one document:\n{text}")
        };
        let secret = doc.value.clone();
        let inner = secret["stringData"]["west"]
            .as_str()
            .unwrap_or_else(|| panic!("stringData.west:\n{text}"));
        let kubeconfig = sextant_index::manifest::parse_documents(inner)
            .expect("the kubeconfig is YAML")
            .remove(0)
            .value;
        Printed {
            text,
            secret,
            kubeconfig,
        }
    }

    fn token(&self) -> &str {
        self.kubeconfig["users"][0]["user"]["token"]
            .as_str()
            .expect("a token")
    }

    /// The kubeconfig, written where kubectl can use it.
    fn write_kubeconfig(&self, path: &Path) {
        std::fs::write(path, self.kubeconfig.to_string()).expect("write the kubeconfig");
    }
}

fn run_against(remote: &Cluster, extra: &[&str]) -> Printed {
    Printed::of(sextant_testing::run(&mut create_remote_secret(
        "west",
        &remote.kubeconfig(),
        extra,
    )))
}

/// A TokenReview of `token` on `cluster`, through kubectl: the review's status.
fn review(cluster: &Cluster, kubectl: &Path, dir: &Path, token: &str) -> Value {
    let body = dir.join("review.json");
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                        "spec": {"token": token}});
    std::fs::write(&body, review.to_string()).expect("write");
    let out = cluster.kubectl(
        kubectl,
        &[
            "create",
            "--raw",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            "-f",
            body.to_str().expect("utf-8"),
        ],
    );
    serde_json::from_str::<Value>(&out).expect("a TokenReview")["status"].clone()
}

#[test]
fn the_printed_secret_is_labelled_for_the_control_plane_and_kubectl_applies_it() {
    let Some(k) = kubectl() else { return };
    let dir = temp_dir("remote-secret-apply");
    let remote = Cluster::start(&dir.join("remote"), 0);
    let printed = run_against(&remote, &[]);

    let secret = &printed.secret;
    assert_eq!(secret["kind"], "Secret", "{}", printed.text);
    assert_eq!(secret["metadata"]["name"], "istio-remote-secret-west");
    assert_eq!(secret["metadata"]["namespace"], NAMESPACE);
    assert_eq!(secret["metadata"]["labels"]["istio/multiCluster"], "true");
    assert_eq!(
        secret["metadata"]["annotations"]["networking.istio.io/cluster"],
        "west"
    );
    let kubeconfig = &printed.kubeconfig;
    assert_eq!(
        kubeconfig["clusters"][0]["cluster"]["server"],
        format!("http://{}", remote.addr)
    );
    assert_eq!(kubeconfig["current-context"], "west");
    assert_eq!(kubeconfig["contexts"][0]["context"]["user"], "west");

    // Into the control plane's cluster, as its README says.
    let primary = Cluster::start(&dir.join("primary"), 0);
    primary.kubectl(&k, &["create", "namespace", NAMESPACE]);
    let file = dir.join("secret.yaml");
    std::fs::write(&file, &printed.text).expect("write");
    let applied = primary.kubectl(&k, &["apply", "-f", file.to_str().expect("utf-8")]);
    assert!(
        applied.contains("secret/istio-remote-secret-west created"),
        "{applied}"
    );
    let found = primary.kubectl(
        &k,
        &[
            "get",
            "secrets",
            "-n",
            NAMESPACE,
            "-l",
            "istio/multiCluster=true",
            "-o",
            "json",
        ],
    );
    let found: Value = serde_json::from_str(&found).expect("JSON");
    let stored = &found["items"][0];
    assert_eq!(stored["metadata"]["name"], "istio-remote-secret-west");
    // stringData is stored as data, base64.
    let data = stored["data"]["west"].as_str().expect("data.west");
    let decoded =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data).expect("base64");
    let stored_kubeconfig =
        sextant_index::manifest::parse_documents(std::str::from_utf8(&decoded).expect("utf-8"))
            .expect("YAML")
            .remove(0)
            .value;
    assert_eq!(&stored_kubeconfig, kubeconfig);
}

#[test]
fn the_token_in_the_secret_authenticates_as_the_reader_service_account() {
    let Some(k) = kubectl() else { return };
    let dir = temp_dir("remote-secret-token");
    let remote = Cluster::start(&dir.join("remote"), 0);
    let printed = run_against(&remote, &["--token-seconds", "7200"]);

    let status = review(&remote, &k, &dir, printed.token());
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(
        status["user"]["username"],
        format!("system:serviceaccount:{NAMESPACE}:{ACCOUNT}")
    );
    let claims = printed.token().split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims)
            .expect("base64"),
    )
    .expect("JSON");
    assert_eq!(
        claims["exp"].as_u64().unwrap_or(0) - claims["iat"].as_u64().unwrap_or(0),
        7200
    );

    // kubectl with the printed kubeconfig lists the remote cluster's services.
    let kubeconfig = dir.join("west.kubeconfig");
    printed.write_kubeconfig(&kubeconfig);
    let services = sextant_testing::run(
        Command::new(&k)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", &dir)
            .args(["get", "services", "-A", "-o", "name"]),
    );
    assert_eq!(services.trim(), "", "no services yet");

    // What it may read, as the remote cluster holds it.
    let role = remote.kubectl(
        &k,
        &[
            "get",
            "clusterrole",
            &format!("sextant-reader-{NAMESPACE}"),
            "-o",
            "json",
        ],
    );
    let role: Value = serde_json::from_str(&role).expect("JSON");
    let core = &role["rules"][0];
    assert_eq!(core["apiGroups"], json!([""]));
    for resource in ["services", "endpoints", "pods", "namespaces", "nodes"] {
        assert!(
            core["resources"]
                .as_array()
                .is_some_and(|r| r.contains(&json!(resource))),
            "{role}"
        );
    }
    let binding = remote.kubectl(
        &k,
        &[
            "get",
            "clusterrolebinding",
            &format!("sextant-reader-{NAMESPACE}"),
            "-o",
            "jsonpath={.subjects[0].namespace}/{.subjects[0].name}",
        ],
    );
    assert_eq!(binding, format!("{NAMESPACE}/{ACCOUNT}"));
}

#[test]
fn running_again_keeps_what_exists_and_issues_another_valid_token() {
    let Some(k) = kubectl() else { return };
    let dir = temp_dir("remote-secret-again");
    let remote = Cluster::start(&dir.join("remote"), 0);
    let first = run_against(&remote, &[]);
    let uid = || {
        remote.kubectl(
            &k,
            &[
                "get",
                "serviceaccount",
                ACCOUNT,
                "-n",
                NAMESPACE,
                "-o",
                "jsonpath={.metadata.uid}",
            ],
        )
    };
    let before = uid();
    let out = create_remote_secret("west", &remote.kubeconfig(), &[])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "ServiceAccount {NAMESPACE}/{ACCOUNT} exists; left as it is"
        )),
        "{stderr}"
    );
    assert_eq!(uid(), before, "the ServiceAccount was not replaced");
    let second = Printed::of(String::from_utf8_lossy(&out.stdout).into_owned());
    for printed in [&first, &second] {
        assert_eq!(
            review(&remote, &k, &dir, printed.token())["authenticated"],
            true
        );
    }
}

#[test]
fn an_unreachable_api_server_is_named_in_the_error() {
    let dir = temp_dir("remote-secret-unreachable");
    // A port nothing listens on.
    let port = sextant_testing::free_port();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        sextant_testapi::kubeconfig(&format!("http://127.0.0.1:{port}")),
    )
    .expect("write");
    let stderr = sextant_testing::run_fails(&mut create_remote_secret("west", &kubeconfig, &[]));
    assert!(
        stderr.contains(&format!(
            "cannot reach the API server at http://127.0.0.1:{port}"
        )),
        "{stderr}"
    );

    let stderr =
        sextant_testing::run_fails(&mut create_remote_secret("Not_A_Name", &kubeconfig, &[]));
    assert!(stderr.contains("--name \"Not_A_Name\""), "{stderr}");
}
