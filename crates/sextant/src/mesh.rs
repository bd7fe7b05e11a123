//! The control plane's view of the mesh: the published snapshot and each proxy's encoded
//! resources, compiled once per snapshot version and shared by every stream of that proxy.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use sextant_compiler::{EncodedResources, Part};
use sextant_model::{Proxy, Snapshot};
use sextant_xds::{Generator, protocol::Event};

use crate::metrics::Metrics;

#[derive(Default)]
struct Cache {
    version: u64,
    scopes: HashMap<String, Arc<EncodedResources>>,
    proxies: HashMap<String, Arc<EncodedResources>>,
}

/// Snapshot, readiness and a per-version cache of compiled resources.
pub struct Mesh {
    snapshot: RwLock<Arc<Snapshot>>,
    ready: AtomicBool,
    /// Outbound parts by scope and full configurations by proxy, for one snapshot version.
    cache: Mutex<Cache>,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
}

impl Mesh {
    /// An empty, not yet ready mesh.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Mesh {
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            ready: AtomicBool::new(false),
            cache: Mutex::new(Cache::default()),
            metrics,
        }
    }

    /// Publishes a new snapshot; after the first, the mesh is ready.
    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Stops reporting ready (shutdown has begun; load balancers should stop sending proxies).
    pub fn set_not_ready(&self) {
        self.ready.store(false, Ordering::SeqCst);
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What a proxy's output depends on besides the snapshot.
fn scope_key(p: &Proxy) -> String {
    format!(
        "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{:?}",
        p.namespace,
        p.labels,
        p.flavor,
        p.interception,
        p.bind_address,
        p.ips,
        p.workload_name,
        p.kind
    )
}

impl Generator for Mesh {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn complete(&self, mut proxy: Proxy) -> Proxy {
        let snapshot = self.snapshot();
        if let Some(w) = snapshot.workload(&proxy.namespace, &proxy.workload_name) {
            proxy.complete_from(w);
        }
        proxy
    }

    fn resources(&self, proxy: &Proxy) -> Arc<EncodedResources> {
        let snapshot = self.snapshot();
        let proxy_key = scope_key(proxy);
        let scope = sextant_compiler::scope(&snapshot, proxy);
        let scope_key = scope_key(&scope);
        let cached_scope = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.version != snapshot.version {
                *cache = Cache {
                    version: snapshot.version,
                    ..Cache::default()
                };
            }
            if let Some(r) = cache.proxies.get(&proxy_key) {
                return r.clone();
            }
            cache.scopes.get(&scope_key).cloned()
        };
        let started = std::time::Instant::now();
        let outbound = match cached_scope {
            Some(o) => o,
            None => {
                let o = Arc::new(sextant_compiler::compile_part(
                    &snapshot,
                    &scope,
                    Part::Outbound,
                ));
                self.metrics
                    .compile_seconds
                    .observe(started.elapsed().as_secs_f64());
                o
            }
        };
        let inbound = sextant_compiler::compile_part(&snapshot, proxy, Part::Inbound);
        let resources = Arc::new(outbound.merge(&inbound));
        self.metrics.config_bytes.set(resources.size() as i64);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.version == snapshot.version {
            cache.scopes.insert(scope_key, outbound);
            cache.proxies.insert(proxy_key, resources.clone());
        }
        resources
    }

    fn observe(&self, _proxy: &Proxy, event: &Event) {
        match event {
            Event::Nack { type_url, .. } => self.metrics.nack(type_url),
            Event::Ack { type_url } => self.metrics.ack(type_url),
            Event::Sent { type_url, .. } => {
                self.metrics
                    .pushes
                    .get_or_create(&crate::metrics::TypeLabels {
                        type_url: type_url.clone(),
                    })
                    .inc();
            }
            Event::Stale { .. } => {}
        }
    }

    fn converged(&self, _proxy: &Proxy, elapsed: std::time::Duration) {
        self.metrics
            .convergence_seconds
            .observe(elapsed.as_secs_f64());
    }
}
