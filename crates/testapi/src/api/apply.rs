//! PATCH requests (JSON patch, JSON merge, strategic merge for built-in kinds, server-side
//! apply) and the field ownership server-side apply keeps: which manager owns which leaf
//! field, so that an apply changing another manager's field is refused unless forced.

use std::collections::BTreeMap;

use axum::{http::StatusCode, response::Response};
use serde_json::{Value, json};

use super::{
    ApiError, Inner, Server, Subresource, Target, at_version,
    crud::{create_locked, replace_locked},
    is_dry_run, is_true, key_of,
    review::{admit, unchanged_since},
    routes::parse_body,
};
use crate::{json_patch, kinds::ResourceType, patch, store::Key};

/// A PATCH of an object or its status. An apply to an object that does not exist creates it.
pub(super) async fn patch_object(
    server: &Server,
    target: &Target,
    name: &str,
    q: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let p = parse_body(body)?;
    let inner = server.inner.lock().await;
    let key = key_of(&target.t, target.namespace.as_deref(), name);
    let old = inner.store.get(&key).cloned();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let builtin = target.t.custom.is_none();
    let Some(old) = old else {
        if media == "application/apply-patch+yaml" && target.subresource != Subresource::Status {
            let mut object = p.clone();
            object["metadata"]["name"] = json!(name);
            let admitted = admit(server, inner, target, q, "CREATE", object, None).await?;
            let mut inner = admitted.inner;
            let created = create_locked(&mut inner, target, q, admitted.object)?;
            let manager = q.get("fieldManager").cloned().unwrap_or_default();
            claim_applied(&mut inner, key, q, manager, &p);
            return Ok(created
                .after(admitted.warnings)
                .respond(StatusCode::CREATED));
        }
        return Err(ApiError::not_found(&target.t, name));
    };
    let mut new = at_version(&target.t, old.clone());
    // For an apply: its manager, who owns the fields it applied once the patch is stored.
    let mut applier = None;
    match media {
        "application/merge-patch+json" => patch::merge(&mut new, &p),
        "application/json-patch+json" => json_patch::apply(&mut new, &p)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e))?,
        "application/strategic-merge-patch+json" if builtin => {
            patch::strategic(&target.t.kind, &mut new, &p).map_err(ApiError::bad_request)?;
        }
        "application/apply-patch+yaml" => {
            let manager = q.get("fieldManager").cloned().ok_or_else(|| {
                ApiError::bad_request("PATCH with apply requires the fieldManager parameter")
            })?;
            if !is_true(q, "force") {
                check_conflicts(&inner, &key, &manager, &new, &p, &target.t, name)?;
            }
            let kind = builtin.then_some(target.t.kind.as_str());
            patch::apply(kind, &mut new, &p);
            applier = Some(manager);
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{} (got {other:?})",
                    if builtin {
                        ", application/strategic-merge-patch+json"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    // A patch carries no resource version unless it asks for the precondition.
    if p["metadata"]["resourceVersion"].is_null() {
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    }
    let admitted = admit(server, inner, target, q, "UPDATE", new, Some(&old)).await?;
    let mut inner = admitted.inner;
    unchanged_since(&inner, &target.t, &key, &old)?;
    let out = replace_locked(&mut inner, target, name, q, &old, admitted.object)?;
    if let Some(manager) = applier {
        claim_applied(&mut inner, key, q, manager, &p);
    }
    Ok(out.after(admitted.warnings).respond(StatusCode::OK))
}

/// Server-side apply: `manager` owns the fields its patch `applied`, and no other manager
/// does any more. A dry run stores nothing, and claims nothing either.
fn claim_applied(
    inner: &mut Inner,
    key: Key,
    q: &BTreeMap<String, String>,
    manager: String,
    applied: &Value,
) {
    if is_dry_run(q) {
        return;
    }
    let applied: Vec<String> = leaves(applied).into_iter().map(|(path, _)| path).collect();
    let owned = inner.owners.entry(key).or_default();
    for (other, fields) in owned.iter_mut() {
        if *other != manager {
            for f in &applied {
                fields.remove(f);
            }
        }
    }
    owned.entry(manager).or_default().extend(applied);
}

/// A server-side apply that would change fields another manager owns is refused, as the API
/// server does (unless forced).
fn check_conflicts(
    inner: &Inner,
    key: &Key,
    manager: &str,
    current: &Value,
    applied: &Value,
    t: &ResourceType,
    name: &str,
) -> Result<(), ApiError> {
    let Some(owned) = inner.owners.get(key) else {
        return Ok(());
    };
    let mut conflicts = Vec::new();
    for (path, value) in leaves(applied) {
        if value_at(current, &path).is_none_or(|v| v == value) {
            continue;
        }
        for (other, fields) in owned {
            if other != manager && fields.contains(&path) {
                conflicts.push(format!("conflict with \"{other}\": .{path}"));
            }
        }
    }
    if conflicts.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Apply failed with {} conflict{}: {}",
            conflicts.len(),
            if conflicts.len() == 1 { "" } else { "s" },
            conflicts.join(", ")
        ),
    )
    .with_details(json!({"name": name, "group": t.group, "kind": t.plural,
        "causes": conflicts.iter().map(|c| json!({"reason": "FieldManagerConflict", "message": c})).collect::<Vec<_>>()})))
}

