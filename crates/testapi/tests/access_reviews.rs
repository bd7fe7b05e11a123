//! SubjectAccessReview over real HTTP: the Roles and RoleBindings written through the API
//! decide the answer, as the API server's RBAC authorizer would.

use serde_json::{Value, json};
use sextant_testapi::{Options, start};

#[path = "support/call.rs"]
mod support;
use support::call;

const REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

fn review(user: &str, verb: &str, namespace: &str) -> Value {
    let account_namespace = user.split(':').nth(2).unwrap_or_default();
    json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
           "spec": {"user": user,
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{account_namespace}"), "system:authenticated"],
                    "resourceAttributes": {"namespace": namespace, "verb": verb, "resource": "secrets"}}})
}

#[tokio::test]
async fn subject_access_reviews_follow_the_stored_roles_and_bindings() {
    let api = start(Options::default()).await.expect("starts");
    let gateway = "system:serviceaccount:istio-system:istio-ingressgateway";
    let ask = |body: Value| async move {
        let (code, answer) = call(api.addr, "POST", REVIEWS, "application/json", &body).await;
        assert_eq!(code, 201, "{answer}");
        assert_eq!(answer["kind"], "SubjectAccessReview");
        answer["status"]["allowed"] == json!(true)
    };
    assert!(!ask(review(gateway, "list", "istio-system")).await);

    let (code, body) = call(
        api.addr,
        "POST",
        "/api/v1/namespaces",
        "application/json",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/istio-system";
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "istio-ingressgateway-sds"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch", "list"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "istio-ingressgateway-sds"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "istio-ingressgateway-sds"},
        "subjects": [{"kind": "ServiceAccount", "name": "istio-ingressgateway"}]});
    for (path, object) in [("roles", role), ("rolebindings", binding)] {
        let (code, body) = call(
            api.addr,
            "POST",
            &format!("{rbac}/{path}"),
            "application/json",
            &object,
        )
        .await;
        assert_eq!(code, 201, "{body}");
    }
    assert!(ask(review(gateway, "list", "istio-system")).await);
    assert!(!ask(review(gateway, "delete", "istio-system")).await);
    assert!(!ask(review(gateway, "list", "default")).await);
    assert!(
        !ask(review(
            "system:serviceaccount:istio-system:reviews",
            "list",
            "istio-system"
        ))
        .await
    );

    // The binding gone, so is the permission.
    let (code, _) = call(
        api.addr,
        "DELETE",
        &format!("{rbac}/rolebindings/istio-ingressgateway-sds"),
        "application/json",
        &Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    assert!(!ask(review(gateway, "list", "istio-system")).await);

    // A review that asks about nothing is refused, as the API server refuses it.
    let (code, _) = call(
        api.addr,
        "POST",
        REVIEWS,
        "application/json",
        &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {"user": gateway}}),
    )
    .await;
    assert_eq!(code, 400);
}
