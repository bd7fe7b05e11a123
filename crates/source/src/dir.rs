//! The directory source: every manifest under a directory, re-read when notify reports a
//! change.
//!
//! Each file stands alone: one that cannot be read or parsed is reported (log and
//! [`DirCounters`]) and keeps contributing the objects it held when it was last good, while
//! every other file is read as usual. The directory is watched together with its parent, so
//! a directory removed and created again, or a Kubernetes ConfigMap volume whose `..data`
//! link is swapped, goes on being followed.
//!
//! A mesh config file (`serve --mesh-config`) is watched the same way (its directory,
//! not recursively) and read at every reload; one that cannot be read keeps the last good
//! mesh config.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use notify::Watcher;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use sextant_index::{Changes, Index, Object};
use sextant_model::{Kind, Snapshot};
use tokio::sync::mpsc;

use crate::scan;

/// How often the directory's identity is checked besides notify's events: a fallback for
/// when the parent's watch is lost too (one `stat` each time).
const RECHECK: Duration = Duration::from_secs(10);

/// Counts the directory source exports (clones share their values).
#[derive(Clone, Debug, Default)]
pub struct DirCounters {
    /// Files that could not be read or parsed at the last reload.
    pub bad_files: Gauge,
    /// Reads refused because a file was over the size limit.
    pub too_large: Counter,
}

/// A directory of manifests. A file that cannot be read or parsed keeps contributing its
/// last good objects.
pub struct DirSource {
    dir: PathBuf,
    namespace: String,
    /// Shared with remote clusters' watches (`serve --remote-kubeconfig`), which change only
    /// their own clusters' objects.
    index: Arc<Mutex<Index>>,
    /// Set by every change notify reports: a publish re-reads the files only then, not for a
    /// remote cluster's change.
    dirty: Arc<AtomicBool>,
    max_file_bytes: u64,
    counters: DirCounters,
    last_good: HashMap<PathBuf, Vec<Object>>,
    /// The mesh config file, when there is one.
    mesh_config: Option<PathBuf>,
    /// The config cluster as `/debug/clusterz` shows it: the objects the directory holds.
    cluster: Option<Arc<sextant_kube::clusters::Cluster>>,
    /// Kept while the source lives: dropping it stops the change signals.
    watch: Option<DirWatch>,
}

/// The notify watcher and the directory (by identity) it watches.
struct DirWatch {
    watcher: notify::RecommendedWatcher,
    watched: Option<DirId>,
}

/// A directory's device and inode: a directory created again at the same path is another.
type DirId = (u64, u64);

fn dir_id(dir: &Path) -> Option<DirId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

impl DirSource {
    /// The manifests under `dir`, objects without a namespace placed in `namespace`. Nothing
    /// is read until [`DirSource::reload`].
    pub fn new(dir: PathBuf, namespace: String, index: Arc<Mutex<Index>>) -> Self {
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        DirSource {
            dir,
            namespace,
            index,
            dirty: Arc::new(AtomicBool::new(true)),
            max_file_bytes: sextant_index::manifest::MAX_INPUT_BYTES as u64,
            counters: DirCounters::default(),
            last_good: HashMap::new(),
            mesh_config: None,
            cluster: None,
            watch: None,
        }
    }

    /// Reads the mesh config from `file` at every reload (and watches it with the directory).
    /// A file inside the directory is not read as a manifest.
    pub fn mesh_config_file(mut self, file: PathBuf) -> Self {
        self.mesh_config = Some(std::path::absolute(&file).unwrap_or(file));
        self
    }

    /// Refuses files larger than `bytes` (`--max-input-bytes`, the bound of every reader).
    pub fn max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// Counts bad files and refusals into `counters`.
    pub fn counters(mut self, counters: DirCounters) -> Self {
        self.counters = counters;
        self
    }

