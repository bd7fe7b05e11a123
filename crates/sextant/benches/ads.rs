//! ADS at W-M with many emulated proxies (an in-repo client that subscribes and ACKs like
//! Envoy): connect-storm time, time for one VirtualService change to be ACKed by every proxy,
//! resident memory per connected proxy, and bytes per push for one endpoint change, SotW vs
//! delta. Server and clients share this process (and its 2 cores). Run with `make bench`;
//! `SEXTANT_BENCH_PROXIES` sets the number of proxies (default 1000).

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{
        DeltaDiscoveryRequest, DiscoveryRequest,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        aggregated_discovery_service_server::AggregatedDiscoveryServiceServer,
    },
};
use sextant::{mesh::Mesh, metrics::Metrics};
use sextant_compiler::type_url;
use sextant_index::Object;
use sextant_workload::{W_M, endpoint_ip, virtual_service};
use sextant_xds::{AdsServer, Registry};
use tokio::sync::{mpsc, watch};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn node(s: usize, e: usize) -> Node {
    let p = sextant_workload::sidecar(&W_M, s, e);
    Node {
        id: p.id,
        ..Default::default()
    }
}

/// Progress shared by every emulated proxy: which route version each has ACKed.
struct Progress {
    fully_configured: AtomicUsize,
    route_acks: AtomicUsize,
    target_route_version: std::sync::Mutex<String>,
    bytes: AtomicU64,
}

/// One state-of-the-world proxy: subscribes to CDS and LDS, then EDS for every cluster and
/// RDS for every route name, and ACKs every response.
async fn sotw_proxy(addr: String, node: Node, progress: Arc<Progress>) {
    // A storm of simultaneous connects can overflow the listen backlog: retry like Envoy does.
    for attempt in 0..20u64 {
        if sotw_session(addr.clone(), node.clone(), progress.clone())
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
    }
    panic!("proxy {} could not connect", node.id);
}

