//! Reading a watched config directory one file at a time: a file that cannot be read (too
//! large, not UTF-8, no permission) or parsed is a problem of that file alone, never of the
//! directory.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use serde_json::Value;
use sextant_index::Object;

use crate::files;

/// What listing a directory found.
#[derive(Debug, Default)]
pub struct Listing {
    /// Manifest files (`.yaml`, `.yml`, `.json`), sorted.
    pub files: Vec<PathBuf>,
    /// Subdirectories that could not be listed, with why; what they held is unknown.
    pub unlisted: Vec<(PathBuf, String)>,
    /// Whether a symbolic link was followed (outside the `..`-named entries a Kubernetes
    /// volume keeps): a file may then be reached by two paths, or live outside the watched
    /// directory, so a change cannot be narrowed down to the paths notify names.
    pub links: bool,
}

/// Lists the manifests under `dir`, recursively. Entries whose names start with `.` are
/// skipped: Kubernetes keeps a ConfigMap's real files in `..data/` and `..TIMESTAMP/` and
/// links each `NAME.yaml` to them, so the links alone name every file once. A directory
/// reached again (a link loop, or two links to one directory) is listed once. Errors only
/// when `dir` itself cannot be listed.
pub fn list(dir: &Path) -> std::io::Result<Listing> {
    let mut listing = Listing::default();
    let entries = std::fs::read_dir(dir)?;
    let mut seen = std::collections::HashSet::new();
    if let Some(id) = dir_id(dir) {
        seen.insert(id);
    }
    collect(entries, &mut listing, &mut seen);
    listing.files.sort();
    Ok(listing)
}

/// Whether `path` is a symbolic link other than a Kubernetes volume's `NAME.yaml` into its
/// own `..data/` (which names its file once).
pub fn followed_link(path: &Path) -> bool {
    let Ok(target) = std::fs::read_link(path) else {
        return false;
    };
    let into_volume = target.is_relative()
        && target.components().count() == 2
        && target
            .components()
            .next()
            .is_some_and(|c| c.as_os_str().to_string_lossy().starts_with(".."));
    !into_volume
}

fn dir_id(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

fn collect(
    entries: std::fs::ReadDir,
    listing: &mut Listing,
    seen: &mut std::collections::HashSet<(u64, u64)>,
) {
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_symlink()) && followed_link(&path) {
            listing.links = true;
        }
        if path.is_dir() {
            if dir_id(&path).is_some_and(|id| !seen.insert(id)) {
                continue;
            }
            match std::fs::read_dir(&path) {
                Ok(inner) => collect(inner, listing, seen),
                Err(e) => listing.unlisted.push((path, e.to_string())),
            }
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            listing.files.push(path);
        }
    }
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Larger than the limit.
    #[error("{size} bytes is over the {limit}-byte limit (--max-input-bytes)")]
    TooLarge {
        /// The file's size, or more than the limit when it grew while read.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Not UTF-8 text.
    #[error("not UTF-8 text (invalid byte at offset {0})")]
    NotText(usize),
    /// A FIFO, socket or device: opening it could block the reader forever.
    #[error("not a regular file")]
    NotRegular,
    /// Could not be opened or read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The text of `path`, refused when larger than `limit` bytes.
pub fn read(path: &Path, limit: u64) -> Result<String, FileError> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular);
    }
    let size = meta.len();
    if size > limit {
        return Err(FileError::TooLarge { size, limit });
    }
    let mut bytes = Vec::new();
    // Opened without blocking, and checked again once open: a FIFO put in the file's place
    // after the check above must not hold the reader.
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(FileError::NotRegular);
    }
    // The file may grow between the size check and the read.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    String::from_utf8(bytes).map_err(|e| FileError::NotText(e.utf8_error().valid_up_to()))
}

/// What one file holds now: the objects it yields, and what is wrong with it (empty when
/// the file is good).
#[derive(Debug, Default)]
pub struct FileRead {
    /// Objects read.
    pub objects: Vec<Object>,
    /// Problems, for people: the file's or one document's.
    pub problems: Vec<String>,
    /// The file was over the size limit.
    pub too_large: bool,
}

/// Reads and parses one file of the directory.
pub fn read_objects(path: &Path, limit: u64, default_namespace: &str) -> FileRead {
    let name = path.display().to_string();
    let text = match read(path, limit) {
        Ok(text) => text,
        Err(e) => {
            return FileRead {
                too_large: matches!(e, FileError::TooLarge { .. }),
                problems: vec![e.to_string()],
                ..FileRead::default()
            };
        }
    };
    match files::objects_from_text(&name, &text, default_namespace) {
        Ok((objects, skipped)) => FileRead {
            objects,
            problems: skipped
                .into_iter()
                .map(|s| format!("{}: {}", s.location, s.reason))
                .collect(),
            too_large: false,
        },
        Err(e) => FileRead {
            problems: vec![e.to_string()],
            ..FileRead::default()
        },
    }
}

