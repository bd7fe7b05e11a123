//! Reading a directory of manifests into the index (the file source).

use std::path::{Path, PathBuf};

use serde_json::Value;
use sextant_index::{Index, Object, ObjectError, manifest};

use crate::cmd::validate::{Unreadable, read_inputs};

/// A problem with one document of a config directory; the document is skipped.
#[derive(Debug)]
pub struct Skipped {
    /// File and line.
    pub location: String,
    /// Why.
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

/// The objects of one file's text. Errors only when the text is not YAML at all.
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
