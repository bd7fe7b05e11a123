//! Index memory through the Kubernetes watch path: W-M (1,000 Services, 10,000 endpoints in
//! 1,000 EndpointSlices, 10,000 Pods, 100 namespaces, 100 VirtualServices and
//! DestinationRules) stored in the test API server, then listed and watched by Sextant's
//! watchers into a fresh index, which publishes a snapshot. The API server runs in a second
//! process, so the figure is Sextant's alone: resident memory after the snapshot minus before
//! the watches started. Run with `make bench`; `SEXTANT_BENCH_SHAPE=W-L` measures W-L instead
//! (10,000 Services, 100,000 endpoints and Pods, 1,000 VirtualServices and DestinationRules;
//! `make bench-wl`).

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Instant,
};

use sextant_index::Index;
use sextant_synthetic::{Shape, W_L, W_M};

mod support;
use support::rss_kib;
#[path = "support/create.rs"]
mod create;
use create::create;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The mesh: `SEXTANT_BENCH_SHAPE` (`W-M`, the default, or `W-L`), in both processes.
fn shape() -> Shape {
    match std::env::var("SEXTANT_BENCH_SHAPE").as_deref() {
        Ok("W-L") => W_L,
        Ok("W-M") | Err(_) => W_M,
        Ok(other) => panic!("SEXTANT_BENCH_SHAPE={other}: expected W-M or W-L"),
    }
}

/// Set in the child: the directory to write the kubeconfig in.
const SERVER_ENV: &str = "SEXTANT_BENCH_APISERVER";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match std::env::var(SERVER_ENV) {
        Ok(dir) => runtime.block_on(server(dir)),
        Err(_) => runtime.block_on(measure()),
    }
}

/// The child: the test API server holding W-M, until stdin closes.
async fn server(dir: String) {
    let kubeconfig = std::path::Path::new(&dir).join("kubeconfig");
    let handle = sextant_testapi::start(sextant_testapi::Options {
        kubeconfig: Some(kubeconfig.clone()),
        ..Default::default()
    })
    .await
    .expect("test API server");
    let client = client(&kubeconfig).await;
    // CRDs first, then namespaces, then the rest.
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds");
    let mut objects: Vec<serde_json::Value> = Vec::new();
    for entry in std::fs::read_dir(crds).expect("crds/") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        for d in sextant_index::manifest::parse_documents(&text).expect("YAML") {
            objects.push(d.value);
        }
    }
    create(&client, objects).await;
    let rest = sextant_synthetic::manifests(&shape());
    let namespaces: std::collections::BTreeSet<String> = rest
        .iter()
        .filter_map(|o| o["metadata"]["namespace"].as_str().map(str::to_owned))
        .filter(|ns| ns != "default")
        .collect();
    create(
        &client,
        namespaces
            .into_iter()
            .map(|ns| serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .collect(),
    )
    .await;
    let started = Instant::now();
    let count = rest.len();
    create(&client, rest).await;
    eprintln!(
        "test API server: {count} objects created in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("{}", handle.url());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

async fn client(kubeconfig: &std::path::Path) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    kube::Client::try_from(config).expect("client")
}

/// The parent: Sextant's watchers into a fresh index.
async fn measure() {
    let dir = std::env::temp_dir().join(format!("sextant-bench-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env(SERVER_ENV, &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the API server process");
    let mut url = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut url)
        .expect("the API server's URL");
    let client = client(&dir.join("kubeconfig")).await;
    let before = rss_kib();
    let started = Instant::now();
    let index = Arc::new(Mutex::new(Index::default()));
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while changes.recv().await.is_some() {} });
    let watches = sextant_kube::spawn(client, index.clone(), changed, Default::default());
    let mut synced = watches.synced.clone();
    synced.wait_for(|s| *s).await.expect("every watch lists");
    let (snapshot, _) = index.lock().expect("index").publish();
    let elapsed = started.elapsed();
    let after = rss_kib();
    let pods = snapshot.workloads.len();
    let services = snapshot.services.len();
    let endpoints: usize = snapshot.endpoints.values().map(|e| e.len()).sum();
    println!(
        "index through the watch path: {services} services, {endpoints} endpoints, {pods} pods, {} virtual services, {} destination rules",
        snapshot.virtual_services.len(),
        snapshot.destination_rules.len()
    );
    println!(
        "  listed and indexed in {:.2} s; resident memory {} MiB, of which {} MiB since the watches started ({:.1} KiB per pod)",
        elapsed.as_secs_f64(),
        after / 1024,
        after.saturating_sub(before) / 1024,
        after.saturating_sub(before) as f64 / pods.max(1) as f64
    );
    drop(watches);
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "done");
    }
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
