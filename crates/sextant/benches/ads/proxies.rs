//! An emulated proxies' process: Sextant's fake ADS clients, driven by line commands on stdin
//! (see `clients.rs` for the other side), each reply one line on stdout. Process `k` of
//! `procs` runs the proxies `i` with `i % procs == k`.

use std::{
    io::{BufRead, Write},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use envoy_types::pb::envoy::config::core::v3::Node;
use sextant_testing::ads_client::{AdsClient, envoy_endpoint, type_url};
use tokio::sync::mpsc;

use super::{cpu_seconds, micros, node, now_us, nth_node, rss_kib};

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

pub async fn run(addr: String, proxies: usize, k: usize, procs: usize) {
    let mine = move |range: std::ops::Range<usize>| range.filter(move |i| i % procs == k);
    // The proxies of this process configured so far, all of them counted.
    let mut running = 0;
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
    while let Some(line) = commands.recv().await {
        // `wait N` and `wait-endpoints N`: N of this process's proxies.
        let (command, count) = match line.split_once(' ') {
            Some((c, n)) if c.starts_with("wait") => (c.to_owned(), n.parse().expect("count")),
            _ => (line.clone(), 0),
        };
        match command.as_str() {
            "hello" => reply("hello".into()),
            "connect" => {
                for i in mine(0..proxies) {
                    running += 1;
                    tokio::spawn(proxy(addr.clone(), nth_node(i), progress.clone()));
                }
                while progress.configured.load(Ordering::Relaxed) < running {
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
                for i in mine(proxies..proxies + n) {
                    running += 1;
                    tokio::spawn(proxy(addr.clone(), nth_node(i), progress.clone()));
                }
                while progress.configured.load(Ordering::Relaxed) < running {
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
            "updated" => reply(format!(
                "updated {}",
                progress.times.lock().expect("lock").len()
            )),
            "wait" => {
                while progress.times.lock().expect("lock").len() < count {
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
                    // A pod of svc-5, whose endpoints change: it imports them under W-M-S too.
                    node(5, 3),
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
                // Only the process that started the delta proxy waits for it too.
                let delta = delta_initial.is_some();
                let deadline = Instant::now() + Duration::from_secs(60);
                while (progress.eds_times.lock().expect("lock").len() < count
                    || (delta && progress.delta_updated.load(Ordering::Relaxed) == 0))
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

/// Envoy's HTTP/2 windows, unless `SEXTANT_BENCH_STREAM_WINDOW` or `SEXTANT_BENCH_CONN_WINDOW`
/// set others.
fn endpoint(addr: String) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let mut endpoint = envoy_endpoint(addr)?;
    if let Some(w) = window("SEXTANT_BENCH_STREAM_WINDOW") {
        endpoint = endpoint.initial_stream_window_size(w);
    }
    if let Some(w) = window("SEXTANT_BENCH_CONN_WINDOW") {
        endpoint = endpoint.initial_connection_window_size(w);
    }
    Ok(endpoint)
}

fn window(var: &str) -> Option<u32> {
    std::env::var(var).ok().and_then(|v| v.parse().ok())
}

fn client(node: Node) -> AdsClient {
    AdsClient::new(node).routes(ROUTE_NAMES)
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

async fn session(
    addr: String,
    node: Node,
    progress: Arc<Progress>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let channel = endpoint(addr)?.connect().await?;
    let mut stream = client(node).sotw(channel).await?;
    let mut configured = false;
    let mut routes_round = 0;
    let mut endpoints_round = 0;
    while let Some(Ok(resp)) = stream.next().await {
        progress.bytes.fetch_add(resp.bytes, Ordering::Relaxed);
        let round = progress.round.load(Ordering::Relaxed);
        match resp.type_url.as_str() {
            type_url::ENDPOINT if configured && endpoints_round < round => {
                endpoints_round = round;
                let at = micros(resp.received);
                progress.eds_times.lock().expect("lock").push(at);
            }
            type_url::ROUTE if configured && routes_round < round => {
                routes_round = round;
                let at = micros(resp.received);
                progress.times.lock().expect("lock").push(at);
            }
            _ => {}
        }
        if !configured && resp.configured {
            configured = true;
            progress.configured.fetch_add(1, Ordering::Relaxed);
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
    let channel = endpoint(addr)
        .expect("address")
        .connect()
        .await
        .expect("connect");
    let mut stream = client(node).delta(channel).await.expect("stream");
    while let Some(Ok(resp)) = stream.next().await {
        if progress.round.load(Ordering::Relaxed) == start_round {
            initial.fetch_add(resp.bytes, Ordering::Relaxed);
        } else {
            progress
                .delta_after
                .fetch_add(resp.bytes, Ordering::Relaxed);
            progress.delta_updated.fetch_add(1, Ordering::Relaxed);
        }
    }
}
