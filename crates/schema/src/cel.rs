//! What a CEL rule that could not be evaluated reports: the API server's wording, with the
//! rule's own message, rather than the evaluator's internals.

use serde_json::Value;

/// What separates the cause from the rule's message.
pub(crate) const EVALUATING_RULE: &str = " evaluating rule: ";

/// A rule that could not be evaluated, in the API server's words
/// (`apiextensions-apiserver/pkg/apiserver/schema/cel/validation.go`): `Invalid value:
/// "TYPE": CAUSE evaluating rule: MESSAGE`, where TYPE is the schema type of the field, CAUSE
/// what went wrong as CEL-Go says it, and MESSAGE the rule's `message` (its text when it has
/// none). kube-cel's own cause (a Rust parser's internals) is not shown.
pub(crate) fn evaluation_error(
    root: &Value,
    object: &Value,
    failure: &kube_cel::ValidationError,
) -> String {
    let node = schema_at(root, &failure.field_path);
    let kind = node
        .and_then(|n| n.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("object");
    let rule = node
        .and_then(|n| rule_in(n, &failure.rule))
        .or_else(|| find_rule(root, &failure.rule, 0));
    let message = rule
        .and_then(|r| r.get("message"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .unwrap_or(failure.rule.trim());
    let value = value_at(object, &failure.field_path).and_then(Value::as_str);
    let cause = match failure.kind {
        kube_cel::ErrorKind::UnsupportedReference => failure.message.clone(),
        _ => cel_go_cause(&failure.message, value),
    };
    format!("Invalid value: \"{kind}\": {cause}{EVALUATING_RULE}{message}")
}

/// What CEL-Go reports for an evaluation error kube-cel reports as `rule evaluation error:
/// ...`: a bad `duration` or `timestamp` argument as Go's parsers word it, other errors as
/// cel's own words without a function's internals.
fn cel_go_cause(message: &str, value: Option<&str>) -> String {
    let cause = message
        .strip_prefix("rule evaluation error: ")
        .unwrap_or(message);
    let quoted = |v: Option<&str>| v.map(|v| format!(" {v:?}")).unwrap_or_default();
    if let Some(rest) = cause.strip_prefix("Error executing function '") {
        let function = rest.split('\'').next().unwrap_or_default();
        return match function {
            "duration" => format!("time: invalid duration{}", quoted(value)),
            "timestamp" => format!("invalid timestamp{}", quoted(value)),
            f => format!("function {f} failed"),
        };
    }
    let mut chars = cause.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "evaluation error".into(),
    }
}

/// The schema node at a kube-cel field path (`spec.http[0].timeout`, map entries as `.key`).
fn schema_at<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut schema = root;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let name = segment.split('[').next().unwrap_or_default();
        schema = match schema.get("properties").and_then(|p| p.get(name)) {
            Some(s) => s,
            None => schema
                .get("additionalProperties")
                .filter(|a| a.is_object())?,
        };
        for _ in 0..segment.matches('[').count() {
            schema = schema.get("items")?;
        }
    }
    Some(schema)
}

/// The value at a kube-cel field path in `object`.
fn value_at<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = object;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let mut parts = segment.split('[');
        v = v.get(parts.next().unwrap_or_default())?;
        for index in parts {
            v = v.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(v)
}

/// The `x-kubernetes-validations` entry of `node` whose rule is `rule`.
fn rule_in<'a>(node: &'a Value, rule: &str) -> Option<&'a Value> {
    node.get("x-kubernetes-validations")?
        .as_array()?
        .iter()
        .find(|r| r.get("rule").and_then(Value::as_str) == Some(rule))
}

/// The first entry anywhere in `schema` whose rule is `rule` (for a path kube-cel reports
/// elsewhere than the rule's node, as a rule's `fieldPath` does).
fn find_rule<'a>(schema: &'a Value, rule: &str, depth: usize) -> Option<&'a Value> {
    if depth > 64 {
        return None;
    }
    if let Some(found) = rule_in(schema, rule) {
        return Some(found);
    }
    match schema {
        Value::Object(m) => m.values().find_map(|v| find_rule(v, rule, depth + 1)),
        Value::Array(a) => a.iter().find_map(|v| find_rule(v, rule, depth + 1)),
        _ => None,
    }
}
