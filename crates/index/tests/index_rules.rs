//! Index behaviour: objects in, snapshots out, with Istio's rules for precedence, visibility,
//! delegation and subset selection.

use sextant_index::{Index, Object, manifest};
use sextant_model::{HttpAction, Kind};

fn objects(yaml: &str) -> Vec<Object> {
    manifest::parse_documents(yaml)
        .expect("valid YAML")
        .into_iter()
        .map(|d| Object::from_json(d.value, "default").expect("known kind"))
        .collect()
}

fn index(yaml: &str) -> Index {
    let mut index = Index::default();
    for o in objects(yaml) {
        index.apply(o);
    }
    index
}

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.0.0.1
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Pod
metadata: {name: r1, namespace: default, labels: {app: reviews, version: v1}}
spec: {serviceAccountName: reviews, containers: [{name: c, image: x}]}
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: r2, namespace: default, labels: {app: reviews, version: v2}}
spec: {containers: [{name: c, image: x}]}
status: {podIP: 10.1.0.2}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-1, namespace: default, labels: {kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{name: http, port: 9080}]
endpoints:
- addresses: [10.1.0.1]
  targetRef: {kind: Pod, name: r1, namespace: default}
- addresses: [10.1.0.2]
  targetRef: {kind: Pod, name: r2, namespace: default}
"#;

fn vs(name: &str, ns: &str, created: &str, subset: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: '{created}'}}\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n{extra}  http:\n  - route: [{{destination: {{host: reviews.default.svc.cluster.local, subset: {subset}}}}}]\n"
    )
}

fn routed_subset(index: &mut Index, namespace: &str) -> Option<String> {
    let (snap, _) = index.publish();
    let vs = snap.virtual_service_for(namespace, "reviews.default.svc.cluster.local")?;
    match &vs.http[0].action {
        HttpAction::Route(d) => d[0].destination.subset.clone(),
        _ => None,
    }
}

#[test]
fn older_virtual_service_wins_for_a_shared_host() {
    let yaml = format!(
        "{MESH}{}{}",
        vs("b", "default", "2024-01-01T00:00:00Z", "v1", ""),
        vs("a", "default", "2024-02-01T00:00:00Z", "v2", "")
    );
    let mut idx = index(&yaml);
    assert_eq!(routed_subset(&mut idx, "default").as_deref(), Some("v1"));
    // Same creation time: the name breaks the tie.
    let yaml = format!(
        "{MESH}{}{}",
        vs("b", "default", "2024-01-01T00:00:00Z", "v1", ""),
        vs("a", "default", "2024-01-01T00:00:00Z", "v2", "")
    );
    let mut idx = index(&yaml);
    assert_eq!(routed_subset(&mut idx, "default").as_deref(), Some("v2"));
}

#[test]
fn export_to_limits_which_namespaces_see_a_virtual_service() {
    let yaml = format!(
        "{MESH}{}",
        vs(
            "private",
            "team",
            "2024-01-01T00:00:00Z",
            "v2",
            "  exportTo: ['.']\n"
        )
    );
    let mut idx = index(&yaml);
    assert_eq!(routed_subset(&mut idx, "team").as_deref(), Some("v2"));
    assert_eq!(routed_subset(&mut idx, "default"), None);
    let yaml = format!(
        "{MESH}{}",
        vs(
            "shared",
            "team",
            "2024-01-01T00:00:00Z",
            "v2",
            "  exportTo: [default]\n"
        )
    );
    let mut idx = index(&yaml);
    assert_eq!(routed_subset(&mut idx, "default").as_deref(), Some("v2"));
    assert_eq!(routed_subset(&mut idx, "other"), None);
}

#[test]
fn delegate_rules_are_merged_into_the_root() {
    let yaml = format!(
        "{MESH}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: root, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - name: api
    match: [{{uri: {{prefix: /api}}}}]
    timeout: 2s
    delegate: {{name: api, namespace: team}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: team}}
spec:
  exportTo: [default]
  http:
  - name: v2
    match: [{{uri: {{prefix: /api/v2}}}}]
    route: [{{destination: {{host: reviews.default.svc.cluster.local, subset: v2}}}}]
  - name: conflicting
    match: [{{uri: {{prefix: /other}}}}]
    route: [{{destination: {{host: reviews.default.svc.cluster.local, subset: v1}}}}]
  - name: rest
    route: [{{destination: {{host: reviews.default.svc.cluster.local, subset: v1}}}}]
"
    );
    let mut idx = index(&yaml);
    let (snap, _) = idx.publish();
    let root = snap
        .virtual_service_for("default", "reviews.default.svc.cluster.local")
        .expect("root applies");
    let names: Vec<_> = root
        .http
        .iter()
        .map(|r| r.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["api-v2", "api-rest"],
        "the conflicting match is dropped"
    );
    assert!(
        root.http
            .iter()
            .all(|r| r.timeout == Some(std::time::Duration::from_secs(2)))
    );
}

