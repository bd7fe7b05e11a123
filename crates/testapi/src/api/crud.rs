//! Reads and writes of whole objects: get and list (with selectors, pages and `Table`
//! printing), create, update (of an object or its status), delete and delete collection. A
//! write is admitted by the webhooks (`review`), validated (`validation`), defaulted and stored.

use std::collections::BTreeMap;

use axum::{
    http::{HeaderMap, StatusCode, header},
    response::Response,
};
use serde_json::{Value, json};

use super::{
    ApiError, Inner, Server, Stored, Subresource, Target,
    apply::record_update,
    at_version,
    defaults::{default_namespace, default_service, establish, merge_string_data},
    errors::qualified,
    is_dry_run, json_response, key_of,
    review::{admit, unchanged_since},
    routes::parse_body,
    selectors,
    validation::validate,
};
use crate::{
    kinds::ResourceType,
    store::{EventType, Key, now_rfc3339},
};

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

pub(super) async fn get(
    server: &Server,
    target: &Target,
    name: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let inner = server.inner.lock().await;
    let key = key_of(&target.t, target.namespace.as_deref(), name);
    let object = inner
        .store
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&target.t, name))?;
    let object = at_version(&target.t, object);
    if wants_table(headers) {
        let rv = inner.store.resource_version();
        return Ok(json_response(
            StatusCode::OK,
            crate::table::table(&target.t, &[object], rv),
        ));
    }
    Ok(json_response(StatusCode::OK, object))
}

pub(super) async fn list(
    server: &Server,
    target: &Target,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(q)?;
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    // `continue`: the namespace/name of the last object of the previous page. Pages are read
    // from the current state (this server keeps no snapshots for consistent paging).
    // The token is `namespace/name` of the last object returned; compared as a pair, in the
    // store's order (as strings, `istio/x` would sort after `istio-system/y`).
    let after: Option<(String, String)> = q.get("continue").filter(|c| !c.is_empty()).map(|c| {
        let (ns, name) = c.split_once('/').unwrap_or(("", c));
        (ns.to_owned(), name.to_owned())
    });
    let inner = server.inner.lock().await;
    let mut matching = inner
        .store
        .list(
            &target.t.group,
            &target.t.plural,
            target.namespace.as_deref(),
        )
        .filter(|(k, _)| {
            after
                .as_ref()
                .is_none_or(|(ns, name)| (&k.namespace, &k.name) > (ns, name))
        })
        .filter(|(_, o)| labels.matches_labels(o) && fields.matches_fields(o));
    let mut items = Vec::new();
    let mut last = None;
    // Items after this page (the one the loop stopped at included).
    let mut remaining = 0;
    for (k, o) in matching.by_ref() {
        if limit.is_some_and(|l| items.len() == l) {
            remaining = 1;
            break;
        }
        items.push(at_version(&target.t, o.clone()));
        last = Some(format!("{}/{}", k.namespace, k.name));
    }
    remaining += matching.count();
    let rv = inner.store.resource_version();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let (true, Some(last)) = (remaining > 0, last) {
        meta["continue"] = json!(last);
        meta["remainingItemCount"] = json!(remaining);
    }
    if wants_table(headers) {
        let mut table = crate::table::table(&target.t, &items, rv);
        table["metadata"] = meta;
        return Ok(json_response(StatusCode::OK, table));
    }
    Ok(json_response(
        StatusCode::OK,
        json!({
            "kind": format!("{}List", target.t.kind),
            "apiVersion": target.t.api_version(),
            "metadata": meta,
            "items": items,
        }),
    ))
}

/// Everything but metadata and status: what `metadata.generation` counts changes of.
fn spec_of(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(m) = o.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    o
}

pub(super) async fn create(
    server: &Server,
    target: &Target,
    q: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let object = parse_body(body)?;
    let inner = server.inner.lock().await;
    let admitted = admit(server, inner, target, q, "CREATE", object, None).await?;
    let mut inner = admitted.inner;
    let created = create_locked(&mut inner, target, q, admitted.object)?;
    Ok(created
        .after(admitted.warnings)
        .respond(StatusCode::CREATED))
}

