//! Reading manifests from files: the inputs of `sextant validate`, and a config directory as
//! objects or as an index (`sextant proxy-config`, the directory source).

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use serde_json::Value;
use sextant_index::{
    Index, Object, ObjectError,
    manifest::{self, Limits},
};

/// A readable input that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct Unreadable {
    path: String,
    reason: String,
}

/// Reads every input: files, directories (recursively, `.yaml`/`.yml`/`.json`), or `-`.
pub fn read_inputs(paths: &[PathBuf]) -> Result<Vec<(String, String)>, Unreadable> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .take(Limits::current().input_bytes as u64 + 1)
                .read_to_string(&mut text)
                .map_err(|e| unreadable(Path::new("<stdin>"), e))?;
            out.push(("<stdin>".to_owned(), text));
        } else if path.is_dir() {
            let mut files = Vec::new();
            collect_dir(path, &mut files)?;
            files.sort();
            for file in files {
                out.push((file.display().to_string(), read_file(&file)?));
            }
        } else {
            out.push((path.display().to_string(), read_file(path)?));
        }
    }
    Ok(out)
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> Unreadable {
    Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn read_file(path: &Path) -> Result<String, Unreadable> {
    let meta = std::fs::metadata(path).map_err(|e| unreadable(path, e))?;
    if !meta.is_file() {
        return Err(unreadable(path, "not a regular file"));
    }
    if let Err(exceeded) = Limits::current().check_len(meta.len()) {
        return Err(unreadable(
            path,
            format!("{} bytes: {exceeded}", meta.len()),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| unreadable(path, e))
}

fn collect_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Unreadable> {
    for entry in std::fs::read_dir(dir).map_err(|e| unreadable(dir, e))? {
        let path = entry.map_err(|e| unreadable(dir, e))?.path();
        if path.is_dir() {
            collect_dir(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// A problem with one document of a config directory; the document is skipped.
#[derive(Debug)]
pub struct Skipped {
    /// File and line.
    pub location: String,
    /// What is wrong with the document, for people.
    pub reason: String,
}

/// Every object of every manifest under `dir`, with objects lacking a namespace placed in
/// `default_namespace`. Unknown kinds are ignored; unreadable documents are reported.
pub fn load_objects(
    dir: &Path,
    default_namespace: &str,
) -> Result<(Vec<Object>, Vec<Skipped>), Unreadable> {
    let inputs = read_inputs(&[PathBuf::from(dir)])?;
    let mut objects = Vec::new();
    let mut skipped = Vec::new();
    for (file, text) in inputs {
        match objects_from_text(&file, &text, default_namespace) {
            Ok((o, s)) => {
                objects.extend(o);
                skipped.extend(s);
            }
            Err(e) => skipped.push(Skipped {
                location: file.clone(),
                reason: e.to_string(),
            }),
        }
    }
    Ok((objects, skipped))
}

/// The objects of one file's text. Errors only when the text is not YAML at all; a document
/// that is not an object of its kind, or one whose kind needs a `spec` and has none, is skipped.
pub fn objects_from_text(
    file: &str,
    text: &str,
    default_namespace: &str,
) -> Result<(Vec<Object>, Vec<Skipped>), manifest::ManifestError> {
    let mut objects = Vec::new();
    let mut skipped = Vec::new();
    for doc in manifest::parse_documents(text)? {
        let items: Vec<Value> = match doc.value.get("kind").and_then(Value::as_str) {
            Some("List") => doc
                .value
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            _ => vec![doc.value.clone()],
        };
        for item in items.into_iter().filter(|v| !v.is_null()) {
            if crate::scan::lacks_spec(&item) {
                skipped.push(Skipped {
                    location: format!("{file}:{}", doc.line),
                    reason: format!(
                        "{} {} has no spec (cut short?)",
                        item["kind"].as_str().unwrap_or_default(),
                        item["metadata"]["name"].as_str().unwrap_or_default()
                    ),
                });
                continue;
            }
            match Object::from_json(item, default_namespace) {
                Ok(o) => objects.push(o),
                Err(ObjectError::Unknown { .. }) => {}
                Err(e) => skipped.push(Skipped {
                    location: format!("{file}:{}", doc.line),
                    reason: e.to_string(),
                }),
            }
        }
    }
    Ok((objects, skipped))
}

/// An index loaded from a directory.
pub fn load_index(
    dir: &Path,
    default_namespace: &str,
) -> Result<(Index, Vec<Skipped>), Unreadable> {
    let (objects, skipped) = load_objects(dir, default_namespace)?;
    let mut index = Index::default();
    for o in objects {
        index.apply(o);
    }
    Ok((index, skipped))
}
