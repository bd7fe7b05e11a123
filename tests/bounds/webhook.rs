//! Bounds of the webhook port (15017), each attacked over real TLS connections while a real
//! AdmissionReview is answered: request heads and bodies that stop arriving, bodies held one
//! byte short of their end, and peers flooding `/inject` with the reviews that used to cost
//! seconds each.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sextant_testing::{metric, wait_for};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::client::TlsStream;

use super::Attacked;

fn bounded(bound: &str) -> String {
    format!(r#"sextant_xds_bounded_total{{bound="{bound}"}}"#)
}

/// `sextant serve` with a CA of the test's own (so that its webhook certificate can be
/// trusted) and `args`.
struct Webhook {
    server: Attacked,
    root: String,
    dir: PathBuf,
}

impl Webhook {
    fn start(name: &str, args: &[&str]) -> Webhook {
        let dir =
            std::env::temp_dir().join(format!("sextant-bounds-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = dir.join("ca");
        sextant_testing::run(
            std::process::Command::new(sextant_testing::sextant_bin())
                .args(["ca", "init", "--dir"])
                .arg(&ca),
        );
        let ca_dir = ca.to_str().expect("utf-8").to_owned();
        let mut all = vec!["--ca-dir", &ca_dir];
        all.extend_from_slice(args);
        let server = Attacked::start(&all, Stdio::null());
        let root = std::fs::read_to_string(ca.join("ca.crt")).expect("the CA's root");
        Webhook { server, root, dir }
    }

    fn count(&self, bound: &str) -> f64 {
        metric(self.server.serve.admin_addr(), &bounded(bound)).unwrap_or(0.0)
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.server.runtime.block_on(f)
    }

    /// A TLS connection to the webhook port.
    async fn connect(&self) -> TlsStream<TcpStream> {
        connect(self.server.serve.webhook, &self.root).await
    }

    /// A real review answered now, within `within`: its status and body.
    fn answers(&self, path: &str, review: &[u8], within: Duration) -> (u16, Value) {
        let started = Instant::now();
        let (status, body) = self.block_on(async {
            tokio::time::timeout(
                within,
                exchange(self.server.serve.webhook, &self.root, path, review),
            )
            .await
            .unwrap_or_else(|_| panic!("{path} answered within {within:?}"))
        });
        let took = started.elapsed();
        assert_eq!(status, 200, "{path} after {took:?}: {body}");
        (
            status,
            serde_json::from_str(&body).expect("an AdmissionReview"),
        )
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS connection to the webhook on `port`, trusting `root_pem`.
pub(super) async fn connect(port: u16, root_pem: &str) -> TlsStream<TcpStream> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root_pem.as_bytes()).expect("root PEM"))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake")
}

/// The head of a POST to `path` announcing `length` bytes.
fn head(path: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
}

/// POSTs `body` to `path` on a connection of its own: the status and body of the answer.
async fn exchange(port: u16, root: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut tls = connect(port, root).await;
    tls.write_all(head(path, body.len()).as_bytes())
        .await
        .expect("sent");
    // A refused body may be cut off before it is all written.
    let _ = tls.write_all(body).await;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// What the server said on `c` before closing it (empty if it closed without a word), or
/// `None` if it is still open after `wait`.
async fn closed_with(c: &mut TlsStream<TcpStream>, wait: Duration) -> Option<String> {
    let mut said = Vec::new();
    match tokio::time::timeout(wait, c.read_to_end(&mut said)).await {
        Ok(_) => Some(String::from_utf8_lossy(&said).into_owned()),
        Err(_) => None,
    }
}

fn review(object: Value) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "real-1", "operation": "CREATE", "namespace": "default",
                    "object": object}}),
    )
    .expect("JSON")
}

/// A VirtualService review, as the API server sends it to `/validate`.
fn validation() -> Vec<u8> {
    review(
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}}]}]}}),
    )
}