    /// Shows the objects each reload reads as `cluster`'s (the config cluster's in
    /// `/debug/clusterz`).
    pub fn cluster(mut self, cluster: Arc<sextant_kube::clusters::Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Watches the directory (recursively) and its parent (for the directory itself being
    /// removed, created or renamed); every change sends on `changed`. Call within a tokio
    /// runtime: a task also checks the directory's identity every [`RECHECK`].
    pub fn watch(&mut self, changed: mpsc::UnboundedSender<()>) -> notify::Result<()> {
        let dir = self.dir.clone();
        let mesh_dir = self
            .mesh_config
            .as_ref()
            .and_then(|f| f.parent())
            .map(Path::to_path_buf);
        // Of the mesh config's directory, only the file itself matters, and a ConfigMap
        // volume's `..data` swap (its files are links through `..data`).
        let followed = self.mesh_config.clone();
        let signal = changed.clone();
        let dirty = self.dirty.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Reading the files ourselves raises access events; only changes matter, and
                // of the parent's only those of the directory.
                if let Ok(e) = event
                    && !matches!(e.kind, notify::EventKind::Access(_))
                    && (e.paths.is_empty()
                        || e.paths.iter().any(|p| {
                            p.starts_with(&dir)
                                || followed.as_ref().is_some_and(|m| {
                                    p == m
                                        || (p.parent() == m.parent()
                                            && p.file_name().is_some_and(|n| {
                                                n.to_string_lossy().starts_with("..")
                                            }))
                                })
                        }))
                {
                    dirty.store(true, Ordering::SeqCst);
                    let _ = signal.send(());
                }
            })?;
        watcher.watch(&self.dir, notify::RecursiveMode::Recursive)?;
        if let Some(parent) = self.dir.parent()
            && let Err(error) = watcher.watch(parent, notify::RecursiveMode::NonRecursive)
        {
            tracing::warn!(%error, parent = %parent.display(), "cannot watch the config directory's parent; a re-created directory is found by the periodic check");
        }
        // The file's directory, not the file: editors and ConfigMap volumes replace files.
        if let Some(mesh_dir) = &mesh_dir
            && !mesh_dir.starts_with(&self.dir)
        {
            watcher.watch(mesh_dir, notify::RecursiveMode::NonRecursive)?;
        }
        self.watch = Some(DirWatch {
            watcher,
            watched: dir_id(&self.dir),
        });
        tokio::spawn(recheck(self.dir.clone(), self.dirty.clone(), changed));
        Ok(())
    }

    /// Watches the directory again when it is not the one watched (removed and created
    /// again, or renamed over).
    fn rewatch(&mut self) {
        let Some(watch) = &mut self.watch else {
            return;
        };
        let now = dir_id(&self.dir);
        if now == watch.watched {
            return;
        }
        let _ = watch.watcher.unwatch(&self.dir);
        watch.watched = None;
        if now.is_some() {
            match watch
                .watcher
                .watch(&self.dir, notify::RecursiveMode::Recursive)
            {
                Ok(()) => {
                    tracing::info!(dir = %self.dir.display(), "the config directory was replaced; watching the new one");
                    watch.watched = now;
                }
                Err(error) => {
                    tracing::warn!(%error, dir = %self.dir.display(), "cannot watch the config directory")
                }
            }
        }
    }

