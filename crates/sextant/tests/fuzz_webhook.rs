//! Fuzz target for admission webhook bodies (`POST /validate` on port 15017): arbitrary bytes,
//! JSON that is almost an AdmissionReview, and AdmissionReviews whose object is a generated
//! VirtualService, DestinationRule or other kind, nested deep under long keys or not.
//! Properties: nothing panics; a body that is not an AdmissionReview is refused with a reason;
//! every answer carries the request's uid and, when it denies, a message; and an object past
//! the input limits is denied naming the bound.
//!
//! A few hundred cases by default; `PROPTEST_CASES=20000` (or `make fuzz`) for long runs.
//! See docs/FUZZING.md.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sextant::webhook::answer;

/// `cases` by default; `PROPTEST_CASES` when set.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

const KEYS: &[&str] = &[
    "hosts",
    "http",
    "tcp",
    "tls",
    "match",
    "route",
    "destination",
    "host",
    "subset",
    "port",
    "number",
    "weight",
    "uri",
    "prefix",
    "regex",
    "timeout",
    "retries",
    "subsets",
    "name",
    "labels",
    "trafficPolicy",
    "loadBalancer",
    "simple",
    "x",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop::sample::select(vec!["reviews", "v1", "1s", "(", "*", "", "ROUND_ROBIN"])
            .prop_map(|s| json!(s)),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(KEYS).prop_map(str::to_owned),
                        (1usize..2000).prop_map(|n| "k".repeat(n)),
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|e| Value::Object(e.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Nesting `depth` levels under `key`-byte keys with `siblings` each: the filed attack's shape.
fn deep(depth: usize, key: usize, siblings: usize) -> Value {
    let mut value = json!(1);
    for level in 0..depth {
        let mut map: Map<String, Value> =
            (0..siblings).map(|i| (format!("s{i}"), json!(i))).collect();
        map.insert(format!("d{level}{}", "x".repeat(key)), value);
        value = Value::Object(map);
    }
    value
}

fn object() -> impl Strategy<Value = Value> {
    let spec = prop_oneof![
        3 => json_value(),
        1 => (0usize..120, 0usize..3000, 0usize..60).prop_map(|(d, k, s)| deep(d, k, s)),
    ];
    (
        prop::sample::select(vec![
            ("networking.istio.io/v1", "VirtualService"),
            ("networking.istio.io/v1beta1", "DestinationRule"),
            ("networking.istio.io/v1alpha0", "VirtualService"),
            ("v1", "ConfigMap"),
            ("", ""),
        ]),
        spec,
    )
        .prop_map(|((api, kind), spec)| {
            json!({"apiVersion": api, "kind": kind,
                   "metadata": {"name": "x", "namespace": "default"}, "spec": spec})
        })
}

/// The answer's properties; `uid` is the request's.
fn answered(body: &[u8], uid: Option<&str>) -> Result<(), TestCaseError> {
    match answer(body) {
        Ok(review) => {
            let response = &review["response"];
            prop_assert_eq!(review["kind"].as_str(), Some("AdmissionReview"));
            prop_assert_eq!(response["uid"].as_str(), uid);
            let allowed = response["allowed"].as_bool();
            prop_assert!(allowed.is_some());
            if allowed == Some(false) {
                let message = response["status"]["message"].as_str().unwrap_or_default();
                prop_assert!(!message.is_empty());
            }
        }
        Err(why) => {
            prop_assert!(uid.is_none() || why.contains("recursion"), "{}", why);
            prop_assert!(!why.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fuzz_webhook_arbitrary_bodies_are_refused_with_a_reason(
        bytes in prop::collection::vec(any::<u8>(), 0..256)
    ) {
        answered(&bytes, None)?;
    }

    #[test]
    fn fuzz_webhook_almost_reviews_are_refused_with_a_reason(v in json_value()) {
        let body = serde_json::to_vec(&json!({"kind": "AdmissionReview", "request": v}))
            .expect("JSON");
        let uid = serde_json::from_slice::<Value>(&body).ok()
            .and_then(|r| r["request"]["uid"].as_str().map(str::to_owned));
        answered(&body, uid.as_deref())?;
    }

    #[test]
    fn fuzz_webhook_reviews_are_answered_with_their_uid(object in object(), create in any::<bool>()) {
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "operation": if create { "CREATE" } else { "UPDATE" },
                        "object": object}});
        let body = serde_json::to_vec(&review).expect("JSON");
        answered(&body, Some("u-1"))?;
    }
}

#[test]
fn objects_nested_past_the_input_limits_are_denied_naming_the_bound() {
    let review = json!({"kind": "AdmissionReview",
        "request": {"uid": "u-2", "object": {"apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService", "spec": deep(100, 2000, 60)}}});
    let out = answer(&serde_json::to_vec(&review).expect("JSON")).expect("answered");
    assert_eq!(out["response"]["allowed"], false);
    let message = out["response"]["status"]["message"]
        .as_str()
        .expect("message");
    assert!(message.contains("--max-input-expanded-bytes"), "{message}");
}
