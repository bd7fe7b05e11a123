use serde_json::{Value, json};
use sextant_model::Kind;

use super::*;
use crate::{Index, Object, check, check::Config};

fn config(kind: Kind, value: Value) -> Config {
    let checked = check::check_istio_object(kind, &value);
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);
    checked.config.expect("valid")
}

fn vs(name: &str, spec: Value) -> VirtualService {
    match config(
        Kind::VirtualService,
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
               "metadata": {"name": name, "namespace": "default"}, "spec": spec}),
    ) {
        Config::VirtualService(v) => v,
        other => panic!("{other:?}"),
    }
}

fn dr(name: &str, host: &str, subsets: &[&str]) -> DestinationRule {
    let subsets: Vec<Value> = subsets
        .iter()
        .map(|s| json!({"name": s, "labels": {"version": s}}))
        .collect();
    match config(
        Kind::DestinationRule,
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
               "metadata": {"name": name, "namespace": "default"},
               "spec": {"host": host, "subsets": subsets}}),
    ) {
        Config::DestinationRule(d) => d,
        other => panic!("{other:?}"),
    }
}

fn sidecar(name: &str, selector: Option<Value>) -> Sidecar {
    let mut spec = json!({"egress": [{"hosts": ["./*"]}]});
    if let Some(labels) = selector {
        spec["workloadSelector"] = json!({"labels": labels});
    }
    match config(
        Kind::Sidecar,
        json!({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
               "metadata": {"name": name, "namespace": "default"}, "spec": spec}),
    ) {
        Config::Sidecar(s) => s,
        other => panic!("{other:?}"),
    }
}

fn reviews_to(subset: &str) -> VirtualService {
    vs(
        "reviews",
        json!({"hosts": ["reviews"], "http": [{"route": [
            {"destination": {"host": "reviews", "subset": subset}}]}]}),
    )
}

fn codes(messages: &[Message]) -> Vec<(&str, &str, &str)> {
    messages
        .iter()
        .map(|m| (m.code.code, m.object.name.as_str(), m.field.as_str()))
        .collect()
}

fn services<'a>(hosts: &[&'a str]) -> Option<Hosts<'a>> {
    Some(Hosts::Set(hosts.iter().copied().collect()))
}

#[test]
fn a_subset_no_destination_rule_defines_is_an_error_until_one_does() {
    let route = reviews_to("v9");
    let without = dr("reviews", "reviews", &["v1"]);
    let with = dr(
        "reviews",
        "reviews.default.svc.cluster.local",
        &["v1", "v9"],
    );
    let mut input = Input {
        virtual_services: vec![&route],
        destination_rules: vec![&without],
        judge_subsets: true,
        domain_suffix: "cluster.local",
        ..Input::default()
    };
    let found = analyze(&input);
    assert_eq!(
        codes(&found),
        [(
            "IST0101",
            "reviews",
            "spec.http[0].route[0].destination.subset"
        )]
    );
    assert_eq!(found[0].code.level, Level::Error);
    assert_eq!(
        found[0].description,
        "Referenced host+subset in destinationrule not found: \"reviews+v9\""
    );
    input.destination_rules = vec![&with];
    assert_eq!(analyze(&input), []);
    // Without every DestinationRule at hand (manifests holding none), subsets are not judged.
    input.destination_rules.clear();
    input.judge_subsets = false;
    assert_eq!(analyze(&input), []);
}

#[test]
fn hosts_are_judged_only_when_the_services_are_known() {
    let route = reviews_to("v1");
    let rule = dr("ratings", "ratings", &["v1"]);
    let mut input = Input {
        virtual_services: vec![&route],
        destination_rules: vec![&rule],
        domain_suffix: "cluster.local",
        ..Input::default()
    };
    assert_eq!(analyze(&input), []);
    input.services = services(&["ratings.default.svc.cluster.local"]);
    assert_eq!(
        codes(&analyze(&input)),
        [
            ("IST0101", "reviews", "spec.hosts[0]"),
            (
                "IST0101",
                "reviews",
                "spec.http[0].route[0].destination.host"
            ),
        ]
    );
    // A cluster with another DNS suffix resolves short names under it.
    input.services = services(&[
        "reviews.default.svc.corp.example",
        "ratings.default.svc.corp.example",
    ]);
    input.domain_suffix = "corp.example";
    assert_eq!(analyze(&input), []);
}

