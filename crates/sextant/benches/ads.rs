//! ADS at W-M with many emulated proxies (an in-repo client that subscribes and ACKs like
//! Envoy): connect-storm time, time for one VirtualService change to be ACKed by every proxy,
//! resident memory per connected proxy, and bytes per push for one endpoint change, SotW vs
//! delta.
//!
//! The server and the emulated proxies run in two processes, each pinned to its own core when
//! `taskset` is available (DESIGN.md section 5), so the server's memory and time are its own.
//! The proxies speak the protocol like Envoy (subscriptions, EDS after CDS, RDS after LDS, an
//! ACK for every response) but read only the fields they need from each resource. Run with
//! `make bench`; `SEXTANT_BENCH_PROXIES` sets the number of proxies (default 1000).

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{
        DeltaDiscoveryRequest, DiscoveryRequest,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
};
use sextant::{mesh::Mesh, metrics::Metrics};
use sextant_compiler::type_url;
use sextant_index::Object;
use sextant_workload::{W_M, endpoint_ip, virtual_service};
use sextant_xds::{AdsServer, Generator, Registry};
use tokio::sync::{mpsc, watch};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

mod support;
use support::rss_kib;

#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set in the child process: the server address to connect the emulated proxies to.
const CLIENTS_ENV: &str = "SEXTANT_BENCH_CLIENTS";

