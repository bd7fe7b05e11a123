//! The directory source: every manifest under a directory, re-read when notify reports a
//! change.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use notify::Watcher;
use sextant_index::{Changes, Index, Object};
use sextant_model::{Kind, Snapshot};
use tokio::sync::mpsc;

use crate::files;

/// A directory of manifests. A file that cannot be read or parsed keeps contributing its
/// last good objects.
pub struct DirSource {
    dir: PathBuf,
    namespace: String,
    index: Index,
    last_good: HashMap<String, Vec<Object>>,
    /// Kept while the source lives: dropping it stops the change signals.
    watcher: Option<notify::RecommendedWatcher>,
}

impl DirSource {
    /// The manifests under `dir`, objects without a namespace placed in `namespace`. Nothing
    /// is read until [`DirSource::reload`].
    pub fn new(dir: PathBuf, namespace: String, index: Index) -> Self {
        DirSource {
            dir,
            namespace,
            index,
            last_good: HashMap::new(),
            watcher: None,
        }
    }

    /// Watches the directory (recursively); every change sends on `changed`.
    pub fn watch(&mut self, changed: mpsc::UnboundedSender<()>) -> notify::Result<()> {
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Reading the files ourselves raises access events; only changes matter.
                if let Ok(e) = event
                    && !matches!(e.kind, notify::EventKind::Access(_))
                {
                    let _ = changed.send(());
                }
            })?;
        watcher.watch(&self.dir, notify::RecursiveMode::Recursive)?;
        self.watcher = Some(watcher);
        Ok(())
    }

    /// Reads the directory again and replaces every kind in the index with what it holds.
    pub fn reload(&mut self) -> (Arc<Snapshot>, Changes) {
        let mut current: HashMap<String, Vec<Object>> = HashMap::new();
        match files::read_inputs(std::slice::from_ref(&self.dir)) {
            Ok(inputs) => {
                for (file, text) in inputs {
                    match files::objects_from_text(&file, &text, &self.namespace) {
                        Ok((objects, skipped)) => {
                            for s in skipped {
                                tracing::warn!(location = %s.location, reason = %s.reason, "skipping document");
                            }
                            current.insert(file, objects);
                        }
                        Err(e) => {
                            tracing::warn!(file = %file, error = %e, "cannot parse file; keeping its previous content");
                            if let Some(previous) = self.last_good.get(&file) {
                                current.insert(file, previous.clone());
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the config directory; keeping the last configuration");
                current = self.last_good.clone();
            }
        }
        let mut by_kind: HashMap<Kind, Vec<Object>> = HashMap::new();
        for o in current.values().flatten() {
            by_kind.entry(o.kind()).or_default().push(o.clone());
        }
        for kind in [
            Kind::Namespace,
            Kind::Pod,
            Kind::Service,
            Kind::EndpointSlice,
            Kind::DestinationRule,
            Kind::VirtualService,
        ] {
            self.index
                .reset(kind, by_kind.remove(&kind).unwrap_or_default());
        }
        self.last_good = current;
        let (snapshot, changes) = self.index.publish();
        crate::log_published(&snapshot, &changes);
        (snapshot, changes)
    }
}
