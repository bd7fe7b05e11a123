//! PeerAuthentication: Istio's validation (the CRD's schema and CEL rules, then
//! `ValidatePeerAuthentication`), and its precedence (`ComposePeerAuthentication`) over the
//! policies an index holds.

use std::collections::BTreeMap;

use serde_json::Value;
use sextant_index::{Index, Object, check, manifest};
use sextant_model::{Kind, MtlsMode};

fn object(version: &str, name: &str, namespace: &str, spec: &str) -> Value {
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    let text = format!(
        "apiVersion: security.istio.io/{version}\nkind: PeerAuthentication\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{indented}"
    );
    manifest::parse_documents(&text).expect("YAML")[0]
        .value
        .clone()
}

/// The errors of checking `spec`, as `path: message`.
fn errors(spec: &str) -> Vec<String> {
    let checked = check::check_istio_object(
        Kind::PeerAuthentication,
        &object("v1", "case", "default", spec),
    );
    assert_eq!(checked.config.is_some(), checked.errors.is_empty());
    checked
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect()
}

#[test]
fn both_served_versions_are_read_and_others_are_not() {
    for version in ["v1", "v1beta1"] {
        assert_eq!(
            check::classify(
                &format!("security.istio.io/{version}"),
                "PeerAuthentication"
            ),
            check::ObjectKind::Istio(Kind::PeerAuthentication)
        );
    }
    assert_eq!(
        check::classify("security.istio.io/v1alpha1", "PeerAuthentication"),
        check::ObjectKind::UnservedVersion(Kind::PeerAuthentication)
    );
    let checked = check::check_istio_object(
        Kind::PeerAuthentication,
        &object(
            "v1beta1",
            "reviews",
            "default",
            "selector: {matchLabels: {app: reviews}}\nmtls: {mode: STRICT}\nportLevelMtls: {\"9080\": {mode: DISABLE}, \"8080\": {}}",
        ),
    );
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);
    let Some(check::Config::PeerAuthentication(pa)) = checked.config else {
        panic!("a PeerAuthentication");
    };
    assert_eq!(pa.mode, MtlsMode::Strict);
    assert_eq!(
        pa.port_modes,
        BTreeMap::from([(8080, MtlsMode::Unset), (9080, MtlsMode::Disable)])
    );
    assert_eq!(pa.selector.as_ref().map(BTreeMap::len), Some(1));
}

#[test]
fn invalid_policies_are_refused_at_the_field_at_fault() {
    let cases: &[(&str, &str)] = &[
        (
            "portLevelMtls: {\"9080\": {mode: DISABLE}}",
            "portLevelMtls requires selector",
        ),
        (
            "selector: {matchLabels: {app: a}}\nportLevelMtls: {\"0\": {mode: DISABLE}}",
            "port must be between 1-65535",
        ),
        (
            "selector: {matchLabels: {app: a}}\nportLevelMtls: {\"70000\": {mode: DISABLE}}",
            "port must be between 1-65535",
        ),
        (
            "selector: {matchLabels: {app: a}}\nportLevelMtls: {}",
            "spec.portLevelMtls",
        ),
        ("mtls: {mode: SOMETIMES}", "spec.mtls.mode"),
        (
            "selector: {matchLabels: {'app*': a}}",
            "wildcard not allowed in label key match",
        ),
        (
            "selector: {matchLabels: {app: 'a*'}}",
            "wildcard not allowed in label value match",
        ),
        ("mtls: {mode: STRICT, extra: 1}", "spec.mtls"),
    ];
    for (spec, expected) in cases {
        let errors = errors(spec);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{spec}: expected {expected:?} in {errors:?}"
        );
    }
}

#[test]
fn istios_own_semantic_rules_hold_without_the_schema() {
    // The CEL rules catch these at the API server; `ValidatePeerAuthentication` names them
    // too, for objects that never passed one (files, `sextant validate`).
    let pa: sextant_api::PeerAuthentication = serde_json::from_value(object(
        "v1",
        "case",
        "default",
        "portLevelMtls: {\"0\": {mode: DISABLE}, \"x\": {}, \"+80\": {}, \"080\": {}}",
    ))
    .expect("the type reads it");
    let invalid = sextant_index::parse::peer_authentication(&pa).expect_err("invalid");
    let messages: Vec<String> = invalid.errors.iter().map(ToString::to_string).collect();
    for expected in [
        "spec.portLevelMtls: mesh/namespace peer authentication cannot have port level mTLS",
        "spec.portLevelMtls[0]: port \"0\" must be in range 1..65535",
        "spec.portLevelMtls[x]: port \"x\" must be in range 1..65535",
        "spec.portLevelMtls[+80]: port \"+80\" must be in range 1..65535",
        "spec.portLevelMtls[080]: port \"080\" must be in range 1..65535",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(expected)),
            "{expected:?} in {messages:?}"
        );
    }
    let empty: sextant_api::PeerAuthentication = serde_json::from_value(object(
        "v1",
        "case",
        "default",
        "selector: {}\nmtls: {mode: STRICT}",
    ))
    .expect("the type reads it");
    let parsed = sextant_index::parse::peer_authentication(&empty).expect("valid");
    assert_eq!(parsed.value.selector, None, "an empty selector selects all");
    assert!(
        parsed.warnings[0]
            .message
            .contains("workload selector specified without labels"),
        "{:?}",
        parsed.warnings
    );
}

