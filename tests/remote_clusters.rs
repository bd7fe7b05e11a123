//! One control plane for several clusters, registered as Istio registers them: a Secret
//! labelled `istio/multiCluster: "true"` in the config cluster, holding a remote cluster's
//! kubeconfig under its cluster id. Two test API servers (the config cluster A and the remote
//! cluster B), real kubectl, and `sextant serve` watching A: B's Services and EndpointSlices
//! reach the registry while the Secret exists, B going away shows in `/debug/clusterz` and its
//! objects stay through the grace period, and B's tokens (metadata `clusterid: B`) are
//! reviewed by B's API server for certificates and the secure ADS port.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sextant_testing::{
    Process, Serve, free_port, grpc_python, http_get, kubectl, metric, repo, run, try_wait_for,
};

#[path = "kube_cluster.rs"]
mod kube_cluster;
use kube_cluster::Cluster;

const RATINGS: &str = "ratings.default.svc.cluster.local";

/// B's mesh: the `ratings` Service and its EndpointSlice, nowhere else.
const REMOTE_MESH: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: default}\nspec:\n  selector: {app: ratings}\n  ports: [{name: http, port: 9080}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: ratings-b1, namespace: default, labels: {kubernetes.io/service-name: ratings}}\naddressType: IPv4\nports: [{name: http, port: 9080, protocol: TCP}]\nendpoints:\n- addresses: ['10.9.0.1']\n";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sextant-remote-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a")).expect("scratch dir");
    std::fs::create_dir_all(dir.join("b")).expect("scratch dir");
    dir
}

/// The config cluster A with Sextant watching it, and the remote cluster B holding
/// [`REMOTE_MESH`].
struct Mesh {
    dir: PathBuf,
    kubectl: PathBuf,
    a: Cluster,
    b: Cluster,
    b_port: u16,
    serve: Serve,
    _sextant: Process,
}

impl Mesh {
    fn start(name: &str, b_tokens: BTreeMap<String, String>, extra: &[&str]) -> Option<Mesh> {
        let k = kubectl()?;
        let dir = scratch(name);
        let a = Cluster::start(&dir.join("a"), 0);
        // Below the ephemeral range, so that it can be started again on the same port.
        let b_port = free_port();
        let b = Cluster::with_tokens(&dir.join("b"), b_port, b_tokens);
        a.kubectl(&k, &["apply", "-f", repo("crds").to_str().expect("utf-8")]);
        let manifest = dir.join("remote-mesh.yaml");
        std::fs::write(&manifest, REMOTE_MESH).expect("manifest");
        b.kubectl(&k, &["apply", "-f", manifest.to_str().expect("utf-8")]);
        let serve = Serve::new();
        let sextant = a.serve(&serve, &dir.join("sextant.log"), extra);
        let mesh = Mesh {
            dir,
            kubectl: k,
            a,
            b,
            b_port,
            serve,
            _sextant: sextant,
        };
        Some(mesh)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sextant.log")).unwrap_or_default()
    }

