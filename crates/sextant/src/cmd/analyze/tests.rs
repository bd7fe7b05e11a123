use serde_json::json;

use super::*;

fn reviews_vs(namespace: &str, subset: &str) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": "reviews", "namespace": namespace},
           "spec": {"hosts": ["reviews"], "http": [{"route": [
               {"destination": {"host": "reviews", "subset": subset}}]}]}})
}

fn reviews_dr(namespace: &str) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
           "metadata": {"name": "reviews", "namespace": namespace},
           "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}})
}

fn service(namespace: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace},
           "spec": {"ports": [{"port": 9080, "name": "http"}]}})
}

#[test]
fn a_missing_subset_is_an_error_in_istioctls_words() {
    let live = vec![
        reviews_vs("default", "v9"),
        reviews_dr("default"),
        service("default", "reviews"),
    ];
    let found = analyze(live, vec![], Some("default"));
    let shown: Vec<&Finding> = found.iter().collect();
    assert_eq!(
        table(&shown, Some("default")),
        "Error [IST0101] (VirtualService default/reviews) Referenced host+subset in destinationrule not found: \"reviews+v9\"\n"
    );
    assert_eq!(found[0].field, "spec.http[0].route[0].destination.subset");
    let value = to_json(&found[0]);
    assert_eq!(value["level"], "Error");
    assert_eq!(
        value["documentationUrl"],
        "https://istio.io/latest/docs/reference/config/analysis/ist0101/"
    );
}

#[test]
fn only_the_namespace_asked_for_is_reported_unless_all_are() {
    let live = vec![
        reviews_vs("default", "v9"),
        reviews_dr("default"),
        reviews_vs("prod", "v9"),
        reviews_dr("prod"),
        service("default", "reviews"),
        service("prod", "reviews"),
    ];
    let prod = analyze(live.clone(), vec![], Some("prod"));
    assert_eq!(
        prod.iter().map(|f| f.origin.as_str()).collect::<Vec<_>>(),
        ["VirtualService prod/reviews"]
    );
    assert_eq!(analyze(live.clone(), vec![], Some("other")), []);
    assert_eq!(
        table(&[], Some("other")),
        "✔ No validation issues found when analyzing namespace: other.\n"
    );
    assert_eq!(analyze(live, vec![], None).len(), 2);
}

#[test]
fn a_local_file_replaces_the_clusters_object() {
    let live = vec![
        reviews_vs("default", "v9"),
        reviews_dr("default"),
        service("default", "reviews"),
    ];
    let fixed = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n";
    let local = vec![("fixed.yaml".to_owned(), fixed.to_owned())];
    assert_eq!(analyze(live, local, Some("default")), []);
}

#[test]
fn warnings_pass_the_default_failure_threshold_and_errors_do_not() {
    assert!(Threshold::Error.admits(Level::Error));
    assert!(!Threshold::Error.admits(Level::Warning));
    assert!(Threshold::Warning.admits(Level::Warning));
    assert!(!Threshold::Warning.admits(Level::Info));
    assert!(Threshold::Info.admits(Level::Info));
}
