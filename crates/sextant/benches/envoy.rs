//! Real Envoys against a release `sextant serve` (issue 18): N Envoy 1.40 sidecars of W-M and
//! of W-M-S, each the sidecar of a different W-M workload, each on its own loopback address
//! (its admin interface too), bootstrapped by `sextant bootstrap`.
//!
//! For each shape and each source (`serve --config-dir` with the changed VirtualService in a
//! file of its own, rewritten; or the test API server holding the mesh, changed with real
//! `kubectl apply`) it measures:
//! - Envoy start to fully configured, from Envoy's own `update_time` gauges (CDS, LDS, every
//!   RDS route configuration; epoch milliseconds of the last update), read once Envoy's
//!   `/ready` says LIVE. Envoy's own apply time is its `update_duration` histograms.
//! - One VirtualService change (its weights) until each Envoy's changed route
//!   configurations (`8080` and `9090`: the VirtualService routes both ports of its host)
//!   have it: from the file write or kubectl's start to each Envoy's RDS `update_time`.
//!   Envoy's own apply is the new samples of those routes' RDS `update_duration` (the
//!   histograms' detailed buckets, diffed), so Sextant's share is the total less Envoy's.
//!   Envoys are read only after the fact (`SEXTANT_BENCH_SETTLE_MS` after the change, then
//!   every 250 ms for one not there yet): a `/stats` request costs Envoy's main thread about
//!   0.2 s at W-M, and the apply must not queue behind it. At the end, each Envoy's route
//!   configuration `8080` is read from `/config_dump` and must hold the last weights.
//! - Memory per Envoy: resident (`/proc`) and `server.memory_allocated`.
//! - Sextant's CPU (`/proc/PID/stat`) from spawn to ready, while the Envoys connect, and per
//!   change; on the Kubernetes path the test API server's too.
//!
//! The Envoys' placement: Envoy `i` is the sidecar of endpoint 0 of a service in namespace
//! `ns-(i % 3)`, and the VirtualService changed is `svc-2`'s (namespace `ns-2`), so under
//! W-M-S's Sidecars (own namespace and the next two imported) every Envoy imports it.
//!
//! Run with `make bench-envoy`. Environment: `ENVOY` (default `.venv/bin/envoy`), `KUBECTL`
//! (default `.tools/kubectl/kubectl`), `SEXTANT_BENCH_SHAPE` (`W-M`, `W-M-S` or `both`, the
//! default), `SEXTANT_BENCH_ENVOYS` (default 5 at W-M, 20 at W-M-S), `SEXTANT_BENCH_CHANGES`
//! (default 10), `SEXTANT_BENCH_PATH` (`dir`, `kube` or `both`, the default),
//! `SEXTANT_BENCH_SETTLE_MS` (default 2000), `SEXTANT_TESTAPI_BIN` (default
//! `sextant-testapi` beside the `sextant` binary).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use sextant_synthetic::{Shape, W_M, W_M_S};
use sextant_testing::{Serve, sextant_bin};

#[path = "support/create.rs"]
mod create;
#[path = "envoy/proxies.rs"]
mod proxies;
#[path = "envoy/report.rs"]
mod report;
#[path = "envoy/source.rs"]
mod source;
mod support;

use proxies::{Envoy, Stats};
use report::Outcome;
use source::{Kind, Source};

/// The service whose VirtualService changes (namespace `ns-2`).
const CHANGED: usize = 2;
/// The route configurations the change touches: both ports of its host.
const CHANGED_ROUTES: [&str; 2] = ["8080", "9090"];

fn env_number(var: &str) -> Option<usize> {
    std::env::var(var).ok().and_then(|v| v.parse().ok())
}

fn env_choice(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| "both".to_owned())
}