fn index(policies: &[(&str, &str, &str, &str)]) -> std::sync::Arc<sextant_model::Snapshot> {
    let mut index = Index::default();
    for (name, namespace, created, spec) in policies {
        let mut value = object("v1", name, namespace, spec);
        value["metadata"]["creationTimestamp"] = Value::String((*created).to_owned());
        index.apply(Object::from_json(value, "default").expect("a PeerAuthentication"));
    }
    assert!(index.invalid().is_empty(), "{:?}", index.invalid());
    index.publish().0
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

const T1: &str = "2026-01-01T00:00:00Z";
const T2: &str = "2026-02-01T00:00:00Z";

#[test]
fn modes_resolve_with_istios_precedence() {
    let reviews = labels(&[("app", "reviews")]);
    // Nothing: PERMISSIVE.
    let s = index(&[]);
    assert_eq!(
        s.workload_mtls("default", &reviews).mode,
        MtlsMode::Permissive
    );

    // Mesh STRICT; a namespace policy left UNSET inherits it; another namespace's DISABLE
    // does not reach this one.
    let s = index(&[
        ("mesh", "istio-system", T1, "mtls: {mode: STRICT}"),
        ("ns", "default", T1, "mtls: {mode: UNSET}"),
        ("other", "other", T1, "mtls: {mode: DISABLE}"),
    ]);
    assert_eq!(s.workload_mtls("default", &reviews).mode, MtlsMode::Strict);
    assert_eq!(s.workload_mtls("other", &reviews).mode, MtlsMode::Disable);
    assert_eq!(s.service_mtls("other"), MtlsMode::Disable);

    // The oldest namespace policy counts; a workload policy overrides it for the workloads
    // it selects only; its port-level modes apply to their ports, UNSET ones inheriting.
    let s = index(&[
        ("newer", "default", T2, "mtls: {mode: STRICT}"),
        ("older", "default", T1, "mtls: {mode: DISABLE}"),
        (
            "reviews",
            "default",
            T1,
            "selector: {matchLabels: {app: reviews}}\nmtls: {mode: PERMISSIVE}\nportLevelMtls: {\"9080\": {mode: STRICT}, \"9090\": {mode: UNSET}}",
        ),
    ]);
    let m = s.workload_mtls("default", &reviews);
    assert_eq!(m.mode, MtlsMode::Permissive);
    assert_eq!(m.port(9080), MtlsMode::Strict);
    assert_eq!(m.port(9090), MtlsMode::Permissive);
    assert_eq!(m.port(1), MtlsMode::Permissive);
    let ratings = labels(&[("app", "ratings")]);
    assert_eq!(s.workload_mtls("default", &ratings).mode, MtlsMode::Disable);
    // The client side's hint ignores workload policies.
    assert_eq!(s.service_mtls("default"), MtlsMode::Disable);

    // A policy with a selector in the root namespace is ignored, even for its own workloads.
    let s = index(&[(
        "root-selector",
        "istio-system",
        T1,
        "selector: {matchLabels: {app: reviews}}\nmtls: {mode: STRICT}",
    )]);
    assert_eq!(
        s.workload_mtls("istio-system", &reviews).mode,
        MtlsMode::Permissive
    );
    assert_eq!(
        s.workload_mtls("default", &reviews).mode,
        MtlsMode::Permissive
    );
}

#[test]
fn the_root_namespace_is_configurable() {
    let mut index = Index::default().with_root_namespace("mesh-root");
    for (name, ns, mode) in [
        ("a", "mesh-root", "STRICT"),
        ("b", "istio-system", "DISABLE"),
    ] {
        let value = object("v1", name, ns, &format!("mtls: {{mode: {mode}}}"));
        index.apply(Object::from_json(value, "default").expect("object"));
    }
    let snapshot = index.publish().0;
    assert_eq!(snapshot.root_namespace, "mesh-root");
    assert_eq!(
        snapshot.workload_mtls("default", &BTreeMap::new()).mode,
        MtlsMode::Strict
    );
    // istio-system is an ordinary namespace now: its policy is only its own.
    assert_eq!(
        snapshot
            .workload_mtls("istio-system", &BTreeMap::new())
            .mode,
        MtlsMode::Disable
    );
}

#[test]
fn a_policy_without_a_spec_is_an_empty_one_and_rule_failures_are_not_repeated() {
    let mut value = object("v1", "bare", "default", "{}");
    value.as_object_mut().expect("object").remove("spec");
    let checked = check::check_istio_object(Kind::PeerAuthentication, &value);
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);
    let object = Object::from_json(value, "default").expect("read");
    let mut index = Index::default();
    index.apply(object);
    assert!(index.invalid().is_empty(), "{:?}", index.invalid());
    // A key that is no number: Sextant's own message, not the CEL rule's evaluation error.
    let errors =
        errors("selector: {matchLabels: {app: a}}\nportLevelMtls: {\"http\": {mode: STRICT}}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.portLevelMtls[http]")),
        "{errors:?}"
    );
    assert!(
        !errors.iter().any(|e| e.contains("evaluating rule")),
        "{errors:?}"
    );
}
