//! The control plane's view of the mesh: the published snapshot and each proxy's encoded
//! resources, compiled once per snapshot version and shared by every stream of that proxy.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use sextant_compiler::EncodedResources;
use sextant_model::{Proxy, Snapshot};
use sextant_xds::{Generator, protocol::Event};

use crate::metrics::Metrics;

/// Snapshot, readiness and a per-version cache of compiled resources.
pub struct Mesh {
    snapshot: RwLock<Arc<Snapshot>>,
    ready: AtomicBool,
    cache: Mutex<(u64, HashMap<String, Arc<EncodedResources>>)>,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
}

impl Mesh {
    /// An empty, not yet ready mesh.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Mesh {
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            ready: AtomicBool::new(false),
            cache: Mutex::new((0, HashMap::new())),
            metrics,
        }
    }

    /// Publishes a new snapshot; after the first, the mesh is ready.
    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
        self.ready.store(true, Ordering::SeqCst);
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
        let key = scope_key(proxy);
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.0 == snapshot.version
                && let Some(r) = cache.1.get(&key)
            {
                return r.clone();
            }
        }
        let started = std::time::Instant::now();
        let resources = Arc::new(sextant_compiler::compile_encoded(&snapshot, proxy));
        self.metrics
            .compile_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.config_bytes.set(resources.size() as i64);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != snapshot.version {
            *cache = (snapshot.version, HashMap::new());
        }
        cache.1.insert(key, resources.clone());
        resources
    }

    fn observe(&self, _proxy: &Proxy, event: &Event) {
        match event {
            Event::Nack { type_url, .. } => self.metrics.nack(type_url),
            Event::Ack { type_url } => self.metrics.ack(type_url),
            Event::Stale { .. } => {}
        }
    }
}