/// Kinds whose objects mean nothing without a `spec`: one that has none is most likely cut
/// short (a file written in place and read half-way), not meant to be empty.
pub fn lacks_spec(value: &Value) -> bool {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    matches!(
        kind,
        "VirtualService"
            | "DestinationRule"
            | "Gateway"
            | "Sidecar"
            | "ServiceEntry"
            | "WorkloadEntry"
            | "Service"
            | "Pod"
    ) && value.get("spec").is_none_or(Value::is_null)
}

/// An object's identity within a directory: kind, namespace and name.
pub fn key(object: &Object) -> (sextant_model::Kind, Option<String>, Option<String>) {
    let meta = object.metadata();
    (object.kind(), meta.namespace.clone(), meta.name.clone())
}

/// What a file with problems contributes: what it yields now, and every object it held when
/// last good that it no longer yields (a document cut short or broken keeps its last good
/// version until the file is fixed).
pub fn keep_last_good(now: Vec<Object>, last_good: Option<&Vec<Object>>) -> Vec<Object> {
    let present: std::collections::HashSet<_> = now.iter().map(key).collect();
    let kept = last_good
        .into_iter()
        .flatten()
        .filter(|o| !present.contains(&key(o)))
        .cloned();
    now.iter().cloned().chain(kept).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sextant-scan-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn bad_files_are_reported_one_by_one() {
        let d = dir("bad");
        std::fs::write(d.join("big.yaml"), "x".repeat(64)).expect("write");
        std::fs::write(d.join("bin.yaml"), b"kind: \xff\xfe").expect("write");
        let big = read_objects(&d.join("big.yaml"), 32, "default");
        assert!(big.too_large);
        assert!(
            big.problems[0].contains("over the 32-byte limit"),
            "{big:?}"
        );
        let bin = read_objects(&d.join("bin.yaml"), 1024, "default");
        assert!(!bin.too_large);
        assert!(bin.problems[0].contains("not UTF-8"), "{bin:?}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_fifo_is_reported_without_blocking_the_reader() {
        let d = dir("fifo");
        let fifo = d.join("fifo.yaml");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.expect("coreutils' mkfifo").success());
        // With no writer, opening it for reading the usual way would wait forever.
        let read = read_objects(&fifo, 1024, "default");
        assert!(read.problems[0].contains("not a regular file"), "{read:?}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_link_loop_is_listed_once_and_links_are_reported() {
        let d = dir("loop");
        std::fs::create_dir_all(d.join("sub")).expect("dir");
        std::fs::write(d.join("sub/a.yaml"), "").expect("write");
        std::os::unix::fs::symlink(".", d.join("l1")).expect("link");
        std::os::unix::fs::symlink(".", d.join("l2")).expect("link");
        std::os::unix::fs::symlink("sub", d.join("zlink")).expect("link");
        let listing = list(&d).expect("listed");
        assert_eq!(listing.files.len(), 1, "{:?}", listing.files);
        assert!(listing.links);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn listing_skips_kubernetes_hidden_copies() {
        let d = dir("hidden");
        std::fs::create_dir_all(d.join("..2026_01_01/sub")).expect("dir");
        std::fs::write(d.join("..2026_01_01/a.yaml"), "").expect("write");
        std::os::unix::fs::symlink("..2026_01_01", d.join("..data")).expect("link");
        std::os::unix::fs::symlink("..data/a.yaml", d.join("a.yaml")).expect("link");
        std::fs::write(d.join("notes.txt"), "").expect("write");
        let listing = list(&d).expect("listed");
        assert_eq!(listing.files, vec![d.join("a.yaml")]);
        assert!(
            !listing.links,
            "a ConfigMap volume's links name each file once"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_object_cut_before_its_spec_keeps_its_last_good_version() {
        let whole = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n  hosts: [r]\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n";
        let (good, problems) = files::objects_from_text("f", whole, "default").expect("yaml");
        assert!(problems.is_empty());
        let cut =
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n";
        let (now, problems) = files::objects_from_text("f", cut, "default").expect("yaml");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].reason.contains("spec"), "{problems:?}");
        let kept = keep_last_good(now, Some(&good));
        let keys: Vec<_> = kept.iter().map(key).collect();
        assert_eq!(keys, good.iter().map(key).collect::<Vec<_>>());
    }
}
