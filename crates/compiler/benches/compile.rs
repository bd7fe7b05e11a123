//! Compile-and-encode time for one sidecar at DESIGN.md's W-M workload, nothing cached, and
//! the time to rebuild its shared part after one VirtualService change (what a push costs per
//! scope). Run with `make bench` (release build). Prints min/median/max over repeated runs.
//! `SEXTANT_BENCH_SHAPE=W-L` compiles a sidecar of W-L (10,000 services) and of W-L-S instead
//! (`make bench-wl`), for the slope from W-M.

use std::time::{Duration, Instant};

// The allocator the `sextant` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use sextant_synthetic::{Shape, W_L, W_L_S, W_M, W_M_S, index, sidecar, virtual_service};

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
    let (name, shape, scoped) = match std::env::var("SEXTANT_BENCH_SHAPE").as_deref() {
        Ok("W-L") => ("W-L", W_L, W_L_S),
        Ok("W-M") | Err(_) => ("W-M", W_M, W_M_S),
        Ok(other) => panic!("SEXTANT_BENCH_SHAPE={other}: expected W-M or W-L"),
    };
    let started = Instant::now();
    let mut index = index(&shape);
    let (snapshot, _) = index.publish();
    println!(
        "{name}: {} services, {} endpoints, {} VirtualServices, {} DestinationRules; index built in {:.0} ms",
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
    let mut clone_drop = Vec::new();
    let mut total = Vec::new();
    let mut size = 0;
    let mut counts = (0, 0, 0, 0);
    for _ in 0..runs {
        let t0 = Instant::now();
        let encoded = sextant_compiler::compile_encoded(&snapshot, &proxy);
        let t1 = Instant::now();
        drop(std::hint::black_box(encoded.clone()));
        let t2 = Instant::now();
        total.push(t1 - t0);
        clone_drop.push(t2 - t1);
        size = encoded.size();
        counts = (
            encoded.clusters.len(),
            encoded.endpoints.len(),
            encoded.listeners.len(),
            encoded.routes.len(),
        );
        std::hint::black_box(encoded);
    }
    let (cmin, cmed, cmax) = stats(clone_drop);
    let (tmin, tmed, tmax) = stats(total);
    println!(
        "config: {} clusters, {} load assignments, {} listeners, {} route configurations, {:.2} MB encoded",
        counts.0,
        counts.1,
        counts.2,
        counts.3,
        size as f64 / 1e6
    );
    let encoded = sextant_compiler::compile_encoded(&snapshot, &proxy);
    for (name, list) in [
        ("clusters", encoded.clusters),
        ("endpoints", encoded.endpoints),
        ("listeners", encoded.listeners),
        ("routes", encoded.routes),
    ] {
        println!(
            "  {name}: {:.2} MB",
            list.iter().map(|e| e.body.len()).sum::<usize>() as f64 / 1e6
        );
    }
    println!(
        "(reference) clone + drop of the result: min {cmin:.2} ms  median {cmed:.2} ms  max {cmax:.2} ms"
    );
    println!(
        "compile + encode, nothing cached ({runs} runs): min {tmin:.2} ms  median {tmed:.2} ms  max {tmax:.2} ms  (budget 15 ms)"
    );
    // The scope's shared part rebuilt from the previous one after one change, as the
    // generator does for each scope: `edit(run)` applies the change for a run.
    let scope = sextant_compiler::scope(&snapshot, &proxy);
    let cache = std::sync::Mutex::new(sextant_compiler::ScopeCache::default());
    let mut previous = sextant_compiler::compile_scope(&snapshot, &scope, None, &cache);
    let mut rebuilds = |what: &str, edit: &dyn Fn(usize) -> serde_json::Value| {
        let mut times = Vec::new();
        for run in 0..runs {
            index
                .apply(sextant_index::Object::from_json(edit(run), "default").expect("known kind"));
            let (next, changes) = index.publish();
            let rebuild = sextant_compiler::Rebuild {
                endpoints: changes.endpoints.clone(),
                routing: !changes.configs.is_empty(),
                virtual_service_hosts: changes.virtual_service_hosts.clone(),
            };
            let t0 = Instant::now();
            let rebuilt =
                sextant_compiler::compile_scope(&next, &scope, Some((&previous, &rebuild)), &cache);
            times.push(t0.elapsed());
            previous = rebuilt;
        }
        let (min, med, max) = stats(times);
        println!(
            "a scope rebuilt after {what} ({runs} runs): min {min:.2} ms  median {med:.2} ms  max {max:.2} ms"
        );
    };
    // One VirtualService edited, as the ADS benchmark's change.
    rebuilds("one VirtualService change", &|run| {
        virtual_service(&shape, 7, if run % 2 == 0 { 50 } else { 90 })
    });
    // One service's endpoints changed (a Pod of svc-5 gone, then back).
    let slice = sextant_synthetic::manifests(&shape)
        .into_iter()
        .find(|m| {
            m["kind"] == "EndpointSlice"
                && m["metadata"]["labels"]["kubernetes.io/service-name"] == "svc-5"
        })
        .expect("svc-5 has an EndpointSlice");
    rebuilds("one service's endpoints changed", &|run| {
        let mut slice = slice.clone();
        if run % 2 == 0 {
            slice["endpoints"].as_array_mut().expect("endpoints").pop();
        }
        slice
    });
    with_sidecars(&format!("{name}-S"), &scoped, runs);
}

/// The same sidecar with a Sidecar per namespace (W-M-S, W-L-S): its namespace's Sidecar
/// imports 4 of the 101 namespaces.
fn with_sidecars(name: &str, shape: &Shape, runs: usize) {
    let mut index = index(shape);
    let (snapshot, _) = index.publish();
    let mut proxy = sidecar(shape, 7, 0);
    if let Some(w) = snapshot.workload(&proxy.namespace, &proxy.workload_name) {
        proxy.complete_from(w);
    }
    let mut times = Vec::new();
    let mut encoded = sextant_compiler::compile_encoded(&snapshot, &proxy);
    for _ in 0..runs {
        let t0 = Instant::now();
        encoded = sextant_compiler::compile_encoded(&snapshot, &proxy);
        times.push(t0.elapsed());
    }
    let (min, med, max) = stats(times);
    println!(
        "{name}: {} clusters, {} load assignments, {} listeners, {} route configurations, {:.3} MB encoded per proxy",
        encoded.clusters.len(),
        encoded.endpoints.len(),
        encoded.listeners.len(),
        encoded.routes.len(),
        encoded.size() as f64 / 1e6
    );
    println!(
        "{name} compile + encode, nothing cached ({runs} runs): min {min:.2} ms  median {med:.2} ms  max {max:.2} ms"
    );
}