/// A Pod's review with `annotations`, as the API server sends it to `/inject`.
fn pod(annotations: Value) -> Vec<u8> {
    review(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "app-", "namespace": "default", "labels": {"app": "app"},
                     "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}]}]}}))
}

/// The review is answered as it should be: allowed, and for a Pod with the sidecar.
fn assert_allowed(answer: &Value) {
    assert_eq!(answer["response"]["uid"], "real-1", "{answer}");
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
}

#[test]
fn request_heads_that_stop_arriving_are_cut_at_the_header_deadline() {
    let webhook = Webhook::start("heads", &["--webhook-header-timeout-ms", "1000"]);
    let (mut stalled, mut idle) = webhook.block_on(async {
        let mut stalled = Vec::new();
        for _ in 0..40 {
            let mut c = webhook.connect().await;
            c.write_all(b"POST /inject HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("sent");
            c.flush().await.expect("flushed");
            stalled.push(c);
        }
        let mut idle = Vec::new();
        for _ in 0..10 {
            idle.push(webhook.connect().await);
        }
        (stalled, idle)
    });
    let (_, answer) = webhook.answers("/validate", &validation(), Duration::from_secs(5));
    assert_allowed(&answer);
    let cut = webhook.block_on(async {
        let mut cut = 0;
        for c in stalled.iter_mut().chain(idle.iter_mut()) {
            if closed_with(c, Duration::from_secs(5)).await.is_some() {
                cut += 1;
            }
        }
        cut
    });
    assert_eq!(cut, 50, "every stalled and idle connection closed");
    // Only the heads that stopped arriving are refusals; idle connections just close.
    wait_for("stalled heads counted", Duration::from_secs(5), || {
        (webhook.count("webhook_header_deadline") == 40.0).then_some(())
    });
}

#[test]
fn bodies_that_stop_arriving_get_408_at_their_deadline() {
    // 1 MiB must arrive within 1 s plus 1 s; room for all of them in flight.
    let webhook = Webhook::start(
        "bodies",
        &[
            "--webhook-body-grace-ms",
            "1000",
            "--webhook-min-body-bytes-per-second",
            "1048576",
            "--webhook-max-bytes-in-flight",
            "67108864",
        ],
    );
    let (mut stalled, started) = webhook.block_on(async {
        let mut stalled = Vec::new();
        for _ in 0..20 {
            let mut c = webhook.connect().await;
            c.write_all(format!("{}{{", head("/inject", 1 << 20)).as_bytes())
                .await
                .expect("sent");
            c.flush().await.expect("flushed");
            stalled.push(c);
        }
        (stalled, Instant::now())
    });
    let (_, answer) = webhook.answers("/inject", &pod(json!({})), Duration::from_secs(5));
    assert_allowed(&answer);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let said = webhook.block_on(async {
        let mut said = Vec::new();
        for c in &mut stalled {
            said.push(
                closed_with(c, Duration::from_secs(10))
                    .await
                    .unwrap_or_default(),
            );
        }
        said
    });
    let took = started.elapsed();
    for answer in &said {
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("--webhook-body-grace-ms"), "{answer}");
    }
    assert!(took < Duration::from_secs(6), "cut after {took:?}");
    assert_eq!(webhook.count("webhook_body_deadline"), 20.0);
}

/// Resident memory of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

#[test]
fn bodies_held_one_byte_short_make_room_for_real_reviews() {
    // Four bodies of 1 MiB in flight; a deadline too far to matter here.
    let webhook = Webhook::start(
        "in-flight",
        &[
            "--webhook-max-bytes",
            "1048576",
            "--webhook-max-bytes-in-flight",
            "4194304",
            "--webhook-body-grace-ms",
            "60000",
        ],
    );
    let pid = webhook.server.sextant.0.id();
    let before = rss(pid);
    let chunk = vec![b' '; (1 << 20) - 1];
    let mut held = webhook.block_on(async {
        let mut held = Vec::new();
        for _ in 0..100 {
            let mut c = webhook.connect().await;
            c.write_all(head("/inject", 1 << 20).as_bytes())
                .await
                .expect("sent");
            // All of the body but its last byte (a connection closed may refuse some).
            let _ = c.write_all(&chunk).await;
            let _ = c.flush().await;
            held.push(c);
        }
        held
    });
    wait_for(
        "the oldest cut for newer ones",
        Duration::from_secs(10),
        || (webhook.count("webhook_bytes_in_flight") >= 96.0).then_some(()),
    );
    // Held whole, the bodies alone are 100 MiB. Bounded, four of them are held, with the
    // buffers of the connections (those cut linger up to 2 s, reading what their peer still
    // sends) and what the allocator keeps of the bodies cut: about 30 MiB.
    let grown = rss(pid).saturating_sub(before);
    assert!(grown < 64 << 20, "sextant grew by {} MiB", grown >> 20);
    let (_, answer) = webhook.answers("/inject", &pod(json!({})), Duration::from_secs(5));
    assert_allowed(&answer);
    let (_, answer) = webhook.answers("/validate", &validation(), Duration::from_secs(5));
    assert_allowed(&answer);
    // The real reviews took the places of the oldest held: 98 cut, each told why.
    let said = webhook.block_on(async {
        let mut said = Vec::new();
        for c in &mut held {
            said.extend(closed_with(c, Duration::from_millis(200)).await);
        }
        said
    });
    assert!(said.len() >= 96, "{} closed", said.len());
    for answer in &said {
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("--webhook-max-bytes-in-flight"), "{answer}");
    }
}