#[test]
fn subsets_select_endpoints_by_pod_labels_and_follow_label_changes() {
    let mut idx = index(MESH);
    let (snap, _) = idx.publish();
    let eps = snap.endpoints("reviews.default.svc.cluster.local");
    let v1: Vec<_> = eps
        .iter()
        .filter(|e| e.matches(&[("version".to_owned(), "v1".to_owned())].into()))
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(v1, ["10.1.0.1"]);
    assert_eq!(eps[0].service_account.as_deref(), Some("reviews"));
    // Relabel r2 as v1: the endpoints change, and only they do.
    let relabel = objects(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: r2, namespace: default, labels: {app: reviews, version: v1}}\nspec: {containers: [{name: c, image: x}]}\nstatus: {podIP: 10.1.0.2}\n",
    );
    for o in relabel {
        idx.apply(o);
    }
    let (snap, changes) = idx.publish();
    assert!(
        changes
            .endpoints
            .contains("reviews.default.svc.cluster.local")
    );
    assert!(changes.services.is_empty() && changes.configs.is_empty());
    let v1 = snap
        .endpoints("reviews.default.svc.cluster.local")
        .iter()
        .filter(|e| e.labels.get("version").map(String::as_str) == Some("v1"))
        .count();
    assert_eq!(v1, 2);
}

#[test]
fn an_invalid_virtual_service_is_skipped_and_the_others_still_apply() {
    let yaml = format!(
        "{MESH}{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: broken, namespace: default}}
spec:
  hosts: [ratings]
  http:
  - route: [{{destination: {{host: ratings}}, weight: -3}}, {{destination: {{host: x}}, weight: 1}}]
",
        vs("good", "default", "2024-01-01T00:00:00Z", "v2", "")
    );
    let mut idx = index(&yaml);
    assert_eq!(routed_subset(&mut idx, "default").as_deref(), Some("v2"));
    let (snap, _) = idx.publish();
    let broken = snap
        .invalid
        .iter()
        .find(|(o, _)| o.kind == Kind::VirtualService && o.name == "broken")
        .expect("recorded");
    assert!(broken.1[0].contains("weight -3 < 0"), "{:?}", broken.1);
}

#[test]
fn an_invalid_edit_keeps_the_last_good_version() {
    let mut idx = index(&format!(
        "{MESH}{}",
        vs("good", "default", "2024-01-01T00:00:00Z", "v2", "")
    ));
    assert_eq!(routed_subset(&mut idx, "default").as_deref(), Some("v2"));
    let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: good, namespace: default}\nspec:\n  hosts: ['*']\n  http:\n  - route: [{destination: {host: reviews}}]\n";
    for o in objects(bad) {
        idx.apply(o);
    }
    assert_eq!(routed_subset(&mut idx, "default").as_deref(), Some("v2"));
    let (snap, _) = idx.publish();
    assert!(
        snap.invalid.keys().any(|o| o.name == "good"),
        "the bad edit is reported"
    );
    idx.delete(Kind::VirtualService, "default", "good");
    assert_eq!(
        routed_subset(&mut idx, "default"),
        None,
        "deleting removes it"
    );
}

#[test]
fn reset_replaces_a_kind_atomically() {
    let mut idx = index(&format!(
        "{MESH}{}",
        vs("good", "default", "2024-01-01T00:00:00Z", "v2", "")
    ));
    let (first, _) = idx.publish();
    idx.reset(Kind::VirtualService, Vec::new());
    let (second, changes) = idx.publish();
    assert!(second.version > first.version);
    assert_eq!(second.virtual_services.len(), 0);
    assert_eq!(changes.configs.len(), 1);
    assert_eq!(second.services.len(), 1);
}

#[test]
fn destination_rules_are_looked_up_in_istios_order() {
    let yaml = format!(
        "{MESH}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: root, namespace: istio-system}}
spec: {{host: reviews.default.svc.cluster.local, subsets: [{{name: from-root}}]}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc, namespace: default}}
spec: {{host: reviews, subsets: [{{name: from-service-ns}}]}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: client, namespace: client}}
spec: {{host: reviews.default.svc.cluster.local, subsets: [{{name: from-client-ns}}]}}
"
    );
    let mut idx = index(&yaml);
    let (snap, _) = idx.publish();
    let svc = snap
        .services
        .get("reviews.default.svc.cluster.local")
        .expect("service");
    let labels = Default::default();
    let pick = |ns: &str| {
        snap.destination_rule(ns, &labels, svc)
            .map(|d| d.subsets[0].name.clone())
    };
    assert_eq!(pick("client").as_deref(), Some("from-client-ns"));
    assert_eq!(pick("default").as_deref(), Some("from-service-ns"));
    assert_eq!(pick("elsewhere").as_deref(), Some("from-service-ns"));
}