    /// A snapshot after a burst of changes: the directory is read again if it changed (or was
    /// never read), else the index, changed by remote clusters, is only published.
    pub fn publish(&mut self) -> (Arc<Snapshot>, Changes) {
        if self.dirty.load(Ordering::SeqCst) {
            return self.reload();
        }
        let (snapshot, changes) = self.lock().publish();
        crate::log_published(&snapshot, &changes);
        (snapshot, changes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the directory again and replaces every kind in the index with what it holds.
    pub fn reload(&mut self) -> (Arc<Snapshot>, Changes) {
        // Changes notify reports from here on are read by the next reload.
        self.dirty.store(false, Ordering::SeqCst);
        self.rewatch();
        self.read_mesh_config();
        let current = match scan::list(&self.dir) {
            Ok(mut listing) => {
                listing
                    .files
                    .retain(|f| Some(f) != self.mesh_config.as_ref());
                self.read_files(listing)
            }
            Err(error) => {
                tracing::warn!(%error, dir = %self.dir.display(), "cannot read the config directory; keeping the last configuration");
                self.last_good.clone()
            }
        };
        let mut by_kind: HashMap<Kind, Vec<Object>> = HashMap::new();
        for o in current.into_values().flatten() {
            by_kind.entry(o.kind()).or_default().push(o);
        }
        let mut index = self.lock();
        if let Some(cluster) = &self.cluster {
            for (kind, objects) in &by_kind {
                cluster.holds(*kind, objects.len());
            }
            for kind in sextant_kube::WATCHED.map(|w| w.0) {
                if !by_kind.contains_key(&kind) {
                    cluster.holds(kind, 0);
                }
            }
        }
        for kind in [
            Kind::Namespace,
            Kind::Node,
            Kind::Pod,
            Kind::Service,
            Kind::EndpointSlice,
            Kind::DestinationRule,
            Kind::VirtualService,
            Kind::PeerAuthentication,
            Kind::Gateway,
            Kind::Secret,
            Kind::Sidecar,
            Kind::ServiceEntry,
            Kind::WorkloadEntry,
        ] {
            index.reset(kind, by_kind.remove(&kind).unwrap_or_default());
        }
        let (snapshot, changes) = index.publish();
        drop(index);
        crate::log_published(&snapshot, &changes);
        (snapshot, changes)
    }

    /// Reads the mesh config file into the index; one that cannot be read keeps the last.
    fn read_mesh_config(&mut self) {
        let Some(file) = &self.mesh_config else {
            return;
        };
        let origin = file.display().to_string();
        match scan::read(file, self.max_file_bytes) {
            Ok(text) => {
                sextant_kube::mesh_config::apply(&mut self.lock(), &text, &origin);
            }
            Err(error) => {
                tracing::error!(file = %origin, %error, "cannot read the mesh config file; keeping the last good mesh config");
            }
        }
    }

    /// What every listed file contributes now; updates the last good objects of the good
    /// files and forgets files that are gone.
    fn read_files(&mut self, listing: scan::Listing) -> HashMap<PathBuf, Vec<Object>> {
        let mut current = HashMap::new();
        let mut bad = 0;
        for file in listing.files {
            let read = scan::read_objects(&file, self.max_file_bytes, &self.namespace);
            if read.too_large {
                self.counters.too_large.inc();
            }
            if read.problems.is_empty() {
                self.last_good.insert(file.clone(), read.objects.clone());
                current.insert(file, read.objects);
                continue;
            }
            bad += 1;
            let objects = scan::keep_last_good(read.objects, self.last_good.get(&file));
            tracing::warn!(
                file = %file.display(),
                problems = %read.problems.join("; "),
                objects = objects.len(),
                "bad config file; it keeps the objects it held when last good"
            );
            current.insert(file, objects);
        }
        // What could not be listed is unknown, not gone.
        for (subdir, error) in &listing.unlisted {
            tracing::warn!(%error, dir = %subdir.display(), "cannot list a config subdirectory; its files keep their last good objects");
            for (file, objects) in &self.last_good {
                if file.starts_with(subdir) && !current.contains_key(file) {
                    bad += 1;
                    current.insert(file.clone(), objects.clone());
                }
            }
        }
        self.last_good.retain(|file, _| current.contains_key(file));
        self.counters.bad_files.set(bad);
        current
    }
}

/// Signals `changed` whenever the directory's identity changes, until nobody listens.
async fn recheck(dir: PathBuf, dirty: Arc<AtomicBool>, changed: mpsc::UnboundedSender<()>) {
    let mut seen = dir_id(&dir);
    loop {
        tokio::time::sleep(RECHECK).await;
        let now = dir_id(&dir);
        if now != seen {
            seen = now;
            dirty.store(true, Ordering::SeqCst);
            if changed.send(()).is_err() {
                return;
            }
        } else if changed.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(name: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: [{name}]\n  http:\n  - route:\n    - destination: {{host: {name}}}\n"
        )
    }

    fn served(snapshot: &Snapshot) -> Vec<String> {
        let mut names: Vec<String> = snapshot
            .virtual_services
            .iter()
            .map(|v| v.id.name.clone())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn bad_files_are_skipped_from_the_first_read_and_keep_their_last_good_objects() {
        let dir = std::env::temp_dir().join(format!("sextant-dirsource-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("a.yaml"), vs("a")).expect("write");
        std::fs::write(dir.join("b.yaml"), b"kind: \xff").expect("write");
        std::fs::write(dir.join("c.yaml"), "x".repeat(2048)).expect("write");
        let counters = DirCounters::default();
        let mut source = DirSource::new(
            dir.clone(),
            "default".into(),
            Arc::new(Mutex::new(Index::new("cluster.local", "Kubernetes"))),
        )
        .max_file_bytes(1024)
        .counters(counters.clone());
        let (snapshot, _) = source.reload();
        assert_eq!(served(&snapshot), ["a"], "{:?}", snapshot.invalid);
        assert_eq!(counters.bad_files.get(), 2);
        assert_eq!(counters.too_large.get(), 1);

        // b becomes good, then a is cut short: a keeps its VirtualService.
        std::fs::write(dir.join("b.yaml"), vs("b")).expect("write");
        let cut = vs("a");
        std::fs::write(dir.join("a.yaml"), &cut[..cut.find("spec:").expect("spec")])
            .expect("write");
        let (snapshot, _) = source.reload();
        assert_eq!(served(&snapshot), ["a", "b"]);
        assert_eq!(counters.bad_files.get(), 2);

        // A deleted file's objects go; the directory gone keeps everything.
        std::fs::remove_file(dir.join("b.yaml")).expect("remove");
        let (snapshot, _) = source.reload();
        assert_eq!(served(&snapshot), ["a"]);
        std::fs::remove_dir_all(&dir).expect("remove");
        let (snapshot, _) = source.reload();
        assert_eq!(served(&snapshot), ["a"]);
    }
}
