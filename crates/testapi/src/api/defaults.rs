//! What the server fills in on a write, as the API server's defaulting does: a new Namespace's
//! finalizer and phase, a Service's type, ports and cluster IP, a Secret's `stringData` moved into `data`, and a new CRD's status
//! (accepted and established).

use serde_json::{Value, json};

use crate::{
    kinds,
    store::{Store, now_rfc3339},
};

/// A new Namespace: the `kubernetes` finalizer and phase `Active`, as the API server and its
/// namespace controller leave it.
pub(super) fn default_namespace(object: &mut Value) {
    if object["spec"]["finalizers"].is_null() {
        object["spec"]["finalizers"] = json!(["kubernetes"]);
    }
    object["status"] = json!({"phase": "Active"});
}

/// The defaults the API server gives a Service: type ClusterIP, an allocated cluster IP from
/// 10.96.0.0/16, TCP ports whose target port is the port.
pub(super) fn default_service(store: &Store, object: &mut Value) {
    let spec = &mut object["spec"];
    if spec["type"].is_null() {
        spec["type"] = json!("ClusterIP");
    }
    if spec["sessionAffinity"].is_null() {
        spec["sessionAffinity"] = json!("None");
    }
    if let Some(ports) = spec["ports"].as_array_mut() {
        for p in ports {
            if p["protocol"].is_null() {
                p["protocol"] = json!("TCP");
            }
            if p["targetPort"].is_null() {
                p["targetPort"] = p["port"].clone();
            }
        }
    }
    if spec["type"] != "ExternalName" && spec["clusterIP"].is_null() {
        let used: std::collections::HashSet<String> = store
            .list("", "services", None)
            .filter_map(|(_, s)| s["spec"]["clusterIP"].as_str().map(str::to_owned))
            .collect();
        if let Some(ip) = (2..65_534u32)
            .map(|i| format!("10.96.{}.{}", i / 256, i % 256))
            .find(|ip| !used.contains(ip))
        {
            spec["clusterIP"] = json!(ip);
        }
    }
    if spec["clusterIPs"].is_null() && spec["clusterIP"].is_string() {
        spec["clusterIPs"] = json!([spec["clusterIP"].clone()]);
    }
}

/// A Secret's `stringData` merged into `data` (base64, winning over a key of `data`) and
/// dropped, as the API server stores Secrets: readers only ever see `data`. A Secret without a
/// type is `Opaque`.
pub(super) fn merge_string_data(object: &mut Value) {
    use base64::Engine;
    if object["type"].is_null() {
        object["type"] = json!("Opaque");
    }
    let Some(string_data) = object.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    let Value::Object(string_data) = string_data else {
        return;
    };
    if !object["data"].is_object() {
        object["data"] = json!({});
    }
    for (key, value) in string_data {
        let text = value.as_str().unwrap_or_default();
        object["data"][key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// Marks a new CRD as accepted and established, as kubectl and helm wait for.
pub(super) fn establish(object: &mut Value) {
    let now = now_rfc3339();
    object["status"] = json!({
        "acceptedNames": object["spec"]["names"].clone(),
        "storedVersions": kinds::storage_version(object).into_iter().collect::<Vec<_>>(),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    });
}
