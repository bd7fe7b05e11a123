//! ADS at W-M with many emulated proxies (`sextant_testing::ads_client`, which subscribes and
//! ACKs like Envoy): connect-storm time, time for one VirtualService change to be ACKed by
//! every proxy, resident memory per connected proxy, and bytes per push for one endpoint
//! change, SotW vs delta.
//!
//! The server and the emulated proxies run in two processes, each pinned to its own core when
//! `taskset` is available (DESIGN.md section 5), so the server's memory and time are its own.
//! `SEXTANT_BENCH_CLIENT_PROCS=2` spreads the proxies over two processes instead and pins
//! nothing (`SEXTANT_BENCH_PIN=0` unpins one process): the proxies then get whatever CPU the
//! server leaves, so a storm is not measured only by what one proxies' core can take.
//! The proxies speak the protocol like Envoy (subscriptions, EDS after CDS, RDS after LDS, an
//! ACK for every response) but read only the fields they need from each resource. The driver's
//! side of the two processes is in `ads/clients.rs`, the proxies' process in `ads/proxies.rs`.
//! Run with `make bench`; `SEXTANT_BENCH_PROXIES` sets the number of proxies (default 1000,
//! 5000 for W-L shapes), `SEXTANT_BENCH_SHAPE` the mesh: `W-M` (the default), `W-M-S` (W-M with
//! a Sidecar per namespace), `W-L` or `W-L-S` (`make bench-wl`); `SEXTANT_BENCH_CHANGES` the
//! number of VirtualService changes (default 5). Under a Sidecar shape a VirtualService change
//! reaches only the proxies whose Sidecar imports its namespace: the figure is the time until
//! all of those ACK, and the benchmark checks no other proxy got a route update.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use envoy_types::pb::envoy::config::core::v3::Node;
use sextant::{generator::XdsGenerator, metrics::Metrics};
use sextant_index::Object;
use sextant_synthetic::{Shape, W_L, W_L_S, W_M, W_M_S, endpoint_ip, virtual_service};
use sextant_xds::{AdsServer, Connections, Generator};
use tokio::sync::watch;

mod support;
use support::rss_kib;
#[path = "ads/clients.rs"]
mod clients;
use clients::{CLIENT_INDEX_ENV, Clients, client_cpu, client_procs, max, sum, transport_floor};
#[path = "ads/proxies.rs"]
mod proxies;

#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set in the child process: the server address to connect the emulated proxies to.
const CLIENTS_ENV: &str = "SEXTANT_BENCH_CLIENTS";

fn main() {
    let proxies: usize = std::env::var("SEXTANT_BENCH_PROXIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if shape().services >= 10_000 {
            5000
        } else {
            1000
        });
    let client_role = std::env::var(CLIENTS_ENV).ok();
    let pinning = client_procs() == 1 && std::env::var("SEXTANT_BENCH_PIN").as_deref() != Ok("0");
    let pinned = pinning && pin(if client_role.is_some() { 1 } else { 0 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if pinned { 1 } else { 2 })
        .enable_all()
        .build()
        .expect("runtime");
    match client_role {
        Some(addr) => {
            let k = std::env::var(CLIENT_INDEX_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            runtime.block_on(proxies::run(addr, proxies, k, client_procs()))
        }
        None => runtime.block_on(server(proxies, pinned)),
    }
}

/// Pins this process (every thread) to one core with `taskset`, when there are two cores.
fn pin(core: usize) -> bool {
    support::pin(std::process::id(), core)
}

/// CPU time (user + system) this process has used, in seconds.
fn cpu_seconds() -> f64 {
    support::cpu_seconds(std::process::id())
}

fn now_us() -> u64 {
    micros(SystemTime::now())
}

/// Microseconds since the Unix epoch: the two processes compare times.
fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The mesh: `SEXTANT_BENCH_SHAPE` (`W-M`, the default, `W-M-S`, `W-L` or `W-L-S`), in every
/// process.
fn shape() -> Shape {
    match shape_name() {
        "W-M-S" => W_M_S,
        "W-L" => W_L,
        "W-L-S" => W_L_S,
        _ => W_M,
    }
}

fn shape_name() -> &'static str {
    match std::env::var("SEXTANT_BENCH_SHAPE").as_deref() {
        Ok("W-M") | Err(_) => "W-M",
        Ok("W-M-S") => "W-M-S",
        Ok("W-L") => "W-L",
        Ok("W-L-S") => "W-L-S",
        Ok(other) => panic!("SEXTANT_BENCH_SHAPE={other}: expected W-M, W-M-S, W-L or W-L-S"),
    }
}

fn node(s: usize, e: usize) -> Node {
    let p = sextant_synthetic::sidecar(&shape(), s, e);
    Node {
        id: p.id,
        ..Default::default()
    }
}

