//! The emulated proxies' process of the multi-cluster benchmark: state-of-the-world ADS
//! clients (`sextant_testing::ads_client`, which ACKs like Envoy), driven by line commands on
//! stdin (`ads/clients.rs` is the other side), each reply one line on stdout.
//!
//! After the connect storm, every proxy records what it receives in the current round (since
//! the driver's last `arm`): responses and resources per type, bytes, and the time of its last
//! response. `settle N QUIET_MS` waits until N proxies have had an EDS response in the round
//! and then nothing has arrived for QUIET_MS, and reports the round.

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

use super::{cpu_seconds, micros, node_of, now_us, rss_kib};

const ROUTE_NAMES: [&str; 2] = ["8080", "9090"];
/// Type URLs in the order rounds count them.
const TYPES: [&str; 4] = [
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
];
const EDS: usize = 1;

/// What one proxy received in the current round.
#[derive(Clone, Copy, Default)]
struct Round {
    responses: [u64; 4],
    resources: [u64; 4],
    /// Fewest and most resources in one EDS response.
    eds_min: u64,
    eds_max: u64,
    bytes: u64,
    /// When its last response arrived, microseconds since the epoch.
    last: u64,
}

struct Progress {
    configured: AtomicUsize,
    reconnects: AtomicUsize,
    storm_bytes: AtomicU64,
    rounds: Vec<Mutex<Round>>,
    /// When any proxy last received anything.
    last_any: AtomicU64,
}

pub async fn run(addr: String, proxies: usize) {
    let progress = Arc::new(Progress {
        configured: AtomicUsize::new(0),
        reconnects: AtomicUsize::new(0),
        storm_bytes: AtomicU64::new(0),
        rounds: (0..proxies).map(|_| Mutex::default()).collect(),
        last_any: AtomicU64::new(0),
    });
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
    while let Some(line) = commands.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[0] {
            "hello" => reply("hello".into()),
            "connect" => {
                for i in 0..proxies {
                    tokio::spawn(proxy(addr.clone(), i, node_of(i), progress.clone()));
                }
                while progress.configured.load(Ordering::Relaxed) < proxies {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let done = now_us();
                reply(format!(
                    "configured {done} {} {}",
                    progress.storm_bytes.load(Ordering::Relaxed),
                    progress.reconnects.load(Ordering::Relaxed)
                ));
            }
            "rss" => reply(format!("rss {}", rss_kib())),
            "cpu" => reply(format!("cpu {}", cpu_seconds())),
            "arm" => {
                for r in &progress.rounds {
                    *r.lock().expect("lock") = Round::default();
                }
                reply("armed".into());
            }
            "settle" => {
                let want: usize = words[1].parse().expect("count");
                let quiet = Duration::from_millis(words[2].parse().expect("milliseconds"));
                let deadline = Instant::now() + Duration::from_secs(120);
                let with_eds = || {
                    progress
                        .rounds
                        .iter()
                        .filter(|r| r.lock().expect("lock").responses[EDS] > 0)
                        .count()
                };
                while with_eds() < want && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                loop {
                    let last = progress.last_any.load(Ordering::Relaxed);
                    let since = Duration::from_micros(now_us().saturating_sub(last));
                    if since >= quiet {
                        break;
                    }
                    tokio::time::sleep(quiet - since).await;
                }
                reply(settled(&progress));
            }
            "quit" => {
                reply("bye".into());
                std::process::exit(0);
            }
            other => panic!("unknown command {other}"),
        }
    }
}

/// `settled WITH_EDS RESPONSES(4) RESOURCES(4) EDS_MIN EDS_MAX BYTES LAST...`: totals over the
/// proxies, then the time of each proxy's last response (of those that got one).
fn settled(progress: &Progress) -> String {
    let rounds: Vec<Round> = progress
        .rounds
        .iter()
        .map(|r| *r.lock().expect("lock"))
        .collect();
    let mut responses = [0u64; 4];
    let mut resources = [0u64; 4];
    for r in &rounds {
        for t in 0..4 {
            responses[t] += r.responses[t];
            resources[t] += r.resources[t];
        }
    }
    let with_eds = rounds.iter().filter(|r| r.responses[EDS] > 0).count();
    let eds = rounds.iter().filter(|r| r.responses[EDS] > 0);
    let eds_min = eds.clone().map(|r| r.eds_min).min().unwrap_or(0);
    let eds_max = eds.map(|r| r.eds_max).max().unwrap_or(0);
    let bytes: u64 = rounds.iter().map(|r| r.bytes).sum();
    let lasts: Vec<String> = rounds
        .iter()
        .filter(|r| r.last > 0)
        .map(|r| r.last.to_string())
        .collect();
    let list = |v: [u64; 4]| v.map(|n| n.to_string()).join(" ");
    format!(
        "settled {with_eds} {} {} {eds_min} {eds_max} {bytes} {}",
        list(responses),
        list(resources),
        lasts.join(" ")
    )
}

/// One state-of-the-world proxy; reconnects like Envoy when a storm overflows the backlog.
async fn proxy(addr: String, i: usize, node: Node, progress: Arc<Progress>) {
    for attempt in 0..20u64 {
        if session(addr.clone(), i, node.clone(), progress.clone())
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
    i: usize,
    node: Node,
    progress: Arc<Progress>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let channel = envoy_endpoint(addr)?.connect().await?;
    let mut stream = AdsClient::new(node)
        .routes(ROUTE_NAMES)
        .sotw(channel)
        .await?;
    let mut configured = false;
    while let Some(Ok(resp)) = stream.next().await {
        if !configured {
            progress
                .storm_bytes
                .fetch_add(resp.bytes, Ordering::Relaxed);
            if resp.configured {
                configured = true;
                progress.configured.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        let at = micros(resp.received);
        progress.last_any.fetch_max(at, Ordering::Relaxed);
        let t = TYPES
            .iter()
            .position(|u| *u == resp.type_url)
            .expect("a subscribed type");
        let mut r = progress.rounds[i].lock().expect("lock");
        let n = resp.resources as u64;
        if t == EDS {
            r.eds_min = if r.responses[EDS] == 0 {
                n
            } else {
                r.eds_min.min(n)
            };
            r.eds_max = r.eds_max.max(n);
        }
        r.responses[t] += 1;
        r.resources[t] += n;
        r.bytes += resp.bytes;
        r.last = r.last.max(at);
    }
    Ok(())
}
