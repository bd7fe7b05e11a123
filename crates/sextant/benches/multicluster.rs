//! Several clusters behind one control plane (issue 16): three clusters of W-M's 1,000
//! services each (`sextant_synthetic::cluster_workloads`: the same service names and
//! namespaces in every cluster, each cluster with its own 10,000 Pods and endpoint addresses,
//! so every service spans all three), against one cluster of W-M.
//!
//! - Index memory: resident memory gained by building the index and by publishing its
//!   snapshot, each configuration in a fresh child process.
//! - One endpoint change pushed to 1,000 emulated state-of-the-world proxies (as in the ADS
//!   benchmark, `ads.rs`): an EndpointSlice of a remote cluster, then the same change in the
//!   config cluster; the time until every proxy has received (and ACKs) the push, bytes, and
//!   server CPU. The benchmark asserts that only that service's load assignments are sent.
//! - A whole remote cluster leaving (`remove_cluster`) and joining again (`reset_in` of its
//!   Services, Pods and EndpointSlices): the index's time, the publish, and the pushes until
//!   every proxy has them.
//!
//! Server and proxies run in two processes pinned to a core each, as in `ads.rs`. Run with
//! `make bench` (`cargo bench -p sextant --bench multicluster`); `SEXTANT_BENCH_PROXIES` sets
//! the number of proxies (default 1000) and `SEXTANT_BENCH_PROXY_CLUSTERS` how many of the
//! three clusters they are spread over (default 3: proxy `i` in cluster `i % 3`; 1 puts them
//! all in the config cluster). `SEXTANT_BENCH_CLUSTERS=1` runs the endpoint change against W-M
//! alone, for a comparison in the same hour.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use envoy_types::pb::{
    envoy::config::core::v3::Node,
    google::protobuf::{Struct, Value, value::Kind as ValueKind},
};
use sextant::{generator::XdsGenerator, metrics::Metrics};
use sextant_index::{Index, Object};
use sextant_model::Kind;
use sextant_synthetic::{W_M, cluster_id, cluster_objects, endpoint_slice};
use sextant_xds::{AdsServer, Connections, Generator};
use tokio::sync::watch;

mod support;
use support::rss_kib;
#[allow(dead_code)]
#[path = "ads/clients.rs"]
mod clients;
use clients::{Clients, client_cpu, num};
#[path = "multicluster/proxies.rs"]
mod proxies;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set in the proxies' process: the server address.
const CLIENTS_ENV: &str = "SEXTANT_BENCH_CLIENTS";
/// Set in a memory child: how many clusters to load.
const MEMORY_ENV: &str = "SEXTANT_BENCH_MEMORY_CLUSTERS";
/// Clusters of the mesh.
const CLUSTERS: usize = 3;

/// Clusters behind the ADS server: 3, or `SEXTANT_BENCH_CLUSTERS=1` for W-M alone (the
/// endpoint change only, to compare within the same hour).
fn clusters() -> usize {
    env_number("SEXTANT_BENCH_CLUSTERS").map_or(CLUSTERS, |n| if n == 1 { 1 } else { CLUSTERS })
}
/// The remote cluster that changes, leaves and joins.
const MOVING: usize = 2;
/// The service whose endpoints change.
const CHANGED: usize = 5;

fn main() {
    let proxies: usize = env_number("SEXTANT_BENCH_PROXIES").unwrap_or(1000);
    if let Some(clusters) = env_number(MEMORY_ENV) {
        return memory_child(clusters);
    }
    let client_role = std::env::var(CLIENTS_ENV).ok();
    let pinned = support::pin(
        std::process::id(),
        if client_role.is_some() { 1 } else { 0 },
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if pinned { 1 } else { 2 })
        .enable_all()
        .build()
        .expect("runtime");
    match client_role {
        Some(addr) => runtime.block_on(proxies::run(addr, proxies)),
        None => runtime.block_on(server(proxies, pinned)),
    }
}

fn env_number(var: &str) -> Option<usize> {
    std::env::var(var).ok().and_then(|v| v.parse().ok())
}

fn cpu_seconds() -> f64 {
    support::cpu_seconds(std::process::id())
}

