//! Compile-and-encode time for one sidecar at DESIGN.md's W-M workload, nothing cached.
//! Run with `make bench` (release build). Prints min/median/max over repeated runs.

use std::time::{Duration, Instant};

use sextant_workload::{W_M, index, sidecar};

fn stats(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
    )
}

fn main() {
    let shape = W_M;
    let started = Instant::now();
    let mut index = index(&shape);
    let (snapshot, _) = index.publish();
    println!(
        "W-M: {} services, {} endpoints, {} VirtualServices, {} DestinationRules; index built in {:.0} ms",
        snapshot.services.len(),
        snapshot.endpoints.values().map(|e| e.len()).sum::<usize>(),
        snapshot.virtual_services.len(),
        snapshot.destination_rules.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let mut proxy = sidecar(&shape, 7, 0);
    if let Some(w) = snapshot.workload(&proxy.namespace, &proxy.workload_name) {
        proxy.complete_from(w);
    }
    let runs = 40;
    let mut compile_only = Vec::new();
    let mut total = Vec::new();
    let mut size = 0;
    let mut counts = (0, 0, 0, 0);
    for _ in 0..runs {
        let t0 = Instant::now();
        let resources = sextant_compiler::compile(&snapshot, &proxy);
        let t1 = Instant::now();
        let encoded = resources.encode();
        let t2 = Instant::now();
        compile_only.push(t1 - t0);
        total.push(t2 - t0);
        size = encoded.size();
        counts = (
            encoded.clusters.len(),
            encoded.endpoints.len(),
            encoded.listeners.len(),
            encoded.routes.len(),
        );
        std::hint::black_box(encoded);
    }
    let (cmin, cmed, cmax) = stats(compile_only);
    let (tmin, tmed, tmax) = stats(total);
    println!(
        "config: {} clusters, {} load assignments, {} listeners, {} route configurations, {:.2} MB encoded",
        counts.0,
        counts.1,
        counts.2,
        counts.3,
        size as f64 / 1e6
    );
    let resources = sextant_compiler::compile(&snapshot, &proxy);
    for (name, list) in [
        ("clusters", resources.encode().clusters),
        ("endpoints", resources.encode().endpoints),
        ("listeners", resources.encode().listeners),
        ("routes", resources.encode().routes),
    ] {
        println!(
            "  {name}: {:.2} MB",
            list.iter().map(|e| e.bytes.len()).sum::<usize>() as f64 / 1e6
        );
    }
    println!(
        "compile only:       min {cmin:.2} ms  median {cmed:.2} ms  max {cmax:.2} ms  ({runs} runs)"
    );
    println!(
        "compile + encode:   min {tmin:.2} ms  median {tmed:.2} ms  max {tmax:.2} ms  (budget 15 ms)"
    );
}