pub(super) fn create_locked(
    inner: &mut Inner,
    target: &Target,
    q: &BTreeMap<String, String>,
    mut object: Value,
) -> Result<Stored, ApiError> {
    let t = &target.t;
    if !object.is_object() {
        return Err(ApiError::bad_request("the request body must be an object"));
    }
    let mut name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if name.is_empty() {
        match object["metadata"]["generateName"].as_str() {
            Some(prefix) => {
                let uid = inner.store.uid();
                name = format!("{prefix}{}", &uid[..5]);
                object["metadata"]["name"] = json!(name);
            }
            None => {
                return Err(ApiError::invalid(
                    t,
                    "",
                    vec![(
                        "metadata.name".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                ));
            }
        }
    }
    let namespace = if t.namespaced {
        let from_body = object["metadata"]["namespace"]
            .as_str()
            .filter(|ns| !ns.is_empty())
            .map(str::to_owned);
        let ns = match (&target.namespace, from_body) {
            (Some(p), Some(b)) if *p != b => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (Some(p), _) => p.clone(),
            (None, Some(b)) => b,
            (None, None) => "default".to_owned(),
        };
        let ns_key = Key {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: ns.clone(),
        };
        if inner.store.get(&ns_key).is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("namespaces \"{ns}\" not found"),
            )
            .with_details(json!({"name": ns, "kind": "namespaces"})));
        }
        object["metadata"]["namespace"] = json!(ns);
        Some(ns)
    } else {
        if let Some(m) = object["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        None
    };
    let warnings = validate(t, &mut object, &name, q)?;
    let key = key_of(t, namespace.as_deref(), &name);
    if inner.store.get(&key).is_some() {
        let message = format!("{} \"{name}\" already exists", qualified(t));
        return Err(ApiError::about(
            t,
            &name,
            StatusCode::CONFLICT,
            "AlreadyExists",
            message,
        ));
    }
    // Nodes may be created with their status (the kubelet registers itself that way).
    let keeps_status = t.group.is_empty() && t.kind == "Node";
    if t.status
        && !keeps_status
        && let Some(m) = object.as_object_mut()
    {
        m.remove("status");
    }
    if t.kind == "Service" && t.group.is_empty() {
        default_service(&inner.store, &mut object);
    }
    if t.kind == "Namespace" && t.group.is_empty() {
        default_namespace(&mut object);
    }
    if t.kind == "Secret" && t.group.is_empty() {
        merge_string_data(&mut object);
    }
    let uid = inner.store.uid();
    let meta = &mut object["metadata"];
    meta["uid"] = json!(uid);
    meta["creationTimestamp"] = json!(now_rfc3339());
    meta["generation"] = json!(1);
    if let Some(m) = meta.as_object_mut() {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    if t.kind == "CustomResourceDefinition" {
        establish(&mut object);
    }
    if is_dry_run(q) {
        return Ok(Stored(at_version(t, object), warnings));
    }
    let stored = inner.store.put(key, object, EventType::Added);
    if t.kind == "CustomResourceDefinition" {
        inner.refresh_kinds();
    }
    Ok(Stored(at_version(t, stored), warnings))
}

/// Replaces an object (or its status) after checks; shared by update and patch.
pub(super) fn replace_locked(
    inner: &mut Inner,
    target: &Target,
    name: &str,
    q: &BTreeMap<String, String>,
    old: &Value,
    mut new: Value,
) -> Result<Stored, ApiError> {
    let t = &target.t;
    if !new.is_object() {
        return Err(ApiError::bad_request("the request body must be an object"));
    }
    if new["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let sent_rv = new["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    let old_rv = old["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    if !sent_rv.is_empty() && sent_rv != old_rv {
        return Err(ApiError::conflict(t, name));
    }
    if target.subresource == Subresource::Status {
        // Only the status changes.
        let status = new.get("status").cloned();
        new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    } else if t.status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    // Fields the server owns.
    for k in ["uid", "creationTimestamp", "namespace", "name"] {
        match old["metadata"].get(k) {
            Some(v) => new["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    if let Some(m) = new["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    if t.kind == "Service" && t.group.is_empty() && new["spec"]["clusterIP"].is_null() {
        // Allocated on create, kept when a client leaves it out.
        for k in ["clusterIP", "clusterIPs"] {
            new["spec"][k] = old["spec"][k].clone();
        }
        default_service(&inner.store, &mut new);
    }
    if t.kind == "Secret" && t.group.is_empty() {
        merge_string_data(&mut new);
    }
    let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
    new["metadata"]["generation"] = json!(if spec_of(&new) != spec_of(old) {
        generation + 1
    } else {
        generation
    });
    if new["apiVersion"].is_null() {
        new["apiVersion"] = json!(t.api_version());
    }
    if new["kind"].is_null() {
        new["kind"] = json!(t.kind);
    }
    let warnings = validate(t, &mut new, name, q)?;
    if t.kind == "CustomResourceDefinition" && target.subresource != Subresource::Status {
        establish(&mut new);
    }
    if is_dry_run(q) {
        return Ok(Stored(at_version(t, new), warnings));
    }
    let key = key_of(t, target.namespace.as_deref(), name);
    record_update(inner, &key, q, old, &new);
    let stored = inner.store.put(key, new, EventType::Modified);
    if t.kind == "CustomResourceDefinition" {
        inner.refresh_kinds();
    }
    Ok(Stored(at_version(t, stored), warnings))
}

pub(super) async fn update(
    server: &Server,
    target: &Target,
    name: &str,
    q: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let new = parse_body(body)?;
    let inner = server.inner.lock().await;
    let key = key_of(&target.t, target.namespace.as_deref(), name);
    let Some(old) = inner.store.get(&key).cloned() else {
        return Err(ApiError::not_found(&target.t, name));
    };
    let admitted = admit(server, inner, target, q, "UPDATE", new, Some(&old)).await?;
    let mut inner = admitted.inner;
    unchanged_since(&inner, &target.t, &key, &old)?;
    let out = replace_locked(&mut inner, target, name, q, &old, admitted.object)?;
    Ok(out.after(admitted.warnings).respond(StatusCode::OK))
}

pub(super) async fn delete(
    server: &Server,
    target: &Target,
    name: &str,
) -> Result<Response, ApiError> {
    let mut inner = server.inner.lock().await;
    let key = key_of(&target.t, target.namespace.as_deref(), name);
    let Some(old) = inner.store.get(&key).cloned() else {
        return Err(ApiError::not_found(&target.t, name));
    };
    let gone = delete_locked(&mut inner, &target.t, key, old);
    Ok(json_response(StatusCode::OK, gone))
}

/// Deletes one object and what goes with it: a namespace's objects, a CRD's objects.
fn delete_locked(inner: &mut Inner, t: &ResourceType, key: Key, old: Value) -> Value {
    let dependents: Vec<(Key, Value)> = match t.kind.as_str() {
        "Namespace" => inner
            .store
            .list_all()
            .filter(|(k, _)| k.namespace == key.name)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        "CustomResourceDefinition" => {
            let group = old["spec"]["group"].as_str().unwrap_or_default().to_owned();
            let plural = old["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            inner
                .store
                .list(&group, &plural, None)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }
        _ => Vec::new(),
    };
    for (k, v) in dependents {
        inner.store.put(k, v, EventType::Deleted);
    }
    inner.owners.remove(&key);
    let gone = inner.store.put(key, old, EventType::Deleted);
    if t.kind == "CustomResourceDefinition" {
        inner.refresh_kinds();
    }
    at_version(t, gone)
}

pub(super) async fn delete_collection(
    server: &Server,
    target: &Target,
    q: &BTreeMap<String, String>,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(q)?;
    let mut inner = server.inner.lock().await;
    let doomed: Vec<(Key, Value)> = inner
        .store
        .list(
            &target.t.group,
            &target.t.plural,
            target.namespace.as_deref(),
        )
        .filter(|(_, o)| labels.matches_labels(o) && fields.matches_fields(o))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut items = Vec::new();
    for (k, v) in doomed {
        items.push(delete_locked(&mut inner, &target.t, k, v));
    }
    Ok(json_response(
        StatusCode::OK,
        json!({"kind": format!("{}List", target.t.kind), "apiVersion": target.t.api_version(),
               "metadata": {}, "items": items}),
    ))
}
