//! values.schema.json: it covers every value, the chart's own shapes take no unknown keys, and
//! helm refuses values of the wrong type with the schema's message.

use serde_json::Value;
use sextant_testing::repo;

use super::{Scratch, chart, fails, run};

fn schema() -> Value {
    let text = std::fs::read_to_string(repo("charts/sextant/values.schema.json"))
        .expect("values.schema.json");
    serde_json::from_str(&text).expect("the schema is JSON")
}

fn values(file: &str) -> Value {
    let text = std::fs::read_to_string(repo("charts/sextant").join(file)).expect("values file");
    let docs = sextant_index::manifest::parse_documents(&text).expect("the values' YAML");
    docs.into_iter().next().expect("one document").value
}

/// `node` with its `$ref` (`#/definitions/NAME`) followed.
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str() {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/definitions/")
                .expect("refs are local definitions");
            resolve(root, &root["definitions"][name])
        }
        None => node,
    }
}

/// Whether `node` says what a value must be.
fn typed(root: &Value, node: &Value) -> bool {
    let node = resolve(root, node);
    ["type", "enum", "oneOf"]
        .iter()
        .any(|k| node.get(k).is_some())
}

/// Paths of `value` that `node` gives no type: a key must be among the properties (or the
/// node a map whose values are typed), never only let through by `additionalProperties`.
fn untyped(root: &Value, node: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let node = resolve(root, node);
    if !typed(root, node) {
        out.push(path.to_owned());
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let at = format!("{path}/{key}");
                match (node["properties"].get(key), &node["additionalProperties"]) {
                    (Some(field), _) => untyped(root, field, v, &at, out),
                    (None, entries @ Value::Object(_)) => untyped(root, entries, v, &at, out),
                    _ => out.push(at),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                untyped(root, &node["items"], item, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Paths of object schemas that take keys they do not list.
fn open_objects(root: &Value, node: &Value, path: &str, out: &mut Vec<String>) {
    let node = resolve(root, node);
    for alternative in node["oneOf"].as_array().into_iter().flatten() {
        open_objects(root, alternative, path, out);
    }
    let object = match &node["type"] {
        Value::String(t) => t == "object",
        Value::Array(types) => types.iter().any(|t| t == "object"),
        _ => false,
    };
    if object {
        match &node["additionalProperties"] {
            Value::Bool(false) => {}
            entries @ Value::Object(_) => open_objects(root, entries, &format!("{path}/*"), out),
            _ => out.push(path.to_owned()),
        }
    }
    if let Some(properties) = node["properties"].as_object() {
        for (key, field) in properties {
            open_objects(root, field, &format!("{path}/{key}"), out);
        }
    }
    if let Some(items) = node.get("items") {
        open_objects(root, items, &format!("{path}[]"), out);
    }
}

#[test]
fn the_schema_types_every_value_of_values_and_values_ha() {
    let schema = schema();
    for file in ["values.yaml", "values-ha.yaml"] {
        let mut missing = Vec::new();
        untyped(&schema, &schema, &values(file), "", &mut missing);
        assert!(missing.is_empty(), "{file}: no type for {missing:?}");
    }
}

#[test]
fn only_kubernetes_and_istio_shapes_take_keys_the_schema_does_not_list() {
    let schema = schema();
    let mut open = Vec::new();
    open_objects(&schema, &schema, "", &mut open);
    // Istio's MeshConfig is open (its fields Sextant does not read pass as given), and so are
    // the Kubernetes types the chart passes on whole.
    let expected = [
        "/meshConfig",
        "/meshConfig/outboundTrafficPolicy",
        "/meshConfig/outboundTrafficPolicy/egressProxy",
        "/meshConfig/defaultConfig",
        "/meshConfig/serviceSettings[]/settings",
        "/networkPolicy/extraEgress[]",
        "/tolerations[]",
        "/affinity",
    ];
    open.sort();
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(open, expected);
}

/// Values of the wrong type, and the schema's message helm gives for each.
const WRONG: &[(&str, &str)] = &[
    (
        "replicaCount=two",
        "at '/replicaCount': got string, want integer",
    ),
    ("ports.xds=abc", "at '/ports/xds': got string, want integer"),
    ("ports.admin=70000", "at '/ports/admin': maximum"),
    ("replicaCount=0", "at '/replicaCount': minimum"),
    (
        "image.pullPolicy=Sometimes",
        "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
    ),
    (
        "webhook.failurePolicy=Maybe",
        "at '/webhook/failurePolicy': value must be one of 'Fail', 'Ignore'",
    ),
    (
        "meshConfig.accessLogEncoding=XML",
        "at '/meshConfig/accessLogEncoding': value must be one of 'TEXT', 'JSON'",
    ),
    (
        "autoscaling.enabled=yes",
        "at '/autoscaling/enabled': got string, want boolean",
    ),
    (
        "replicaCont=3",
        "additional properties 'replicaCont' not allowed",
    ),
    (
        "networkPolicy.xds.from[0].podSelectr.app=x",
        "at '/networkPolicy/xds/from/0': additional properties 'podSelectr' not allowed",
    ),
    (
        "resources.requests.memory=lots",
        "at '/resources/requests/memory'",
    ),
];

#[test]
fn values_of_the_wrong_type_are_refused_by_lint_and_template() {
    let Some(helm) = sextant_testing::helm() else {
        return;
    };
    let scratch = Scratch::new("helm-schema");
    let (kubeconfig, home) = (scratch.kubeconfig(), scratch.0.clone());
    let chart = chart();
    for (set, message) in WRONG {
        let lint = fails(
            &helm,
            &kubeconfig,
            &home,
            &["lint", "--strict", &chart, "--set", set],
        );
        assert!(
            lint.contains(message),
            "lint --set {set}: {message} in\n{lint}"
        );
        let template = fails(
            &helm,
            &kubeconfig,
            &home,
            &["template", "sextant", &chart, "--set", set],
        );
        assert!(
            template.contains("values don't meet the specifications of the schema"),
            "{template}"
        );
        assert!(
            template.contains(message),
            "template --set {set}: {template}"
        );
    }
    // Istio's mesh config fields the chart does not type pass as given.
    let text = run(
        &helm,
        &kubeconfig,
        &home,
        &[
            "template",
            "sextant",
            &chart,
            "--set",
            "meshConfig.enablePrometheusMerge=true",
        ],
    );
    assert!(text.contains("enablePrometheusMerge: true"), "{text}");
}
