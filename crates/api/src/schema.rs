//! Helpers that make the generated OpenAPI match the shape of Istio's CRDs: protobuf oneof
//! groups and wrapper types.

use schemars::Schema;

/// Adds Istio's encoding of a protobuf `oneof` to an object schema: at most one of `fields` may be
/// present.
pub(crate) fn one_of(schema: &mut Schema, fields: &[&str]) {
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("oneOf".into(), one_of_value(fields));
    }
}

/// Like [`one_of`] for objects that hold several independent oneof groups (`allOf` of each).
pub(crate) fn all_one_of(schema: &mut Schema, groups: &[&[&str]]) {
    if let Some(obj) = schema.as_object_mut() {
        let all: Vec<_> = groups
            .iter()
            .map(|g| serde_json::json!({ "oneOf": one_of_value(g) }))
            .collect();
        obj.insert("allOf".into(), serde_json::Value::Array(all));
    }
}

fn one_of_value(fields: &[&str]) -> serde_json::Value {
    let required: Vec<_> = fields
        .iter()
        .map(|f| serde_json::json!({ "required": [f] }))
        .collect();
    let mut branches = vec![serde_json::json!({ "not": { "anyOf": required.clone() } })];
    branches.extend(required);
    serde_json::Value::Array(branches)
}

/// Marks a field as a protobuf wrapper type (`google.protobuf.BoolValue` and friends), which
/// Istio's CRDs declare `nullable`.
pub(crate) fn nullable(schema: &mut Schema) {
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("nullable".into(), true.into());
    }
}
