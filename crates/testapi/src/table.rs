//! Server-side printing: the `Table` kubectl asks for (`Accept: ...;as=Table;g=meta.k8s.io`),
//! with a custom resource's `additionalPrinterColumns`.

use serde_json::{Value, json};

use crate::{kinds::ResourceType, store::parse_rfc3339};

/// The objects as a `meta.k8s.io/v1` Table.
pub fn table(t: &ResourceType, objects: &[Value], rv: u64) -> Value {
    let mut columns = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    let custom: Vec<_> = t
        .custom
        .as_ref()
        .map(|c| c.columns.clone())
        .unwrap_or_default();
    let has_age = custom
        .iter()
        .any(|c| c.json_path == ".metadata.creationTimestamp");
    for c in &custom {
        columns.push(json!({"name": c.name, "type": c.type_, "format": "",
            "description": c.description, "priority": c.priority}));
    }
    if !has_age {
        columns.push(json!({"name": "Age", "type": "date", "format": "",
            "description": "CreationTimestamp is when the object was created.", "priority": 0}));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            for c in &custom {
                let v = lookup(o, &c.json_path);
                cells.push(match (c.type_.as_str(), v) {
                    (_, None) => Value::Null,
                    ("date", Some(Value::String(s))) => json!(age(s)),
                    (_, Some(v @ (Value::Array(_) | Value::Object(_)))) => json!(v.to_string()),
                    (_, Some(v)) => v.clone(),
                });
            }
            if !has_age {
                cells.push(json!(age(o["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default())));
            }
            json!({
                "cells": cells,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": o["metadata"].clone()},
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// A simple JSONPath: `.a.b`, `.a[0].b`, `.metadata.labels.app`.
fn lookup<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = object;
    for part in path
        .trim_start_matches('.')
        .split('.')
        .filter(|p| !p.is_empty())
    {
        let (name, index) = match part.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        v = v.get(name)?;
        if let Some(i) = index {
            v = v.get(i)?;
        }
    }
    Some(v)
}

/// Age as kubectl prints it (`45s`, `3m`, `5h`, `2d`).
pub fn age(created: &str) -> String {
    let Some(then) = parse_rfc3339(created) else {
        return "<unknown>".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(then);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let o = json!({"spec": {"hosts": ["a", "b"], "http": [{"name": "x"}]}});
        assert_eq!(lookup(&o, ".spec.hosts"), Some(&json!(["a", "b"])));
        assert_eq!(lookup(&o, ".spec.http[0].name"), Some(&json!("x")));
        assert_eq!(lookup(&o, ".spec.nothing"), None);
    }
}
