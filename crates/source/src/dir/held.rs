//! What each file of the directory contributes, and which file wins an object two files
//! both hold. A changed file changes only its own objects in the index: the objects it held
//! and the objects it holds now are "touched", and each touched object is applied from the
//! file that now holds it (the last by path when several do) or deleted when none does.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use sextant_index::{Index, Object};
use sextant_model::Kind;

/// An object's identity in the directory: kind, namespace (empty when cluster-scoped) and
/// name.
pub(super) type Key = (Kind, String, String);

fn key_of(object: &Object) -> Key {
    let meta = object.metadata();
    let kind = object.kind();
    // The index knows cluster-scoped kinds by name alone, whatever `metadata.namespace` says.
    let namespace = match kind {
        Kind::Namespace | Kind::Node => String::new(),
        _ => meta.namespace.clone().unwrap_or_default(),
    };
    (kind, namespace, meta.name.clone().unwrap_or_default())
}

/// One file's part.
struct File {
    /// What it contributes now (a bad file: what it still yields, and its last good objects).
    objects: Arc<Vec<Object>>,
    /// Where each object is in `objects` (the last, when a file repeats one).
    positions: HashMap<Key, usize>,
    /// What it held when it was last good.
    last_good: Option<Arc<Vec<Object>>>,
    /// Whether it could not be read or parsed at its last read.
    bad: bool,
}

/// Every file's part, and the objects changed since the last [`Held::apply`].
#[derive(Default)]
pub(super) struct Held {
    files: HashMap<PathBuf, File>,
    /// The files holding each object.
    owners: HashMap<Key, BTreeSet<PathBuf>>,
    /// Objects held, by kind.
    counts: HashMap<Kind, usize>,
    /// Objects whose holders or content changed.
    touched: BTreeSet<Key>,
}

impl Held {
    /// The objects `file` held when it was last good.
    pub(super) fn last_good(&self, file: &Path) -> Option<&Vec<Object>> {
        self.files.get(file).and_then(|f| f.last_good.as_deref())
    }

    /// Files held now.
    pub(super) fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.files.keys()
    }

    /// Files that could not be read or parsed at their last read.
    pub(super) fn bad_files(&self) -> usize {
        self.files.values().filter(|f| f.bad).count()
    }

    /// Objects of `kind` held now.
    pub(super) fn count(&self, kind: Kind) -> usize {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// `file` now contributes `objects`; `good` when it was read and parsed without a problem
    /// (they become its last good objects).
    pub(super) fn set(&mut self, file: PathBuf, objects: Vec<Object>, good: bool) {
        let objects = Arc::new(objects);
        let last_good = if good {
            Some(objects.clone())
        } else {
            self.files.get(&file).and_then(|f| f.last_good.clone())
        };
        self.release(&file);
        let mut positions = HashMap::with_capacity(objects.len());
        for (i, key) in objects.iter().map(key_of).enumerate() {
            positions.insert(key.clone(), i);
            let holders = self.owners.entry(key.clone()).or_default();
            if holders.is_empty() {
                *self.counts.entry(key.0).or_default() += 1;
            }
            if holders.insert(file.clone()) && holders.len() == 2 {
                tracing::warn!(kind = %key.0.as_str(), namespace = %key.1, name = %key.2, files = ?holders, "an object is in more than one file; the last file by path is used");
            }
            self.touched.insert(key);
        }
        self.files.insert(
            file,
            File {
                objects,
                positions,
                last_good,
                bad: !good,
            },
        );
    }

    /// Marks `file` bad without reading it again (its directory could not be listed): it
    /// keeps what it contributes.
    pub(super) fn mark_bad(&mut self, file: &Path) {
        if let Some(f) = self.files.get_mut(file) {
            f.bad = true;
        }
    }

    /// `file` is gone: its objects go, unless another file holds them too.
    pub(super) fn forget(&mut self, file: &Path) {
        self.release(file);
        self.files.remove(file);
    }

    /// Every file under `dir` (or `dir` itself) for which `keep` is false is gone.
    pub(super) fn forget_under(&mut self, dir: &Path, keep: impl Fn(&Path) -> bool) {
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|f| f.starts_with(dir) && !keep(f))
            .cloned()
            .collect();
        for file in gone {
            self.forget(&file);
        }
    }

    /// Takes `file`'s objects off their holders' lists, touching each.
    fn release(&mut self, file: &Path) {
        let Some(old) = self.files.get(file) else {
            return;
        };
        for key in old.positions.keys() {
            if let Some(holders) = self.owners.get_mut(key) {
                holders.remove(file);
                if holders.is_empty() {
                    self.owners.remove(key);
                    if let Some(n) = self.counts.get_mut(&key.0) {
                        *n -= 1;
                    }
                }
            }
            self.touched.insert(key.clone());
        }
    }

    /// Applies every touched object to `index` from the file that holds it, or deletes it
    /// from the index when no file does; returns how many objects were applied or deleted.
    /// Kinds go in the order the watches list them (namespaces and nodes first).
    pub(super) fn apply(&mut self, index: &mut Index) -> usize {
        let rank = |kind: Kind| {
            sextant_kube::WATCHED
                .iter()
                .position(|w| w.0 == kind)
                .unwrap_or(usize::MAX)
        };
        let mut touched: Vec<Key> = std::mem::take(&mut self.touched).into_iter().collect();
        touched.sort_by_key(|k| rank(k.0));
        let n = touched.len();
        for key in touched {
            let object = self
                .owners
                .get(&key)
                .and_then(|holders| holders.last())
                .and_then(|file| self.files.get(file))
                .and_then(|f| f.positions.get(&key).map(|&i| &f.objects[i]));
            match object {
                Some(o) => index.apply(o.clone()),
                None => index.delete(key.0, &key.1, &key.2),
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_scoped_objects_are_known_by_name_as_the_index_knows_them() {
        let namespace = |extra: &str| {
            let json: serde_json::Value = serde_json::from_str(&format!(
                r#"{{"apiVersion": "v1", "kind": "Namespace", "metadata": {{"name": "istio-system"{extra}}}}}"#
            ))
            .expect("json");
            Object::from_json(json, "default").expect("a Namespace")
        };
        let plain = namespace("");
        let with_namespace = namespace(r#", "namespace": "istio-system""#);
        assert_eq!(key_of(&plain), key_of(&with_namespace));
        // Two files holding it: removing one keeps it.
        let mut held = Held::default();
        held.set("/d/a.yaml".into(), vec![plain], true);
        held.set("/d/b.yaml".into(), vec![with_namespace], true);
        held.forget(Path::new("/d/b.yaml"));
        assert_eq!(held.count(Kind::Namespace), 1);
    }
}