    /// Registers B in A: a Secret holding B's kubeconfig under key `B`.
    fn register_b(&self) {
        let kubeconfig = std::fs::read_to_string(self.b.kubeconfig()).expect("B's kubeconfig");
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "remote-b", "namespace": "default",
                         "labels": {"istio/multiCluster": "true"}},
            "stringData": {"B": kubeconfig},
        });
        let path = self.dir.join("remote-b.json");
        std::fs::write(&path, secret.to_string()).expect("secret");
        self.a.kubectl(
            &self.kubectl,
            &["apply", "-f", path.to_str().expect("utf-8")],
        );
    }

    /// The endpoints `/debug/registryz` lists for `host`; `None` when it lists no such host.
    fn endpoints(&self, host: &str) -> Option<Vec<String>> {
        let body = http_get(self.serve.admin_addr(), "/debug/registryz")?;
        let services: Value = serde_json::from_str(&body).ok()?;
        let service = services
            .as_array()?
            .iter()
            .find(|s| s["hostname"] == host)?;
        Some(
            service["endpoints"]
                .as_array()?
                .iter()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect(),
        )
    }

    /// Cluster `id` as `/debug/clusterz` shows it.
    fn cluster(&self, id: &str) -> Option<Value> {
        let body = http_get(self.serve.admin_addr(), "/debug/clusterz")?;
        let clusters: Value = serde_json::from_str(&body).ok()?;
        clusters
            .as_array()?
            .iter()
            .find(|c| c["cluster"] == id)
            .cloned()
    }

    fn wait_for<T>(&self, what: &str, deadline: Duration, f: impl FnMut() -> Option<T>) -> T {
        try_wait_for(what, deadline, f)
            .unwrap_or_else(|e| panic!("{e}\nsextant's log:\n{}", self.log()))
    }

    fn wait_until_b_synced(&self) {
        self.wait_for(
            "B synced in /debug/clusterz",
            Duration::from_secs(30),
            || self.cluster("B").filter(|c| c["state"] == "synced"),
        );
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_remote_cluster_secret_adds_that_clusters_services_until_it_is_deleted() {
    let Some(mesh) = Mesh::start("secret", BTreeMap::new(), &[]) else {
        return;
    };
    // Only the config cluster until the Secret comes.
    assert_eq!(mesh.endpoints(RATINGS), None);
    let clusters = http_get(mesh.serve.admin_addr(), "/debug/clusterz").expect("clusterz");
    let clusters: Value = serde_json::from_str(&clusters).expect("JSON");
    assert_eq!(clusters[0]["cluster"], "Kubernetes", "{clusters}");
    assert_eq!(clusters[0]["config_cluster"], true, "{clusters}");
    mesh.register_b();
    let endpoints = mesh.wait_for(
        "B's ratings in the registry",
        Duration::from_secs(30),
        || mesh.endpoints(RATINGS).filter(|e| !e.is_empty()),
    );
    assert_eq!(endpoints, ["10.9.0.1"]);
    mesh.wait_until_b_synced();
    let b = mesh.cluster("B").expect("B");
    assert_eq!(b["origin"], "Secret default/remote-b key B", "{b}");
    assert!(b["objects"].as_u64().unwrap_or(0) >= 2, "{b}");
    assert_eq!(
        metric(
            mesh.serve.admin_addr(),
            r#"sextant_remote_cluster_state{cluster="B",state="synced"}"#
        ),
        Some(1.0)
    );
    // Deleting the Secret stops B's watches and forgets its objects at once.
    mesh.a
        .kubectl(&mesh.kubectl, &["delete", "secret", "remote-b"]);
    mesh.wait_for("B's ratings gone", Duration::from_secs(30), || {
        mesh.endpoints(RATINGS).is_none().then_some(())
    });
    assert_eq!(mesh.cluster("B"), None);
}

#[test]
fn an_unreachable_remote_cluster_is_failing_and_keeps_its_objects_through_the_grace_period() {
    let grace = Duration::from_secs(6);
    let Some(mut mesh) = Mesh::start(
        "grace",
        BTreeMap::new(),
        &["--remote-grace-period-seconds", "6"],
    ) else {
        return;
    };
    mesh.register_b();
    mesh.wait_until_b_synced();
    mesh.wait_for(
        "B's ratings in the registry",
        Duration::from_secs(30),
        || mesh.endpoints(RATINGS).filter(|e| !e.is_empty()),
    );
    mesh.b.stop();
    let failing = mesh.wait_for("B failing", Duration::from_secs(30), || {
        mesh.cluster("B").filter(|c| c["state"] == "failing")
    });
    let since = Instant::now();
    // Naming B's API server, and that it could not be reached.
    let server = format!("API server http://127.0.0.1:{} unreachable: ", mesh.b_port);
    assert!(
        failing["error"]
            .as_str()
            .is_some_and(|e| e.starts_with(&server) && !e.contains("initial")),
        "{failing}"
    );
    assert!(failing["failing_since"].is_number(), "{failing}");
    // Through the grace period its objects are served as last seen.
    assert_eq!(
        mesh.endpoints(RATINGS).as_deref(),
        Some(&["10.9.0.1".to_owned()][..])
    );
    assert_eq!(
        metric(
            mesh.serve.admin_addr(),
            r#"sextant_remote_cluster_state{cluster="B",state="failing"}"#
        ),
        Some(1.0)
    );
    // After it they go (the default, --remote-stale-endpoints=remove).
    mesh.wait_for(
        "B's ratings removed after the grace period",
        Duration::from_secs(40),
        || mesh.endpoints(RATINGS).is_none().then_some(()),
    );
    assert!(
        since.elapsed() + Duration::from_secs(1) >= grace,
        "removed after {:?}",
        since.elapsed()
    );
    let b = mesh.cluster("B").expect("B is still registered");
    assert_eq!(b["stale_objects"], "removed after the grace period", "{b}");
    assert_eq!(b["objects"], 0, "{b}");
    // B answers again: its relist brings its objects back.
    mesh.b = Cluster::start(&mesh.dir.join("b"), mesh.b_port);
    mesh.wait_for("B's ratings back", Duration::from_secs(60), || {
        mesh.endpoints(RATINGS).filter(|e| !e.is_empty())
    });
    mesh.wait_until_b_synced();
}

#[test]
fn in_directory_mode_a_remote_kubeconfig_file_adds_that_clusters_services() {
    let Some(k) = kubectl() else { return };
    let dir = scratch("dir");
    let b = Cluster::start(&dir.join("b"), 0);
    let manifest = dir.join("remote-mesh.yaml");
    std::fs::write(&manifest, REMOTE_MESH).expect("manifest");
    b.kubectl(&k, &["apply", "-f", manifest.to_str().expect("utf-8")]);
    std::fs::create_dir_all(dir.join("config")).expect("config dir");
    let serve = Serve::new();
    let remote = format!("B={}", b.kubeconfig().display());
    let _sextant = serve.start_dir(
        &dir.join("config"),
        &dir.join("sextant.log"),
        &["--remote-kubeconfig", &remote],
    );
    let registry = || {
        let body = http_get(serve.admin_addr(), "/debug/registryz")?;
        body.contains(RATINGS).then_some(body)
    };
    let body = try_wait_for(
        "B's ratings in the registry",
        Duration::from_secs(30),
        registry,
    )
    .unwrap_or_else(|e| {
        let log = std::fs::read_to_string(dir.join("sextant.log")).unwrap_or_default();
        panic!("{e}\nsextant's log:\n{log}")
    });
    assert!(body.contains("10.9.0.1"), "{body}");
    let clusters = http_get(serve.admin_addr(), "/debug/clusterz").expect("clusterz");
    assert!(clusters.contains("kubeconfig file"), "{clusters}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One CreateCertificate call through the Python client built from Istio's `ca.proto`: its
/// JSON answer.
fn create_certificate(python: &Path, port: u16, root: &Path, args: &[&str]) -> Value {
    let out = run(Command::new(python)
        .arg(repo("tests/fixtures/istio_ca_client.py"))
        .args(["--address", &format!("127.0.0.1:{port}")])
        .args(["--root", root.to_str().expect("utf-8")])
        .args(["--proto-dir", repo("proto").to_str().expect("utf-8")])
        .args(args));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The first clusters response on the secure ADS port for `node`, with `token` and
/// metadata `clusterid: cluster` if any.
async fn secure_clusters(
    root_pem: &str,
    port: u16,
    node: &str,
    token: &str,
    cluster: Option<&str>,
) -> Result<(), tonic::Status> {
    use envoy_types::pb::envoy::{
        config::core::v3::Node,
        service::discovery::v3::{
            DiscoveryRequest, aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        },
    };
    let channel = sextant_testing::SecureClient {
        root_pem: root_pem.to_owned(),
        identity: None,
        token: None,
    }
    .connect(port)
    .await?;
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().expect("metadata");
    let cluster: Option<tonic::metadata::MetadataValue<_>> =
        cluster.map(|c| c.parse().expect("metadata"));
    let mut client = AggregatedDiscoveryServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            if let Some(c) = &cluster {
                request.metadata_mut().insert("clusterid", c.clone());
            }
            Ok(request)
        },
    );
    let request = DiscoveryRequest {
        node: Some(Node {
            id: node.to_owned(),
            ..Default::default()
        }),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".to_owned(),
        ..Default::default()
    };
    let mut responses = client
        .stream_aggregated_resources(tokio_stream::iter([request]))
        .await?
        .into_inner();
    match responses.message().await? {
        Some(_) => Ok(()),
        None => Err(tonic::Status::unknown(
            "the stream ended without a response",
        )),
    }
}

#[test]
fn a_remote_clusters_token_naming_its_cluster_gets_a_certificate_and_configuration() {
    let python = grpc_python();
    let tokens = BTreeMap::from([(
        "ratings-token".to_owned(),
        "system:serviceaccount:default:ratings".to_owned(),
    )]);
    let Some(mesh) = Mesh::start("token", tokens, &[]) else {
        return;
    };
    let Some(python) = python else { return };
    mesh.register_b();
    mesh.wait_until_b_synced();
    let root_pem = mesh.a.sextant_root(&mesh.kubectl);
    let root = mesh.dir.join("root.pem");
    std::fs::write(&root, &root_pem).expect("root");
    let port = mesh.serve.secure_xds;
    let san = "spiffe://cluster.local/ns/default/sa/ratings";
    let signed = create_certificate(
        &python,
        port,
        &root,
        &[
            "--san",
            san,
            "--token",
            "ratings-token",
            "--cluster-id",
            "B",
        ],
    );
    assert_eq!(signed["code"], "OK", "{signed}\n{}", mesh.log());
    // The one trust domain, whichever cluster vouched for the workload.
    let leaf = signed["chain"][0].as_str().expect("a leaf");
    assert!(!leaf.is_empty());
    // Without its cluster the token is the config cluster's, which does not know it.
    let local = create_certificate(
        &python,
        port,
        &root,
        &["--san", san, "--token", "ratings-token"],
    );
    assert_eq!(local["code"], "UNAUTHENTICATED", "{local}");
    let unknown = create_certificate(
        &python,
        port,
        &root,
        &[
            "--san",
            san,
            "--token",
            "ratings-token",
            "--cluster-id",
            "C",
        ],
    );
    assert_eq!(unknown["code"], "UNAUTHENTICATED", "{unknown}");
    assert!(
        unknown["message"]
            .as_str()
            .is_some_and(|m| m.contains("client claims to be in cluster \"C\"")),
        "{unknown}"
    );
    // The secure ADS port shares the authenticator.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let node = "sidecar~10.9.0.1~ratings-0.default~default.svc.cluster.local";
    runtime.block_on(async {
        secure_clusters(&root_pem, port, node, "ratings-token", Some("B"))
            .await
            .expect("B's token with clusterid B opens the secure ADS port");
        let refused = secure_clusters(&root_pem, port, node, "ratings-token", None)
            .await
            .expect_err("the config cluster does not know B's token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    });
}

/// An API server under an attacker's control: the Service list is one Service whose
/// annotation streams up to `HOSTILE_BYTES`, every other list is empty and every watch is
/// silent. Returns its address and the bytes of the annotation it managed to send.
fn hostile_api_server() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::{
        io::{Read, Write},
        sync::{Arc, atomic::AtomicU64, atomic::Ordering},
    };
    const HOSTILE_BYTES: u64 = 3000 << 20;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sent = Arc::new(AtomicU64::new(0));
    let counted = sent.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let sent = counted.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    // One request head (these requests have no body).
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    if path.contains("watch=true") {
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n");
                        // Silent until the client hangs up.
                        while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                        return;
                    }
                    if path.starts_with("/api/v1/services") {
                        let start = r#"{"apiVersion":"v1","kind":"ServiceList","metadata":{"resourceVersion":"1"},"items":[{"metadata":{"name":"big","namespace":"default","annotations":{"a":""#;
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n");
                        let _ = write!(conn, "{:x}\r\n{start}\r\n", start.len());
                        let chunk = vec![b'x'; 1 << 20];
                        while sent.load(Ordering::Relaxed) < HOSTILE_BYTES {
                            let framed =
                                [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"]
                                    .concat();
                            if conn.write_all(&framed).is_err() {
                                return;
                            }
                            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        }
                        return;
                    }
                    let body = r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":"1"},"items":[]}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, sent)
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn a_remote_api_server_streaming_an_endless_list_is_cut_while_proxies_are_served() {
    use std::sync::atomic::Ordering;
    if !Path::new("/proc/self/status").exists() {
        return;
    }
    let dir = scratch("hostile");
    let (addr, sent) = hostile_api_server();
    let kubeconfig = dir.join("b.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: b\n  cluster: {{server: 'http://{addr}'}}\ncontexts:\n- name: b\n  context: {{cluster: b, user: b}}\ncurrent-context: b\nusers:\n- name: b\n  user: {{token: abc}}\n"),
    )
    .expect("kubeconfig");
    std::fs::create_dir_all(dir.join("config")).expect("config dir");
    let serve = Serve::new();
    let remote = format!("B={}", kubeconfig.display());
    let log = dir.join("sextant.log");
    let sextant = serve.start_dir(&dir.join("config"), &log, &["--remote-kubeconfig", &remote]);
    let pid = sextant.0.id();
    let mut peak = 0;
    let cluster_b = || {
        let body = http_get(serve.admin_addr(), "/debug/clusterz")?;
        let clusters: Value = serde_json::from_str(&body).ok()?;
        clusters
            .as_array()?
            .iter()
            .find(|c| c["cluster"] == "B")
            .cloned()
    };
    // Two cuts at least: the watch retried after its backoff and was cut again.
    let b = try_wait_for(
        "B's Service list cut twice",
        Duration::from_secs(60),
        || {
            peak = peak.max(rss(pid));
            cluster_b().filter(|b| b["errors"].as_u64().unwrap_or(0) >= 2)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nsextant's log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let error = b["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&format!("API server http://{addr}: listing services: "))
            && error.contains("--max-list-bytes"),
        "{b}"
    );
    assert_eq!(b["state"], "failing", "{b}");
    // The default bound (128 MiB per response) and what reading it costs, well short of the
    // 3000 MiB the server would send.
    assert!(
        peak < 700 << 20,
        "resident memory reached {} MiB",
        peak >> 20
    );
    assert!(
        sent.load(Ordering::Relaxed) < 1500 << 20,
        "the server sent {} MiB",
        sent.load(Ordering::Relaxed) >> 20
    );
    // Proxies are served meanwhile.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let channel =
            sextant_testing::ads_client::envoy_endpoint(format!("http://127.0.0.1:{}", serve.xds))
                .expect("endpoint")
                .connect()
                .await
                .expect("xDS connects");
        sextant_testing::first_clusters(
            channel,
            "sidecar~10.0.0.1~a.default~default.svc.cluster.local",
            None,
        )
        .await
        .expect("a proxy gets its clusters");
    });
    let objects = cluster_b().map(|b| b["objects"].clone());
    assert_eq!(objects, Some(json!(0)));
    let _ = std::fs::remove_dir_all(&dir);
}