fn main() {
    let envoy = sextant_testing::envoy().expect("ENVOY or .venv/bin/envoy (make envoy)");
    let shapes: Vec<(&str, Shape, usize)> = [("W-M", W_M, 5), ("W-M-S", W_M_S, 20)]
        .into_iter()
        .filter(|(name, _, _)| {
            let wanted = env_choice("SEXTANT_BENCH_SHAPE");
            wanted == "both" || wanted == *name
        })
        .map(|(name, shape, n)| (name, shape, env_number("SEXTANT_BENCH_ENVOYS").unwrap_or(n)))
        .collect();
    let path = env_choice("SEXTANT_BENCH_PATH");
    let kinds: Vec<Kind> = [Kind::Dir, Kind::Kube]
        .into_iter()
        .filter(|k| match path.as_str() {
            "dir" => *k == Kind::Dir,
            "kube" => *k == Kind::Kube,
            _ => true,
        })
        .collect();
    let changes = env_number("SEXTANT_BENCH_CHANGES").unwrap_or(10);
    machine(&envoy);
    let mut outcomes = Vec::new();
    for (name, shape, n) in &shapes {
        for kind in &kinds {
            let outcome = measure(&envoy, name, shape, *n, *kind, changes);
            outcome.print();
            outcomes.push(outcome);
        }
    }
    println!();
    println!("### Summary");
    println!();
    println!("{}", report::SUMMARY_HEAD);
    for o in &outcomes {
        println!("{}", o.summary_row());
    }
}