/// The node of the i-th emulated proxy: every proxy a different pod of W-M (10 per service,
/// services spread over 100 namespaces).
fn nth_node(i: usize) -> Node {
    let shape = shape();
    node(
        i % shape.services,
        (i / shape.services) % shape.endpoints_per_service,
    )
}

/// How many of the first `proxies` proxies import what the namespace of service `s` defines.
fn importing(proxies: usize, s: usize) -> usize {
    importing_in(proxies, s, 0, 1)
}

/// The same among the proxies process `k` of `procs` runs (`clients::share`).
fn importing_in(proxies: usize, s: usize, k: usize, procs: usize) -> usize {
    let shape = shape();
    let target = sextant_synthetic::namespace_of(&shape, s);
    (0..proxies)
        .filter(|i| i % procs == k)
        .filter(|i| {
            let own = sextant_synthetic::namespace_of(&shape, i % shape.services);
            sextant_synthetic::imports(&shape, own, target)
        })
        .count()
}

/// Scope compilations so far and their total time, from the server's metrics.
fn compile_time(mesh: &XdsGenerator) -> String {
    let text = mesh.metrics.render();
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    format!(
        "{} scope builds, {:.2} s",
        value("sextant_compile_seconds_count"),
        value("sextant_compile_seconds_sum")
    )
}

