//! Validation of JSON objects against a CustomResourceDefinition's `openAPIV3Schema`, the way a
//! Kubernetes API server does it: structural types, required fields, bounds, enums, `oneOf`
//! groups, int-or-string, unknown fields (as with `fieldValidation=Strict`), and the
//! `x-kubernetes-validations` CEL rules (evaluated by `kube-cel`).
//!
//! Used by `sextant validate` to check manifests offline and by the test API server to admit
//! custom resources. Differences from a real API server: integer `format: int32` is range-checked
//! (the API server leaves that to the consumer), and string formats other than `byte` and
//! `date-time` are not checked.

mod cel;

use std::fmt;

use serde_json::{Map, Value};

/// The message of a field the schema does not declare (callers sort such errors from the
/// others, as the API server does for `fieldValidation`).
pub const UNKNOWN_FIELD: &str = "field not declared in schema";

/// Whether an error's message is that of a CEL rule that could not be evaluated (`... evaluating
/// rule: MESSAGE`, the API server's words), rather than one that evaluated to false.
pub fn is_evaluation_error(message: &str) -> bool {
    message.contains(cel::EVALUATING_RULE)
}

/// One way in which an object does not satisfy a schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaError {
    /// Field path, `spec.http[0].route[1].weight`.
    pub path: String,
    /// What is wrong, in the API server's words where it has them.
    pub message: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A compiled schema, reusable across objects.
pub struct Schema {
    root: Value,
    cel: kube_cel::CompiledSchema,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema").finish_non_exhaustive()
    }
}

/// The schema itself is not usable.
#[derive(Debug, thiserror::Error)]
#[error("invalid schema: {0}")]
pub struct InvalidSchema(String);

impl Schema {
    /// Compiles an `openAPIV3Schema` (the object-level schema of one CRD version).
    pub fn new(open_api_v3_schema: Value) -> Result<Self, InvalidSchema> {
        if !open_api_v3_schema.is_object() {
            return Err(InvalidSchema("the schema must be an object".into()));
        }
        let cel = kube_cel::compile_schema(&open_api_v3_schema);
        if let Some(err) = cel.compilation_errors().first() {
            return Err(InvalidSchema(format!("CEL rule does not compile: {err}")));
        }
        Ok(Schema {
            root: open_api_v3_schema,
            cel,
        })
    }

