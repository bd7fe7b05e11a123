//! The directory source: every manifest under a directory, read once, then only what
//! notify reports changed.
//!
//! A change costs in proportion to what changed: the files notify names are read again (a
//! directory created or renamed in is listed), and only the objects those files held or hold
//! now are applied to or deleted from the index, as the Kubernetes watches do
//! (`dir/held.rs`). The whole directory is read again only when notify cannot say what
//! changed (an event without paths, lost events, the directory itself replaced, more than
//! [`pending::MAX_PENDING_PATHS`] paths between two reads). A file written in several steps
//! is read once the debounce has seen the writes settle.
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
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use notify::Watcher;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use sextant_index::{Changes, Index};
use sextant_model::Snapshot;
use tokio::sync::mpsc;

use crate::scan;

mod held;
pub mod pending;

use held::Held;
use pending::{Pending, Plan};

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
    /// Files read (each read and parsed once per change notify reports, or per full read).
    pub files_read: Counter,
    /// Objects parsed from the files read.
    pub objects_parsed: Counter,
    /// Objects applied to or deleted from the index.
    pub objects_applied: Counter,
    /// Reads of the whole directory (the first, and those notify could not narrow down).
    pub full_reads: Counter,
}

/// A directory of manifests. A file that cannot be read or parsed keeps contributing its
/// last good objects.
pub struct DirSource {
    dir: PathBuf,
    namespace: String,
    /// Shared with remote clusters' watches (`serve --remote-kubeconfig`), which change only
    /// their own clusters' objects.
    index: Arc<Mutex<Index>>,
    /// Set by every change notify reports: a publish reads files only then, not for a
    /// remote cluster's change.
    dirty: Arc<AtomicBool>,
    /// The paths notify reported since the last read.
    pending: Arc<Mutex<Pending>>,
    max_file_bytes: u64,
    counters: DirCounters,
    /// What each file contributes.
    held: Held,
    /// A symbolic link was followed at the last reads (a file may be reached by two paths,
    /// or live outside the watched directory): every change reads the whole directory, as
    /// notify's paths cannot say which files changed.
    links: bool,
    reported: crate::Reported,
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

/// `path` made absolute, with `.` and `..` resolved by name (not through links).
fn normal(path: PathBuf) -> PathBuf {
    let absolute = std::path::absolute(&path).unwrap_or(path);
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn dir_id(dir: &Path) -> Option<DirId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

impl DirSource {
    /// The manifests under `dir`, objects without a namespace placed in `namespace`. Nothing
    /// is read until [`DirSource::reload`].
    pub fn new(dir: PathBuf, namespace: String, index: Arc<Mutex<Index>>) -> Self {
        let dir = normal(dir);
        DirSource {
            dir,
            namespace,
            index,
            dirty: Arc::new(AtomicBool::new(true)),
            pending: Arc::default(),
            max_file_bytes: sextant_index::manifest::MAX_INPUT_BYTES as u64,
            counters: DirCounters::default(),
            held: Held::default(),
            links: false,
            reported: crate::Reported::default(),
            mesh_config: None,
            cluster: None,
            watch: None,
        }
    }

    /// Reads the mesh config from `file` at every reload (and watches it with the directory).
    /// A file inside the directory is not read as a manifest.
    pub fn mesh_config_file(mut self, file: PathBuf) -> Self {
        let mut file = normal(file);
        // The config directory under another spelling (a link to it, `../dir`): named as the
        // directory's own, so that notify's paths (one spelling per inode) match it.
        if let (Some(parent), Some(name)) = (file.parent(), file.file_name())
            && parent != self.dir
            && dir_id(parent).is_some()
            && dir_id(parent) == dir_id(&self.dir)
        {
            file = self.dir.join(name);
        }
        self.mesh_config = Some(file);
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
        let pending = self.pending.clone();
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
                    let mut noted = pending.lock().unwrap_or_else(|p| p.into_inner());
                    if e.need_rescan() {
                        noted.everything();
                    } else {
                        noted.note(&e.paths);
                    }
                    drop(noted);
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
        tokio::spawn(recheck(
            self.dir.clone(),
            self.dirty.clone(),
            self.pending.clone(),
            changed,
        ));
        Ok(())
    }

    /// Watches the directory again when it is not the one watched (removed and created
    /// again, or renamed over).
    /// With `force`, watches it again anyway: inotify knows a directory reached by two paths
    /// (a link to it) by one watch, which removing the link takes away from the other path
    /// too, so a directory holding links is watched again at each full read.
    fn rewatch(&mut self, force: bool) {
        let Some(watch) = &mut self.watch else {
            return;
        };
        let now = dir_id(&self.dir);
        if now == watch.watched && !force {
            return;
        }
        let replaced = now != watch.watched;
        let _ = watch.watcher.unwatch(&self.dir);
        watch.watched = None;
        if now.is_some() {
            match watch
                .watcher
                .watch(&self.dir, notify::RecursiveMode::Recursive)
            {
                Ok(()) => {
                    if replaced {
                        tracing::info!(dir = %self.dir.display(), "the config directory was replaced; watching the new one");
                    }
                    watch.watched = now;
                }
                Err(error) => {
                    tracing::warn!(%error, dir = %self.dir.display(), "cannot watch the config directory")
                }
            }
        }
    }

    /// A snapshot after a burst of changes: what notify reported changed is read again (the
    /// whole directory the first time), else the index, changed by remote clusters, is only
    /// published.
    pub fn publish(&mut self) -> (Arc<Snapshot>, Changes) {
        if self.dirty.swap(false, Ordering::SeqCst) {
            // Changes notify reports from here on are read by the next publish.
            let pending = self.lock_pending().take();
            let mut plan = pending.plan(&self.dir, self.mesh_config.as_deref());
            if self.links {
                plan.everything = true;
                plan.mesh_config = true;
            }
            return self.read(plan);
        }
        let (snapshot, changes) = self.lock().publish();
        crate::log_published(&snapshot, &changes, &mut self.reported);
        (snapshot, changes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the whole directory again (and the mesh config) and publishes.
    pub fn reload(&mut self) -> (Arc<Snapshot>, Changes) {
        self.dirty.store(false, Ordering::SeqCst);
        self.lock_pending().take();
        self.read(Plan {
            everything: true,
            mesh_config: true,
            ..Plan::default()
        })
    }

    /// Reads what `plan` names, applies what changed to the index and publishes.
    fn read(&mut self, plan: Plan) -> (Arc<Snapshot>, Changes) {
        if plan.everything {
            self.counters.full_reads.inc();
            self.rewatch(self.links);
        }
        if plan.mesh_config {
            self.read_mesh_config();
        }
        if plan.everything {
            self.links = false;
            self.read_subtree(&self.dir.clone());
        } else {
            for gone in &plan.gone {
                self.held.forget_under(gone, |_| false);
            }
            for subtree in &plan.subtrees {
                self.read_subtree(subtree);
            }
            for file in &plan.files {
                if !plan.subtrees.iter().any(|s| file.starts_with(s)) {
                    self.read_file(file);
                }
            }
        }
        self.counters.bad_files.set(self.held.bad_files() as i64);
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let applied = self.held.apply(&mut index);
        self.counters.objects_applied.inc_by(applied as u64);
        if let Some(cluster) = &self.cluster {
            for kind in sextant_kube::WATCHED.map(|w| w.0) {
                cluster.holds(kind, self.held.count(kind));
            }
        }
        let (snapshot, changes) = index.publish();
        drop(index);
        crate::log_published(&snapshot, &changes, &mut self.reported);
        (snapshot, changes)
    }

    /// Lists `dir` (the config directory or one under it) and reads every manifest in it;
    /// files held from under it that are no longer listed are gone. What cannot be listed is
    /// unknown, not gone: its files keep their objects.
    fn read_subtree(&mut self, dir: &Path) {
        if dir != self.dir && scan::followed_link(dir) {
            self.links = true;
        }
        let listing = match scan::list(dir) {
            Ok(listing) => listing,
            Err(error) if dir == self.dir => {
                tracing::warn!(%error, dir = %dir.display(), "cannot read the config directory; keeping the last configuration");
                return;
            }
            Err(error) => {
                if gone(dir) {
                    self.held.forget_under(dir, |_| false);
                } else {
                    tracing::warn!(%error, dir = %dir.display(), "cannot list a config subdirectory; its files keep their last good objects");
                    self.mark_bad_under(dir);
                }
                return;
            }
        };
        self.links |= listing.links;
        let listed: std::collections::HashSet<&Path> =
            listing.files.iter().map(PathBuf::as_path).collect();
        let unlisted: Vec<&PathBuf> = listing.unlisted.iter().map(|(d, _)| d).collect();
        self.held.forget_under(dir, |f| {
            listed.contains(f) || unlisted.iter().any(|d| f.starts_with(d))
        });
        for (subdir, error) in &listing.unlisted {
            tracing::warn!(%error, dir = %subdir.display(), "cannot list a config subdirectory; its files keep their last good objects");
            self.mark_bad_under(subdir);
        }
        for file in &listing.files {
            if Some(file) != self.mesh_config.as_ref() {
                self.read_file(file);
            }
        }
    }

    fn mark_bad_under(&mut self, dir: &Path) {
        let under: Vec<PathBuf> = self
            .held
            .files()
            .filter(|f| f.starts_with(dir))
            .cloned()
            .collect();
        for file in under {
            self.held.mark_bad(&file);
        }
    }

    /// Reads one file: what it contributes now, its last good objects kept when it has
    /// problems; a file that is gone is forgotten.
    fn read_file(&mut self, file: &Path) {
        if gone(file) {
            self.held.forget(file);
            return;
        }
        if scan::followed_link(file) {
            self.links = true;
        }
        let read = scan::read_objects(file, self.max_file_bytes, &self.namespace);
        self.counters.files_read.inc();
        self.counters
            .objects_parsed
            .inc_by(read.objects.len() as u64);
        if read.too_large {
            self.counters.too_large.inc();
        }
        if read.problems.is_empty() {
            self.held.set(file.to_path_buf(), read.objects, true);
            return;
        }
        let objects = scan::keep_last_good(read.objects, self.held.last_good(file));
        tracing::warn!(
            file = %file.display(),
            problems = %read.problems.join("; "),
            objects = objects.len(),
            "bad config file; it keeps the objects it held when last good"
        );
        self.held.set(file.to_path_buf(), objects, false);
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
}

/// Whether nothing is at `path`, or only a link to nothing (a path that cannot be checked,
/// say for permissions, is not gone: its files keep their objects).
fn gone(path: &Path) -> bool {
    matches!(
        std::fs::metadata(path),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory)
    )
}

/// Signals `changed` whenever the directory's identity changes, until nobody listens.
async fn recheck(
    dir: PathBuf,
    dirty: Arc<AtomicBool>,
    pending: Arc<Mutex<Pending>>,
    changed: mpsc::UnboundedSender<()>,
) {
    let mut seen = dir_id(&dir);
    loop {
        tokio::time::sleep(RECHECK).await;
        let now = dir_id(&dir);
        if now != seen {
            seen = now;
            pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .everything();
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
