//! The real Envoys: each started from `sextant bootstrap` as the sidecar of a W-M workload, on
//! a loopback address of its own (listeners and admin interface), and read through its own
//! stats after the fact.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sextant_testing::{Process, http_get, run, sextant_bin};

/// Envoy `i` binds 127.0.18.(10 + i): a range no other test of this repository uses.
pub fn bind_address(i: usize) -> String {
    format!("127.0.18.{}", 10 + i)
}

/// Milliseconds since the epoch, the clock of Envoy's `update_time` gauges.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One running Envoy.
pub struct Envoy {
    /// Its admin address (on its own loopback address).
    pub admin: SocketAddr,
    /// When it was spawned, ms since the epoch.
    pub started_ms: u64,
    /// Where its log (warnings and up) goes.
    pub log: PathBuf,
    process: Process,
}

impl Envoy {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// Resident memory, KiB, from `/proc`.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Its stats that the benchmark reads (one `/stats` request; about 0.2 s at W-M, where
    /// Envoy holds some 250,000 stats and matches the filter against each).
    pub fn stats(&self) -> Stats {
        let path = format!(
            "/stats?histogram_buckets=detailed&filter={}",
            percent_encode(STATS_FILTER)
        );
        let body = http_get(self.admin, &path)
            .unwrap_or_else(|| panic!("Envoy {}'s /stats did not answer", self.admin));
        Stats::parse(&body)
    }

    /// The dynamic route configuration `name` as Envoy holds it (`/config_dump`).
    pub fn route_config(&self, name: &str) -> serde_json::Value {
        let path = format!(
            "/config_dump?resource=dynamic_route_configs&name_regex={}",
            percent_encode(&format!("^{name}$"))
        );
        let body = http_get(self.admin, &path)
            .unwrap_or_else(|| panic!("Envoy {}'s /config_dump did not answer", self.admin));
        serde_json::from_str(&body).expect("config_dump is JSON")
    }

