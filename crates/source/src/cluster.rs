//! The Kubernetes source: `sextant-kube`'s watches keeping a shared index current.

use std::sync::{Arc, Mutex};

use sextant_index::{Changes, Index};
use sextant_kube::{Counters, Generations, Watches, mesh_config::MeshConfigWatch};
use sextant_model::Snapshot;
use tokio::sync::{mpsc, watch};

/// A cluster: one watch per kind feeds the index; publishing reads it.
pub struct KubeSource {
    index: Arc<Mutex<Index>>,
    watches: Watches,
    mesh_config: MeshConfigWatch,
    /// Published snapshots, for the status writer.
    published: watch::Sender<Option<Arc<Snapshot>>>,
    reported: crate::Reported,
}

impl KubeSource {
    /// Starts the watches (see [`sextant_kube::spawn`]) and the watch of the mesh config in
    /// `namespace` (the control plane's); every change to the index sends on `changed`. The
    /// index is shared with the remote clusters' watches.
    pub fn spawn(
        client: kube::Client,
        namespace: &str,
        index: Arc<Mutex<Index>>,
        changed: mpsc::UnboundedSender<()>,
        counters: Counters,
    ) -> Self {
        let mesh_config = sextant_kube::mesh_config::spawn(
            client.clone(),
            namespace,
            index.clone(),
            changed.clone(),
        );
        let watches = sextant_kube::spawn(client, index.clone(), changed, counters);
        let (published, _) = watch::channel(None);
        KubeSource {
            index,
            watches,
            mesh_config,
            published,
            reported: crate::Reported::default(),
        }
    }

    /// The config cluster, and how its watches are doing.
    pub fn cluster(&self) -> Arc<sextant_kube::clusters::Cluster> {
        self.watches.cluster.clone()
    }

    /// What the watches saw of every VirtualService and DestinationRule.
    pub fn generations(&self) -> Generations {
        self.watches.generations.clone()
    }

    /// Every snapshot this source publishes (`None` before the first).
    pub fn snapshots(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.published.subscribe()
    }

    /// Waits until every watch (the mesh config's too) has listed; false if the watches
    /// stopped first.
    pub async fn synced(&self) -> bool {
        tracing::info!("waiting for the first list of every watch");
        let mut synced = self.watches.synced.clone();
        let mut mesh = self.mesh_config.synced.clone();
        synced.wait_for(|s| *s).await.is_ok() && mesh.wait_for(|s| *s).await.is_ok()
    }

    /// A snapshot of the index as the watches left it.
    pub fn publish(&mut self) -> (Arc<Snapshot>, Changes) {
        let (snapshot, changes) = self
            .index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .publish();
        crate::log_published(&snapshot, &changes, &mut self.reported);
        self.published.send_replace(Some(snapshot.clone()));
        (snapshot, changes)
    }
}