fn now_us() -> u64 {
    micros(SystemTime::now())
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The node of the i-th proxy: a different pod of W-M each (service `i % 1000`), in cluster
/// `i % SEXTANT_BENCH_PROXY_CLUSTERS`, which its `CLUSTER_ID` names.
fn node_of(i: usize) -> Node {
    let spread = env_number("SEXTANT_BENCH_PROXY_CLUSTERS")
        .unwrap_or(CLUSTERS)
        .clamp(1, clusters());
    let (k, s, e) = (
        i % spread,
        i % W_M.services,
        (i / W_M.services) % W_M.endpoints_per_service,
    );
    let p = sextant_synthetic::sidecar_in(&W_M, k, s, e);
    let value = Value {
        kind: Some(ValueKind::StringValue(p.cluster_id)),
    };
    Node {
        id: p.id,
        metadata: Some(Struct {
            fields: [("CLUSTER_ID".to_owned(), value)].into_iter().collect(),
        }),
        ..Default::default()
    }
}

fn ms(seconds: f64) -> String {
    format!("{:.0} ms", seconds * 1e3)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Scope compilations so far and their total time, from the server's metrics.
fn compiles(mesh: &XdsGenerator) -> (f64, f64) {
    let text = mesh.metrics.render();
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("sextant_compile_seconds_count"),
        value("sextant_compile_seconds_sum"),
    )
}

/// A child process: builds an index of `clusters` clusters and publishes it, printing
/// `memory RSS_BEFORE RSS_INDEX RSS_SNAPSHOT BUILD_S PUBLISH_S SERVICES ENDPOINTS PODS` (KiB,
/// seconds). The objects are made from JSON inside the measurement and dropped as the index
/// takes them; the child runs with `MIMALLOC_PURGE_DELAY=0`, so the allocator returns freed
/// pages at once and what remains is what the index (then the snapshot) keeps, with
/// fragmentation.
fn memory_child(clusters: usize) {
    let before = rss_kib();
    let started = Instant::now();
    let mut index = Index::default();
    for k in 0..clusters {
        let objects = cluster_objects(&W_M, k);
        if k == 0 {
            objects.into_iter().for_each(|o| index.apply(o));
        } else {
            join(&mut index, k, objects);
        }
    }
    let built = started.elapsed().as_secs_f64();
    let rss_index = rss_kib();
    let started = Instant::now();
    let (snapshot, _) = index.publish();
    let published = started.elapsed().as_secs_f64();
    let rss_snapshot = rss_kib();
    let endpoints: usize = snapshot.endpoints.values().map(|e| e.len()).sum();
    println!(
        "memory {before} {rss_index} {rss_snapshot} {built} {published} {} {endpoints} {}",
        snapshot.services.len(),
        snapshot.workloads.len()
            + snapshot
                .remote_workloads
                .values()
                .map(|pods| pods.len())
                .sum::<usize>()
    );
}

/// Lists remote cluster `k`'s objects into the index, one `reset_in` per kind (as its watches
/// do); the time of each.
fn join(index: &mut Index, k: usize, mut objects: Vec<Object>) -> Vec<(Kind, f64)> {
    let id = cluster_id(k);
    let mut times = Vec::new();
    for kind in [Kind::Service, Kind::Pod, Kind::EndpointSlice] {
        let (these, rest): (Vec<Object>, Vec<Object>) =
            objects.into_iter().partition(|o| o.kind() == kind);
        objects = rest;
        let started = Instant::now();
        index.reset_in(&id, kind, these);
        times.push((kind, started.elapsed().as_secs_f64()));
    }
    times
}

/// Index memory of one and of three clusters, each in a fresh process.
fn memory() {
    for clusters in [1, CLUSTERS] {
        let out = Command::new(std::env::current_exe().expect("exe"))
            .env(MEMORY_ENV, clusters.to_string())
            .env("MIMALLOC_PURGE_DELAY", "0")
            .output()
            .expect("memory child");
        let line = String::from_utf8_lossy(&out.stdout);
        let w: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().expect("number"))
            .collect();
        assert_eq!(w.len(), 8, "memory child: {line}");
        println!(
            "index of {clusters} cluster(s): {} services, {} endpoints, {} pods; objects made and indexed in {}, published in {}; resident memory: index {} MiB, snapshot {} MiB more ({} MiB together)",
            w[5],
            w[6],
            w[7],
            ms(w[3]),
            ms(w[4]),
            (w[1] - w[0]) as u64 / 1024,
            (w[2] - w[1]) as u64 / 1024,
            (w[2] - w[0]) as u64 / 1024,
        );
    }
}

