//! RBAC as the API server's authorizer evaluates it, for SubjectAccessReview: the Roles,
//! ClusterRoles and their bindings stored here decide whether a user (with its groups) may
//! do a verb on a resource. A ClusterRoleBinding grants its ClusterRole everywhere; a
//! RoleBinding grants its Role, or a ClusterRole, in the binding's namespace only. Subjects
//! are `User`, `Group` (`system:serviceaccounts`, `system:serviceaccounts:NS`, ...) and
//! `ServiceAccount` (the user `system:serviceaccount:NS:NAME`; a RoleBinding's subject without
//! a namespace is of the binding's). A rule matches when its `verbs`, `apiGroups` and
//! `resources` (`*`, `RESOURCE`, `RESOURCE/SUB` or `*/SUB`) name the request's, and its
//! `resourceNames`, if any, name the object.
//!
//! Left out: `nonResourceURLs` (non-resource requests are never allowed), aggregated
//! ClusterRoles (their `rules` are read as stored), and every authorizer but RBAC.

use serde_json::Value;

use crate::store::Store;

/// What a SubjectAccessReview asks: may `user`, in `groups`, do `verb` on the resource?
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// User name (`system:serviceaccount:NS:NAME` for a service account).
    pub user: String,
    /// Groups the user is in.
    pub groups: Vec<String>,
    /// Verb (`get`, `list`, ...).
    pub verb: String,
    /// API group, empty for the core group.
    pub group: String,
    /// Resource plural.
    pub resource: String,
    /// Subresource, if any.
    pub subresource: String,
    /// Object name; empty for a request on the whole collection.
    pub name: String,
    /// Namespace; empty for a cluster-wide request.
    pub namespace: String,
}

/// Whether RBAC allows `request`, and which binding did (as the API server's reason says it).
pub fn authorize(store: &Store, request: &Request) -> Option<String> {
    let cluster_wide = store
        .list("rbac.authorization.k8s.io", "clusterrolebindings", None)
        .map(|(_, b)| (b, ""));
    let namespaced = store
        .list(
            "rbac.authorization.k8s.io",
            "rolebindings",
            Some(&request.namespace),
        )
        .filter(|_| !request.namespace.is_empty())
        .map(|(_, b)| (b, request.namespace.as_str()));
    for (binding, namespace) in cluster_wide.chain(namespaced) {
        let Some(subject) = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| subject_matches(s, namespace, request))
        else {
            continue;
        };
        let Some(rules) = role_rules(store, &binding["roleRef"], namespace) else {
            continue;
        };
        if rules.iter().any(|r| rule_matches(r, request)) {
            return Some(format!(
                "RBAC: allowed by {} {:?} of {} {:?} to {} {:?}",
                if namespace.is_empty() {
                    "ClusterRoleBinding"
                } else {
                    "RoleBinding"
                },
                name_of(binding, namespace),
                binding["roleRef"]["kind"].as_str().unwrap_or_default(),
                binding["roleRef"]["name"].as_str().unwrap_or_default(),
                subject["kind"].as_str().unwrap_or_default(),
                subject["name"].as_str().unwrap_or_default(),
            ));
        }
    }
    None
}

/// `NAME/NAMESPACE` for a RoleBinding, `NAME` for a ClusterRoleBinding (as Kubernetes says).
fn name_of(binding: &Value, namespace: &str) -> String {
    let name = binding["metadata"]["name"].as_str().unwrap_or_default();
    if namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{name}/{namespace}")
    }
}

/// Whether `subject` of a binding in `namespace` (empty: a ClusterRoleBinding) is the
/// request's user or one of its groups.
fn subject_matches(subject: &Value, namespace: &str, request: &Request) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str().unwrap_or_default() {
        "User" => name == request.user,
        "Group" => request.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let account_namespace = match subject["namespace"].as_str() {
                Some(ns) if !ns.is_empty() => ns,
                _ => namespace,
            };
            !account_namespace.is_empty()
                && request.user == format!("system:serviceaccount:{account_namespace}:{name}")
        }
        _ => false,
    }
}

