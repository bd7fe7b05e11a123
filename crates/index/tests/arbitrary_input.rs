//! Arbitrary YAML and JSON never panic the reader, the schema check or the semantic parsers,
//! and every input is handled in bounded time (the reader's limits cap the work).

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sextant_index::{check, manifest};
use sextant_model::Kind;

/// Field names of the Istio API, so generated objects reach deep into the parsers.
const KEYS: &[&str] = &[
    "hosts",
    "gateways",
    "http",
    "tcp",
    "tls",
    "exportTo",
    "match",
    "route",
    "destination",
    "host",
    "subset",
    "port",
    "number",
    "weight",
    "redirect",
    "directResponse",
    "delegate",
    "rewrite",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirrors",
    "mirrorPercentage",
    "corsPolicy",
    "headers",
    "uri",
    "exact",
    "prefix",
    "regex",
    "status",
    "body",
    "string",
    "bytes",
    "attempts",
    "retryOn",
    "perTryTimeout",
    "abort",
    "delay",
    "fixedDelay",
    "httpStatus",
    "grpcStatus",
    "percentage",
    "value",
    "trafficPolicy",
    "subsets",
    "name",
    "labels",
    "loadBalancer",
    "simple",
    "consistentHash",
    "httpCookie",
    "maglev",
    "tableSize",
    "connectionPool",
    "outlierDetection",
    "portLevelSettings",
    "localityLbSetting",
    "distribute",
    "failover",
    "to",
    "from",
    "warmup",
    "duration",
    "sniHosts",
    "workloadSelector",
    "matchLabels",
    "set",
    "add",
    "remove",
    "request",
    "response",
    "allowOrigins",
    "maxAge",
    "tunnel",
    "targetHost",
    "targetPort",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1.0e6f64..1.0e6).prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "0s",
            "1ms",
            "1.5s",
            "-3s",
            "10h",
            "*",
            "a.b.c",
            "reviews",
            "v1",
            "(",
            ".*",
            "ROUND_ROBIN",
            "UPGRADE",
            "MUTUAL",
            "",
            "5xx,retriable-4xx",
            "%REQ(x)%",
            "~",
            ".",
            "10.0.0.0/8",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(KEYS).prop_map(str::to_owned),
                        "[a-z]{1,6}"
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn checking_arbitrary_objects_never_panics(spec in value(), dr in any::<bool>()) {
        let kind = if dr { Kind::DestinationRule } else { Kind::VirtualService };
        let object = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": kind.as_str(),
            "metadata": {"name": "x", "namespace": "default"},
            "spec": spec,
        });
        let checked = check::check_istio_object(kind, &object);
        // A valid object yields a model value; an invalid one says why.
        prop_assert_eq!(checked.config.is_some(), checked.errors.is_empty());
    }

    #[test]
    fn emitted_yaml_reads_back_identically(v in value()) {
        let text = manifest::to_yaml(std::slice::from_ref(&v));
        let docs = manifest::parse_documents(&text).expect("our own YAML parses");
        prop_assert_eq!(&docs[0].value, &v);
    }

    #[test]
    fn reading_arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = manifest::parse_documents(&text);
    }

    #[test]
    fn reading_yaml_shaped_text_never_panics(
        lines in prop::collection::vec(
            ("[ ]{0,6}", prop_oneof![Just("- "), Just("a: "), Just("? "), Just("&x "), Just("*x"), Just("")], "[a-z0-9:{}\\[\\],'\"&*!|>-]{0,10}"),
            0..20,
        )
    ) {
        let text: String = lines.into_iter().map(|(i, p, r)| format!("{i}{p}{r}\n")).collect();
        let _ = manifest::parse_documents(&text);
    }
}