/// What the proxies received in one round.
struct Settled {
    with_eds: u64,
    responses: [u64; 4],
    resources: [u64; 4],
    eds_min: u64,
    eds_max: u64,
    bytes: u64,
    /// Milliseconds from `t0` to each proxy's last response, sorted.
    lasts: Vec<f64>,
}

impl Settled {
    fn parse(words: &[String], t0: u64) -> Settled {
        let n = |i| num(words, i);
        let mut lasts: Vec<f64> = words[13..]
            .iter()
            .map(|t| (t.parse::<u64>().expect("time") as f64 - t0 as f64) / 1e3)
            .collect();
        lasts.sort_by(|a, b| a.total_cmp(b));
        Settled {
            with_eds: n(1),
            responses: [n(2), n(3), n(4), n(5)],
            resources: [n(6), n(7), n(8), n(9)],
            eds_min: n(10),
            eds_max: n(11),
            bytes: n(12),
            lasts,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} proxies got a push, last response p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; responses CDS/EDS/LDS/RDS {:?} with {:?} resources; {:.1} MB",
            self.lasts.len(),
            percentile(&self.lasts, 0.5),
            percentile(&self.lasts, 0.99),
            self.lasts.last().copied().unwrap_or(f64::NAN),
            self.responses,
            self.resources,
            self.bytes as f64 / 1e6
        )
    }
}

/// The server side: the index, the ADS server, the proxies' process, and each phase.
struct Bench {
    index: Index,
    mesh: Arc<XdsGenerator>,
    updates: watch::Sender<u64>,
    clients: Clients,
    proxies: usize,
}

impl Bench {
    /// Publishes the index; the time `publish` took and the endpoint hosts that changed.
    fn publish(&mut self) -> (f64, usize, sextant_index::Changes) {
        let started = Instant::now();
        let (snapshot, changes) = self.index.publish();
        let took = started.elapsed().as_secs_f64();
        let version = snapshot.version;
        let hosts = changes.endpoints.len();
        self.mesh.publish(snapshot, changes.clone());
        self.updates.send(version).expect("send");
        (took, hosts, changes)
    }

    /// Waits until every proxy has had an EDS push and nothing arrived for `quiet_ms`.
    async fn settle(&mut self, quiet_ms: u64, t0: u64) -> Settled {
        let reply = self
            .clients
            .ask(&format!("settle {} {quiet_ms}", self.proxies))
            .await;
        Settled::parse(&reply[0], t0)
    }
}

