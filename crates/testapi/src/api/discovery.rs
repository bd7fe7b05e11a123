//! API discovery and OpenAPI documents, derived from the served kinds: `/version`, `/api`,
//! `/apis`, each group and group version's resource list, and OpenAPI v3 per group version.

use std::collections::BTreeMap;

use axum::{http::StatusCode, response::Response};
use serde_json::{Value, json};

use super::{ApiError, json_response};
use crate::kinds::{ResourceType, ServedKinds};

/// The discovery document at `segs` (the path's segments), or `None` when the path is not a
/// discovery path.
pub(super) fn serve(kinds: &ServedKinds, segs: &[&str]) -> Option<Result<Response, ApiError>> {
    let found = |document: Value| Some(Ok(json_response(StatusCode::OK, document)));
    match segs {
        ["version"] => found(
            json!({"major": "1", "minor": "35", "gitVersion": "v1.35.0-sextant-testapi",
                   "platform": "linux/amd64"}),
        ),
        ["api"] => found(json!({"kind": "APIVersions", "versions": ["v1"],
                   "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})),
        ["apis"] => found(group_list(kinds)),
        ["api", "v1"] => found(resource_list("v1", &kinds.group_version("", "v1"))),
        ["apis", group] => {
            let list = group_list(kinds);
            Some(
                list["groups"]
                    .as_array()
                    .and_then(|g| g.iter().find(|g| g["name"] == *group))
                    .map(|g| {
                        let mut g = g.clone();
                        g["kind"] = json!("APIGroup");
                        g["apiVersion"] = json!("v1");
                        json_response(StatusCode::OK, g)
                    })
                    .ok_or_else(ApiError::path_not_found),
            )
        }
        ["apis", group, version] => {
            let types = kinds.group_version(group, version);
            if types.is_empty() {
                return Some(Err(ApiError::path_not_found()));
            }
            found(resource_list(&format!("{group}/{version}"), &types))
        }
        ["openapi", "v3"] => found(openapi_root(kinds)),
        ["openapi", "v3", rest @ ..] => {
            let (group, version) = match rest {
                ["api", v] => ("", *v),
                ["apis", g, v] => (*g, *v),
                _ => return Some(Err(ApiError::path_not_found())),
            };
            let types = kinds.group_version(group, version);
            if types.is_empty() {
                return Some(Err(ApiError::path_not_found()));
            }
            found(openapi_v3(&types))
        }
        _ => None,
    }
}

/// `APIResourceList` of one group version.
fn resource_list(api_version: &str, types: &[&ResourceType]) -> Value {
    let mut resources = Vec::new();
    for t in types {
        let mut r = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": t.verbs(),
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.issues_tokens() {
            resources.push(json!({
                "name": format!("{}/token", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "group": "authentication.k8s.io",
                "version": "v1",
                "kind": "TokenRequest",
                "verbs": ["create"],
            }));
        }
        if t.status {
            resources.push(json!({
                "name": format!("{}/status", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": api_version,
        "resources": resources,
    })
}

/// `APIGroupList` of the named groups (versions in the order served, preferred first).
fn group_list(kinds: &ServedKinds) -> Value {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for t in kinds.iter().filter(|t| !t.group.is_empty()) {
        let versions = groups.entry(&t.group).or_default();
        if !versions.contains(&t.version.as_str()) {
            versions.push(&t.version);
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
                .collect();
            json!({
                "name": group,
                "versions": versions,
                "preferredVersion": versions[0],
            })
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// An OpenAPI v3 document for one group version. It describes the paths of each resource with
/// the `fieldValidation` parameter on `PATCH`, so kubectl leaves validation to this server
/// (`fieldValidation=Strict`) instead of needing every schema; custom resources get their
/// schema under `components`.
fn openapi_v3(types: &[&ResourceType]) -> Value {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for t in types {
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let params = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
        ]);
        let op = |action: &str| {
            json!({
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
            })
        };
        let base = if t.namespaced {
            format!("{}/namespaces/{{namespace}}/{}", t.prefix(), t.plural)
        } else {
            format!("{}/{}", t.prefix(), t.plural)
        };
        paths.insert(base.clone(), json!({"get": op("list"), "post": op("post")}));
        if !t.create_only {
            paths.insert(
                format!("{base}/{{name}}"),
                json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
            );
        }
        let schema_name = format!(
            "{}.{}.{}",
            if t.group.is_empty() { "core" } else { &t.group },
            t.version,
            t.kind
        );
        let mut schema = t
            .custom
            .as_ref()
            .and_then(|c| c.schema.as_ref())
            .map_or_else(
                || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
                |s| s.root().clone(),
            );
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        schemas.insert(schema_name, schema);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "sextant-testapi", "version": "v1"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The OpenAPI v3 index: one document per group version, each URL with a hash of its document.
fn openapi_root(kinds: &ServedKinds) -> Value {
    let mut paths = serde_json::Map::new();
    for t in kinds.iter() {
        let gv = if t.group.is_empty() {
            format!("api/{}", t.version)
        } else {
            format!("apis/{}/{}", t.group, t.version)
        };
        if paths.contains_key(&gv) {
            continue; // one document per group version, whatever its number of kinds
        }
        // The hash lets kubectl cache a document until it changes.
        let doc = openapi_v3(&kinds.group_version(&t.group, &t.version));
        let hash = format!("{:016X}", crate::store::fnv1a(doc.to_string().as_bytes()));
        paths.insert(
            gv.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}
