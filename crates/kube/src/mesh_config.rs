//! The mesh config from the cluster: the `mesh` key of ConfigMap `istio` in the control
//! plane's namespace, watched by name. A ConfigMap that is missing (or has no `mesh` key)
//! means Istio's defaults; one that cannot be read keeps the last good config and says which
//! field is wrong. [`apply`] is shared with the directory source's `--mesh-config` file.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use sextant_index::{Index, parse};
use sextant_model::MeshConfig;
use tokio::sync::{mpsc, watch};

/// The ConfigMap Istio keeps its mesh config in.
pub const CONFIG_MAP: &str = "istio";
/// Its key holding the `MeshConfig` YAML.
pub const KEY: &str = "mesh";

/// Reads mesh config YAML from `origin` (a file or ConfigMap, for the logs) and puts it in
/// `index`. Unknown fields are warned about and Istio's unused ones logged at debug; a config
/// that cannot be read is logged with every bad field and changes nothing. Returns whether
/// the config was read.
pub fn apply(index: &mut Index, text: &str, origin: &str) -> bool {
    match parse::mesh_config(text) {
        Ok(read) => {
            for w in &read.warnings {
                tracing::warn!(%origin, field = %w.path, "mesh config: {}", w.message);
            }
            if !read.ignored.is_empty() {
                tracing::debug!(%origin, ignored = ?read.ignored, "mesh config fields not used by sextant");
            }
            if read.config.trust_domain != index.trust_domain() {
                tracing::warn!(
                    %origin,
                    trust_domain = %read.config.trust_domain,
                    in_use = %index.trust_domain(),
                    "the mesh config's trustDomain is not the one in use: it applies when sextant starts, and --trust-domain wins over it"
                );
            }
            index.set_mesh_config(read.config);
            true
        }
        Err(error) => {
            tracing::error!(%origin, %error, "cannot read the mesh config; keeping the last good one");
            false
        }
    }
}

/// A running watch of the mesh config ConfigMap.
pub struct MeshConfigWatch {
    /// True once the first list has been applied.
    pub synced: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MeshConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads the mesh config once (for what must be known at start, such as the trust domain):
/// `None` when the ConfigMap or its key is missing or the API server cannot say.
pub async fn get(client: Client, namespace: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    match api.get_opt(CONFIG_MAP).await {
        Ok(cm) => cm.and_then(|cm| cm.data?.get(KEY).cloned()),
        Err(error) => {
            tracing::warn!(%error, %namespace, "cannot read ConfigMap istio; starting with the default mesh config");
            None
        }
    }
}

/// Watches ConfigMap `istio` in `namespace` and keeps `index`'s mesh config current; each
/// change sends on `changed`.
pub fn spawn(
    client: Client,
    namespace: &str,
    index: Arc<Mutex<Index>>,
    changed: mpsc::UnboundedSender<()>,
) -> MeshConfigWatch {
    let (synced_tx, synced) = watch::channel(false);
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}"));
    let origin = format!("ConfigMap {namespace}/{CONFIG_MAP}");
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        let mut listed: Option<ConfigMap> = None;
        let lock = || index.lock().unwrap_or_else(|p| p.into_inner());
        let text = |cm: &ConfigMap| cm.data.as_ref().and_then(|d| d.get(KEY)).cloned();
        while let Some(event) = stream.next().await {
            match event {
                Err(error) => {
                    tracing::warn!(%origin, %error, "mesh config watch failed; retrying with backoff");
                    continue;
                }
                Ok(watcher::Event::Init) => listed = None,
                Ok(watcher::Event::InitApply(cm)) => listed = Some(cm),
                Ok(watcher::Event::InitDone) => {
                    match listed.take().as_ref().and_then(text) {
                        Some(t) => {
                            apply(&mut lock(), &t, &origin);
                        }
                        None => lock().set_mesh_config(MeshConfig::default()),
                    }
                    let _ = synced_tx.send(true);
                }
                Ok(watcher::Event::Apply(cm)) => match text(&cm) {
                    Some(t) => {
                        apply(&mut lock(), &t, &origin);
                    }
                    None => {
                        tracing::info!(%origin, "no `mesh` key: the default mesh config applies");
                        lock().set_mesh_config(MeshConfig::default());
                    }
                },
                Ok(watcher::Event::Delete(_)) => {
                    tracing::info!(%origin, "deleted: the default mesh config applies");
                    lock().set_mesh_config(MeshConfig::default());
                }
            }
            let _ = changed.send(());
        }
    });
    MeshConfigWatch { synced, task }
}