/// The rules of the role `role_ref` names, for a binding in `namespace` (a Role is looked up
/// there; a ClusterRole anywhere); `None` when it does not exist.
fn role_rules(store: &Store, role_ref: &Value, namespace: &str) -> Option<Vec<Value>> {
    let name = role_ref["name"].as_str()?;
    let (plural, scope) = match role_ref["kind"].as_str()? {
        "ClusterRole" => ("clusterroles", ""),
        "Role" if !namespace.is_empty() => ("roles", namespace),
        _ => return None,
    };
    store
        .list("rbac.authorization.k8s.io", plural, Some(scope))
        .find(|(k, _)| k.name == name)
        .map(|(_, role)| role["rules"].as_array().cloned().unwrap_or_default())
}

/// Whether one policy rule allows `request`.
fn rule_matches(rule: &Value, request: &Request) -> bool {
    let list = |field: &str| -> Vec<&str> {
        rule[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect()
    };
    let names_any =
        |values: &[&str], wanted: &str| values.iter().any(|v| *v == "*" || *v == wanted);
    let resources = list("resources");
    let combined = if request.subresource.is_empty() {
        request.resource.clone()
    } else {
        format!("{}/{}", request.resource, request.subresource)
    };
    let resource = resources.iter().any(|r| {
        *r == "*"
            || *r == combined
            || (!request.subresource.is_empty()
                && r.strip_prefix("*/") == Some(request.subresource.as_str()))
    });
    let resource_names = list("resourceNames");
    let named = resource_names.is_empty()
        || (!request.name.is_empty() && resource_names.contains(&request.name.as_str()));
    !request.resource.is_empty()
        && names_any(&list("verbs"), &request.verb)
        && names_any(&list("apiGroups"), &request.group)
        && resource
        && named
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::{EventType, Key};

    fn put(store: &mut Store, plural: &str, namespace: &str, object: Value) {
        let name = object["metadata"]["name"]
            .as_str()
            .expect("a name")
            .to_owned();
        store.put(
            Key {
                group: "rbac.authorization.k8s.io".into(),
                plural: plural.into(),
                namespace: namespace.into(),
                name,
            },
            object,
            EventType::Added,
        );
    }

    fn account(namespace: &str, name: &str) -> Request {
        Request {
            user: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            verb: "list".into(),
            resource: "secrets".into(),
            namespace: namespace.into(),
            ..Default::default()
        }
    }

    /// Istio's gateway chart: a Role reading Secrets, bound to the gateway's account.
    fn gateway_role(store: &mut Store) {
        put(
            store,
            "roles",
            "istio-system",
            json!({"metadata": {"name": "gw-secrets"},
                   "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch", "list"]}]}),
        );
        put(
            store,
            "rolebindings",
            "istio-system",
            json!({"metadata": {"name": "gw-secrets"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gw-secrets"},
                   "subjects": [{"kind": "ServiceAccount", "name": "istio-ingressgateway"}]}),
        );
    }

    #[test]
    fn a_role_binding_grants_its_role_to_its_service_account_in_its_namespace_only() {
        let mut store = Store::open(None).expect("store");
        gateway_role(&mut store);
        let gateway = account("istio-system", "istio-ingressgateway");
        assert_eq!(
            authorize(&store, &gateway).as_deref(),
            Some(
                r#"RBAC: allowed by RoleBinding "gw-secrets/istio-system" of Role "gw-secrets" to ServiceAccount "istio-ingressgateway""#
            )
        );
        let mut watch = gateway.clone();
        watch.verb = "watch".into();
        assert!(authorize(&store, &watch).is_some());
        for refused in [
            // Another account of the namespace, the same name elsewhere, another verb,
            // resource or group, or the namespace left out.
            account("istio-system", "reviews"),
            account("default", "istio-ingressgateway"),
            Request {
                verb: "delete".into(),
                ..gateway.clone()
            },
            Request {
                resource: "configmaps".into(),
                ..gateway.clone()
            },
            Request {
                group: "apps".into(),
                ..gateway.clone()
            },
            Request {
                namespace: String::new(),
                ..gateway.clone()
            },
        ] {
            assert_eq!(authorize(&store, &refused), None, "{refused:?}");
        }
    }

    #[test]
    fn cluster_role_bindings_apply_everywhere_and_role_bindings_of_cluster_roles_in_their_namespace()
     {
        let mut store = Store::open(None).expect("store");
        put(
            &mut store,
            "clusterroles",
            "",
            json!({"metadata": {"name": "secret-reader"},
                   "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["list"]}]}),
        );
        put(
            &mut store,
            "rolebindings",
            "team-a",
            json!({"metadata": {"name": "readers"},
                   "roleRef": {"kind": "ClusterRole", "name": "secret-reader"},
                   "subjects": [{"kind": "Group", "name": "system:serviceaccounts:team-a"}]}),
        );
        assert!(authorize(&store, &account("team-a", "any")).is_some());
        assert_eq!(authorize(&store, &account("team-b", "any")), None);
        put(
            &mut store,
            "clusterrolebindings",
            "",
            json!({"metadata": {"name": "alice-reads"},
                   "roleRef": {"kind": "ClusterRole", "name": "secret-reader"},
                   "subjects": [{"kind": "User", "name": "alice"}]}),
        );
        let alice = Request {
            user: "alice".into(),
            groups: vec!["system:authenticated".into()],
            ..account("team-b", "unused")
        };
        assert!(authorize(&store, &alice).is_some());
        assert!(
            authorize(
                &store,
                &Request {
                    namespace: String::new(),
                    ..alice.clone()
                }
            )
            .is_some()
        );
        assert_eq!(authorize(&store, &account("team-b", "alice")), None);
        // Every service account, as a group.
        put(
            &mut store,
            "clusterrolebindings",
            "",
            json!({"metadata": {"name": "all-accounts"},
                   "roleRef": {"kind": "ClusterRole", "name": "secret-reader"},
                   "subjects": [{"kind": "Group", "name": "system:serviceaccounts"}]}),
        );
        assert!(authorize(&store, &account("team-b", "any")).is_some());
    }

    #[test]
    fn resource_names_and_subresources_narrow_a_rule() {
        let mut store = Store::open(None).expect("store");
        put(
            &mut store,
            "clusterroles",
            "",
            json!({"metadata": {"name": "narrow"},
                   "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["gw-cert"], "verbs": ["get"]},
                             {"apiGroups": [""], "resources": ["*/status"], "verbs": ["*"]}]}),
        );
        put(
            &mut store,
            "clusterrolebindings",
            "",
            json!({"metadata": {"name": "narrow"},
                   "roleRef": {"kind": "ClusterRole", "name": "narrow"},
                   "subjects": [{"kind": "ServiceAccount", "name": "gw", "namespace": "ns"}]}),
        );
        let get = |name: &str| Request {
            verb: "get".into(),
            name: name.into(),
            ..account("ns", "gw")
        };
        assert!(authorize(&store, &get("gw-cert")).is_some());
        assert_eq!(authorize(&store, &get("other")), None);
        // A list names no object: resourceNames never allow it.
        assert_eq!(authorize(&store, &account("ns", "gw")), None);
        let status = Request {
            resource: "pods".into(),
            subresource: "status".into(),
            verb: "patch".into(),
            ..account("ns", "gw")
        };
        assert!(authorize(&store, &status).is_some());
        // A binding whose role is missing grants nothing.
        put(
            &mut store,
            "clusterrolebindings",
            "",
            json!({"metadata": {"name": "dangling"},
                   "roleRef": {"kind": "ClusterRole", "name": "missing"},
                   "subjects": [{"kind": "ServiceAccount", "name": "x", "namespace": "ns"}]}),
        );
        assert_eq!(authorize(&store, &account("ns", "x")), None);
    }
}