fn main() {
    let proxies: usize = std::env::var("SEXTANT_BENCH_PROXIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let client_role = std::env::var(CLIENTS_ENV).ok();
    let pinned = pin(if client_role.is_some() { 1 } else { 0 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if pinned { 1 } else { 2 })
        .enable_all()
        .build()
        .expect("runtime");
    match client_role {
        Some(addr) => runtime.block_on(clients::run(addr, proxies)),
        None => runtime.block_on(server(proxies, pinned)),
    }
}

/// Pins this process (every thread) to one core with `taskset`, when there are two cores.
fn pin(core: usize) -> bool {
    // Cores online, not `available_parallelism`: the clients' process inherits the server's
    // one-core affinity, and must still move to its own core.
    let cores = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| s.trim().rsplit(['-', ',']).next()?.parse::<usize>().ok())
        .map_or(1, |last| last + 1);
    cores >= 2
        && Command::new("taskset")
            .args([
                "-a",
                "-c",
                "-p",
                &core.to_string(),
                &std::process::id().to_string(),
            ])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// CPU time (user + system) this process has used, in seconds.
fn cpu_seconds() -> f64 {
    // Fields 14 and 15 of /proc/self/stat, in clock ticks (100 per second on Linux), counted
    // after the command name, which may contain spaces.
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f[11].parse::<f64>().ok()? + f[12].parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn node(s: usize, e: usize) -> Node {
    let p = sextant_workload::sidecar(&W_M, s, e);
    Node {
        id: p.id,
        ..Default::default()
    }
}

/// The node of the i-th emulated proxy: every proxy a different pod of W-M (10 per service,
/// services spread over 100 namespaces).
fn nth_node(i: usize) -> Node {
    node(
        i % W_M.services,
        (i / W_M.services) % W_M.endpoints_per_service,
    )
}

/// Scope compilations so far and their total time, from the server's metrics.
fn compile_time(mesh: &Mesh) -> String {
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
fn cached_scope_time(mesh: &Mesh, proxies: usize) -> String {
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

/// The emulated proxies' process, driven by line commands on its stdin.
struct Clients {
    stdin: std::process::ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    child: std::process::Child,
}

impl Clients {
    fn spawn(addr: &str, proxies: usize) -> Clients {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .env(CLIENTS_ENV, addr)
            .env("SEXTANT_BENCH_PROXIES", proxies.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the clients process");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Clients {
            stdin: child.stdin.take().expect("stdin"),
            lines,
            child,
        }
    }

    /// Sends a command and returns the words of the reply.
    async fn ask(&mut self, command: &str) -> Vec<String> {
        writeln!(self.stdin, "{command}").expect("write to clients");
        self.stdin.flush().expect("flush");
        let line = tokio::time::timeout(Duration::from_secs(300), self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("clients did not answer {command}"))
            .unwrap_or_else(|| panic!("clients exited during {command}"));
        line.split_whitespace().map(str::to_owned).collect()
    }

    /// The words of a further reply to the last command.
    async fn next_reply(&mut self) -> Vec<String> {
        let line = tokio::time::timeout(Duration::from_secs(300), self.lines.recv())
            .await
            .expect("clients did not answer")
            .expect("clients exited");
        line.split_whitespace().map(str::to_owned).collect()
    }
}

/// CPU seconds the proxies' process has used.
async fn client_cpu(clients: &mut Clients) -> f64 {
    clients.ask("cpu").await[1].parse().expect("cpu seconds")
}

fn num(words: &[String], i: usize) -> u64 {
    words[i].parse().expect("number")
}

async fn server(proxies: usize, pinned: bool) {
    let rss0 = rss_kib();
    let mut index = sextant_workload::index(&W_M);
    let (snapshot, changes) = index.publish();
    let mesh = Arc::new(Mesh::new(Arc::new(Metrics::new())));
    mesh.publish(snapshot, changes);
    let (updates_tx, updates_rx) = watch::channel(1u64);
    let (_shutdown_tx, shutdown_rx) = watch::channel(false);
    let registry = Arc::new(Registry::default());
    let server = AdsServer::new(mesh.clone(), updates_rx, registry.clone(), shutdown_rx);
    let incoming = sextant::xds_incoming("127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr = format!("http://{}", incoming.local_addr().expect("addr"));
    tokio::spawn(
        sextant::xds_server()
            .add_service(server.into_service())
            .serve_with_incoming(incoming),
    );
    let rss_state = rss_kib();
    println!(
        "W-M state loaded: {} MiB resident (before any proxy); server and proxies {}",
        (rss_state - rss0.min(rss_state)) / 1024,
        if pinned {
            "pinned to one core each"
        } else {
            "share the cores"
        }
    );

    let mut clients = Clients::spawn(&addr, proxies);
    clients.ask("hello").await;
    let started = now_us();
    let (cpu0, client_cpu0) = (cpu_seconds(), client_cpu(&mut clients).await);
    let reply = clients.ask("connect").await;
    let storm = (num(&reply, 1) - started) as f64 / 1e6;
    println!(
        "connect storm: {proxies} proxies fully configured (CDS, EDS, LDS, RDS) in {storm:.2} s; {:.2} GB sent; {} reconnects; CPU: server {:.2} s, proxies {:.2} s",
        num(&reply, 2) as f64 / 1e9,
        num(&reply, 3),
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
    let client_rss = num(&clients.ask("rss").await, 1);
    println!(
        "server resident memory with {proxies} proxies: {} MiB, {} KiB per proxy beyond the loaded state (the proxies' process: {} MiB)",
        rss_connected / 1024,
        rss_connected.saturating_sub(rss_state) / proxies as u64,
        client_rss / 1024,
    );

    // One VirtualService change, from publishing to each proxy's ACK of the new routes.
    let mut samples = Vec::new();
    let (cpu0, client_cpu0) = (cpu_seconds(), client_cpu(&mut clients).await);
    for round in 0..5 {
        clients.ask("arm").await;
        let vs = virtual_service(&W_M, round % 7, 80 - round as u32 * 10);
        index.apply(Object::from_json(vs, "default").expect("valid"));
        let t0 = now_us();
        let (snapshot, changes) = index.publish();
        let version = snapshot.version;
        mesh.publish(snapshot, changes);
        updates_tx.send(version).expect("send");
        let reply = clients.ask("wait").await;
        samples.extend(
            reply[1..]
                .iter()
                .map(|t| (t.parse::<u64>().expect("time") as f64 - t0 as f64) / 1e3),
        );
    }
    println!(
        "  compile time so far: {}; CPU per change: server {:.2} s, proxies {:.2} s",
        compile_time(&mesh),
        (cpu_seconds() - cpu0) / 5.0,
        (client_cpu(&mut clients).await - client_cpu0) / 5.0
    );
    samples.sort_by(|a, b| a.total_cmp(b));
    println!(
        "VirtualService change until ACKed by all {proxies} proxies (5 changes, no debounce): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
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
    let delta_initial = num(&clients.ask("delta").await, 1);
    clients.ask("arm").await;
    let slice = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "svc-5-slice", "namespace": "ns-5", "labels": {"kubernetes.io/service-name": "svc-5"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}],
        "endpoints": (0..9).map(|e| serde_json::json!({"addresses": [endpoint_ip(&W_M, 5, e)],
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
    let reply = clients.ask("wait-endpoints").await;
    let (sotw_bytes, delta_after, last) = (num(&reply, 1), num(&reply, 2), num(&reply, 3));
    println!(
        "  compile time so far: {}; server CPU for the endpoint change: {:.2} s",
        compile_time(&mesh),
        cpu_seconds() - cpu0
    );
    println!(
        "one endpoint change: every proxy updated in {:.0} ms; state of the world sends {} bytes per proxy, delta {delta_after} bytes ({:.3}% of the {delta_initial}-byte full configuration)",
        (last - t0) as f64 / 1e3,
        sotw_bytes / proxies as u64,
        delta_after as f64 * 100.0 / delta_initial.max(1) as f64
    );

    // Memory per additional idle proxy beyond shared state: every scope is compiled and the
    // allocator has seen a storm already; more proxies of other pods connect and go idle.
    let more = proxies / 4;
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
    clients.ask("quit").await;
    let _ = clients.child.wait();
}

/// Milliseconds to write `bytes` to each of `n` loopback TCP connections that the proxies'
/// process opens and drains: what moving a VirtualService change's bytes costs at the least.
async fn transport_floor(clients: &mut Clients, n: usize, bytes: usize) -> f64 {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accept = tokio::spawn(async move {
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            let (s, _) = listener.accept().await.expect("accept");
            s.set_nodelay(true).expect("nodelay");
            streams.push(s);
        }
        streams
    });
    assert_eq!(
        clients.ask(&format!("drain {addr} {n} {bytes}")).await[0],
        "connected"
    );
    let streams = accept.await.expect("accepted");
    let chunk = bytes::Bytes::from(vec![7u8; 64 * 1024]);
    let t0 = now_us();
    for mut s in streams {
        let chunk = chunk.clone();
        tokio::spawn(async move {
            let mut left = bytes;
            while left > 0 {
                let k = left.min(chunk.len());
                s.write_all(&chunk[..k]).await.expect("write");
                left -= k;
            }
        });
    }
    let done = clients.next_reply().await;
    (num(&done, 1) - t0) as f64 / 1e3
}

/// The emulated proxies.
mod clients {
    use super::*;
    use tonic::codegen::http::uri::PathAndQuery;

    /// What an emulated proxy reads from a discovery response. The response is scanned in
    /// tonic's receive buffer, which is then reused, so a proxy costs about what the transport
    /// costs: the benchmark measures the server, not the client's allocator.
    #[derive(Default)]
    struct Response {
        version_info: String,
        type_url: String,
        nonce: String,
        /// Encoded size of all resources.
        bytes: u64,
        /// Names of the clusters that use EDS (CDS responses only).
        eds_clusters: Vec<String>,
    }

    /// Calls `f(field number, payload)` for each length-delimited field of `data`; varints and
    /// fixed-size fields are skipped. `None` on malformed input.
    fn each_field<'a>(mut data: &'a [u8], mut f: impl FnMut(u64, &'a [u8])) -> Option<()> {
        while !data.is_empty() {
            let key = prost::encoding::decode_varint(&mut data).ok()?;
            let len = match key & 7 {
                0 => {
                    prost::encoding::decode_varint(&mut data).ok()?;
                    0
                }
                1 => 8,
                5 => 4,
                2 => {
                    let len = prost::encoding::decode_varint(&mut data).ok()? as usize;
                    let (payload, rest) = data.split_at_checked(len)?;
                    f(key >> 3, payload);
                    data = rest;
                    continue;
                }
                _ => return None,
            };
            data = data.get(len..)?;
        }
        Some(())
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    impl Response {
        fn scan(data: &[u8]) -> Option<Response> {
            let mut r = Response::default();
            let mut resources = Vec::new();
            each_field(data, |field, payload| match field {
                1 => r.version_info = text(payload),
                2 => resources.push(payload),
                4 => r.type_url = text(payload),
                5 => r.nonce = text(payload),
                _ => {}
            })?;
            for any in resources {
                each_field(any, |field, value| {
                    if field != 2 {
                        return;
                    }
                    r.bytes += value.len() as u64;
                    if r.type_url == type_url::CLUSTER {
                        let (mut name, mut eds) = (None, false);
                        each_field(value, |f, v| match f {
                            1 => name = Some(text(v)),
                            3 => eds = true,
                            _ => {}
                        });
                        if let (Some(name), true) = (name, eds) {
                            r.eds_clusters.push(name);
                        }
                    }
                })?;
            }
            Some(r)
        }
    }

    /// Encodes requests with prost and scans responses in place.
    #[derive(Default)]
    struct Codec;

    struct ScanDecoder;

    impl tonic::codec::Decoder for ScanDecoder {
        type Item = Response;
        type Error = tonic::Status;

        fn decode(
            &mut self,
            buf: &mut tonic::codec::DecodeBuf<'_>,
        ) -> Result<Option<Response>, tonic::Status> {
            use bytes::Buf;
            let len = buf.remaining();
            let data = buf.chunk();
            let response = if data.len() == len {
                Response::scan(data)
            } else {
                Response::scan(&buf.copy_to_bytes(len))
            };
            if buf.remaining() > 0 {
                buf.advance(len);
            }
            response
                .map(Some)
                .ok_or_else(|| tonic::Status::internal("malformed discovery response"))
        }

        /// Room for the largest response from the start: growing the buffer would copy it into
        /// fresh pages for every larger response, the client's main cost.
        fn buffer_settings(&self) -> tonic::codec::BufferSettings {
            tonic::codec::BufferSettings::new(2 << 20, 32 << 10)
        }
    }

    impl tonic::codec::Codec for Codec {
        type Encode = DiscoveryRequest;
        type Decode = Response;
        type Encoder = <tonic_prost::ProstCodec<DiscoveryRequest, DiscoveryRequest> as tonic::codec::Codec>::Encoder;
        type Decoder = ScanDecoder;

        fn encoder(&mut self) -> Self::Encoder {
            tonic::codec::Codec::encoder(&mut tonic_prost::ProstCodec::<
                DiscoveryRequest,
                DiscoveryRequest,
            >::default())
        }

        fn decoder(&mut self) -> ScanDecoder {
            ScanDecoder
        }
    }

    const ROUTE_NAMES: [&str; 2] = ["8080", "9090"];

    /// What the driver waits for.
    #[derive(Default)]
    struct Progress {
        configured: AtomicUsize,
        reconnects: AtomicUsize,
        bytes: AtomicU64,
        /// Incremented by `arm`: each proxy records the time of its first RDS (and EDS)
        /// response of the round.
        round: AtomicU64,
        times: Mutex<Vec<u64>>,
        eds_times: Mutex<Vec<u64>>,
        delta_after: AtomicU64,
        delta_updated: AtomicU64,
    }

    pub async fn run(addr: String, proxies: usize) {
        let progress = Arc::new(Progress::default());
        let (tx, mut commands) = mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let reply = |words: String| {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{words}").expect("stdout");
            out.flush().expect("stdout");
        };
        let mut delta_initial = None;
        while let Some(command) = commands.recv().await {
            match command.as_str() {
                "hello" => reply("hello".into()),
                "connect" => {
                    for i in 0..proxies {
                        tokio::spawn(proxy(addr.clone(), nth_node(i), progress.clone()));
                    }
                    while progress.configured.load(Ordering::Relaxed) < proxies {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    let done = now_us();
                    reply(format!(
                        "configured {done} {} {}",
                        progress.bytes.load(Ordering::Relaxed),
                        progress.reconnects.load(Ordering::Relaxed)
                    ));
                }
                more if more.starts_with("more ") => {
                    // Further proxies (other pods, same scopes), for memory per proxy.
                    let n: usize = more[5..].parse().expect("count");
                    for i in proxies..proxies + n {
                        tokio::spawn(proxy(addr.clone(), nth_node(i), progress.clone()));
                    }
                    while progress.configured.load(Ordering::Relaxed) < proxies + n {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    reply("configured".into());
                }
                "rss" => reply(format!("rss {}", rss_kib())),
                drain if drain.starts_with("drain ") => {
                    // The transport floor: N plain TCP connections each reading BYTES.
                    let words: Vec<&str> = drain.split_whitespace().collect();
                    let (target, n, bytes): (String, usize, usize) = (
                        words[1].to_owned(),
                        words[2].parse().expect("count"),
                        words[3].parse().expect("bytes"),
                    );
                    let mut readers = Vec::new();
                    for _ in 0..n {
                        let mut stream = tokio::net::TcpStream::connect(&target)
                            .await
                            .expect("connect");
                        readers.push(tokio::spawn(async move {
                            use tokio::io::AsyncReadExt;
                            let mut buf = vec![0u8; 64 * 1024];
                            let mut read = 0;
                            while read < bytes {
                                match stream.read(&mut buf).await.expect("read") {
                                    0 => break,
                                    k => read += k,
                                }
                            }
                        }));
                    }
                    reply("connected".into());
                    for r in readers {
                        r.await.expect("reader");
                    }
                    reply(format!("drained {}", now_us()));
                }
                "cpu" => reply(format!("cpu {}", cpu_seconds())),
                "arm" => {
                    progress.times.lock().expect("lock").clear();
                    progress.eds_times.lock().expect("lock").clear();
                    progress.bytes.store(0, Ordering::Relaxed);
                    progress.delta_updated.store(0, Ordering::Relaxed);
                    progress.delta_after.store(0, Ordering::Relaxed);
                    progress.round.fetch_add(1, Ordering::SeqCst);
                    reply("armed".into());
                }
                "wait" => {
                    while progress.times.lock().expect("lock").len() < proxies {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let times = progress.times.lock().expect("lock").clone();
                    let words: Vec<String> = times.iter().map(u64::to_string).collect();
                    reply(format!("acked {}", words.join(" ")));
                }
                "delta" => {
                    let initial = Arc::new(AtomicU64::new(0));
                    tokio::spawn(delta_proxy(
                        addr.clone(),
                        node(1, 3),
                        initial.clone(),
                        progress.clone(),
                        progress.round.load(Ordering::SeqCst),
                    ));
                    // Initial configuration: until nothing arrives for a second.
                    let mut last = u64::MAX;
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let now = initial.load(Ordering::Relaxed);
                        if now == last && now > 0 {
                            break;
                        }
                        last = now;
                    }
                    delta_initial = Some(last);
                    reply(format!("delta {last}"));
                }
                "wait-endpoints" => {
                    assert!(delta_initial.is_some(), "delta client not started");
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while (progress.eds_times.lock().expect("lock").len() < proxies
                        || progress.delta_updated.load(Ordering::Relaxed) == 0)
                        && Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let last = progress
                        .eds_times
                        .lock()
                        .expect("lock")
                        .iter()
                        .copied()
                        .max()
                        .unwrap_or(0);
                    reply(format!(
                        "endpoints {} {} {last}",
                        progress.bytes.load(Ordering::Relaxed),
                        progress.delta_after.load(Ordering::Relaxed),
                    ));
                }
                "quit" => {
                    reply("bye".into());
                    std::process::exit(0);
                }
                other => panic!("unknown command {other}"),
            }
        }
    }

    /// HTTP/2 settings of Envoy's gRPC client: stream and connection windows of 256 MiB (Envoy's
    /// defaults), so the server is never held back waiting for window updates.
    fn envoy_like(
        endpoint: Result<tonic::transport::Endpoint, tonic::transport::Error>,
    ) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
        Ok(endpoint?
            .initial_stream_window_size(window("SEXTANT_BENCH_STREAM_WINDOW", 256 << 20))
            .initial_connection_window_size(window("SEXTANT_BENCH_CONN_WINDOW", 256 << 20)))
    }

    fn window(var: &str, default: u32) -> u32 {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// One state-of-the-world proxy; reconnects like Envoy when a storm overflows the backlog.
    async fn proxy(addr: String, node: Node, progress: Arc<Progress>) {
        for attempt in 0..20u64 {
            if session(addr.clone(), node.clone(), progress.clone())
                .await
                .is_ok()
            {
                return;
            }
            progress.reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
        }
        panic!("proxy {} could not connect", node.id);
    }

    async fn session(addr: String, node: Node, progress: Arc<Progress>) -> Result<(), String> {
        let channel = envoy_like(tonic::transport::Endpoint::from_shared(addr))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(512 << 20);
        grpc.ready().await.map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel(16);
        for (i, url) in [type_url::CLUSTER, type_url::LISTENER]
            .into_iter()
            .enumerate()
        {
            tx.send(DiscoveryRequest {
                node: (i == 0).then(|| node.clone()),
                type_url: url.into(),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        }
        let codec = Codec;
        let mut inbound = grpc
            .streaming(
                tonic::Request::new(ReceiverStream::new(rx)),
                PathAndQuery::from_static(
                    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
                ),
                codec,
            )
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let mut have = BTreeSet::new();
        let mut eds_names: Vec<String> = Vec::new();
        let mut configured = false;
        let mut routes_round = 0;
        let mut endpoints_round = 0;
        while let Some(Ok(resp)) = inbound.next().await {
            let received = now_us();
            progress.bytes.fetch_add(resp.bytes, Ordering::Relaxed);
            let mut ack = DiscoveryRequest {
                type_url: resp.type_url.clone(),
                version_info: resp.version_info.clone(),
                response_nonce: resp.nonce.clone(),
                ..Default::default()
            };
            let mut next = None;
            let round = progress.round.load(Ordering::Relaxed);
            match resp.type_url.as_str() {
                type_url::CLUSTER => {
                    eds_names = resp.eds_clusters;
                    next = Some(DiscoveryRequest {
                        type_url: type_url::ENDPOINT.into(),
                        resource_names: eds_names.clone(),
                        ..Default::default()
                    });
                }
                type_url::LISTENER => {
                    next = Some(DiscoveryRequest {
                        type_url: type_url::ROUTE.into(),
                        resource_names: ROUTE_NAMES.map(String::from).to_vec(),
                        ..Default::default()
                    });
                }
                type_url::ENDPOINT => {
                    // An ACK carries the subscription again.
                    ack.resource_names = eds_names.clone();
                    if configured && endpoints_round < round {
                        endpoints_round = round;
                        progress.eds_times.lock().expect("lock").push(received);
                    }
                }
                _ => {
                    ack.resource_names = ROUTE_NAMES.map(String::from).to_vec();
                    if configured && routes_round < round {
                        routes_round = round;
                        progress.times.lock().expect("lock").push(received);
                    }
                }
            }
            have.insert(resp.type_url);
            if !configured && have.len() == 4 {
                configured = true;
                progress.configured.fetch_add(1, Ordering::Relaxed);
            }
            for r in std::iter::once(ack).chain(next) {
                if tx.send(r).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// One delta proxy: counts bytes of its initial configuration, then of what arrives after
    /// the driver arms the next change.
    async fn delta_proxy(
        addr: String,
        node: Node,
        initial: Arc<AtomicU64>,
        progress: Arc<Progress>,
        start_round: u64,
    ) {
        let channel = envoy_like(tonic::transport::Endpoint::from_shared(addr))
            .expect("address")
            .connect()
            .await
            .expect("connect");
        let mut client =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(512 << 20);
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
        while let Some(Ok(resp)) = inbound.next().await {
            let size: u64 = resp
                .resources
                .iter()
                .map(|r| r.resource.as_ref().map_or(0, |a| a.value.len() as u64))
                .sum();
            if progress.round.load(Ordering::Relaxed) == start_round {
                initial.fetch_add(size, Ordering::Relaxed);
            } else {
                progress.delta_after.fetch_add(size, Ordering::Relaxed);
                progress.delta_updated.fetch_add(1, Ordering::Relaxed);
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
                    resource_names_subscribe: ROUTE_NAMES.map(String::from).to_vec(),
                    ..Default::default()
                });
            }
            for r in reqs {
                if tx.send(r).await.is_err() {
                    return;
                }
            }
        }
    }
}
