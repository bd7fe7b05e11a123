//! CPU-heavy work never stalls `sextant serve`: while a hostile AdmissionReview validates, a
//! large directory reloads or config dumps are built, `/ready` and `/live` answer and a new
//! proxy is configured; each budget refuses clearly and is counted in
//! `sextant_xds_bounded_total`. The time bounds here only separate "stalled" (tens of seconds
//! before) from "served"; figures are in docs/BENCHMARKS.md.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use sextant_testing::{Process, Serve, first_clusters, metric, request, wait_for};

/// Longer than any answer of a server that is not stalled, even a debug build on a busy machine.
const SERVED: Duration = Duration::from_secs(1);

/// `sextant serve` on `config_dir` with the CA in `ca` and `args`.
struct Server {
    serve: Serve,
    _sextant: Process,
    root: String,
}

impl Server {
    fn start(config_dir: &Path, ca: &Path, args: &[&str]) -> Server {
        sextant_testing::run(
            std::process::Command::new(sextant_testing::sextant_bin()).args([
                "ca",
                "init",
                "--dir",
                ca.to_str().expect("utf-8"),
            ]),
        );
        let serve = Serve::new();
        let sextant = Process(
            serve
                .command(&sextant_testing::sextant_bin())
                .args(["--config-dir", config_dir.to_str().expect("utf-8")])
                .args(["--ca-dir", ca.to_str().expect("utf-8")])
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sextant serve starts"),
        );
        serve.wait_ready(Duration::from_secs(60)).expect("ready");
        let root = std::fs::read_to_string(ca.join("ca.crt")).expect("the CA's root");
        Server {
            serve,
            _sextant: sextant,
            root,
        }
    }

    fn admin(&self) -> std::net::SocketAddr {
        self.serve.admin_addr()
    }

    fn bounded(&self, bound: &str) -> f64 {
        let name = format!("sextant_xds_bounded_total{{bound=\"{bound}\"}}");
        metric(self.admin(), &name).unwrap_or(0.0)
    }

    /// `/path` answers 200 within [`SERVED`].
    fn answers(&self, path: &str) {
        let started = Instant::now();
        let answer = request(self.admin(), "localhost", path, &[]);
        let took = started.elapsed();
        assert_eq!(answer.map(|a| a.0), Some(200), "{path} answered");
        assert!(took < SERVED, "{path} took {took:?}");
    }

    /// A new proxy gets its clusters within two seconds.
    fn configures(&self, node: &str) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let xds = self.serve.xds;
        let served = runtime.block_on(async move {
            tokio::time::timeout(Duration::from_secs(2), async move {
                let channel =
                    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{xds}"))
                        .expect("endpoint")
                        .connect()
                        .await
                        .expect("connects");
                first_clusters(channel, node, None).await
            })
            .await
        });
        let first = served.expect("configured within 2 s").expect("served");
        assert!(!first.resources.is_empty());
    }

    /// POSTs `body` to the webhook over TLS: the status line and body of the answer.
    fn review(&self, body: &[u8]) -> String {
        use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.root.as_bytes()).expect("root PEM"))
            .expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
        let tls = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let tcp = TcpStream::connect(("127.0.0.1", self.serve.webhook)).expect("connects");
        tcp.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut stream = rustls::StreamOwned::new(tls, tcp);
        let head = format!(
            "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        // A refused body may be cut off before it is all written.
        let _ = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body));
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    }
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sextant-stalls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn examples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

/// An AdmissionReview of a VirtualService with 3,000 regex matches, each costly to compile.
fn heavy_review() -> Vec<u8> {
    let matches: Vec<serde_json::Value> = (0..3000)
        .map(|i| {
            serde_json::json!({"uri": {"regex": format!("^/(\\w{{1,12}}\\d{{1,4}})/item-{i}/[\\p{{L}}]{{1,8}}/(alpha|beta|gamma)$")}})
        })
        .collect();
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u1", "operation": "CREATE", "object": {
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "heavy", "namespace": "default"},
            "spec": {"hosts": ["heavy"], "http": [
                {"match": matches, "route": [{"destination": {"host": "heavy"}}]}]}}}});
    serde_json::to_vec(&review).expect("json")
}

#[test]
fn heavy_admission_reviews_stall_neither_probes_nor_new_streams() {
    let server = Server::start(&examples(), &temp("webhook-ca"), &[]);
    let heavy = Arc::new(heavy_review());
    assert!(heavy.len() > 200_000, "{}", heavy.len());
    let server = Arc::new(server);
    // More at once than the webhook validates, each more than its time budget.
    let reviews: Vec<_> = (0..3)
        .map(|_| {
            let (server, heavy) = (server.clone(), heavy.clone());
            std::thread::spawn(move || server.review(&heavy))
        })
        .collect();
    let probing = Instant::now();
    let mut node = 0;
    while probing.elapsed() < Duration::from_secs(3) {
        server.answers("/ready");
        server.answers("/live");
        node += 1;
        server.configures(&format!(
            "sidecar~127.4.{}.{}~productpage-{node}.default~default.svc.cluster.local",
            node / 200,
            node % 200 + 1
        ));
    }
    let answers: Vec<String> = reviews
        .into_iter()
        .map(|r| r.join().expect("review"))
        .collect();
    for answer in &answers {
        assert!(
            answer.contains("--webhook-timeout-ms") || answer.contains("--webhook-concurrency"),
            "{answer}"
        );
        assert!(!answer.contains("\"allowed\":true"), "{answer}");
    }
    assert!(server.bounded("webhook_time") >= 1.0);
    assert_eq!(
        server.bounded("webhook_time") + server.bounded("webhook_concurrency"),
        3.0
    );
    // Past the size budget: refused before validation, naming the flag.
    let big = vec![b' '; 4 << 20];
    let answer = server.review(&big);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("--webhook-max-bytes"), "{answer}");
    assert_eq!(server.bounded("webhook_bytes"), 1.0);
}

