//! The sidecar's bootstrap as the YAML text of Envoy's `--config-yaml`. Block mappings and
//! sequences keep it readable; every string is double-quoted, with every character outside
//! printable ASCII (and `"` and `\`) escaped, so that no value, a user's `proxyMetadata`
//! included, can end its scalar, start a line of its own, or be folded, trimmed or retyped by
//! Envoy's YAML parser (yaml-cpp): the text parses back to exactly the value given. (A plain
//! or block scalar cannot promise that: `|-` drops trailing newlines and needs an indentation
//! indicator when the first line starts with a space.)

use std::fmt::Write;

use serde_json::Value;

/// `value` as a YAML document (without `---`).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => mapping(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => sequence(&mut out, items, 0),
        scalar => {
            write_scalar(&mut out, scalar);
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Whether `value` is written on its key's (or dash's) line.
fn is_inline(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => true,
    }
}

fn mapping(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (key, value) in map {
        pad(out, indent);
        write_key(out, key);
        out.push(':');
        if is_inline(value) {
            out.push(' ');
            write_scalar(out, value);
            out.push('\n');
        } else {
            out.push('\n');
            block(out, value, indent + 2);
        }
    }
}

fn sequence(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        if is_inline(item) {
            pad(out, indent);
            out.push_str("- ");
            write_scalar(out, item);
            out.push('\n');
        } else {
            // The item's first line goes after the dash: `- key: value`.
            let start = out.len();
            block(out, item, indent + 2);
            out.replace_range(
                start..start + indent + 2,
                &format!("{}- ", " ".repeat(indent)),
            );
        }
    }
}

fn block(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) => mapping(out, map, indent),
        Value::Array(items) => sequence(out, items, indent),
        _ => unreachable!("only collections are written as blocks"),
    }
}

/// A key as a plain scalar when it reads as the same string in YAML 1.1 and 1.2 (protobuf
/// field names such as `static_resources`), else double-quoted.
fn write_key(out: &mut String, key: &str) {
    let plain = key
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !matches!(
            key.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        out.push_str(key);
    } else {
        quoted(out, key);
    }
}

fn write_scalar(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => quoted(out, s),
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
    }
}

/// `text` double-quoted: printable ASCII as it is, everything else as a YAML escape (`\n`,
/// `\x07`, `\u00e9`, `\U0001f600`), which yaml-cpp and every YAML 1.1 or 1.2 reader decode.
fn quoted(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x1_0000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn parsed(text: &str) -> Value {
        let docs = sextant_index::manifest::parse_documents(text).expect("valid YAML");
        docs.into_iter().next().expect("one document").value
    }

    #[test]
    fn blocks_read_as_envoy_bootstraps_do() {
        let value = json!({
            "node": {"id": "sidecar~$(INSTANCE_IP)~p.ns~ns.svc.cluster.local", "metadata": {"A": "1"}},
            "static_resources": {"clusters": [
                {"name": "xds", "load_assignment": {"endpoints": [{"lb_endpoints": []}]}},
                {"name": "other", "port": 15012, "tls": true, "nothing": null, "empty": {}},
            ]},
            "list": [[1, 2], ["a"]],
        });
        let text = to_yaml(&value);
        assert!(
            text.starts_with("node:\n  id: \"sidecar~$(INSTANCE_IP)~"),
            "{text}"
        );
        assert!(
            text.contains("  clusters:\n    - name: \"xds\"\n"),
            "{text}"
        );
        assert!(text.contains("- - 1\n"), "{text}");
        assert_eq!(parsed(&text), value);
    }

    #[test]
    fn values_that_broke_block_scalars_round_trip() {
        for value in [
            " a\nb",
            "a\n\n",
            "\n",
            "\nx",
            "a\n---\nb",
            "a\n...\nb",
            "\u{feff}ab",
            "a\u{85}b",
            "a\u{2028}b",
            "a\u{fffe}b",
            "a\0b",
            "\u{1f600}",
            "true",
            "1e3",
            "~",
            "key: value",
            "\"'\\",
        ] {
            let doc = json!({"metadata": {value: value}});
            let text = to_yaml(&doc);
            assert!(text.is_ascii(), "{text}");
            assert_eq!(text.lines().count(), 2, "{text}");
            assert_eq!(parsed(&text), doc, "{value:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any string, as a value or a key, reads back as itself.
        #[test]
        fn any_string_round_trips(
            value in any::<String>(),
            key in any::<String>(),
            awkward in "[ \n\t\r\"'\\\\:#&*!|>%@`{}\\[\\],-]{0,12}",
        ) {
            let doc = json!({"metadata": {key.clone(): value, "awkward": awkward},
                             "list": [key]});
            let text = to_yaml(&doc);
            prop_assert!(text.is_ascii());
            prop_assert_eq!(parsed(&text), doc);
        }
    }
}
