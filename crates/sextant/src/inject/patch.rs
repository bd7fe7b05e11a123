//! JSON Patch (RFC 6902) operations against the Pod as the API server sent it: `add` only,
//! to members and to the ends (or start) of arrays, creating a map or array that is absent
//! as a whole.

use serde_json::{Map, Value, json};

/// A JSON Pointer reference token (RFC 6901): `~` is `~0` and `/` is `~1`, so that a label
/// key such as `security.istio.io/tlsMode` names one member.
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The operations built so far, against `pod`.
pub struct Patch<'a> {
    pod: &'a Value,
    ops: Vec<Value>,
}

impl<'a> Patch<'a> {
    /// An empty patch of `pod`.
    pub fn new(pod: &'a Value) -> Self {
        Patch {
            pod,
            ops: Vec::new(),
        }
    }

    /// The operations.
    pub fn into_ops(self) -> Vec<Value> {
        self.ops
    }

    fn add(&mut self, path: String, value: Value) {
        self.ops
            .push(json!({"op": "add", "path": path, "value": value}));
    }

    /// Sets string entries of the Pod's `labels` and `annotations`, adding either map (or the
    /// whole `metadata`) when absent.
    pub fn set_metadata(
        &mut self,
        labels: Vec<(String, String)>,
        annotations: Vec<(String, String)>,
    ) {
        let as_map = |entries: &[(String, String)]| -> Value {
            entries
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect::<Map<String, Value>>()
                .into()
        };
        if !self.pod["metadata"].is_object() {
            let mut metadata = Map::new();
            for (field, entries) in [("labels", &labels), ("annotations", &annotations)] {
                if !entries.is_empty() {
                    metadata.insert(field.to_owned(), as_map(entries));
                }
            }
            if !metadata.is_empty() {
                self.add("/metadata".to_owned(), Value::Object(metadata));
            }
            return;
        }
        for (field, entries) in [("labels", labels), ("annotations", annotations)] {
            if entries.is_empty() {
                continue;
            }
            if self.pod["metadata"][field].is_object() {
                for (key, value) in entries {
                    self.add(format!("/metadata/{field}/{}", escape(&key)), json!(value));
                }
            } else {
                self.add(format!("/metadata/{field}"), as_map(&entries));
            }
        }
    }

    /// Appends `items` to the array at `/spec/field`, adding it when absent.
    pub fn append(&mut self, field: &str, items: Vec<Value>) {
        if self.pod["spec"][field].is_array() {
            for item in items {
                self.add(format!("/spec/{field}/-"), item);
            }
        } else if !items.is_empty() {
            self.add(format!("/spec/{field}"), Value::Array(items));
        }
    }

    /// Puts `items` first, in order, in the array at `/spec/field`, adding it when absent.
    pub fn prepend(&mut self, field: &str, items: Vec<Value>) {
        if self.pod["spec"][field].is_array() {
            for (i, item) in items.into_iter().enumerate() {
                self.add(format!("/spec/{field}/{i}"), item);
            }
        } else if !items.is_empty() {
            self.add(format!("/spec/{field}"), Value::Array(items));
        }
    }

    /// Sets `/spec/field`, which the Pod does not have, to `value`.
    pub fn set_spec(&mut self, field: &str, value: Value) {
        self.add(format!("/spec/{field}"), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_slashes_and_tildes_are_escaped() {
        assert_eq!(
            escape("security.istio.io/tlsMode"),
            "security.istio.io~1tlsMode"
        );
        assert_eq!(escape("a~/b"), "a~0~1b");
    }

    #[test]
    fn absent_maps_and_arrays_are_added_whole() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        let mut patch = Patch::new(&pod);
        patch.set_metadata(vec![("a/b".into(), "c".into())], vec![]);
        patch.append("volumes", vec![json!({"name": "v"})]);
        patch.append("containers", vec![json!({"name": "c"})]);
        patch.prepend("initContainers", vec![json!({"name": "i"})]);
        assert_eq!(
            patch.into_ops(),
            vec![
                json!({"op": "add", "path": "/metadata/labels", "value": {"a/b": "c"}}),
                json!({"op": "add", "path": "/spec/volumes", "value": [{"name": "v"}]}),
                json!({"op": "add", "path": "/spec/containers/-", "value": {"name": "c"}}),
                json!({"op": "add", "path": "/spec/initContainers", "value": [{"name": "i"}]}),
            ]
        );
    }

    #[test]
    fn prepended_items_keep_their_order() {
        let pod = json!({"spec": {"initContainers": [{"name": "mine"}]}});
        let mut patch = Patch::new(&pod);
        patch.prepend(
            "initContainers",
            vec![json!({"name": "a"}), json!({"name": "b"})],
        );
        assert_eq!(
            patch.into_ops(),
            vec![
                json!({"op": "add", "path": "/spec/initContainers/0", "value": {"name": "a"}}),
                json!({"op": "add", "path": "/spec/initContainers/1", "value": {"name": "b"}}),
            ]
        );
    }

    #[test]
    fn present_maps_get_one_operation_per_entry() {
        let pod = json!({"metadata": {"labels": {"app": "a"}}});
        let mut patch = Patch::new(&pod);
        patch.set_metadata(
            vec![("x/y".into(), "1".into())],
            vec![("k".into(), "v".into())],
        );
        let no_metadata = json!({});
        let mut bare = Patch::new(&no_metadata);
        bare.set_metadata(vec![], vec![("k".into(), "v".into())]);
        assert_eq!(
            patch.into_ops(),
            vec![
                json!({"op": "add", "path": "/metadata/labels/x~1y", "value": "1"}),
                json!({"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}}),
            ]
        );
        assert_eq!(
            bare.into_ops(),
            vec![json!({"op": "add", "path": "/metadata", "value": {"annotations": {"k": "v"}}})]
        );
    }
}
