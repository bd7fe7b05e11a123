//! Fuzz target for manifest files (the untrusted input of `sextant validate` and the
//! directory source): generated YAML with anchors, aliases, tags, duplicate keys, deep and
//! wide nesting and long keys goes through the reader and on into the index's object
//! parser and `index::check`. Properties: nothing panics; a refusal names what was wrong; and
//! the work is bounded: whatever the reader accepts is within the limits it was given (the
//! same limits the webhook and the watches apply to JSON).
//!
//! A few hundred cases by default so CI runs it in seconds; `PROPTEST_CASES=20000` (or
//! `make fuzz`) for long runs. See docs/FUZZING.md.

use proptest::prelude::*;
use serde_json::Value;
use sextant_index::{
    Object, check,
    manifest::{self, Bound, Limits, ManifestError},
};

/// `cases` by default; `PROPTEST_CASES` when set.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

/// Small limits, so that generated inputs reach them.
const LIMITS: Limits = Limits {
    input_bytes: 256 * 1024,
    depth: 24,
    nodes: 5_000,
    expanded_bytes: 200_000,
};

#[derive(Clone, Debug)]
enum Node {
    Scalar(&'static str),
    Tagged(&'static str, &'static str),
    Alias(u8),
    Anchored(u8, Box<Node>),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

const SCALARS: &[&str] = &[
    "1", "-3", "0x1f", "1.5", ".5", "true", "~", "null", "''", "\"a b\"", "reviews", "v1", "1ms",
    "'*'", "x",
];

const TAGS: &[&str] = &[
    "!!int", "!!str", "!!bool", "!!float", "!!null", "!!map", "!x",
];

const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "spec",
    "hosts",
    "http",
    "route",
    "destination",
    "host",
    "weight",
    "subsets",
    "a",
    "b",
    "",
];

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        6 => prop::sample::select(SCALARS).prop_map(Node::Scalar),
        1 => (prop::sample::select(TAGS), prop::sample::select(SCALARS))
            .prop_map(|(t, s)| Node::Tagged(t, s)),
        2 => (0u8..4).prop_map(Node::Alias),
    ];
    leaf.prop_recursive(8, 200, 8, |inner| {
        let key = prop_oneof![
            prop::sample::select(KEYS).prop_map(str::to_owned),
            // Implicit keys are at most 1,024 characters in YAML.
            (1usize..1000).prop_map(|n| "k".repeat(n)),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Node::Seq),
            prop::collection::vec((key, inner.clone()), 0..8).prop_map(Node::Map),
            ((0u8..4), inner).prop_map(|(a, n)| Node::Anchored(a, Box::new(n))),
        ]
    })
}

fn render(node: &Node, out: &mut String) {
    match node {
        Node::Scalar(s) => out.push_str(s),
        Node::Tagged(t, s) => {
            out.push_str(t);
            out.push(' ');
            out.push_str(s);
        }
        Node::Alias(a) => out.push_str(&format!("*a{a}")),
        Node::Anchored(a, n) => {
            out.push_str(&format!("&a{a} "));
            render(n, out);
        }
        Node::Seq(items) => {
            out.push('[');
            for (i, n) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(n, out);
            }
            out.push(']');
        }
        Node::Map(fields) => {
            out.push('{');
            for (i, (k, n)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&format!("{k:?}: "));
                render(n, out);
            }
            out.push('}');
        }
    }
}