#[test]
fn gateways_are_looked_for_and_must_offer_the_hosts() {
    let route = vs(
        "web",
        json!({"hosts": ["web.example.com"], "gateways": ["edge", "missing"],
               "http": [{"route": [{"destination": {"host": "web"}}]}]}),
    );
    let gateway = match config(
        Kind::Gateway,
        json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
               "metadata": {"name": "edge", "namespace": "default"},
               "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
                   {"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                    "hosts": ["api.example.com"]}]}}),
    ) {
        Config::Gateway(g) => g,
        other => panic!("{other:?}"),
    };
    let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    let input = Input {
        virtual_services: vec![&route],
        gateways: vec![&gateway],
        gateway_names: HashSet::from(["default/edge".to_owned()]),
        pods: Some(vec![Pod {
            namespace: "default",
            name: "web-1",
            labels: &labels,
        }]),
        domain_suffix: "cluster.local",
        ..Input::default()
    };
    let found = analyze(&input);
    assert_eq!(
        codes(&found),
        [
            ("IST0132", "web", "spec.hosts"),
            ("IST0101", "web", "spec.gateways[1]"),
            ("IST0101", "edge", "spec.selector"),
        ]
    );
    assert_eq!(found[0].code.level, Level::Warning);
}

#[test]
fn overlapping_sidecars_are_errors_and_a_selector_must_pick_a_pod() {
    let a = sidecar("a", None);
    let b = sidecar("b", None);
    let c = sidecar("c", Some(json!({"app": "web"})));
    let d = sidecar("d", Some(json!({"app": "web"})));
    let e = sidecar("e", Some(json!({"app": "gone"})));
    let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    let input = Input {
        sidecars: vec![&a, &b, &c, &d, &e],
        pods: Some(vec![Pod {
            namespace: "default",
            name: "web-1",
            labels: &labels,
        }]),
        domain_suffix: "cluster.local",
        ..Input::default()
    };
    let found = analyze(&input);
    assert_eq!(
        codes(&found),
        [
            ("IST0111", "a", ""),
            ("IST0111", "b", ""),
            ("IST0110", "c", "spec.workloadSelector"),
            ("IST0110", "d", "spec.workloadSelector"),
            ("IST0101", "e", "spec.workloadSelector"),
        ]
    );
    assert!(
        found[2].description.contains("[c d]"),
        "{}",
        found[2].description
    );
}

#[test]
fn a_published_snapshot_is_analyzed_by_object() {
    let mut index = Index::default();
    let apply = |index: &mut Index, value: Value| {
        index.apply(Object::from_json(value, "default").expect("object"));
    };
    apply(
        &mut index,
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "reviews", "namespace": "default"},
               "spec": {"ports": [{"port": 9080, "name": "http"}], "selector": {"app": "reviews"}}}),
    );
    apply(
        &mut index,
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
               "metadata": {"name": "reviews", "namespace": "default"},
               "spec": {"hosts": ["reviews"], "http": [{"route": [
                   {"destination": {"host": "reviews", "subset": "v9"}}]}]}}),
    );
    let (snapshot, _) = index.publish();
    let found = by_object(&snapshot);
    let id = ObjectRef {
        kind: Kind::VirtualService,
        namespace: "default".into(),
        name: "reviews".into(),
    };
    assert_eq!(
        found.get(&id).map(|m| codes(m)),
        Some(vec![(
            "IST0101",
            "reviews",
            "spec.http[0].route[0].destination.subset"
        )])
    );
    apply(
        &mut index,
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
               "metadata": {"name": "reviews", "namespace": "default"},
               "spec": {"host": "reviews", "subsets": [{"name": "v9", "labels": {"version": "v9"}}]}}),
    );
    let (snapshot, _) = index.publish();
    assert!(by_object(&snapshot).is_empty());
}