/// Writes `shape`'s mesh into `dir/mesh.yaml`, one JSON document per object.
fn write_mesh(dir: &Path, shape: &sextant_synthetic::Shape) {
    let mut text = String::new();
    for object in sextant_synthetic::manifests(shape) {
        text.push_str("---\n");
        text.push_str(&object.to_string());
        text.push('\n');
    }
    let partial = dir.join("mesh.yaml.partial");
    std::fs::write(&partial, text).expect("mesh written");
    std::fs::rename(partial, dir.join("mesh.yaml")).expect("mesh in place");
}

/// A mesh big enough that reading and indexing it takes seconds in a debug build.
const BIG: sextant_synthetic::Shape = sextant_synthetic::Shape {
    services: 3_000,
    namespaces: 30,
    endpoints_per_service: 5,
    virtual_services: 300,
    destination_rules: 300,
    sidecar_imports: None,
};

#[test]
fn a_big_directory_reload_keeps_probes_answering() {
    let dir = temp("reload");
    for file in std::fs::read_dir(examples()).expect("examples") {
        let file = file.expect("an example").path();
        let name = file.file_name().expect("a file name");
        std::fs::copy(&file, dir.join(name)).expect("copied");
    }
    let server = Server::start(&dir, &temp("reload-ca"), &[]);
    let admin = server.admin();
    write_mesh(&dir, &BIG);
    let reloading = Instant::now();
    let mut probes = 0;
    // Until the big mesh is served: more services than one page of registryz (writing the
    // file may publish first without it, so the snapshot count alone does not say).
    let big_mesh_served = || {
        request(admin, "localhost", "/debug/registryz", &[])
            .is_some_and(|r| r.2.contains("x-sextant-next-start"))
    };
    while !big_mesh_served() {
        assert!(
            reloading.elapsed() < Duration::from_secs(60),
            "the big mesh was never published"
        );
        server.answers("/live");
        server.answers("/ready");
        probes += 1;
    }
    assert!(probes > 0);
}

/// Resident memory of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

#[test]
fn config_dumps_are_streamed_bounded_and_counted() {
    let dir = temp("dump");
    write_mesh(&dir, &BIG);
    let server = Server::start(&dir, &temp("dump-ca"), &["--max-debug-dumps", "2"]);
    let admin = server.admin();
    let pid = server._sextant.0.id();
    let path = format!(
        "/debug/config_dump?proxy={}",
        sextant_synthetic::sidecar(&BIG, 0, 0).id
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dump = || {
        runtime.block_on(sextant_testing::http::send(
            admin,
            http::Method::GET,
            &path,
            "",
            Vec::new(),
        ))
    };
    // The first dump compiles the scope (seconds in a debug build); memory is measured after.
    let first = dump().expect("a dump");
    assert_eq!(first.0, 200);
    assert!(serde_json::from_slice::<serde_json::Value>(&first.1).is_ok());
    let before = rss(pid);
    runtime.block_on(async {
        // Two dumps whose readers are slow hold both turns; a third is refused.
        let held = [
            sextant_testing::http::open(admin, http::Method::GET, &path, "", Vec::new()).await,
            sextant_testing::http::open(admin, http::Method::GET, &path, "", Vec::new()).await,
        ];
        for h in &held {
            assert_eq!(h.as_ref().expect("a dump").status(), 200);
        }
        let refused = sextant_testing::http::send(admin, http::Method::GET, &path, "", Vec::new())
            .await
            .expect("an answer");
        assert_eq!(refused.0, 429);
        assert!(String::from_utf8_lossy(&refused.1).contains("--max-debug-dumps"));
        drop(held);
    });
    assert_eq!(server.bounded("debug_dumps"), 1.0);
    // Dumps one after another reuse their memory.
    for _ in 0..3 {
        wait_for("a dump turn", Duration::from_secs(30), || {
            dump().ok().filter(|r| r.0 == 200)
        });
    }
    let grown = rss(pid).saturating_sub(before);
    assert!(grown < 64 << 20, "dumps grew RSS by {grown} bytes");
    server.answers("/ready");
}

#[test]
fn the_scope_cache_is_capped_and_evictions_counted() {
    let server = Server::start(&examples(), &temp("scopes-ca"), &["--max-scopes", "3"]);
    let admin = server.admin();
    for i in 0..10 {
        server.configures(&format!(
            "sidecar~127.0.5.{i}~p-{i}.ns-{i}~ns-{i}.svc.cluster.local"
        ));
    }
    assert_eq!(metric(admin, "sextant_scope_cache_entries"), Some(3.0));
    assert_eq!(server.bounded("scope_cache"), 7.0);
    // An evicted scope is compiled again for its next proxy.
    server.configures("sidecar~127.0.5.20~p-0.ns-0~ns-0.svc.cluster.local");
    assert_eq!(metric(admin, "sextant_scope_cache_entries"), Some(3.0));
}
