//! The patch types clients send: JSON merge patch (RFC 7386), strategic merge patch for the
//! built-in kinds (lists merged by their patch merge key, `$patch`, `$retainKeys`,
//! `$setElementOrder` and `$deleteFromPrimitiveList` directives), and server-side apply as far
//! as this server implements it (a merge of the applied configuration; `api.rs` tracks which
//! manager owns which field and refuses conflicting applies; fields dropped from a
//! configuration are not removed).

use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` removes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The patch merge key of a list of objects in a built-in kind (`path`: field names from the
/// object's root), as the Kubernetes API types declare them; `None`: the list is replaced.
fn merge_key(kind: &str, path: &[String]) -> Option<&'static str> {
    let field = path.last()?.as_str();
    let in_container = path
        .iter()
        .any(|p| p == "containers" || p == "initContainers" || p == "ephemeralContainers");
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "secrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "ownerReferences" => Some("uid"),
        "ports" if in_container => Some("containerPort"),
        "ports" if kind == "Service" && path.len() == 2 => Some("port"),
        "webhooks" if kind.ends_with("WebhookConfiguration") && path.len() == 1 => Some("name"),
        "conditions" if path.first().is_some_and(|p| p == "status") => Some("type"),
        _ => None,
    }
}

/// A strategic merge patch of a built-in object of `kind`.
pub fn strategic(kind: &str, target: &mut Value, patch: &Value) -> Result<(), String> {
    strategic_at(kind, &mut Vec::new(), target, patch)
}

fn strategic_at(
    kind: &str,
    path: &mut Vec<String>,
    target: &mut Value,
    patch: &Value,
) -> Result<(), String> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = p.clone();
            replaced.remove("$patch");
            *target = Value::Object(replaced);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some(other) => return Err(format!("unknown $patch directive {other:?}")),
        None => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()) || p.contains_key(k));
    }
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(gone)) =
                (t.get_mut(field).and_then(Value::as_array_mut), v.as_array())
            {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        path.push(k.clone());
        let slot = t.entry(k.clone()).or_insert(Value::Null);
        match (v, merge_key(kind, path)) {
            (Value::Array(items), Some(key)) => merge_list(kind, path, slot, items, key)?,
            (Value::Array(items), None) if k == "finalizers" => {
                // A list of strings merged as a set.
                let list = slot.as_array().cloned().unwrap_or_default();
                let mut out = list;
                for i in items {
                    if !out.contains(i) {
                        out.push(i.clone());
                    }
                }
                *slot = Value::Array(out);
            }
            (Value::Object(_), _) => {
                strategic_at(kind, path, slot, v)?;
                if slot.is_null() {
                    t.remove(k);
                }
            }
            _ => *slot = v.clone(),
        }
        path.pop();
    }
    Ok(())
}

fn merge_list(
    kind: &str,
    path: &mut Vec<String>,
    slot: &mut Value,
    items: &[Value],
    key: &str,
) -> Result<(), String> {
    let mut list = slot.as_array().cloned().unwrap_or_default();
    for item in items {
        let Some(id) = item.get(key) else {
            return Err(format!(
                "{}: every element must have the merge key {key:?}",
                path.join(".")
            ));
        };
        let at = list.iter().position(|x| x.get(key) == Some(id));
        match (item.get("$patch").and_then(Value::as_str), at) {
            (Some("delete"), Some(i)) => {
                list.remove(i);
            }
            (Some("delete"), None) => {}
            (Some("replace"), at) => {
                let mut replaced = item.clone();
                if let Some(o) = replaced.as_object_mut() {
                    o.remove("$patch");
                }
                match at {
                    Some(i) => list[i] = replaced,
                    None => list.push(replaced),
                }
            }
            (_, Some(i)) => strategic_at(kind, path, &mut list[i], item)?,
            (_, None) => {
                let mut fresh = Value::Null;
                strategic_at(kind, path, &mut fresh, item)?;
                list.push(fresh);
            }
        }
    }
    *slot = Value::Array(list);
    Ok(())
}

/// Server-side apply of `applied` onto `target`: maps merge, lists with a merge key merge by
/// key, other lists and scalars are replaced. `kind` is `None` for custom resources (their
/// lists are replaced).
pub fn apply(kind: Option<&str>, target: &mut Value, applied: &Value) {
    apply_at(kind, &mut Vec::new(), target, applied);
}

fn apply_at(kind: Option<&str>, path: &mut Vec<String>, target: &mut Value, applied: &Value) {
    match applied {
        Value::Object(a) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in a {
                path.push(k.clone());
                apply_at(kind, path, t.entry(k.clone()).or_insert(Value::Null), v);
                path.pop();
            }
        }
        Value::Array(items) => {
            let key = kind.and_then(|k| merge_key(k, path));
            match (key, target.as_array_mut()) {
                (Some(key), Some(list)) => {
                    for item in items {
                        match list
                            .iter()
                            .position(|x| x.get(key).is_some() && x.get(key) == item.get(key))
                        {
                            Some(i) => apply_at(kind, path, &mut list[i], item),
                            None => list.push(item.clone()),
                        }
                    }
                }
                _ => *target = applied.clone(),
            }
        }
        _ => *target = applied.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"list": [1, 2]});
        merge(&mut t, &json!({"list": [3]}));
        assert_eq!(t, json!({"list": [3]}));
    }

    #[test]
    fn strategic_patch_merges_service_ports_by_port() {
        let mut svc = json!({"spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "grpc", "port": 90}]}});
        let patch = json!({"spec": {
            "$setElementOrder/ports": [{"port": 80}, {"port": 90}],
            "ports": [{"port": 80, "targetPort": 9000}, {"port": 90, "$patch": "delete"}]}});
        strategic("Service", &mut svc, &patch).expect("applies");
        assert_eq!(
            svc,
            json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 9000}]}})
        );
    }

    #[test]
    fn strategic_patch_merges_containers_and_replaces_atomic_lists() {
        let mut dep = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x", "env": [{"name": "K", "value": "1"}]}]}}},
            "metadata": {"finalizers": ["f1"]}});
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "env": [{"name": "L", "value": "2"}]},
            {"name": "b", "image": "y"}]}}},
            "metadata": {"finalizers": ["f2"], "$deleteFromPrimitiveList/finalizers": ["f1"]}});
        strategic("Deployment", &mut dep, &patch).expect("applies");
        assert_eq!(
            dep["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "a", "image": "x", "env": [{"name": "K", "value": "1"}, {"name": "L", "value": "2"}]},
                {"name": "b", "image": "y"}
            ])
        );
        assert_eq!(dep["metadata"]["finalizers"], json!(["f2"]));
        let mut slice = json!({"endpoints": [{"addresses": ["10.0.0.1"]}]});
        strategic(
            "EndpointSlice",
            &mut slice,
            &json!({"endpoints": [{"addresses": ["10.0.0.2"]}]}),
        )
        .expect("applies");
        assert_eq!(slice, json!({"endpoints": [{"addresses": ["10.0.0.2"]}]}));
    }

    #[test]
    fn apply_merges_maps_and_keyed_lists() {
        let mut t =
            json!({"status": {"conditions": [{"type": "A", "status": "True"}]}, "spec": {"x": 1}});
        apply(
            Some("Pod"),
            &mut t,
            &json!({"status": {"conditions": [{"type": "B", "status": "False"}]}}),
        );
        assert_eq!(
            t["status"]["conditions"],
            json!([{"type": "A", "status": "True"}, {"type": "B", "status": "False"}])
        );
        assert_eq!(t["spec"], json!({"x": 1}));
    }
}