/// The filed attack: 80,000 proxyMetadata entries, 2.4 MB, which took 8.9 s to inject.
fn flood() -> Vec<u8> {
    let metadata: serde_json::Map<String, Value> = (0..80_000)
        .map(|i| (format!("ISTIO_META_K{i}"), json!("v")))
        .collect();
    pod(json!({"proxy.istio.io/config": json!({"proxyMetadata": metadata}).to_string()}))
}

/// The costliest injection within the bounds: 256 entries filling the annotations' 256 KiB.
fn heaviest() -> Vec<u8> {
    let value = "m".repeat(960);
    let metadata: serde_json::Map<String, Value> =
        (0..256).map(|i| (format!("K{i}"), json!(value))).collect();
    pod(json!({"proxy.istio.io/config": json!({"proxyMetadata": metadata}).to_string()}))
}

#[test]
fn three_peers_flooding_inject_starve_neither_inject_nor_validate() {
    let webhook = Arc::new(Webhook::start("flood", &[]));
    let (flood, heaviest) = (Arc::new(flood()), Arc::new(heaviest()));
    assert!(flood.len() > 2_000_000, "{}", flood.len());
    let until = Instant::now() + Duration::from_secs(8);
    let peers: Vec<_> = (0..3)
        .map(|peer| {
            let (port, root) = (webhook.server.serve.webhook, webhook.root.clone());
            let (flood, heaviest) = (flood.clone(), heaviest.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let mut answers = Vec::new();
                while Instant::now() < until {
                    let body = if (answers.len() + peer) % 2 == 0 {
                        &flood
                    } else {
                        &heaviest
                    };
                    answers.push(runtime.block_on(exchange(port, &root, "/inject", body)));
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut slowest = Duration::ZERO;
    let mut answered = 0;
    while Instant::now() + Duration::from_secs(1) < until {
        for (path, body) in [("/inject", pod(json!({}))), ("/validate", validation())] {
            let started = Instant::now();
            // Within the API server's patience, and far within the 8.9 s one flood took.
            let (_, answer) = webhook.answers(path, &body, Duration::from_secs(3));
            assert_allowed(&answer);
            slowest = slowest.max(started.elapsed());
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(answered >= 10, "{answered} answered");
    assert!(
        slowest < Duration::from_millis(1500),
        "the slowest took {slowest:?}"
    );
    let mut refused = 0;
    for peer in peers {
        for (status, body) in peer.join().expect("peer") {
            assert_eq!(status, 200, "{body}");
            if body.contains("the API server allows") {
                refused += 1;
            }
        }
    }
    assert!(refused >= 3, "{refused} floods refused");
}
