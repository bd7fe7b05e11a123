//! Checks of an object against its type on write: kind and apiVersion, the CRD's schema (and
//! CEL rules) or the built-in type, and a CRD's own definition. Unknown fields follow the
//! request's `fieldValidation`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::ApiError;
use crate::kinds::{self, ResourceType};

/// Checks an object against its type: kind, apiVersion, the CRD schema or the built-in type,
/// and a CRD's own definition. Unknown fields follow `fieldValidation` (`q`): `Strict` refuses
/// them, `Warn` (the default) and `Ignore` drop them from the object, `Warn` with a warning.
/// Returns the warnings.
pub(super) fn validate(
    t: &ResourceType,
    object: &mut Value,
    name: &str,
    q: &BTreeMap<String, String>,
) -> Result<Vec<String>, ApiError> {
    let mode = q.get("fieldValidation").map_or("Warn", String::as_str);
    let (unknown, mut errors) = field_errors(t, object);
    if unknown.is_empty() || mode == "Strict" {
        errors.extend(unknown.iter().map(|f| (f.clone(), UNKNOWN.to_owned())));
        return if errors.is_empty() {
            Ok(Vec::new())
        } else {
            Err(ApiError::invalid(t, name, errors))
        };
    }
    for field in &unknown {
        prune(object, field);
    }
    // Checked again without them (CEL rules run only on a structurally valid object).
    let (_, errors) = field_errors(t, object);
    if !errors.is_empty() {
        return Err(ApiError::invalid(t, name, errors));
    }
    Ok(if mode == "Ignore" {
        Vec::new()
    } else {
        unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect()
    })
}

/// The message of an unknown field, from `sextant-schema` and `builtin`.
const UNKNOWN: &str = sextant_schema::UNKNOWN_FIELD;

/// Unknown fields, and every other error as `(field, message)`.
fn field_errors(t: &ResourceType, object: &Value) -> (Vec<String>, Vec<(String, String)>) {
    let mut errors = Vec::new();
    if object["kind"].as_str() != Some(t.kind.as_str()) {
        errors.push((
            "kind".to_owned(),
            format!("Invalid value: {}: must be {}", object["kind"], t.kind),
        ));
    }
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    if !(api_version == t.api_version()
        || (!t.group.is_empty() && api_version.starts_with(&format!("{}/", t.group))))
    {
        errors.push((
            "apiVersion".to_owned(),
            format!(
                "Invalid value: \"{api_version}\": must be {}",
                t.api_version()
            ),
        ));
    }
    if let Some(schema) = t.custom.as_ref().and_then(|c| c.schema.as_ref()) {
        for e in schema.validate(object) {
            errors.push((e.path, e.message));
        }
    } else {
        errors.extend(crate::builtin::check(&t.kind, object));
    }
    if t.kind == "CustomResourceDefinition"
        && let Err(e) = kinds::from_crd(object)
    {
        let (field, message) = e.split_once(": ").unwrap_or(("", &e));
        errors.push((field.to_owned(), message.to_owned()));
    }
    let (unknown, errors): (Vec<_>, Vec<_>) = errors.into_iter().partition(|(_, m)| m == UNKNOWN);
    (unknown.into_iter().map(|(f, _)| f).collect(), errors)
}

/// Removes the field at `path` (`spec.http[0].bogus`, `metadata.labels[a.b/c]`).
fn prune(object: &mut Value, path: &str) {
    let mut segments = Vec::new();
    for part in path.split('.') {
        // `name[0][key]`: the name, then each bracketed index or key.
        let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !name.is_empty() {
            segments.push(name.to_owned());
        }
        while let Some(end) = rest.find(']') {
            segments.push(rest[1..end].to_owned());
            rest = &rest[end + 1..];
        }
    }
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut v = object;
    for seg in parents {
        v = match v {
            Value::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(x) => x,
                None => return,
            },
            Value::Object(m) => match m.get_mut(seg) {
                Some(x) => x,
                None => return,
            },
            _ => return,
        };
    }
    if let Value::Object(m) = v {
        m.remove(last);
    }
}