    /// The `openAPIV3Schema` it was compiled from.
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Validates a whole object (`apiVersion`, `kind` and `metadata` are implicitly allowed at
    /// the top). Returns every error found, in document order.
    pub fn validate(&self, object: &Value) -> Vec<SchemaError> {
        let mut errors = Vec::new();
        let Some(obj) = object.as_object() else {
            errors.push(SchemaError {
                path: String::new(),
                message: format!("must be an object, got {}", type_name(object)),
            });
            return errors;
        };
        let mut body = obj.clone();
        for implicit in ["apiVersion", "kind", "metadata"] {
            body.remove(implicit);
        }
        check(&self.root, &Value::Object(body), "", &mut errors);
        if errors.is_empty() {
            let pruned = prune_nulls(&self.root, object);
            if let Err(failures) =
                kube_cel::Validator::new().validate_compiled(&self.cel, &pruned, None)
            {
                for failure in failures.iter() {
                    let message = match failure.kind {
                        kube_cel::ErrorKind::EvaluationError
                        | kube_cel::ErrorKind::UnsupportedReference => {
                            cel::evaluation_error(&self.root, object, failure)
                        }
                        _ => format!("Invalid value: {}", failure.message),
                    };
                    errors.push(SchemaError {
                        path: map_keys_in_brackets(&self.root, &failure.field_path),
                        message,
                    });
                }
            }
        }
        errors
    }
}

/// kube-cel writes map entries as `.key`; the API server (and this crate) write `[key]`.
fn map_keys_in_brackets(root: &Value, path: &str) -> String {
    let mut out = String::new();
    let mut schema = Some(root);
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (name, indices) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        let is_map_entry = schema.is_some_and(|s| {
            s.get("properties").is_none()
                && s.get("additionalProperties").is_some_and(Value::is_object)
        });
        if is_map_entry {
            out.push_str(&format!("[{name}]"));
            schema = schema.and_then(|s| s.get("additionalProperties"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(name);
            schema = schema
                .and_then(|s| s.get("properties"))
                .and_then(|p| p.get(name));
        }
        out.push_str(indices);
        for _ in 0..indices.matches('[').count() {
            schema = schema.and_then(|s| s.get("items"));
        }
    }
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(schema: &Map<String, Value>, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<SchemaError>) {
    let Some(s) = schema.as_object() else { return };
    let err = |errors: &mut Vec<SchemaError>, message: String| {
        errors.push(SchemaError {
            path: path.to_owned(),
            message,
        })
    };
    if value.is_null() {
        // The API server prunes nulls of non-nullable fields before validating.
        return;
    }
    if flag(s, "x-kubernetes-int-or-string") {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            err(
                errors,
                format!(
                    "Invalid value: {}: must be an integer or a string",
                    type_name(value)
                ),
            );
        }
        return;
    }
    if let Some(expected) = s.get("type").and_then(Value::as_str) {
        let ok = match expected {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => is_integer(value),
            "number" => value.is_number(),
            _ => true,
        };
        if !ok {
            err(
                errors,
                format!(
                    "Invalid value: \"{}\": {path} in body must be of type {expected}: \"{}\"",
                    short(value),
                    type_name(value)
                ),
            );
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
        err(
            errors,
            format!(
                "Unsupported value: {}: supported values: {}",
                value,
                list.join(", ")
            ),
        );
    }
    match value {
        Value::Number(n) => check_number(s, n, path, errors),
        Value::String(text) => check_string(s, text, path, errors),
        Value::Array(items) => {
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                err(
                    errors,
                    format!("Too many: {}: must have at most {max} items", items.len()),
                );
            }
            if let Some(min) = s.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                err(
                    errors,
                    format!("Invalid value: must have at least {min} items"),
                );
            }
        }
        Value::Object(fields) => {
            if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
                && fields.len() as u64 > max
            {
                err(
                    errors,
                    format!("Too many: {}: must have at most {max} items", fields.len()),
                );
            }
            for required in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if fields.get(required).is_none_or(Value::is_null) {
                    errors.push(SchemaError {
                        path: join(path, required),
                        message: "Required value".into(),
                    });
                }
            }
        }
        _ => {}
    }
    for (keyword, want) in [("oneOf", Some(1)), ("anyOf", None)] {
        if let Some(branches) = s.get(keyword).and_then(Value::as_array) {
            let matching = branches
                .iter()
                .filter(|b| matches_constraint(b, value))
                .count();
            let ok = match want {
                Some(n) => matching == n,
                None => matching > 0,
            };
            if !ok {
                errors.push(SchemaError {
                    path: path.to_owned(),
                    message: format!("Invalid value: {}", describe_one_of(branches, value)),
                });
            }
        }
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for branch in all {
            check(branch, value, path, errors);
        }
    }
    if let Some(not) = s.get("not")
        && matches_constraint(not, value)
    {
        errors.push(SchemaError {
            path: path.to_owned(),
            message: "Invalid value: must not validate the schema (not)".into(),
        });
    }
    match value {
        Value::Object(fields) => check_fields(s, fields, path, errors),
        Value::Array(items) => {
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn check_fields(
    s: &Map<String, Value>,
    fields: &Map<String, Value>,
    path: &str,
    errors: &mut Vec<SchemaError>,
) {
    let properties = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties");
    let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
    for (key, child) in fields {
        if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
            check(child_schema, child, &join(path, key), errors);
        } else if let Some(extra) = additional.filter(|a| a.is_object()) {
            check(extra, child, &format!("{path}[{key}]"), errors);
        } else if !preserve && properties.is_some() {
            errors.push(SchemaError {
                path: join(path, key),
                message: UNKNOWN_FIELD.into(),
            });
        }
    }
}

fn is_integer(value: &Value) -> bool {
    match value {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn check_number(
    s: &Map<String, Value>,
    n: &serde_json::Number,
    path: &str,
    errors: &mut Vec<SchemaError>,
) {
    let mut err = |message: String| {
        errors.push(SchemaError {
            path: path.to_owned(),
            message,
        })
    };
    let Some(v) = n.as_f64() else { return };
    if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag(s, "exclusiveMinimum");
        if v < min || (exclusive && v == min) {
            err(format!(
                "Invalid value: {n}: should be greater than or equal to {}",
                fmt_bound(min)
            ));
        }
    }
    if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag(s, "exclusiveMaximum");
        if v > max || (exclusive && v == max) {
            err(format!(
                "Invalid value: {n}: should be less than or equal to {}",
                fmt_bound(max)
            ));
        }
    }
    if s.get("format").and_then(Value::as_str) == Some("int32")
        && !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&v)
    {
        err(format!(
            "Invalid value: {n}: must fit in a 32-bit signed integer"
        ));
    }
}

fn fmt_bound(b: f64) -> String {
    if b.fract() == 0.0 && b.abs() < 1e16 {
        format!("{}", b as i64)
    } else {
        b.to_string()
    }
}

fn check_string(s: &Map<String, Value>, text: &str, path: &str, errors: &mut Vec<SchemaError>) {
    let mut err = |message: String| {
        errors.push(SchemaError {
            path: path.to_owned(),
            message,
        })
    };
    let len = text.chars().count() as u64;
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        err(format!("Too long: may not be more than {max} bytes"));
    }
    if let Some(min) = s.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        err(format!(
            "Invalid value: should be at least {min} chars long"
        ));
    }
    match s.get("format").and_then(Value::as_str) {
        Some("byte") if !is_base64(text) => err(format!(
            "Invalid value: \"{}\": must be base64-encoded bytes",
            short_str(text)
        )),
        Some("date-time") if !is_rfc3339(text) => err(format!(
            "Invalid value: \"{}\": must be an RFC 3339 date-time",
            short_str(text)
        )),
        _ => {}
    }
}