/// A stream of documents: each a bare node, or an Istio object whose spec is the node;
/// either way after the anchors its aliases may name.
fn stream() -> impl Strategy<Value = String> {
    let anchors = prop::collection::vec(node(), 4).prop_map(|targets| {
        let mut out = String::from("[");
        for (i, t) in targets.iter().enumerate() {
            out.push_str(&format!("&a{i} "));
            // Aliases inside an anchor's own value name the previous ones, if any.
            render(t, &mut out);
            out.push_str(", ");
        }
        out.push(']');
        out
    });
    prop::collection::vec(
        (
            prop::sample::select(&["", "VirtualService", "DestinationRule", "Service"][..]),
            anchors,
            node(),
        ),
        1..4,
    )
    .prop_map(|docs| {
        let mut text = String::new();
        for (kind, anchors, n) in docs {
            text.push_str("---\n");
            let mut body = String::new();
            render(&n, &mut body);
            if kind.is_empty() {
                text.push_str(&format!("[{anchors}, {body}]"));
            } else {
                let api = if kind == "Service" {
                    "v1"
                } else {
                    "networking.istio.io/v1"
                };
                text.push_str(&format!(
                    "apiVersion: {api}\nkind: {kind}\nanchors: {anchors}\nmetadata: {{name: x, namespace: default}}\nspec: {body}"
                ));
            }
            text.push('\n');
        }
        text
    })
}

/// The filed attack's shape at random sizes: nested mappings under long keys, each level
/// with many short siblings.
fn deep_long_keys() -> impl Strategy<Value = String> {
    (0usize..60, 0usize..1000, 0usize..200).prop_map(|(depth, key, siblings)| {
        let names: Vec<String> = (0..siblings).map(|i| format!("s{i}")).collect();
        let mut text = String::new();
        for level in 0..depth {
            text.push('{');
            for n in &names {
                text.push_str(n);
                text.push(',');
            }
            text.push_str(&format!("d{level}{}: ", "x".repeat(key)));
        }
        text.push('1');
        text.push_str(&"}".repeat(depth));
        text
    })
}

/// Reads `text` within [`LIMITS`] and checks what comes out: every property of the target.
fn read_and_check(text: &str) -> Result<(), TestCaseError> {
    match manifest::parse_documents_within(text, &LIMITS) {
        Ok(docs) => {
            for doc in docs {
                // Accepted means within the limits, as the JSON readers count them.
                prop_assert_eq!(manifest::check_value(&doc.value, &LIMITS), Ok(()));
                let _ = doc.line_of("spec.http[0].route[0].destination.host");
                into_index(doc.value)?;
            }
        }
        Err(e) => {
            let message = e.to_string();
            prop_assert!(message.starts_with("line "), "{}", message);
            if let ManifestError::Limit { exceeded, .. } = &e {
                prop_assert!(message.contains(exceeded.bound.flag()), "{}", message);
            }
        }
    }
    Ok(())
}

/// What the directory source and `sextant validate` do with a document.
fn into_index(value: Value) -> Result<(), TestCaseError> {
    let api = value["apiVersion"].as_str().unwrap_or_default().to_owned();
    let kind = value["kind"].as_str().unwrap_or_default().to_owned();
    if let check::ObjectKind::Istio(k) = check::classify(&api, &kind) {
        let checked = check::check_istio_object(k, &value);
        prop_assert_eq!(checked.config.is_some(), checked.errors.is_empty());
        for e in &checked.errors {
            prop_assert!(!e.message.is_empty());
        }
    }
    if let Err(e) = Object::from_json(value, "default") {
        prop_assert!(!e.to_string().is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fuzz_manifest_streams_are_read_checked_or_refused_clearly(text in stream()) {
        read_and_check(&text)?;
    }

    #[test]
    fn fuzz_manifest_deep_long_keys_stay_within_the_limits(text in deep_long_keys()) {
        read_and_check(&text)?;
    }

    #[test]
    fn fuzz_manifest_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        read_and_check(&String::from_utf8_lossy(&bytes))?;
    }
}

#[test]
fn alias_expansion_is_charged_where_it_lands() {
    // Each alias repeats a 2,000-byte string under a long path: refused by expanded size,
    // though the text is short and the node count small.
    let mut text = format!("a: &s {}\nb: [", "x".repeat(2000));
    text.push_str(&vec!["*s"; 200].join(", "));
    text.push_str("]\n");
    let err = manifest::parse_documents_within(&text, &LIMITS).expect_err("refused");
    let ManifestError::Limit { exceeded, .. } = err else {
        panic!("{err}");
    };
    assert_eq!(exceeded.bound, Bound::ExpandedBytes);
}
