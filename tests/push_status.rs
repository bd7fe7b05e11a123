//! One clock from a user's change to the proxies' ACKs: `sextant serve --config-dir`, a
//! VirtualService in a file of its own edited, and the push followed stage by stage in
//! `/debug/push_status` and `sextant_push_stage_seconds`, with the proxies named: a real Envoy
//! that ACKs, and fake proxies (the in-repo ADS client) one of which never ACKs. The same
//! through the Kubernetes path: `kubectl apply` against the test API server.
//!
//! Only structure and order are asserted (every stage present and non-negative, the ACK after
//! the send, the proxies named where they belong), never how long a stage took.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use envoy_types::pb::envoy::config::core::v3::Node;
use serde_json::Value;
use sextant_testing::{
    Process, Serve,
    ads_client::{AdsClient, Sotw, envoy_endpoint, type_url::ROUTE},
    free_port, http_get, kubectl, repo, syncz, wait_for,
};

#[path = "kube_cluster.rs"]
mod kube_cluster;
use kube_cluster::Cluster;

const WAIT: Duration = Duration::from_secs(30);

/// The Service `reviews` and its endpoints.
const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\nspec:\n  clusterIP: 10.96.77.1\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: reviews-1, namespace: default, labels: {kubernetes.io/service-name: reviews}}\naddressType: IPv4\nports: [{name: http, port: 9080}]\nendpoints:\n- addresses: [127.0.77.1]\n";

/// The VirtualService of `reviews` with route timeout `timeout`.
fn virtual_service(timeout: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews]\n  http:\n  - timeout: {timeout}\n    route: [{{destination: {{host: reviews}}}}]\n"
    )
}

