//! Pods from Istio's samples as the API server hands them to the webhook, and the injector's
//! JSON Patch applied to them.

use std::path::Path;

use serde_json::{Value, json};
use sextant::inject::{InjectConfig, Outcome, inject};

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/inject")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Pod a Deployment's ReplicaSet creates, as the API server hands it to the webhook.
pub fn replica_set_pod(deployment: &Value) -> Value {
    let name = deployment["metadata"]["name"].as_str().expect("a name");
    let hash = "5d8f9c7b6";
    let template = &deployment["spec"]["template"];
    let mut metadata = template["metadata"].clone();
    metadata["labels"]["pod-template-hash"] = json!(hash);
    metadata["generateName"] = json!(format!("{name}-{hash}-"));
    metadata["namespace"] = json!("default");
    metadata["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": format!("{name}-{hash}"), "uid": "2b0c1f4e-0000-4000-8000-000000000001",
        "controller": true, "blockOwnerDeletion": true}]);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
}

/// Every Deployment of Istio's sleep and bookinfo samples, by name, as Pods.
pub fn sample_pods() -> Vec<(String, Value)> {
    let mut pods = Vec::new();
    for file in ["sleep.yaml", "bookinfo.yaml"] {
        let docs = sextant_index::manifest::parse_documents(&fixture(file)).expect("YAML");
        for doc in docs.iter().filter(|d| d.value["kind"] == "Deployment") {
            let name = doc.value["metadata"]["name"].as_str().expect("a name");
            pods.push((name.to_owned(), replica_set_pod(&doc.value)));
        }
    }
    pods
}

pub fn productpage() -> Value {
    sample_pods()
        .into_iter()
        .find(|(name, _)| name == "productpage-v1")
        .expect("bookinfo's productpage")
        .1
}

/// A JSON Pointer's tokens (RFC 6901).
fn tokens(path: &str) -> Vec<String> {
    path.split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Applies `add` operations (RFC 6902), the only kind the injector writes.
pub fn apply(pod: &Value, patch: &[Value]) -> Value {
    let mut pod = pod.clone();
    for op in patch {
        assert_eq!(op["op"], "add", "{op}");
        let mut path = tokens(op["path"].as_str().expect("a path"));
        let last = path.pop().expect("not the root");
        let mut target = &mut pod;
        for token in &path {
            target = match target {
                Value::Object(m) => m.get_mut(token).expect("the parent exists"),
                Value::Array(a) => a
                    .get_mut(token.parse::<usize>().expect("an index"))
                    .expect("in range"),
                _ => panic!("{op}: parent is not a container"),
            };
        }
        let value = op["value"].clone();
        match target {
            Value::Object(m) => {
                m.insert(last, value);
            }
            Value::Array(a) if last == "-" => a.push(value),
            Value::Array(a) => a.insert(last.parse().expect("an index"), value),
            _ => panic!("{op}: parent is not a container"),
        }
    }
    pod
}

pub struct Injected {
    /// The Pod with the patch applied.
    pub pod: Value,
    /// The patch.
    pub patch: Vec<Value>,
    /// The warnings.
    pub warnings: Vec<String>,
}

pub fn injected(pod: &Value, config: &InjectConfig) -> Injected {
    match inject(pod, "default", config) {
        Ok(Outcome::Injected(i)) => Injected {
            pod: apply(pod, &i.patch),
            patch: i.patch,
            warnings: i.warnings,
        },
        other => panic!("expected an injection, got {other:?}"),
    }
}

pub fn container<'a>(pod: &'a Value, field: &str, name: &str) -> &'a Value {
    pod["spec"][field]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {field} {name}"))
}

/// The injected `istio-proxy` container: a container, or a native sidecar among the init
/// containers.
pub fn proxy_of(pod: &Value) -> &Value {
    ["containers", "initContainers"]
        .iter()
        .flat_map(|field| pod["spec"][*field].as_array().into_iter().flatten())
        .find(|c| c["name"] == "istio-proxy")
        .unwrap_or_else(|| panic!("no istio-proxy in {pod}"))
}

/// The bootstrap of an injected `istio-proxy` container, read back from its arguments.
pub fn bootstrap_of(proxy: &Value) -> Value {
    let args = proxy["args"].as_array().expect("args");
    assert_eq!(args[0], "--config-yaml");
    let text = args[1].as_str().expect("the bootstrap");
    let docs = sextant_index::manifest::parse_documents(text).expect("YAML");
    docs[0].value.clone()
}
