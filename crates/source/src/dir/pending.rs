//! What notify reported since the directory was last read, and what reading it again takes:
//! the files named, the subdirectories to list again, or the whole directory.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// Paths remembered between two reads, at most: past this many, the next read lists the
/// whole directory (a flood of events costs one full read, never unbounded memory).
pub const MAX_PENDING_PATHS: usize = 4096;

/// The paths notify named since the last read.
#[derive(Debug)]
pub struct Pending {
    paths: BTreeSet<PathBuf>,
    /// Read everything: nothing was read yet, an event named no path, notify lost events,
    /// the directory itself changed, or more than [`MAX_PENDING_PATHS`] paths came.
    everything: bool,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            paths: BTreeSet::new(),
            everything: true,
        }
    }
}

impl Pending {
    /// Notes an event's paths; an event without paths means everything.
    pub fn note(&mut self, paths: &[PathBuf]) {
        if paths.is_empty() {
            return self.everything();
        }
        if self.everything {
            return;
        }
        for p in paths {
            if self.paths.len() >= MAX_PENDING_PATHS {
                return self.everything();
            }
            self.paths.insert(p.clone());
        }
    }

    /// The next read reads everything.
    pub fn everything(&mut self) {
        self.everything = true;
        self.paths.clear();
    }

    /// What was noted, leaving nothing pending.
    pub fn take(&mut self) -> Pending {
        std::mem::replace(
            self,
            Pending {
                paths: BTreeSet::new(),
                everything: false,
            },
        )
    }

    /// What reading the noted paths again takes, for the directory `dir` and the mesh config
    /// file `mesh_config`.
    pub fn plan(&self, dir: &Path, mesh_config: Option<&Path>) -> Plan {
        let mut plan = Plan {
            everything: self.everything,
            mesh_config: self.everything,
            ..Plan::default()
        };
        if self.everything {
            return plan;
        }
        for p in &self.paths {
            if mesh_config.is_some_and(|m| p == m || is_volume_swap(p, m)) {
                plan.mesh_config = true;
            }
            if p == dir {
                plan.everything = true;
                continue;
            }
            // The parent's other entries, and the mesh config's directory.
            let Ok(relative) = p.strip_prefix(dir) else {
                continue;
            };
            if let Some(hidden) = hidden_prefix(relative) {
                // A Kubernetes volume swapping `..data` changes every file linked through
                // it: its directory is listed again. Other hidden names (an editor's swap
                // file) are not manifests.
                if hidden.1.starts_with("..") {
                    let parent = match hidden.0.as_os_str().is_empty() {
                        true => dir.to_path_buf(),
                        false => dir.join(hidden.0),
                    };
                    plan.subtrees.insert(parent);
                }
                continue;
            }
            if Some(p.as_path()) == mesh_config {
                continue;
            }
            match std::fs::metadata(p) {
                Ok(meta) if meta.is_dir() => {
                    plan.subtrees.insert(p.clone());
                }
                Ok(_) if is_manifest(p) => {
                    plan.files.insert(p.clone());
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) =>
                {
                    plan.gone.insert(p.clone());
                }
                // Cannot be checked (permissions): read, and kept as a bad file if it
                // cannot be read.
                Err(_) if is_manifest(p) => {
                    plan.files.insert(p.clone());
                }
                // A directory that cannot be checked, or a dangling link.
                Err(_) => {
                    plan.subtrees.insert(p.clone());
                }
            }
        }
        plan
    }
}

/// What a read does.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// List and read the whole directory.
    pub everything: bool,
    /// Read the mesh config file.
    pub mesh_config: bool,
    /// Files to read again.
    pub files: BTreeSet<PathBuf>,
    /// Directories to list and read again.
    pub subtrees: BTreeSet<PathBuf>,
    /// Paths gone: the files at or under them are forgotten.
    pub gone: BTreeSet<PathBuf>,
}

/// A manifest's name: `.yaml`, `.yml` or `.json`.
pub fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// The part of `relative` before its first hidden component, and that component's name.
fn hidden_prefix(relative: &Path) -> Option<(PathBuf, String)> {
    let mut before = PathBuf::new();
    for c in relative.components() {
        let name = c.as_os_str().to_string_lossy();
        if name.starts_with('.') {
            return Some((before, name.into_owned()));
        }
        before.push(c);
    }
    None
}

/// `path` is a `..`-named entry beside `file` (a ConfigMap volume's `..data` swap).
fn is_volume_swap(path: &Path, file: &Path) -> bool {
    path.parent() == file.parent()
        && path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_files_subtrees_and_gone_paths() {
        let dir = std::env::temp_dir().join(format!("sextant-pending-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).expect("dir");
        std::fs::write(dir.join("a.yaml"), "").expect("write");
        std::fs::write(dir.join("notes.txt"), "").expect("write");
        let mesh = dir.join("mesh.yaml");
        let mut pending = Pending::default();
        pending.take();
        pending.note(&[
            dir.join("a.yaml"),
            dir.join("notes.txt"),
            dir.join("sub"),
            dir.join("b.yaml"),
            dir.join(".a.yaml.swp"),
            dir.join("..data"),
            dir.join("sub/..2026_01_01/x.yaml"),
            mesh.clone(),
            dir.parent().expect("parent").join("elsewhere"),
        ]);
        let plan = pending.plan(&dir, Some(&mesh));
        assert!(!plan.everything);
        assert!(plan.mesh_config);
        assert_eq!(plan.files, BTreeSet::from([dir.join("a.yaml")]));
        assert_eq!(
            plan.subtrees,
            BTreeSet::from([dir.clone(), dir.join("sub")])
        );
        assert_eq!(plan.gone, BTreeSet::from([dir.join("b.yaml")]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_flood_of_paths_or_an_event_without_paths_reads_everything() {
        let mut pending = Pending::default();
        assert!(pending.take().everything, "nothing was read yet");
        let paths: Vec<PathBuf> = (0..=MAX_PENDING_PATHS)
            .map(|i| PathBuf::from(format!("/d/{i}.yaml")))
            .collect();
        pending.note(&paths);
        let taken = pending.take();
        assert!(taken.everything && taken.paths.is_empty());
        pending.note(&[PathBuf::from("/d/a.yaml")]);
        assert!(!pending.take().everything);
        pending.note(&[]);
        assert!(pending.take().everything);
    }
}