/// Prints the machine, the date and the tools.
fn machine(envoy: &Path) {
    let out = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let model = out("lscpu", &[])
        .lines()
        .find_map(|l| l.strip_prefix("Model name:").map(|m| m.trim().to_owned()))
        .unwrap_or_default();
    println!(
        "machine: {} cores ({model}), {}; date {}",
        out("nproc", &[]),
        out("sh", &["-c", "free -g | awk '/Mem:/ {print $2 \" GiB\"}'"]),
        out("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    );
    println!(
        "envoy: {}; sextant: {}",
        out(envoy.to_str().unwrap_or("envoy"), &["--version"]),
        sextant_bin().display()
    );
}

/// The test API server's binary: `$SEXTANT_TESTAPI_BIN`, else beside `sextant`.
fn testapi_bin() -> PathBuf {
    std::env::var_os("SEXTANT_TESTAPI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| sextant_bin().with_file_name("sextant-testapi"))
}

/// The workload Envoy `i` is the sidecar of: endpoint 0 of a service in namespace
/// `ns-(i % 3)`, a different service for each Envoy.
fn node_of(shape: &Shape, i: usize) -> String {
    let per_namespace = shape.services / shape.namespaces;
    let s = (i % 3 + shape.namespaces * (i / 3 % per_namespace)) % shape.services;
    let e = (i / (3 * per_namespace)) % shape.endpoints_per_service;
    sextant_synthetic::sidecar(shape, s, e).id
}

/// The k-th change's weight to v1: never the initial 90, never the previous one.
fn weight(k: usize) -> u32 {
    10 + ((k as u32 + 1) * 37) % 80
}

fn cpu(pid: Option<u32>) -> f64 {
    pid.map_or(0.0, support::cpu_seconds)
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn measure(
    envoy: &Path,
    name: &str,
    shape: &Shape,
    n: usize,
    kind: Kind,
    changes: usize,
) -> Outcome {
    let work = std::env::temp_dir().join(format!(
        "sextant-bench-envoy-{}/{name}-{}",
        std::process::id(),
        kind.name()
    ));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    println!();
    println!("{name} through the {} source, {n} Envoys:", kind.name());
    let source = match kind {
        Kind::Dir => Source::dir(&work, shape, CHANGED),
        Kind::Kube => Source::kube(
            &work,
            shape,
            CHANGED,
            &testapi_bin(),
            &sextant_testing::kubectl().expect("KUBECTL or .tools/kubectl/kubectl (make tools)"),
        ),
    };
    let mut o = Outcome {
        shape: name.to_owned(),
        source: kind.name().to_owned(),
        envoys: n,
        ..Default::default()
    };

    // Startup.
    let serve = Serve::new();
    let log = work.join("sextant.log");
    let started = Instant::now();
    let sextant = sextant_testing::Process(
        source
            .serve_command(&serve)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("sextant serve starts"),
    );
    if let Err(e) = serve.wait_ready(Duration::from_secs(120)) {
        panic!(
            "{e}; sextant's log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let pid = Some(sextant.0.id());
    o.serve_ready_s = started.elapsed().as_secs_f64();
    o.serve_ready_cpu_s = cpu(pid);
    o.serve_rss_mib.0 = rss_mib(sextant.0.id());

    // Every Envoy started at once; each is read once it is LIVE.
    let bootstraps: Vec<PathBuf> = (0..n)
        .map(|i| proxies::bootstrap(&work, i, &node_of(shape, i), serve.xds))
        .collect();
    let cpu_before = cpu(pid);
    let envoys: Vec<Envoy> = bootstraps
        .iter()
        .enumerate()
        .map(|(i, b)| proxies::start(envoy, &work, i, b))
        .collect();
    for e in &envoys {
        e.wait_live(Duration::from_secs(600));
    }
    o.connect_cpu_s = cpu(pid) - cpu_before;
    o.serve_rss_mib.1 = rss_mib(sextant.0.id());
    for e in &envoys {
        configured(e);
    }
    // Read again: the first read flushed the histograms, whose merge ends after it answers.
    let mut last: Vec<Stats> = envoys
        .iter()
        .map(|e| {
            let started = Instant::now();
            let stats = e.stats();
            o.stats_read_ms.push(started.elapsed().as_secs_f64() * 1e3);
            stats
        })
        .collect();
    for (e, stats) in envoys.iter().zip(&last) {
        o.configured_ms
            .push((stats.configured_ms() - e.started_ms) as f64);
        o.startup_apply_ms.push(stats.startup_apply_ms());
        o.startup_cds_ms.push(stats.cds_apply_ms());
        o.rss_mib.push(e.rss_kib() as f64 / 1024.0);
        o.allocated_mib
            .push(stats.value("server.memory_allocated") as f64 / (1 << 20) as f64);
    }
    o.clusters = last[0].value("cluster_manager.active_clusters");
    o.listeners = last[0].value("listener_manager.total_listeners_active");
    println!(
        "  configured: {:?} ms",
        o.configured_ms
            .iter()
            .map(|v| *v as u64)
            .collect::<Vec<_>>()
    );

    // The changes.
    let settle =
        Duration::from_millis(env_number("SEXTANT_BENCH_SETTLE_MS").unwrap_or(2000) as u64);
    let testapi = source.testapi_pid();
    // `serve`'s default quiet period, unless the environment sets another.
    let debounce_ms = env_number("SEXTANT_DEBOUNCE_AFTER_MS").unwrap_or(100) as f64;
    o.debounce_ms = debounce_ms;
    for k in 0..changes {
        let (cpu0, api0) = (cpu(pid), cpu(testapi));
        let change = source.change(weight(k));
        std::thread::sleep(settle);
        let applied = wait_applied(&envoys, change.started_ms);
        o.change_cpu_s.push(cpu(pid) - cpu0);
        if testapi.is_some() {
            o.testapi_cpu_s.push(cpu(testapi) - api0);
        }
        o.kubectl_ms.extend(change.kubectl_ms);
        // Read again, so that the histograms hold every sample of this change.
        let now: Vec<Stats> = envoys.iter().map(Envoy::stats).collect();
        let mut all = 0.0f64;
        for ((applied_ms, before), after) in applied.iter().zip(&last).zip(&now) {
            let total = (applied_ms - change.started_ms) as f64;
            let samples: Vec<f64> = CHANGED_ROUTES
                .iter()
                .flat_map(|r| after.rds_duration(r).since(&before.rds_duration(r)))
                .collect();
            o.envoy_apply_unseen += usize::from(samples.is_empty());
            // Added up from 0.0: an empty sum of floats is -0.0.
            let own = samples.iter().fold(0.0, |a, b| a + b);
            o.change_ms.push(total);
            o.envoy_apply_ms.push(own);
            o.share.push(((total - own) / total).max(0.0));
            o.residual_ms
                .push(total - own - debounce_ms - change.kubectl_ms.unwrap_or(0.0));
            all = all.max(total);
        }
        o.change_all_ms.push(all);
        println!(
            "  change {k} (v1 {}%): every Envoy in {all:.0} ms{}, Sextant CPU {:.3} s; Envoy's own apply {:.2}-{:.2} ms",
            weight(k),
            change
                .kubectl_ms
                .map(|m| format!(" (kubectl apply ran {m:.0} ms)"))
                .unwrap_or_default(),
            o.change_cpu_s[k],
            report::percentile(&o.envoy_apply_ms[o.envoy_apply_ms.len() - n..], 0.0),
            report::percentile(&o.envoy_apply_ms[o.envoy_apply_ms.len() - n..], 1.0),
        );
        last = now;
    }
    if changes > 0 {
        let expected = weight(changes - 1);
        o.checked = envoys
            .iter()
            .filter(|e| route_weights(&e.route_config("8080")) == Some((expected, 100 - expected)))
            .count();
    }
    drop(envoys);
    drop(sextant);
    drop(source);
    let _ = std::fs::remove_dir_all(&work);
    o
}

/// Waits until Envoy holds the changed route configurations: `/ready` says LIVE before RDS
/// if a listener's routes come later, so the RDS gauges are awaited too.
fn configured(e: &Envoy) {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = e.stats();
        if CHANGED_ROUTES.iter().all(|r| stats.rds_time(r).is_some()) {
            return;
        }
        assert!(
            Instant::now() < until,
            "Envoy {} never got its routes",
            e.admin
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// When each Envoy applied the change begun at `since_ms` (its changed route
/// configurations' last `update_time`).
fn wait_applied(envoys: &[Envoy], since_ms: u64) -> Vec<u64> {
    let until = Instant::now() + Duration::from_secs(120);
    envoys
        .iter()
        .map(|e| loop {
            let stats = e.stats();
            let times: Vec<Option<u64>> = CHANGED_ROUTES.iter().map(|r| stats.rds_time(r)).collect();
            if times.iter().all(|t| t.is_some_and(|t| t >= since_ms)) {
                break times.into_iter().flatten().max().unwrap_or(since_ms);
            }
            assert!(
                Instant::now() < until,
                "Envoy {} never applied the change (route update times {times:?}, change at {since_ms})",
                e.admin
            );
            std::thread::sleep(Duration::from_millis(250));
        })
        .collect()
}

/// The weights to v1 and v2 of the changed VirtualService's split in route configuration
/// `8080` (a `/config_dump` of it).
fn route_weights(dump: &serde_json::Value) -> Option<(u32, u32)> {
    let host = format!("svc-{CHANGED}.ns-{CHANGED}.svc.cluster.local");
    let vhosts = dump["configs"].as_array()?.iter().flat_map(|c| {
        c["route_config"]["virtual_hosts"]
            .as_array()
            .into_iter()
            .flatten()
    });
    for vhost in vhosts {
        if !vhost["name"].as_str()?.starts_with(&host) {
            continue;
        }
        for route in vhost["routes"].as_array()? {
            let Some(clusters) = route["route"]["weighted_clusters"]["clusters"].as_array() else {
                continue;
            };
            let weight = |subset: &str| {
                let name = format!("outbound|8080|{subset}|{host}");
                clusters
                    .iter()
                    .find(|c| c["name"].as_str() == Some(name.as_str()))
                    .and_then(|c| c["weight"].as_u64())
            };
            return Some((weight("v1")? as u32, weight("v2")? as u32));
        }
    }
    None
}
