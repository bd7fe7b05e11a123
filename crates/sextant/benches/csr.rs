//! Istio's certificate service under load, through gRPC over TLS as istio-agent calls it: a
//! release `sextant serve` (pinned to one core when there are two) signs P-256 CSRs sent by
//! this process (on the other core) over a few HTTP/2 connections with many calls in flight.
//! Reports signed certificates per second of wall time and per second of the server's CPU
//! time (the budget: at least 2,000 per second per core). The CSRs are made before timing
//! starts; the server verifies and signs each one.
//!
//! Run with `make bench` or `cargo bench -p sextant --bench csr`; `SEXTANT_BENCH_CSRS` sets
//! the number of requests timed (default 20,000).

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use sextant::certificates::proto::{
    IstioCertificateRequest, istio_certificate_service_client::IstioCertificateServiceClient,
};
use sextant_testing::{Process, SecureClient, Serve, issue_certificate};

mod support;
use support::{cpu_seconds, pin};

/// Connections and calls in flight on each.
const CONNECTIONS: usize = 4;
const IN_FLIGHT: usize = 16;
/// Distinct CSRs, sent round-robin.
const DISTINCT: usize = 512;

fn main() {
    let requests: usize = std::env::var("SEXTANT_BENCH_CSRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = std::env::temp_dir().join(format!("sextant-bench-csr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("config")).expect("dir");
    let ca = dir.join("ca");
    let status = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(["ca", "init", "--dir", ca.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .status()
        .expect("sextant ca init");
    assert!(status.success());
    let certs = dir.join("client");
    issue_certificate(&ca, &certs, "cluster.local", "default", "bench");

    let serve = Serve::new();
    let server = Process(
        serve
            .command(Path::new(env!("CARGO_BIN_EXE_sextant")))
            .args(["--config-dir", dir.join("config").to_str().expect("utf-8")])
            .args(["--ca-dir", ca.to_str().expect("utf-8")])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sextant serve"),
    );
    let pid = server.0.id();
    let pinned = pin(pid, 0) && pin(std::process::id(), 1);
    serve
        .wait_ready(Duration::from_secs(30))
        .expect("sextant ready");

    let read = |f: &str| std::fs::read_to_string(certs.join(f)).expect("client files");
    let client = SecureClient {
        root_pem: read("root-cert.pem"),
        identity: Some((read("cert-chain.pem"), read("key.pem"))),
        token: None,
    };
    let csrs: Arc<Vec<String>> = Arc::new((0..DISTINCT).map(|_| csr()).collect());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            let channel = client.connect(serve.secure_xds).await.expect("connect");
            clients.push(IstioCertificateServiceClient::new(channel));
        }
        // Warm up: connections, the server's caches, the CPU's clock.
        drive(&clients, &csrs, 1_000).await;
        let cpu_before = cpu_seconds(pid);
        let started = Instant::now();
        drive(&clients, &csrs, requests).await;
        let wall = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid) - cpu_before;
        let n = requests as f64;
        println!(
            "csr signing: {requests} P-256 CSRs through gRPC over TLS, {} connections x {} in flight, server {}",
            CONNECTIONS,
            IN_FLIGHT,
            if pinned {
                "pinned to one core"
            } else {
                "not pinned"
            }
        );
        println!("  wall: {wall:.2} s, {:.0} signed/s", n / wall);
        println!(
            "  server CPU: {cpu:.2} s, {:.0} signed per CPU-second (budget >= 2000), {:.0} us each",
            n / cpu,
            cpu / n * 1e6
        );
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `total` requests, `IN_FLIGHT` at a time on each connection; every one must succeed.
async fn drive(
    clients: &[IstioCertificateServiceClient<tonic::transport::Channel>],
    csrs: &Arc<Vec<String>>,
    total: usize,
) {
    let per_task = total / (clients.len() * IN_FLIGHT);
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        for t in 0..IN_FLIGHT {
            let mut client = client.clone();
            let csrs = csrs.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per_task {
                    let csr = csrs[(c * IN_FLIGHT + t + i * 7) % csrs.len()].clone();
                    let response = client
                        .create_certificate(IstioCertificateRequest {
                            csr,
                            validity_duration: 3600,
                            metadata: None,
                        })
                        .await
                        .expect("signed");
                    assert_eq!(response.into_inner().cert_chain.len(), 2);
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
}

/// A P-256 CSR for the client's identity.
fn csr() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://cluster.local/ns/default/sa/bench"
            .try_into()
            .expect("uri"),
    )];
    params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}