async fn server(proxies: usize, pinned: bool) {
    if clusters() > 1 {
        memory();
    }
    let rss0 = rss_kib();
    let started = Instant::now();
    let mut index = Index::default();
    for k in 0..clusters() {
        let objects = cluster_objects(&W_M, k);
        if k == 0 {
            objects.into_iter().for_each(|o| index.apply(o));
        } else {
            join(&mut index, k, objects);
        }
    }
    let (snapshot, changes) = index.publish();
    let endpoints: usize = snapshot.endpoints.values().map(|e| e.len()).sum();
    let mesh = Arc::new(XdsGenerator::new(Arc::new(Metrics::new())));
    mesh.publish(snapshot, changes);
    println!(
        "{} cluster(s) of W-M: {endpoints} endpoints; objects made, indexed and published in {:.2} s",
        clusters(),
        started.elapsed().as_secs_f64()
    );
    let (updates, updates_rx) = watch::channel(1u64);
    let (_shutdown_tx, shutdown_rx) = watch::channel(false);
    let connections = Arc::new(Connections::default());
    let server = AdsServer::new(mesh.clone(), updates_rx, connections, shutdown_rx);
    let incoming = sextant::xds_incoming("127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr = format!("http://{}", incoming.local_addr().expect("addr"));
    tokio::spawn(
        sextant::xds_server()
            .add_service(server.into_service())
            .serve_with_incoming(incoming),
    );
    let rss_state = rss_kib();
    let spread = env_number("SEXTANT_BENCH_PROXY_CLUSTERS")
        .unwrap_or(CLUSTERS)
        .clamp(1, clusters());
    println!(
        "state loaded: {} MiB resident; {proxies} proxies spread over {spread} cluster(s); server and proxies {}",
        (rss_state - rss0.min(rss_state)) / 1024,
        if pinned {
            "pinned to one core each"
        } else {
            "share the cores"
        }
    );

    let mut clients = Clients::spawn(&addr, proxies, 1);
    clients.ask("hello").await;
    let t0 = now_us();
    let (cpu0, client_cpu0) = (cpu_seconds(), client_cpu(&mut clients).await);
    let reply = clients.ask("connect").await.remove(0);
    let (count, sum) = compiles(&mesh);
    println!(
        "connect storm: {proxies} proxies configured in {:.2} s; {:.2} GB sent; {} reconnects; CPU: server {:.2} s, proxies {:.2} s; {count} scope builds, {sum:.2} s",
        (num(&reply, 1) - t0) as f64 / 1e6,
        num(&reply, 2) as f64 / 1e9,
        num(&reply, 3),
        cpu_seconds() - cpu0,
        client_cpu(&mut clients).await - client_cpu0,
    );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let rss = rss_kib();
    println!(
        "server resident memory with {proxies} proxies: {} MiB ({} MiB beyond the loaded state)",
        rss / 1024,
        rss.saturating_sub(rss_state) / 1024
    );

    let mut bench = Bench {
        index,
        mesh,
        updates,
        clients,
        proxies,
    };
    endpoint_changes(&mut bench).await;
    for _ in 0..if clusters() > MOVING { 2 } else { 0 } {
        leave(&mut bench).await;
        join_again(&mut bench).await;
    }
    bench.clients.quit().await;
}

/// The load assignments a proxy (of the config cluster) receives, by name, with their hashes.
fn assignments(mesh: &XdsGenerator) -> BTreeMap<String, u64> {
    let proxy = mesh.complete(sextant_xds::proxy_from_node(&node_of(0)).expect("node"));
    mesh.resources(&proxy)
        .merged()
        .endpoints
        .iter()
        .map(|e| (e.name.clone(), e.hash))
        .collect()
}

/// The names of the load assignments that differ between `before` and `after`.
fn changed(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeSet<String> {
    before
        .keys()
        .chain(after.keys())
        .filter(|n| before.get(*n) != after.get(*n))
        .cloned()
        .collect()
}

/// One EndpointSlice change (an endpoint removed, then back), three times in a remote
/// cluster and three times in the config cluster.
async fn endpoint_changes(bench: &mut Bench) {
    let host = format!(
        "svc-{CHANGED}.ns-{}.svc.cluster.local",
        sextant_synthetic::namespace_of(&W_M, CHANGED)
    );
    let places = [(MOVING, "a remote cluster"), (0, "the config cluster")];
    for (k, place) in places.into_iter().filter(|(k, _)| *k < clusters()) {
        let mut samples = Vec::new();
        let (mut cpu, mut bytes, mut publish) = (0.0, 0, 0.0);
        let mut assignments_sent = 0;
        let rounds = 3;
        for round in 0..rounds {
            bench.clients.ask("arm").await;
            let before = assignments(&bench.mesh);
            let endpoints = W_M.endpoints_per_service - 1 + round % 2;
            let slice = endpoint_slice(&W_M, k, CHANGED, endpoints);
            let cpu0 = cpu_seconds();
            let t0 = now_us();
            bench.index.apply_in(
                &cluster_id(k),
                Object::from_json(slice, "default").expect("valid"),
            );
            let (took, _, changes) = bench.publish();
            assert!(changes.endpoints_only(), "an endpoint change only");
            assert_eq!(changes.endpoints, BTreeSet::from([host.clone()]));
            let s = bench.settle(300, t0).await;
            cpu += cpu_seconds() - cpu0;
            publish += took;
            bytes += s.bytes;
            // Every proxy got exactly one response: that service's load assignments.
            assert_eq!(
                s.with_eds, bench.proxies as u64,
                "every proxy gets the change"
            );
            assert_eq!(s.responses, [0, bench.proxies as u64, 0, 0], "EDS only");
            // Only the changed service's load assignments whose endpoints changed (compared
            // after the pushes, when the scope is compiled already).
            let diff = changed(&before, &assignments(&bench.mesh));
            let suffix = format!("|{host}");
            assert!(diff.iter().all(|n| n.ends_with(&suffix)), "{diff:?}");
            let expected = diff.len() as u64;
            assert!(expected > 0);
            assert_eq!(
                (s.eds_min, s.eds_max),
                (expected, expected),
                "only the changed service's {expected} changed load assignments"
            );
            assignments_sent = expected;
            samples.extend(s.lasts);
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        println!(
            "one endpoint change in {place} ({rounds} changes): every proxy has it, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} B per proxy ({assignments_sent} load assignments of that service, nothing else); publish {}, server CPU {} per change",
            percentile(&samples, 0.5),
            percentile(&samples, 0.99),
            samples.last().copied().unwrap_or(f64::NAN),
            bytes / (rounds as u64 * bench.proxies as u64),
            ms(publish / rounds as f64),
            ms(cpu / rounds as f64),
        );
    }
}

/// The remote cluster `MOVING` leaves: `remove_cluster`, publish, pushes.
async fn leave(bench: &mut Bench) {
    bench.clients.ask("arm").await;
    let (cpu0, client_cpu0) = (cpu_seconds(), client_cpu(&mut bench.clients).await);
    let compiled0 = compiles(&bench.mesh);
    let t0 = now_us();
    let started = Instant::now();
    bench.index.remove_cluster(&cluster_id(MOVING));
    let removed = started.elapsed().as_secs_f64();
    let (publish, hosts, _) = bench.publish();
    let s = bench.settle(1000, t0).await;
    report(
        bench,
        &format!(
            "{} leaves: remove_cluster {}, publish {} ({hosts} hosts' endpoints changed)",
            cluster_id(MOVING),
            ms(removed),
            ms(publish)
        ),
        &s,
        (cpu0, client_cpu0, compiled0),
    )
    .await;
}

/// The remote cluster `MOVING` joins again: its objects listed in, publish, pushes. The
/// objects are made from JSON before the clock starts (the watches' decoding is not the
/// index's).
async fn join_again(bench: &mut Bench) {
    let objects = cluster_objects(&W_M, MOVING);
    bench.clients.ask("arm").await;
    let (cpu0, client_cpu0) = (cpu_seconds(), client_cpu(&mut bench.clients).await);
    let compiled0 = compiles(&bench.mesh);
    let t0 = now_us();
    let times = join(&mut bench.index, MOVING, objects);
    let (publish, hosts, _) = bench.publish();
    let s = bench.settle(1000, t0).await;
    let times: Vec<String> = times
        .iter()
        .map(|(kind, t)| format!("{kind:?} {}", ms(*t)))
        .collect();
    report(
        bench,
        &format!(
            "{} joins: reset_in {}, publish {} ({hosts} hosts' endpoints changed)",
            cluster_id(MOVING),
            times.join(", "),
            ms(publish)
        ),
        &s,
        (cpu0, client_cpu0, compiled0),
    )
    .await;
}

async fn report(bench: &mut Bench, what: &str, s: &Settled, before: (f64, f64, (f64, f64))) {
    let (cpu0, client_cpu0, (count0, sum0)) = before;
    // The quiet period is idle on both sides.
    let (count, sum) = compiles(&bench.mesh);
    println!("{what}");
    println!(
        "  {}; CPU: server {:.2} s, proxies {:.2} s; {} scope builds, {:.2} s; server resident memory {} MiB",
        s.describe(),
        cpu_seconds() - cpu0,
        client_cpu(&mut bench.clients).await - client_cpu0,
        count - count0,
        sum - sum0,
        rss_kib() / 1024
    );
}