    /// Waits until Envoy's `/ready` says LIVE: its first CDS, EDS, LDS and RDS are applied
    /// and its listeners warmed. Polled every 200 ms; the time is read from the gauges.
    pub fn wait_live(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        while http_get(self.admin, "/ready").is_none_or(|b| b.trim() != "LIVE") {
            assert!(
                Instant::now() < until,
                "Envoy {} not LIVE after {deadline:?}; its log:\n{}",
                self.admin,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// What `stats` asks Envoy for: the last-update gauges and apply-time histograms of CDS, LDS
/// and every RDS route configuration, its allocated memory and its clusters and listeners.
const STATS_FILTER: &str = r"^(cluster_manager\.cds|listener_manager\.lds|http\..*\.rds\..*)\.update_(time|duration)$|^server\.memory_allocated$|^cluster_manager\.active_clusters$|^listener_manager\.total_listeners_active$";

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Writes the bootstrap of Envoy `i` (node `node`) into `dir`: `sextant bootstrap`'s, with
/// the admin interface moved to the Envoy's own address, and stats flushed when the admin
/// interface is asked (histograms such as `update_duration` are merged only at a flush,
/// every 5 s by default).
pub fn bootstrap(dir: &Path, i: usize, node: &str, xds: u16) -> PathBuf {
    let bind = bind_address(i);
    let yaml = run(Command::new(sextant_bin()).args([
        "bootstrap",
        "--node-id",
        node,
        "--bind-address",
        &bind,
        "--admin-port",
        "0",
        "--xds-address",
        &format!("127.0.0.1:{xds}"),
    ]));
    let mut doc = sextant_index::manifest::parse_documents(&yaml)
        .expect("sextant bootstrap writes YAML")
        .into_iter()
        .next()
        .expect("one document")
        .value;
    doc["admin"]["address"]["socket_address"]["address"] = serde_json::json!(bind);
    doc["stats_flush_on_admin"] = serde_json::json!(true);
    let path = dir.join(format!("envoy-{i}.json"));
    std::fs::write(&path, doc.to_string()).expect("bootstrap written");
    path
}

/// Starts Envoy `i` from `bootstrap` (one worker thread, as a sidecar of a small Pod).
pub fn start(envoy: &Path, dir: &Path, i: usize, bootstrap: &Path) -> Envoy {
    let admin_path = dir.join(format!("envoy-{i}.admin"));
    let log = dir.join(format!("envoy-{i}.log"));
    let _ = std::fs::remove_file(&admin_path);
    let started_ms = now_ms();
    let process = Process(
        Command::new(envoy)
            .arg("-c")
            .arg(bootstrap)
            .args([
                "--use-dynamic-base-id",
                "--concurrency",
                "1",
                "-l",
                "warning",
            ])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("envoy starts"),
    );
    let admin =
        sextant_testing::try_wait_for("Envoy's admin address", Duration::from_secs(60), || {
            std::fs::read_to_string(&admin_path)
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}; Envoy's log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    Envoy {
        admin,
        started_ms,
        log,
        process,
    }
}

/// A histogram's detailed buckets: count per bucket (`lower,width`, ms).
#[derive(Clone, Debug, Default)]
pub struct Histogram(BTreeMap<String, u64>);

impl Histogram {
    fn parse(totals: &str) -> Histogram {
        let mut buckets = BTreeMap::new();
        for item in totals.split(", ").map(str::trim).filter(|s| !s.is_empty()) {
            if let Some((bucket, count)) = item.rsplit_once(':')
                && let Ok(count) = count.parse::<u64>()
            {
                buckets.insert(bucket.to_owned(), count);
            }
        }
        Histogram(buckets)
    }

    /// The samples recorded since `before`, each as its bucket's midpoint (ms).
    pub fn since(&self, before: &Histogram) -> Vec<f64> {
        let mut out = Vec::new();
        for (bucket, count) in &self.0 {
            let new = count.saturating_sub(before.0.get(bucket).copied().unwrap_or(0));
            let Some((lower, width)) = bucket.split_once(',') else {
                continue;
            };
            let (Ok(lower), Ok(width)) = (lower.parse::<f64>(), width.parse::<f64>()) else {
                continue;
            };
            out.extend(std::iter::repeat_n(lower + width / 2.0, new as usize));
        }
        out
    }

    /// Every sample (ms).
    pub fn samples(&self) -> Vec<f64> {
        self.since(&Histogram::default())
    }
}

/// What one `/stats` request read.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Gauges and counters by name.
    pub values: BTreeMap<String, u64>,
    /// Histograms by name.
    pub histograms: BTreeMap<String, Histogram>,
}

impl Stats {
    fn parse(body: &str) -> Stats {
        let mut stats = Stats::default();
        let mut histogram: Option<String> = None;
        for line in body.lines() {
            if let Some(totals) = line.trim_start().strip_prefix("totals=") {
                if let Some(name) = histogram.take() {
                    stats.histograms.insert(name, Histogram::parse(totals));
                }
            } else if line.starts_with(' ') {
                continue;
            } else if let Some(name) = line.strip_suffix(':') {
                histogram = Some(name.to_owned());
            } else if let Some((name, value)) = line.split_once(": ")
                && let Ok(value) = value.trim().parse::<u64>()
            {
                stats.values.insert(name.to_owned(), value);
            }
        }
        stats
    }

    /// A value, 0 when absent.
    pub fn value(&self, name: &str) -> u64 {
        self.values.get(name).copied().unwrap_or(0)
    }

    /// The `update_time` gauge of RDS route configuration `route` (ms since the epoch).
    pub fn rds_time(&self, route: &str) -> Option<u64> {
        let suffix = format!(".rds.{route}.update_time");
        self.values
            .iter()
            .find(|(name, _)| name.starts_with("http.") && name.ends_with(&suffix))
            .map(|(_, v)| *v)
    }

    /// The `update_duration` histogram of RDS route configuration `route`.
    pub fn rds_duration(&self, route: &str) -> Histogram {
        let suffix = format!(".rds.{route}.update_duration");
        self.histograms
            .iter()
            .find(|(name, _)| name.starts_with("http.") && name.ends_with(&suffix))
            .map(|(_, h)| h.clone())
            .unwrap_or_default()
    }

    /// Every RDS `update_time` gauge.
    pub fn rds_times(&self) -> Vec<u64> {
        self.values
            .iter()
            .filter(|(name, _)| name.contains(".rds.") && name.ends_with(".update_time"))
            .map(|(_, v)| *v)
            .collect()
    }

    /// When the last of CDS, LDS and every route configuration was applied.
    pub fn configured_ms(&self) -> u64 {
        let mut times = self.rds_times();
        times.push(self.value("cluster_manager.cds.update_time"));
        times.push(self.value("listener_manager.lds.update_time"));
        times.into_iter().max().unwrap_or(0)
    }

    /// Envoy's own time applying its initial configuration: the CDS, LDS and RDS
    /// `update_duration` samples, added up (ms).
    pub fn startup_apply_ms(&self) -> f64 {
        self.histograms
            .iter()
            .filter(|(name, _)| {
                name.as_str() == "cluster_manager.cds.update_duration"
                    || name.as_str() == "listener_manager.lds.update_duration"
                    || name.contains(".rds.")
            })
            .flat_map(|(_, h)| h.samples())
            .fold(0.0, |a, b| a + b)
    }

    /// The CDS `update_duration` samples, added up (ms).
    pub fn cds_apply_ms(&self) -> f64 {
        self.histograms
            .get("cluster_manager.cds.update_duration")
            .map_or(0.0, |h| h.samples().iter().fold(0.0, |a, b| a + b))
    }
}