fn is_base64(text: &str) -> bool {
    let t = text.trim_end_matches('=');
    text.len() - t.len() <= 2
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'))
        && (text.len().is_multiple_of(4) || !text.ends_with('='))
}

fn is_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
}

/// Whether `value` satisfies a constraint-only subschema (`required`, `not`, `anyOf`, `oneOf`,
/// `allOf`), as used in Istio's encoding of protobuf oneofs.
fn matches_constraint(schema: &Value, value: &Value) -> bool {
    let mut errors = Vec::new();
    check(schema, value, "", &mut errors);
    errors.is_empty()
}

fn describe_one_of(branches: &[Value], value: &Value) -> String {
    let fields: Vec<&str> = branches
        .iter()
        .filter_map(|b| b.get("required").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let present: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| value.get(f).is_some_and(|v| !v.is_null()))
        .collect();
    if fields.is_empty() {
        "must match exactly one of the allowed schemas".into()
    } else {
        format!(
            "only one of the fields [{}] may be set, found [{}]",
            fields.join(", "),
            present.join(", ")
        )
    }
}

fn short(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    short_str(&text)
}

fn short_str(text: &str) -> String {
    if text.chars().count() > 64 {
        let cut: String = text.chars().take(61).collect();
        format!("{cut}...")
    } else {
        text.to_owned()
    }
}

/// Drops `null` fields that the schema does not declare nullable, as the API server does before
/// running CEL rules.
fn prune_nulls(schema: &Value, value: &Value) -> Value {
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let mut out = Map::new();
            for (k, v) in fields {
                let child = properties
                    .and_then(|p| p.get(k))
                    .or(additional.filter(|a| a.is_object()));
                let nullable = child
                    .and_then(|c| c.get("nullable"))
                    .and_then(Value::as_bool);
                if v.is_null() && nullable != Some(true) {
                    continue;
                }
                out.insert(
                    k.clone(),
                    match child {
                        Some(c) => prune_nulls(c, v),
                        None => v.clone(),
                    },
                );
            }
            Value::Object(out)
        }
        Value::Array(items) => match schema.get("items") {
            Some(item) => Value::Array(items.iter().map(|i| prune_nulls(item, i)).collect()),
            None => value.clone(),
        },
        _ => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Schema {
        Schema::new(json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["host"],
                    "properties": {
                        "host": {"type": "string"},
                        "port": {"type": "integer", "minimum": 0, "maximum": 65535},
                        "timeout": {
                            "type": "string",
                            "x-kubernetes-validations": [{
                                "rule": "duration(self) >= duration('1ms')",
                                "message": "must be a valid duration greater than 1ms",
                            }],
                        },
                        "match": {
                            "type": "object",
                            "oneOf": [
                                {"not": {"anyOf": [{"required": ["exact"]}, {"required": ["prefix"]}]}},
                                {"required": ["exact"]},
                                {"required": ["prefix"]},
                            ],
                            "properties": {"exact": {"type": "string"}, "prefix": {"type": "string"}},
                        },
                    },
                },
            },
        }))
        .expect("valid schema")
    }

    fn paths(errors: Vec<SchemaError>) -> Vec<String> {
        errors.into_iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn accepts_a_valid_object() {
        let obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"host": "h", "port": 80, "timeout": "1s", "match": {"exact": "/"}}});
        assert_eq!(schema().validate(&obj), vec![]);
    }

    #[test]
    fn reports_types_bounds_required_and_unknown_fields() {
        let obj =
            json!({"spec": {"port": 70000, "extra": 1, "match": {"exact": "a", "prefix": "b"}}});
        let errs = paths(schema().validate(&obj));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.host: Required value")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.port: Invalid value: 70000")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.extra: field not declared")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.match: Invalid value: only one of")),
            "{errs:?}"
        );
    }

    #[test]
    fn evaluates_cel_rules() {
        let obj = json!({"spec": {"host": "h", "timeout": "0s"}});
        let errs = paths(schema().validate(&obj));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("must be a valid duration greater than 1ms"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_rule_that_fails_to_evaluate_reports_its_message_as_the_api_server_does() {
        let obj = json!({"spec": {"host": "h", "timeout": "x"}});
        let errs = paths(schema().validate(&obj));
        assert_eq!(
            errs,
            [
                "spec.timeout: Invalid value: \"string\": time: invalid duration \"x\" evaluating rule: must be a valid duration greater than 1ms"
            ]
        );
        // Without a message, the rule's text stands for it.
        let bare = Schema::new(json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "x-kubernetes-validations": [{"rule": "duration(self.d) > duration('0s')"}],
            "properties": {"d": {"type": "string"}}}}}))
        .expect("valid schema");
        let errs = paths(bare.validate(&json!({"spec": {"d": "soon"}})));
        assert_eq!(
            errs,
            [
                "spec: Invalid value: \"object\": time: invalid duration evaluating rule: duration(self.d) > duration('0s')"
            ]
        );
    }

    #[test]
    fn nulls_of_plain_fields_are_pruned() {
        let obj = json!({"spec": {"host": "h", "port": null}});
        assert_eq!(schema().validate(&obj), vec![]);
    }
}