/// Median and maximum time to produce a proxy's resources when its scope is compiled already,
/// over the bench's proxies (DESIGN.md: at most 1 ms).
fn cached_scope_time(mesh: &XdsGenerator, proxies: usize) -> String {
    use sextant_xds::Generator;
    let mut times: Vec<f64> = (0..proxies)
        .map(|i| {
            let proxy = sextant_xds::proxy_from_node(&nth_node(i)).expect("valid node");
            let started = Instant::now();
            let proxy = mesh.complete(proxy);
            std::hint::black_box(mesh.resources(&proxy));
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    format!(
        "median {:.3} ms, p99 {:.3} ms ({proxies} proxies)",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn server(proxies: usize, pinned: bool) {
    let rss0 = rss_kib();
    let shape = shape();
    let mut index = sextant_synthetic::index(&shape);
    let (snapshot, changes) = index.publish();
    let mesh = Arc::new(XdsGenerator::new(Arc::new(Metrics::new())));
    mesh.publish(snapshot, changes);
    let (updates_tx, updates_rx) = watch::channel(1u64);
    let (_shutdown_tx, shutdown_rx) = watch::channel(false);
    let connections = Arc::new(Connections::default());
    let server = AdsServer::new(mesh.clone(), updates_rx, connections.clone(), shutdown_rx);
    let incoming = sextant::xds_incoming("127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr = format!("http://{}", incoming.local_addr().expect("addr"));
    tokio::spawn(
        sextant::xds_server()
            .add_service(server.into_service())
            .serve_with_incoming(incoming),
    );
    let rss_state = rss_kib();
    println!(
        "{} state loaded: {} MiB resident (before any proxy); server and {} proxies' process(es) {}",
        shape_name(),
        (rss_state - rss0.min(rss_state)) / 1024,
        client_procs(),
        if pinned {
            "pinned to one core each"
        } else {
            "share the cores"
        }
    );

    let mut clients = Clients::spawn(&addr, proxies, client_procs());
    clients.ask("hello").await;
    let started = now_us();
    let (cpu0, client_cpu0) = (cpu_seconds(), client_cpu(&mut clients).await);
    let reply = clients.ask("connect").await;
    let storm = (max(&reply, 1) - started) as f64 / 1e6;
    println!(
        "connect storm: {proxies} proxies fully configured (CDS, EDS, LDS, RDS) in {storm:.2} s; {:.2} GB sent; {} reconnects; CPU: server {:.2} s, proxies {:.2} s",
        sum(&reply, 2) as f64 / 1e9,
        sum(&reply, 3),
        cpu_seconds() - cpu0,
        client_cpu(&mut clients).await - client_cpu0,
    );
    println!("  compile time so far: {}", compile_time(&mesh));
    println!(
        "  a proxy's configuration once its scope is cached (scope lookup + its own inbound part): {}",
        cached_scope_time(&mesh, proxies)
    );
    // Idle: every response sent and ACKed, buffers returned.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_connected = rss_kib();
    let client_rss = sum(&clients.ask("rss").await, 1);
    println!(
        "server resident memory with {proxies} proxies: {} MiB, {} KiB per proxy beyond the loaded state (the proxies' process: {} MiB)",
        rss_connected / 1024,
        rss_connected.saturating_sub(rss_state) / proxies as u64,
        client_rss / 1024,
    );

    // One VirtualService change, from publishing to each proxy's ACK of the new routes.
    let mut samples = Vec::new();
    let (cpu0, client_cpu0) = (cpu_seconds(), client_cpu(&mut clients).await);
    let mut reached = 0;
    let changes: usize = std::env::var("SEXTANT_BENCH_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let procs = clients.len();
    for round in 0..changes {
        clients.ask("arm").await;
        let s = round % 7;
        let expected = importing(proxies, s);
        reached += expected;
        let vs = virtual_service(&shape, s, 80 - round as u32 * 10);
        index.apply(Object::from_json(vs, "default").expect("valid"));
        let t0 = now_us();
        let (snapshot, changes) = index.publish();
        let version = snapshot.version;
        mesh.publish(snapshot, changes);
        updates_tx.send(version).expect("send");
        let replies = clients
            .ask_each(|k| Some(format!("wait {}", importing_in(proxies, s, k, procs))))
            .await;
        samples.extend(
            replies
                .iter()
                .flat_map(|r| &r[1..])
                .map(|t| (t.parse::<u64>().expect("time") as f64 - t0 as f64) / 1e3),
        );
        // Nobody else gets a route update for it, however long one waits.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let updated = sum(&clients.ask("updated").await, 1);
        assert_eq!(
            updated, expected as u64,
            "proxies that got a route update for a change outside their Sidecar's imports"
        );
    }
    println!(
        "  route updates: {reached} over {changes} changes ({:.0} proxies per change of {proxies}); none to proxies that do not import the changed namespace",
        reached as f64 / changes as f64
    );
    println!(
        "  compile time so far: {}; CPU per change: server {:.2} s, proxies {:.2} s",
        compile_time(&mesh),
        (cpu_seconds() - cpu0) / changes as f64,
        (client_cpu(&mut clients).await - client_cpu0) / changes as f64
    );
    samples.sort_by(|a, b| a.total_cmp(b));
    println!(
        "VirtualService change until ACKed by every proxy that imports it ({changes} changes, no debounce): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );

    // The floor under that figure: the same bytes per proxy (both route configurations) over
    // plain loopback TCP, one connection per proxy, from this core to the proxies' core.
    let proxy = mesh.complete(sextant_xds::proxy_from_node(&nth_node(0)).expect("node"));
    let route_bytes: usize = mesh
        .resources(&proxy)
        .merged()
        .routes
        .iter()
        .map(|e| e.body.len())
        .sum();
    let floor = transport_floor(&mut clients, proxies, route_bytes).await;
    println!(
        "  transport floor: {route_bytes} bytes to each of {proxies} plain TCP connections (no HTTP/2, no gRPC, nothing compiled): {floor:.0} ms"
    );

    // One endpoint change: bytes each state-of-the-world proxy and one delta proxy receive.
    let delta_initial = sum(
        &clients.ask_each(|k| (k == 0).then(|| "delta".into())).await,
        1,
    );
    clients.ask("arm").await;
    let slice = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "svc-5-slice", "namespace": "ns-5", "labels": {"kubernetes.io/service-name": "svc-5"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}],
        "endpoints": (0..9).map(|e| serde_json::json!({"addresses": [endpoint_ip(&shape, 5, e)],
            "targetRef": {"kind": "Pod", "name": format!("svc-5-{e}"), "namespace": "ns-5"}})).collect::<Vec<_>>(),
    });
    index.apply(Object::from_json(slice, "default").expect("valid"));
    let cpu0 = cpu_seconds();
    let t0 = now_us();
    let (snapshot, changes) = index.publish();
    assert!(changes.endpoints_only());
    let version = snapshot.version;
    mesh.publish(snapshot, changes);
    updates_tx.send(version).expect("send");
    let reply = clients
        .ask_each(|k| {
            Some(format!(
                "wait-endpoints {}",
                importing_in(proxies, 5, k, procs)
            ))
        })
        .await;
    let (sotw_bytes, delta_after, last) = (sum(&reply, 1), sum(&reply, 2), max(&reply, 3));
    println!(
        "  compile time so far: {}; server CPU for the endpoint change: {:.2} s",
        compile_time(&mesh),
        cpu_seconds() - cpu0
    );
    println!(
        "one endpoint change: every proxy that imports it updated in {:.0} ms; state of the world sends {} bytes per such proxy, delta {delta_after} bytes ({:.3}% of the {delta_initial}-byte full configuration)",
        (last - t0) as f64 / 1e3,
        sotw_bytes / importing(proxies, 5).max(1) as u64,
        delta_after as f64 * 100.0 / delta_initial.max(1) as f64
    );

    // Memory per additional idle proxy beyond shared state: every scope is compiled and the
    // allocator has seen a storm already; more proxies of other pods connect and go idle.
    let more = (proxies / 4).min(250);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = rss_kib();
    clients.ask(&format!("more {more}")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib();
    // Resident memory mostly shows what the allocator keeps from the storm and the changes
    // (it can even shrink here); `make bench-heap` measures the live heap of the same phases.
    println!(
        "{more} more proxies of the same scopes: resident memory {} MiB before, {} MiB after (allocator retention dominates; `make bench-heap` has the live heap)",
        before / 1024,
        after / 1024
    );
    clients.quit().await;
}
