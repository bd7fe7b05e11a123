//! The directory source at W-M: one changed file among thousands, from notify's event to the
//! published snapshot (DESIGN.md section 5: ≤ 20 ms), against reading the whole directory
//! (what every change cost before issue 18).
//!
//! The W-M mesh (`crates/synthetic`) is written as YAML, one object per file (12,200 files,
//! the shape that makes a full read most expensive per change), into a temporary directory,
//! watched with notify as `serve --config-dir` does. Each round rewrites one VirtualService's
//! file with new weights, waits for notify's event, then times `DirSource::publish` (what
//! `serve` runs once the debounce settles) and checks the snapshot holds the new weights.
//! `SEXTANT_BENCH_ROUNDS` sets the rounds (default 50). Run with
//! `cargo bench -p sextant-source --bench dir_change`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sextant_index::{Index, manifest::to_yaml};
use sextant_source::{DirCounters, DirSource};
use sextant_synthetic::{W_M, manifests, virtual_service};

fn main() {
    let rounds: usize = std::env::var("SEXTANT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = std::env::temp_dir().join(format!("sextant-bench-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut bytes = 0;
    let all = manifests(&W_M);
    for (i, m) in all.iter().enumerate() {
        let kind = m["kind"].as_str().unwrap_or("x").to_lowercase();
        let ns = m["metadata"]["namespace"].as_str().unwrap_or("cluster");
        let name = m["metadata"]["name"].as_str().unwrap_or("x");
        let text = to_yaml(std::slice::from_ref(m));
        bytes += text.len();
        let file = dir.join(format!("{ns}-{kind}-{name}-{i}.yaml"));
        std::fs::write(file, text).expect("write");
    }
    let vs_file = |s: usize| {
        let i = all
            .iter()
            .position(|m| {
                m["kind"] == "VirtualService" && m["metadata"]["name"] == format!("svc-{s}")
            })
            .expect("a VirtualService");
        dir.join(format!(
            "ns-{}-virtualservice-svc-{s}-{i}.yaml",
            s % W_M.namespaces
        ))
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let counters = DirCounters::default();
        let mut source = DirSource::new(
            dir.clone(),
            "default".into(),
            Arc::new(Mutex::new(Index::new("cluster.local", "Kubernetes"))),
        )
        .counters(counters.clone());
        let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
        source.watch(tx).expect("watch");
        let started = Instant::now();
        let (first, _) = source.reload();
        let first_read = started.elapsed();
        println!(
            "W-M as {} files, {:.1} MB: first read {:.0} ms ({} services, {} VirtualServices)",
            all.len(),
            bytes as f64 / 1e6,
            first_read.as_secs_f64() * 1e3,
            first.services.len(),
            first.virtual_services.len()
        );

        let mut event = Vec::new();
        let mut publish = Vec::new();
        let reads_before = counters.files_read.get();
        for round in 0..rounds {
            let s = round % W_M.virtual_services;
            let weight = 10 + (round as u32 % 80);
            let text = to_yaml(&[virtual_service(&W_M, s, weight)]);
            let written = Instant::now();
            std::fs::write(vs_file(s), text).expect("write");
            tokio::time::timeout(Duration::from_secs(10), changed.recv())
                .await
                .expect("notify reports the write")
                .expect("watching");
            let notified = Instant::now();
            // The events of the same write (modify, close) land before the debounce settles.
            while tokio::time::timeout(Duration::from_millis(50), changed.recv())
                .await
                .is_ok()
            {}
            let settled = Instant::now();
            let (snapshot, changes) = source.publish();
            publish.push(settled.elapsed());
            event.push(notified - written);
            assert_eq!(changes.configs.len(), 1, "one VirtualService changed");
            let vs = snapshot
                .virtual_services
                .iter()
                .find(|v| v.id.name == format!("svc-{s}"))
                .expect("the VirtualService");
            assert!(format!("{:?}", vs.http).contains(&format!("{weight}")));
        }
        let reads = counters.files_read.get() - reads_before;

        let started = Instant::now();
        source.reload();
        let full = started.elapsed();

        println!("one changed VirtualService file, {rounds} rounds ({reads} files read in all):");
        println!("  write to notify event: {}", summary(&mut event));
        println!("  event to snapshot (DirSource::publish): {}", summary(&mut publish));
        println!(
            "  for comparison, reading the whole directory (every change before issue 18): {:.0} ms",
            full.as_secs_f64() * 1e3
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}

fn summary(times: &mut [Duration]) -> String {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}