/// An update (or non-apply patch) takes the fields it changes from their owners; fields it
/// removes are nobody's.
pub(super) fn record_update(
    inner: &mut Inner,
    key: &Key,
    q: &BTreeMap<String, String>,
    old: &Value,
    new: &Value,
) {
    let Some(owned) = inner.owners.get_mut(key) else {
        return;
    };
    let before: BTreeMap<String, &Value> = leaves(old).into_iter().collect();
    let after: BTreeMap<String, &Value> = leaves(new).into_iter().collect();
    let manager = q.get("fieldManager").map_or("unknown", String::as_str);
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|p| before.get(*p) != after.get(*p))
        .collect();
    for fields in owned.values_mut() {
        for p in &changed {
            fields.remove(*p);
        }
    }
    let mine = owned.entry(manager.to_owned()).or_default();
    for p in changed {
        if after.contains_key(p) {
            mine.insert(p.clone());
        }
    }
}

/// The leaf fields of an object as paths (`spec.holderIdentity`). A list whose items are all
/// objects with a `name` is a map keyed by it, as the API server's `listType=map` lists with
/// `listMapKeys: [name]` are (webhooks, containers, volumes): each item's fields are owned
/// apart (`webhooks[name=w].clientConfig.caBundle`). Other lists are leaves. Identity fields
/// (apiVersion, kind, name, namespace) are nobody's.
fn leaves(v: &Value) -> Vec<(String, &Value)> {
    fn walk<'a>(v: &'a Value, path: &mut String, out: &mut Vec<(String, &'a Value)>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    walk(child, path, out);
                    path.truncate(len);
                }
            }
            Value::Array(items) if keyed_by_name(items) => {
                for item in items {
                    let len = path.len();
                    path.push_str(&format!(
                        "[name={}]",
                        item["name"].as_str().unwrap_or_default()
                    ));
                    walk(item, path, out);
                    path.truncate(len);
                }
            }
            _ => out.push((path.clone(), v)),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut String::new(), &mut out);
    out.retain(|(p, _)| {
        !matches!(
            p.as_str(),
            "apiVersion" | "kind" | "metadata.name" | "metadata.namespace"
        )
    });
    out
}

/// Whether a list is a map keyed by its items' names.
fn keyed_by_name(items: &[Value]) -> bool {
    !items.is_empty()
        && items.iter().all(|i| {
            i["name"]
                .as_str()
                .is_some_and(|n| !n.is_empty() && !n.contains(']'))
        })
}

fn value_at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = v;
    let mut rest = path;
    while !rest.is_empty() {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        if let Some(keyed) = rest.strip_prefix("[name=") {
            let (name, after) = keyed.split_once(']')?;
            v = v.as_array()?.iter().find(|i| i["name"] == name)?;
            rest = after;
            continue;
        }
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        v = v.get(&rest[..end])?;
        rest = &rest[end..];
    }
    Some(v)
}