async fn sotw_session(addr: String, node: Node, progress: Arc<Progress>) -> Result<(), String> {
    let mut client = AggregatedDiscoveryServiceClient::connect(addr)
        .await
        .map_err(|e| e.to_string())?
        .max_decoding_message_size(512 * 1024 * 1024);
    let (tx, rx) = mpsc::channel(16);
    let first = DiscoveryRequest {
        node: Some(node),
        type_url: type_url::CLUSTER.into(),
        ..Default::default()
    };
    tx.send(first).await.expect("send");
    tx.send(DiscoveryRequest {
        type_url: type_url::LISTENER.into(),
        ..Default::default()
    })
    .await
    .expect("send");
    let mut inbound = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let mut have = BTreeSet::new();
    let mut configured = false;
    while let Some(Ok(resp)) = inbound.next().await {
        progress.bytes.fetch_add(
            resp.resources.iter().map(|r| r.value.len() as u64).sum(),
            Ordering::Relaxed,
        );
        let ack = DiscoveryRequest {
            type_url: resp.type_url.clone(),
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            resource_names: match resp.type_url.as_str() {
                type_url::ENDPOINT => (0..0).map(|_: usize| String::new()).collect(),
                _ => Vec::new(),
            },
            ..Default::default()
        };
        let url = resp.type_url.clone();
        let mut requests = vec![];
        match url.as_str() {
            type_url::CLUSTER => {
                let names: Vec<String> = resp
                    .resources
                    .iter()
                    .filter_map(|r| {
                        let c: envoy_types::pb::envoy::config::cluster::v3::Cluster =
                            prost::Message::decode(r.value.as_slice()).ok()?;
                        c.eds_cluster_config.map(|_| c.name)
                    })
                    .collect();
                requests.push(ack);
                requests.push(DiscoveryRequest {
                    type_url: type_url::ENDPOINT.into(),
                    resource_names: names,
                    ..Default::default()
                });
            }
            type_url::LISTENER => {
                requests.push(ack);
                requests.push(DiscoveryRequest {
                    type_url: type_url::ROUTE.into(),
                    resource_names: vec!["8080".into(), "9090".into()],
                    ..Default::default()
                });
            }
            type_url::ENDPOINT => {
                // Keep the subscription: an ACK carries the names again.
                let mut a = ack;
                a.resource_names = resp
                    .resources
                    .iter()
                    .filter_map(|r| {
                        let c: envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment =
                            prost::Message::decode(r.value.as_slice()).ok()?;
                        Some(c.cluster_name)
                    })
                    .collect();
                requests.push(a);
            }
            _ => {
                let mut a = ack;
                a.resource_names = vec!["8080".into(), "9090".into()];
                requests.push(a);
                let target = progress.target_route_version.lock().expect("lock").clone();
                if !target.is_empty() && resp.version_info != target {
                    progress.route_acks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        have.insert(url);
        if !configured && have.len() == 4 {
            configured = true;
            progress.fully_configured.fetch_add(1, Ordering::Relaxed);
        }
        for r in requests {
            if tx.send(r).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Bytes one delta proxy receives for the configuration and then for one endpoint change.
async fn delta_bytes(addr: String, node: Node, changed: Arc<tokio::sync::Notify>) -> (u64, u64) {
    let mut client = AggregatedDiscoveryServiceClient::connect(addr)
        .await
        .expect("connect")
        .max_decoding_message_size(512 * 1024 * 1024);
    let (tx, rx) = mpsc::channel(16);
    for (i, url) in [type_url::CLUSTER, type_url::LISTENER]
        .into_iter()
        .enumerate()
    {
        tx.send(DeltaDiscoveryRequest {
            node: (i == 0).then(|| node.clone()),
            type_url: url.into(),
            ..Default::default()
        })
        .await
        .expect("send");
    }
    let mut inbound = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let mut initial = 0u64;
    let mut after = 0u64;
    let mut waiting = true;
    loop {
        let next = if waiting {
            tokio::select! {
                r = inbound.next() => r,
                _ = changed.notified() => { waiting = false; continue; }
            }
        } else {
            match tokio::time::timeout(Duration::from_secs(2), inbound.next()).await {
                Ok(r) => r,
                Err(_) => break,
            }
        };
        let Some(Ok(resp)) = next else { break };
        let size: u64 = resp
            .resources
            .iter()
            .map(|r| r.resource.as_ref().map_or(0, |a| a.value.len() as u64))
            .sum();
        if waiting {
            initial += size;
        } else {
            after += size;
        }
        let mut reqs = vec![DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        }];
        if resp.type_url == type_url::CLUSTER {
            reqs.push(DeltaDiscoveryRequest {
                type_url: type_url::ENDPOINT.into(),
                resource_names_subscribe: resp
                    .resources
                    .iter()
                    .map(|r| r.name.clone())
                    .filter(|n| n.starts_with("outbound|"))
                    .collect(),
                ..Default::default()
            });
        }
        if resp.type_url == type_url::LISTENER {
            reqs.push(DeltaDiscoveryRequest {
                type_url: type_url::ROUTE.into(),
                resource_names_subscribe: vec!["8080".into(), "9090".into()],
                ..Default::default()
            });
        }
        for r in reqs {
            if tx.send(r).await.is_err() {
                return (initial, after);
            }
        }
    }
    (initial, after)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let proxies: usize = std::env::var("SEXTANT_BENCH_PROXIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rss0 = rss_kib();
    let mut index = sextant_workload::index(&W_M);
    let (snapshot, _) = index.publish();
    let mesh = Arc::new(Mesh::new(Arc::new(Metrics::new())));
    mesh.publish(snapshot);
    let (updates_tx, updates_rx) = watch::channel(1u64);
    let (_shutdown_tx, shutdown_rx) = watch::channel(false);
    let registry = Arc::new(Registry::default());
    let server = AdsServer::new(mesh.clone(), updates_rx, registry.clone(), shutdown_rx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                AggregatedDiscoveryServiceServer::new(server)
                    .max_encoding_message_size(512 * 1024 * 1024),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let rss_state = rss_kib();
    println!(
        "W-M state loaded: {} MiB resident (before any proxy)",
        (rss_state - rss0.min(rss_state)) / 1024
    );

    let progress = Arc::new(Progress {
        fully_configured: AtomicUsize::new(0),
        route_acks: AtomicUsize::new(0),
        target_route_version: std::sync::Mutex::new(String::new()),
        bytes: AtomicU64::new(0),
    });
    // Connect storm: every proxy a different pod of W-M (10 per service, services spread over
    // 100 namespaces).
    let started = Instant::now();
    for i in 0..proxies {
        let (s, e) = (
            i % W_M.services,
            (i / W_M.services) % W_M.endpoints_per_service,
        );
        tokio::spawn(sotw_proxy(addr.clone(), node(s, e), progress.clone()));
    }
    while progress.fully_configured.load(Ordering::Relaxed) < proxies {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "connect storm did not finish"
        );
    }
    let storm = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = rss_kib();
    println!(
        "connect storm: {proxies} proxies fully configured (CDS, EDS, LDS, RDS) in {:.2} s; {:.1} GB sent",
        storm.as_secs_f64(),
        progress.bytes.load(Ordering::Relaxed) as f64 / 1e9
    );
    println!(
        "resident memory with {proxies} proxies: {} MiB total, {} KiB per proxy beyond the state (clients in the same process)",
        rss_connected / 1024,
        (rss_connected.saturating_sub(rss_state)) / proxies as u64
    );

    // One VirtualService change, measured from publishing to each proxy's ACK of new routes.
    let mut samples = Vec::new();
    for round in 0..3 {
        progress.route_acks.store(0, Ordering::Relaxed);
        let vs = virtual_service(&W_M, 0, 80 - round * 10);
        index.apply(Object::from_json(vs, "default").expect("valid"));
        *progress.target_route_version.lock().expect("lock") = "old".into();
        let t0 = Instant::now();
        let (snapshot, _) = index.publish();
        let version = snapshot.version;
        mesh.publish(snapshot);
        updates_tx.send(version).expect("send");
        let mut acked = Vec::with_capacity(proxies);
        let mut seen = 0;
        while seen < proxies {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let now = progress.route_acks.load(Ordering::Relaxed);
            for _ in seen..now.min(proxies) {
                acked.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            seen = now;
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "push did not finish"
            );
        }
        samples.extend(acked);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    println!(
        "VirtualService change until ACKed by all {proxies} proxies (3 changes, no debounce): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );

    // One endpoint change: bytes a state-of-the-world proxy and a delta proxy receive.
    let changed = Arc::new(tokio::sync::Notify::new());
    let delta = tokio::spawn(delta_bytes(addr.clone(), node(1, 3), changed.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sotw_before = progress.bytes.load(Ordering::Relaxed);
    changed.notify_one();
    let slice = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "svc-5-slice", "namespace": "ns-5", "labels": {"kubernetes.io/service-name": "svc-5"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}],
        "endpoints": (0..9).map(|e| serde_json::json!({"addresses": [endpoint_ip(&W_M, 5, e)],
            "targetRef": {"kind": "Pod", "name": format!("svc-5-{e}"), "namespace": "ns-5"}})).collect::<Vec<_>>(),
    });
    index.apply(Object::from_json(slice, "default").expect("valid"));
    let (snapshot, changes) = index.publish();
    assert!(changes.endpoints_only());
    let version = snapshot.version;
    mesh.publish(snapshot);
    updates_tx.send(version).expect("send");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sotw_after = (progress.bytes.load(Ordering::Relaxed) - sotw_before) / proxies as u64;
    let (delta_initial, delta_after) = delta.await.expect("delta client");
    println!(
        "one endpoint change: state of the world sends {sotw_after} bytes per proxy, delta {delta_after} bytes ({:.3}% of the {delta_initial}-byte full configuration)",
        delta_after as f64 * 100.0 / delta_initial.max(1) as f64
    );
}