/// Writes `text` to `dir/file` as editors do (write, then rename).
fn write(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join(file)).expect("rename");
}

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh temporary directory for test `name`.
fn temp_dir(name: &str) -> TempDir {
    let dir =
        std::env::temp_dir().join(format!("sextant-push-status-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}

/// `sextant serve` on a directory holding the Service and, in a file of its own, the
/// VirtualService.
struct Mesh {
    dir: PathBuf,
    serve: Serve,
    _sextant: Process,
    /// Last, so that it goes once the processes using it have stopped.
    _root: TempDir,
}

impl Mesh {
    fn start(name: &str) -> Mesh {
        let root = temp_dir(name);
        let dir = root.0.join("config");
        std::fs::create_dir_all(&dir).expect("config dir");
        write(&dir, "mesh.yaml", SERVICE);
        write(&dir, "vs.yaml", &virtual_service("5s"));
        let serve = Serve::new();
        let sextant = serve.start_dir(
            &dir,
            &root.0.join("sextant.log"),
            &["--debounce-after-ms", "20", "--debounce-max-ms", "200"],
        );
        Mesh {
            dir,
            serve,
            _sextant: sextant,
            _root: root,
        }
    }

    /// Edits the VirtualService's file and waits for the version it makes to satisfy `done`.
    fn edit_and_wait(&self, timeout: &str, done: impl Fn(&Value) -> bool) -> Value {
        let admin = self.serve.admin_addr();
        let before = newest(admin);
        write(&self.dir, "vs.yaml", &virtual_service(timeout));
        version_after(admin, before, done)
    }
}

fn push_status(admin: SocketAddr) -> Option<Value> {
    serde_json::from_str(&http_get(admin, "/debug/push_status")?).ok()
}

/// The newest version published.
fn newest(admin: SocketAddr) -> u64 {
    wait_for("a version in /debug/push_status", WAIT, || {
        push_status(admin)?["versions"][0]["version"].as_u64()
    })
}

/// Waits for a version after `before` that satisfies `done`.
fn version_after(admin: SocketAddr, before: u64, done: impl Fn(&Value) -> bool) -> Value {
    wait_for("the edit's version in /debug/push_status", WAIT, || {
        let status = push_status(admin)?;
        let version = status["versions"]
            .as_array()?
            .iter()
            .find(|v| v["version"].as_u64() > Some(before))?
            .clone();
        done(&version).then_some(version)
    })
}

/// `sextant_push_stage_seconds_count` of `stage` (and `type_url`).
fn stage_count(admin: SocketAddr, stage: &str, type_url: &str) -> f64 {
    let metrics = http_get(admin, "/metrics").expect("/metrics");
    let series =
        format!("sextant_push_stage_seconds_count{{stage=\"{stage}\",type_url=\"{type_url}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} in /metrics"))
}

/// Every stage was counted in the metrics: the source's, and the routes' send and ACK.
fn assert_stages_counted(admin: SocketAddr) {
    for stage in ["debounce", "read", "publish"] {
        assert!(stage_count(admin, stage, "") >= 1.0, "{stage}");
    }
    for stage in ["send", "ack", "total"] {
        assert!(stage_count(admin, stage, ROUTE) >= 1.0, "{stage}");
    }
}

fn secs(v: &Value) -> f64 {
    let s = v
        .as_f64()
        .unwrap_or_else(|| panic!("{v} is a number of seconds"));
    assert!(s >= 0.0, "a stage took {s} s");
    s
}

/// The source's stages are there and non-negative; returns their sum (first change to
/// published).
fn source_stages(version: &Value) -> f64 {
    let stages = &version["stages"];
    ["debounce_seconds", "read_seconds", "publish_seconds"]
        .iter()
        .map(|s| secs(&stages[*s]))
        .sum()
}

/// A proxy named among the slowest: its send, then its ACK, add up to its total.
fn assert_named_acked(version: &Value, proxy: &str) {
    let named = version["slowest"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["proxy"] == proxy))
        .unwrap_or_else(|| panic!("{proxy} among the slowest of {version}"));
    let (send, ack, total) = (
        secs(&named["send_seconds"]),
        secs(&named["ack_seconds"]),
        secs(&named["total_seconds"]),
    );
    let parts = source_stages(version) + send + ack;
    assert!((total - parts).abs() < 1e-3, "{named}: {parts} s in parts");
}

/// Routes were sent and ACKed, each stage's quantiles in order.
fn assert_routes_timed(version: &Value) {
    let routes = &version["types"][ROUTE];
    assert!(routes["sent"].as_u64() >= Some(1), "{version}");
    assert!(routes["acked"].as_u64() >= Some(1), "{version}");
    for stage in ["send_seconds", "ack_seconds", "total_seconds"] {
        let q = &routes[stage];
        assert!(
            secs(&q["p50"]) <= secs(&q["p99"]) && secs(&q["p99"]) <= secs(&q["max"]),
            "{stage}: {q}"
        );
    }
    // The total runs from the first change: past every stage before the send.
    assert!(secs(&routes["total_seconds"]["max"]) >= source_stages(version));
}

#[test]
fn a_virtual_service_edit_is_followed_to_envoys_ack_by_stage() {
    let Some(envoy) = sextant_testing::envoy() else {
        return;
    };
    let mesh = Mesh::start("envoy");
    let node = "sidecar~127.0.77.100~productpage-0.default~default.svc.cluster.local";
    let proxy = sextant_testing::Envoy::start(
        &envoy,
        &mesh.dir,
        node,
        mesh.serve.xds,
        "127.0.77.100",
        false,
        77,
    );
    let admin = mesh.serve.admin_addr();
    wait_for("Envoy ACKs its routes", WAIT, || {
        let types = syncz(admin, node)?["types"].clone();
        let routes = &types[ROUTE];
        (!routes["sent_version"].is_null() && routes["acked_version"] == routes["sent_version"])
            .then_some(())
    });

    let version = mesh.edit_and_wait("7s", |v| {
        v["proxies"]["acked"].as_u64() >= Some(1) && !v["stages"].is_null()
    });
    assert_eq!(version["proxies"]["sent"], 1, "{version}");
    assert_eq!(version["proxies"]["pending"], 0, "{version}");
    assert_named_acked(&version, node);
    assert_routes_timed(&version);

    // Envoy's own account agrees: its routes were ACKed after they were sent.
    let routes = syncz(admin, node).expect("Envoy in syncz")["types"][ROUTE].clone();
    assert!(
        secs(&routes["acked_at"]) >= secs(&routes["sent_at"]),
        "{routes}"
    );
    assert_stages_counted(admin);
    drop(proxy);
}

/// A fake proxy `pod` in namespace `default`, fully configured.
async fn fake_proxy(xds: u16, pod: &str, host: u8) -> Sotw {
    let node = Node {
        id: format!("sidecar~127.0.77.{host}~{pod}.default~default.svc.cluster.local"),
        ..Default::default()
    };
    let channel = envoy_endpoint(format!("http://127.0.0.1:{xds}"))
        .expect("an endpoint")
        .connect()
        .await
        .expect("connects");
    let mut stream = AdsClient::new(node)
        .routes(["9080"])
        .sotw(channel)
        .await
        .expect("a stream");
    loop {
        let response = stream.next().await.expect("open").expect("a response");
        if response.configured {
            return stream;
        }
    }
}

#[test]
fn a_proxy_that_does_not_ack_is_named_pending_beside_one_that_did() {
    let mesh = Mesh::start("fake");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let xds = mesh.serve.xds;
    let mut acking = runtime.block_on(fake_proxy(xds, "acking-0", 11));
    // ACKs every response from now on.
    runtime.spawn(async move { while let Some(Ok(_)) = acking.next().await {} });
    // Reads nothing more, so ACKs nothing more.
    let _silent = runtime.block_on(fake_proxy(xds, "silent-0", 12));

    let version = mesh.edit_and_wait("9s", |v| {
        v["proxies"]["acked"].as_u64() >= Some(1) && v["proxies"]["pending"].as_u64() >= Some(1)
    });
    assert_eq!(version["proxies"]["sent"], 2, "{version}");
    assert_named_acked(
        &version,
        "sidecar~127.0.77.11~acking-0.default~default.svc.cluster.local",
    );
    assert_routes_timed(&version);
    let pending = &version["pending"][0];
    assert_eq!(
        pending["proxy"], "sidecar~127.0.77.12~silent-0.default~default.svc.cluster.local",
        "{version}"
    );
    assert_eq!(pending["types"], serde_json::json!([ROUTE]));
    secs(&pending["waiting_seconds"]);
    // The proxies' connections came before: counted on the versions they connected on.
    let status = push_status(mesh.serve.admin_addr()).expect("/debug/push_status");
    let connected: u64 = status["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["proxies"]["connected"].as_u64())
        .sum();
    assert_eq!(connected, 2, "{status}");
    assert_stages_counted(mesh.serve.admin_addr());
}

#[test]
fn a_kubectl_apply_is_followed_to_the_proxys_ack_by_stage() {
    let Some(k) = kubectl() else {
        return;
    };
    let temp = temp_dir("kube");
    let dir = &temp.0;
    let cluster = Cluster::start(dir, free_port());
    cluster.kubectl(&k, &["apply", "-f", repo("crds").to_str().expect("utf-8")]);
    write(dir, "mesh.yaml", SERVICE);
    write(dir, "vs.yaml", &virtual_service("5s"));
    for file in ["mesh.yaml", "vs.yaml"] {
        cluster.kubectl(
            &k,
            &["apply", "-f", dir.join(file).to_str().expect("utf-8")],
        );
    }
    let serve = Serve::new();
    let _sextant = cluster.serve(&serve, &dir.join("sextant.log"), &[]);
    let admin = serve.admin_addr();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let mut proxy = runtime.block_on(fake_proxy(serve.xds, "kube-0", 21));
    runtime.spawn(async move { while let Some(Ok(_)) = proxy.next().await {} });

    let before = newest(admin);
    write(dir, "vs.yaml", &virtual_service("7s"));
    cluster.kubectl(
        &k,
        &["apply", "-f", dir.join("vs.yaml").to_str().expect("utf-8")],
    );
    let version = version_after(admin, before, |v| {
        v["proxies"]["acked"].as_u64() >= Some(1) && !v["stages"].is_null()
    });
    assert_eq!(version["proxies"]["pending"], 0, "{version}");
    assert_named_acked(
        &version,
        "sidecar~127.0.77.21~kube-0.default~default.svc.cluster.local",
    );
    assert_routes_timed(&version);
    assert_stages_counted(admin);
}
