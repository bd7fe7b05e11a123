//! Who the secure xDS port (15012) serves, under abuse: a certificate from Sextant's own CA
//! that names another trust domain is refused, and a flood of made-up bearer tokens neither
//! queues proxies that present a certificate or an already reviewed token, nor reaches the
//! API server more than the bound lets it.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use sextant_testing::{Process, SecureClient, Serve, first_clusters, kubectl, metric, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// A node of `default/productpage`.
const NODE: &str = "sidecar~10.1.0.1~productpage-0.default~default.svc.cluster.local";

fn sextant(args: &[&str]) -> String {
    sextant_testing::run(Command::new(sextant_testing::sextant_bin()).args(args))
}

/// A CA in `dir/ca`; a certificate from it for `trust_domain`/`default`/`productpage` in
/// `dir/name`, as (chain, key).
fn issue(dir: &Path, name: &str, trust_domain: &str) -> (String, String) {
    let out = dir.join(name);
    sextant_testing::issue_certificate(
        &dir.join("ca"),
        &out,
        trust_domain,
        "default",
        "productpage",
    );
    let read = |f: &str| std::fs::read_to_string(out.join(f)).expect("issued file");
    (read("cert-chain.pem"), read("key.pem"))
}

/// A fresh directory with a CA in `ca/`; its root (PEM).
fn with_ca(name: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("sextant-identity-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    sextant(&[
        "ca",
        "init",
        "--dir",
        dir.join("ca").to_str().expect("utf-8"),
    ]);
    let root = std::fs::read_to_string(dir.join("ca/ca.crt")).expect("root");
    (dir, root)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn certificates_naming_another_trust_domain_are_refused() {
    let (dir, root_pem) = with_ca("foreign");
    let good = issue(&dir, "good", "cluster.local");
    let evil = issue(&dir, "evil", "evil.example");
    let serve = Serve::new();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let _sextant = Process(
        serve
            .command(&sextant_testing::sextant_bin())
            .args(["--config-dir", examples])
            .args(["--ca-dir", dir.join("ca").to_str().expect("utf-8")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sextant serve starts"),
    );
    serve.wait_ready(WAIT).expect("ready");
    let client = |identity| SecureClient {
        root_pem: root_pem.clone(),
        identity: Some(identity),
        token: None,
    };
    runtime().block_on(async {
        let refused = client(evil)
            .clusters(serve.secure_xds, NODE)
            .await
            .map(|r| r.resources.len())
            .expect_err("a foreign trust domain");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(
            refused.message().contains(
                "spiffe://evil.example/ns/default/sa/productpage) is outside the trust domain cluster.local"
            ),
            "{refused:?}"
        );
        let served = client(good)
            .clusters(serve.secure_xds, NODE)
            .await
            .expect("the trust domain's own identity is served");
        assert!(!served.resources.is_empty());
    });
    let refusals = r#"sextant_xds_auth_refused_total{reason="foreign_trust_domain"}"#;
    assert_eq!(metric(serve.admin_addr(), refusals), Some(1.0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The test API server on its own runtime, answering each TokenReview after `delay`.
struct Cluster {
    kubeconfig: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Cluster {
    fn start(dir: &Path, tokens: BTreeMap<String, String>, delay: Duration) -> Cluster {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let kubeconfig = dir.join("kubeconfig");
        let options = sextant_testapi::Options {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            kubeconfig: Some(kubeconfig.clone()),
            tokens,
            review_delay: delay,
            ..Default::default()
        };
        let thread = std::thread::spawn(move || {
            let runtime = runtime();
            runtime.block_on(async {
                let _handle = sextant_testapi::start(options)
                    .await
                    .expect("test API server");
                let _ = ready_tx.send(());
                let _ = stopped.await;
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the test API server starts");
        Cluster {
            kubeconfig,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Made-up tokens sent from `connections` × `streams` streams at once, each a new token,
/// until `stop`; refusals counted in `sent`.
async fn flood(
    client: &SecureClient,
    port: u16,
    connections: usize,
    streams: usize,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
) {
    for _ in 0..connections {
        let channel = client.connect(port).await.expect("connects");
        for _ in 0..streams {
            let (channel, stop, sent) = (channel.clone(), stop.clone(), sent.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let n = sent.fetch_add(1, Ordering::SeqCst);
                    let token = format!("made-up-{n}");
                    let _ = first_clusters(channel.clone(), NODE, Some(&token)).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    }
}

#[test]
fn a_flood_of_made_up_tokens_does_not_hold_back_known_proxies() {
    let Some(k) = kubectl() else { return };
    let (dir, root_pem) = with_ca("flood");
    let certificate = issue(&dir, "good", "cluster.local");
    let tokens = BTreeMap::from([(
        "productpage-token".to_owned(),
        "system:serviceaccount:default:productpage".to_owned(),
    )]);
    // A loaded API server: each review takes half a second.
    let cluster = Cluster::start(&dir, tokens, Duration::from_millis(500));
    sextant_testing::run(
        Command::new(&k)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("HOME", &dir)
            .args(["apply", "-f"])
            .arg(sextant_testing::repo("crds")),
    );
    let serve = Serve::new();
    let _sextant = Process(
        serve
            .command(&sextant_testing::sextant_bin())
            .env("KUBECONFIG", &cluster.kubeconfig)
            .args(["--ca-dir", dir.join("ca").to_str().expect("utf-8")])
            .args(["--max-token-reviews-waiting", "32"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sextant serve starts"),
    );
    serve.wait_ready(WAIT).expect("ready");
    let admin = serve.admin_addr();
    let reviews = "sextant_xds_token_reviews_total";
    let with = |identity, token: Option<&str>| SecureClient {
        root_pem: root_pem.clone(),
        identity,
        token: token.map(str::to_owned),
    };
    let token_proxy = with(None, Some("productpage-token"));
    let certificate_proxy = with(Some(certificate), None);
    let runtime = runtime();

    // A token seen again is not reviewed again.
    for _ in 0..3 {
        runtime
            .block_on(token_proxy.clusters(serve.secure_xds, NODE))
            .expect("the token is accepted");
    }
    assert_eq!(metric(admin, reviews), Some(1.0));

    // Made-up tokens from 160 streams at once, each waiting half a second for its review.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    runtime.block_on(flood(
        &with(None, None),
        serve.secure_xds,
        4,
        40,
        stop.clone(),
        sent.clone(),
    ));
    let bounded = r#"sextant_xds_bounded_total{bound="token_reviews"}"#;
    wait_for("made-up tokens refused by the bound", WAIT, || {
        metric(admin, bounded).filter(|n| *n >= 10.0)
    });
    // Proxies with a certificate, or a token already reviewed, are served at once: they do
    // not wait behind the flood (which would take seconds and then time out).
    for proxy in [&token_proxy, &certificate_proxy] {
        let start = Instant::now();
        runtime
            .block_on(proxy.clusters(serve.secure_xds, NODE))
            .expect("served during the flood");
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "served after {took:?}");
    }
    stop.store(true, Ordering::SeqCst);
    // What reached the API server is what 16 reviews at a time can do, not the flood.
    let sent = sent.load(Ordering::SeqCst) as f64;
    let reviewed = metric(admin, reviews).expect("reviews counted");
    eprintln!("{sent} made-up tokens sent, {reviewed} reviews made");
    assert!(reviewed < sent, "{reviewed} reviews for {sent} tokens");
    drop(runtime);
    let _ = std::fs::remove_dir_all(&dir);
}
