//! Multi-document YAML (or JSON) manifests read into JSON values, remembering the line each field
//! came from so that errors can point at it, as a compiler would.
//!
//! Input is untrusted: its size, nesting depth, number of nodes and expanded size (aliases
//! counted expanded, every field under its full path) are bounded by [`Limits`], shared with
//! the webhook and the watches ([`check_value`]), and the table of field lines stores each
//! field once, so a hostile file costs time and memory linear in its size.

mod limits;
mod lines;

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser, Tag},
    scanner::{Marker, TScalarStyle},
};

pub use limits::{
    Bound, Exceeded, Limits, MAX_DEPTH, MAX_EXPANDED_BYTES, MAX_INPUT_BYTES, MAX_NODES, check_value,
};
use limits::{Budget, index_segment_bytes, key_segment_bytes, measure};
use lines::{FieldId, FieldLines, Segment};

/// One document of a manifest stream.
#[derive(Clone, Debug)]
pub struct Document {
    /// Position of the document in its stream, from 0.
    pub index: usize,
    /// Line (from 1) where the document's content starts.
    pub line: usize,
    /// The document as JSON. `Null` for an empty document.
    pub value: Value,
    lines: FieldLines,
    prefix: Vec<Segment>,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The text is not well-formed YAML.
    #[error("line {line}: invalid YAML: {message}")]
    Syntax { line: usize, message: String },
    /// One of the reader's [`Limits`] was passed.
    #[error("line {line}: {exceeded}")]
    Limit { line: usize, exceeded: Exceeded },
    /// A construct this reader does not accept (duplicate keys, unknown anchors, ...).
    #[error("line {line}: {message}")]
    Unsupported { line: usize, message: String },
}

impl ManifestError {
    /// The line the error points at (from 1).
    pub fn line(&self) -> usize {
        match self {
            ManifestError::Syntax { line, .. }
            | ManifestError::Limit { line, .. }
            | ManifestError::Unsupported { line, .. } => *line,
        }
    }
}

impl Document {
    /// The line of the field at `path` (`spec.http[0].route[1].weight`, `metadata.labels[app]`),
    /// or of its nearest ancestor present in the document.
    pub fn line_of(&self, path: &str) -> usize {
        let line = self
            .lines
            .line_of(self.prefix.iter().cloned().chain(parse_path(path)));
        if line == 0 { self.line } else { line }
    }
}

impl Document {
    /// Makes [`Document::line_of`] look paths up below `prefix` (an item of a `List`).
    pub fn set_prefix(&mut self, prefix: String) {
        self.prefix = parse_path(&prefix);
    }
}

fn parse_path(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').unwrap_or(after.len());
            let inner = &after[..end];
            out.push(match inner.parse::<usize>() {
                Ok(i) => Segment::Index(i),
                Err(_) => Segment::Key(inner.to_owned()),
            });
            rest = after.get(end + 1..).unwrap_or("");
        } else {
            let rest_trim = rest.strip_prefix('.').unwrap_or(rest);
            let end = rest_trim.find(['.', '[']).unwrap_or(rest_trim.len());
            if end > 0 {
                out.push(Segment::Key(rest_trim[..end].to_owned()));
            }
            rest = &rest_trim[end..];
        }
    }
    out
}

/// Reads every document of a YAML stream (JSON is YAML too) within the process's
/// [`Limits::current`].
pub fn parse_documents(text: &str) -> Result<Vec<Document>, ManifestError> {
    parse_documents_within(text, &Limits::current())
}

/// Reads every document of a YAML stream within `limits`: time and memory are linear in the
/// text, and an input passing a limit is refused with [`ManifestError::Limit`].
pub fn parse_documents_within(text: &str, limits: &Limits) -> Result<Vec<Document>, ManifestError> {
    limits
        .check_len(text.len() as u64)
        .map_err(|exceeded| ManifestError::Limit { line: 1, exceeded })?;
    let mut builder = Builder::new(*limits);
    let mut parser = Parser::new_from_str(text);
    // Events are pulled one by one rather than through `Parser::load`, which recurses once per
    // level of nesting: 5,000 levels of `- ` (10 KB) would overflow the stack before the depth
    // bound could refuse them. The builder keeps its own stack, and reading stops at its first
    // error.
    let result = loop {
        match parser.next_token() {
            Ok((event, mark)) => {
                let end = event == Event::StreamEnd;
                builder.on_event(event, mark);
                if end || builder.error.is_some() {
                    break Ok(());
                }
            }
            Err(e) => break Err(e),
        }
    };
    if let Some(err) = builder.error.take() {
        return Err(err);
    }
    result.map_err(|e| ManifestError::Syntax {
        line: e.marker().line(),
        message: e.info().to_owned(),
    })?;
    Ok(builder.documents)
}

/// A field being read: where it is in the line table, and the length of its path.
#[derive(Clone, Copy)]
struct Place {
    field: FieldId,
    path_bytes: usize,
}

/// An anchored value, and what one use of it costs.
struct Anchored {
    value: Value,
    nodes: usize,
    expanded: usize,
}

struct Builder {
    documents: Vec<Document>,
    stack: Vec<Frame>,
    /// The place of every open collection, then of the value being read, if any.
    path: Vec<Place>,
    lines: FieldLines,
    anchors: HashMap<usize, Anchored>,
    doc_line: usize,
    budget: Budget,
    error: Option<ManifestError>,
}

enum Frame {
    Seq {
        items: Vec<Value>,
        anchor: usize,
    },
    Map {
        map: Map<String, Value>,
        key: Option<String>,
        anchor: usize,
    },
}

impl Builder {
    fn new(limits: Limits) -> Builder {
        Builder {
            documents: Vec::new(),
            stack: Vec::new(),
            path: Vec::new(),
            lines: FieldLines::new(0),
            anchors: HashMap::new(),
            doc_line: 0,
            budget: Budget::new(limits),
            error: None,
        }
    }

    fn fail(&mut self, err: ManifestError) {
        if self.error.is_none() {
            self.error = Some(err);
        }
    }

    fn spend(&mut self, nodes: usize, expanded: usize, line: usize) {
        if let Err(exceeded) = self.budget.spend(nodes, expanded) {
            self.fail(ManifestError::Limit { line, exceeded });
        }
    }

    /// The place of the value being read, or the document's for its root.
    fn here(&self) -> Place {
        self.path.last().copied().unwrap_or(Place {
            field: FieldLines::ROOT,
            path_bytes: 0,
        })
    }

    /// Records where the next value starts (for sequence items, enters the item) and spends
    /// one node and the value's path plus `bytes` of the budget.
    fn begin_value(&mut self, line: usize, nodes: usize, bytes: usize) {
        if self.stack.is_empty() {
            self.doc_line = line;
            self.lines = FieldLines::new(line);
        }
        if let Some(Frame::Seq { items, .. }) = self.stack.last() {
            let index = items.len();
            let parent = self.here();
            let field = self.lines.child(parent.field, Segment::Index(index), line);
            self.path.push(Place {
                field,
                path_bytes: parent.path_bytes.saturating_add(index_segment_bytes(index)),
            });
        }
        let path_bytes = self.here().path_bytes;
        self.spend(
            nodes,
            path_bytes.saturating_mul(nodes).saturating_add(bytes),
            line,
        );
    }

    fn end_value(&mut self, value: Value) {
        match self.stack.last_mut() {
            None => {
                let lines = std::mem::replace(&mut self.lines, FieldLines::new(0));
                self.documents.push(Document {
                    index: self.documents.len(),
                    line: self.doc_line,
                    value,
                    lines,
                    prefix: Vec::new(),
                });
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(value);
                self.path.pop();
            }
            Some(Frame::Map { map, key, .. }) => {
                if let Some(k) = key.take() {
                    map.insert(k, value);
                    self.path.pop();
                }
            }
        }
    }

    /// A mapping key: enters the field it names.
    fn key(&mut self, value: Value, line: usize) {
        let k = match value {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let parent = self.here();
        let Some(Frame::Map { map, key, .. }) = self.stack.last_mut() else {
            return;
        };
        if map.contains_key(&k) {
            let message = format!("mapping key {k:?} already defined");
            self.fail(ManifestError::Unsupported { line, message });
            return;
        }
        let path_bytes = parent.path_bytes.saturating_add(key_segment_bytes(&k));
        *key = Some(k.clone());
        let field = self.lines.child(parent.field, Segment::Key(k), line);
        self.path.push(Place { field, path_bytes });
    }

    fn scalar(&mut self, value: Value, anchor: usize, line: usize) {
        // A scalar in key position of a mapping is a key, not a value.
        if self.in_key_position() {
            self.key(value, line);
            return;
        }
        let bytes = value.as_str().map_or(0, str::len);
        self.begin_value(line, 1, bytes);
        if anchor > 0 {
            self.anchor(anchor, &value, line);
        }
        self.end_value(value);
    }

    /// Keeps a copy of `value` for aliases to it, spending what the copy costs.
    fn anchor(&mut self, anchor: usize, value: &Value, line: usize) {
        let (nodes, expanded) = measure(value);
        self.spend(nodes, expanded, line);
        if self.error.is_none() {
            let value = value.clone();
            let anchored = Anchored {
                value,
                nodes,
                expanded,
            };
            self.anchors.insert(anchor, anchored);
        }
    }

    fn alias(&mut self, id: usize, line: usize) {
        let Some(anchored) = self.anchors.get(&id) else {
            self.fail(ManifestError::Unsupported {
                line,
                message: "alias to an unknown anchor".into(),
            });
            return;
        };
        let (nodes, expanded) = (anchored.nodes, anchored.expanded);
        let key = self.in_key_position();
        if key {
            // The key's text is charged again with the path of the value it names.
            self.spend(nodes, expanded, line);
        } else {
            self.begin_value(line, nodes, expanded);
        }
        if self.error.is_some() {
            return;
        }
        let Some(value) = self.anchors.get(&id).map(|a| a.value.clone()) else {
            return;
        };
        if key {
            self.key(value, line);
        } else {
            self.end_value(value);
        }
    }

    fn start_collection(&mut self, sequence: bool, anchor: usize, line: usize) {
        if self.in_key_position() {
            self.fail(ManifestError::Unsupported {
                line,
                message: "complex mapping keys are not supported".into(),
            });
            return;
        }
        if let Err(exceeded) = self.budget.open(self.stack.len()) {
            self.fail(ManifestError::Limit { line, exceeded });
            return;
        }
        self.begin_value(line, 1, 0);
        self.stack.push(if sequence {
            Frame::Seq {
                items: Vec::new(),
                anchor,
            }
        } else {
            Frame::Map {
                map: Map::new(),
                key: None,
                anchor,
            }
        });
    }

    fn end_collection(&mut self, line: usize) {
        let (value, anchor) = match self.stack.pop() {
            Some(Frame::Seq { items, anchor }) => (Value::Array(items), anchor),
            Some(Frame::Map { map, anchor, .. }) => (Value::Object(map), anchor),
            None => return,
        };
        if anchor > 0 {
            self.anchor(anchor, &value, line);
        }
        self.end_value(value);
    }

    fn in_key_position(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        match ev {
            Event::DocumentStart => {
                // Anchors belong to their document.
                self.anchors.clear();
                self.doc_line = line;
                self.lines = FieldLines::new(line);
                self.path.clear();
            }
            Event::DocumentEnd => {
                // `---` followed by nothing yields no content event; keep indices aligned.
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value = resolve_scalar(&text, style, tag.as_ref());
                match value {
                    Ok(v) => self.scalar(v, anchor, line),
                    Err(message) => self.fail(ManifestError::Unsupported { line, message }),
                }
            }
            Event::Alias(id) => self.alias(id, line),
            Event::SequenceStart(anchor, _) => self.start_collection(true, anchor, line),
            Event::MappingStart(anchor, _) => self.start_collection(false, anchor, line),
            Event::SequenceEnd | Event::MappingEnd => self.end_collection(line),
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

/// YAML 1.2 core-schema resolution of a scalar.
fn resolve_scalar(text: &str, style: TScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    if let Some(tag) = tag
        && tag.handle == "tag:yaml.org,2002:"
    {
        return match tag.suffix.as_str() {
            "str" | "binary" | "timestamp" => Ok(Value::String(text.to_owned())),
            "null" => Ok(Value::Null),
            "bool" => parse_bool(text).ok_or_else(|| format!("{text:?} is not a !!bool")),
            "int" => parse_int(text).ok_or_else(|| format!("{text:?} is not an !!int")),
            "float" => parse_float(text)
                .or_else(|| parse_int(text))
                .ok_or_else(|| format!("{text:?} is not a !!float")),
            other => Err(format!("unsupported tag !!{other}")),
        };
    }
    if style != TScalarStyle::Plain {
        return Ok(Value::String(text.to_owned()));
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    Ok(parse_bool(text)
        .or_else(|| parse_int(text))
        .or_else(|| parse_float(text))
        .unwrap_or_else(|| Value::String(text.to_owned())))
}

fn parse_bool(text: &str) -> Option<Value> {
    match text {
        "true" | "True" | "TRUE" => Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => Some(Value::Bool(false)),
        _ => None,
    }
}

fn parse_int(text: &str) -> Option<Value> {
    let (neg, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = if let Some(hex) = digits.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        u64::from_str_radix(oct, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<u64>().ok()?
    } else {
        return None;
    };
    if neg {
        let v = i64::try_from(magnitude).ok()?;
        Some(Value::Number(Number::from(-v)))
    } else {
        Some(Value::Number(Number::from(magnitude)))
    }
}

fn parse_float(text: &str) -> Option<Value> {
    let t = text.strip_prefix(['+', '-']).unwrap_or(text);
    let mantissa_ok = {
        let m = t.split(['e', 'E']).next().unwrap_or("");
        let (int, frac) = m.split_once('.').unwrap_or((m, ""));
        (!int.is_empty() || !frac.is_empty())
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
    };
    if !mantissa_ok || t.starts_with('.') && t.len() == 1 {
        return None;
    }
    let f: f64 = text.parse().ok()?;
    Number::from_f64(f).map(Value::Number)
}

/// Renders JSON values as a YAML stream (documents separated by `---`).
pub fn to_yaml(values: &[Value]) -> String {
    let mut out = String::new();
    for value in values {
        let mut doc = String::new();
        let mut emitter = yaml_rust2::YamlEmitter::new(&mut doc);
        emitter.multiline_strings(true);
        emitter
            .dump(&to_yaml_node(value))
            .expect("writing YAML to a String cannot fail");
        out.push_str(&doc);
        out.push('\n');
    }
    out
}

fn to_yaml_node(value: &Value) -> yaml_rust2::Yaml {
    use yaml_rust2::Yaml;
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(items) => Yaml::Array(items.iter().map(to_yaml_node).collect()),
        Value::Object(map) => Yaml::Hash(
            map.iter()
                .map(|(k, v)| (Yaml::String(k.clone()), to_yaml_node(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_lines_and_field_lines() {
        let text = "a: 1\n---\n# comment\nkind: X\nspec:\n  http:\n  - route:\n    - weight: 5\n";
        let docs = parse_documents(text).expect("valid YAML");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].value["spec"]["http"][0]["route"][0]["weight"], 5);
        assert_eq!(docs[1].line_of("kind"), 4);
        assert_eq!(docs[1].line_of("spec.http[0].route[0].weight"), 8);
        assert_eq!(docs[1].line_of("spec.http[0].route[0].missing"), 8);
    }

    #[test]
    fn block_nesting_far_past_the_depth_bound_is_refused_without_recursing() {
        // 200,000 levels: reading them recursively would overflow any thread's stack.
        let mappings: String = (0..2_000)
            .map(|i| format!("{}a:\n", " ".repeat(i)))
            .collect();
        for text in ["- ".repeat(200_000) + "x\n", mappings + "b: 1\n"] {
            let err = parse_documents(&text).expect_err("too deep");
            assert!(err.to_string().contains("bound input_depth"), "{err}");
        }
    }

    #[test]
    fn aliases_do_not_reach_into_another_document() {
        let err = parse_documents("a: &x 1\n---\nb: *x\n").expect_err("unknown anchor");
        assert!(err.to_string().contains("unknown anchor"), "{err}");
        let docs = parse_documents("a: &x 1\nb: *x\n").expect("same document");
        assert_eq!(docs[0].value["b"], 1);
    }

    #[test]
    fn scalars_resolve_like_yaml_1_2() {
        let docs = parse_documents(
            "a: 10\nb: '10'\nc: true\nd: ~\ne: 1.5\nf: 0x1f\ng: 1ms\nh: -3\ni: .5\nj: yes\n",
        )
        .expect("valid YAML");
        let v = &docs[0].value;
        assert_eq!(v["a"], 10);
        assert_eq!(v["b"], "10");
        assert_eq!(v["c"], true);
        assert!(v["d"].is_null());
        assert_eq!(v["e"], 1.5);
        assert_eq!(v["f"], 31);
        assert_eq!(v["g"], "1ms");
        assert_eq!(v["h"], -3);
        assert_eq!(v["i"], 0.5);
        assert_eq!(v["j"], "yes");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(matches!(
            parse_documents(&text),
            Err(ManifestError::Limit { .. })
        ));
    }

    /// The filed attack: 100 mappings nested under 500-byte keys, each with 1,000 short
    /// siblings (100,000 keys, about 340 KB). A table of whole paths per field needed over 3 GB.
    fn deep_long_keys() -> String {
        let names: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
        let mut text = String::new();
        for level in 0..100 {
            text.push('{');
            text.push_str(&names.join(","));
            text.push_str(&format!(",deep{level}{}: ", "x".repeat(500)));
        }
        text.push('1');
        text.push_str(&"}".repeat(100));
        text
    }

    #[test]
    fn long_keys_nested_deep_are_refused_by_their_expanded_size() {
        let err =
            parse_documents_within(&deep_long_keys(), &Limits::default()).expect_err("refused");
        let ManifestError::Limit { exceeded, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(exceeded.bound, Bound::ExpandedBytes);
        assert!(
            err.to_string().contains("--max-input-expanded-bytes"),
            "{err}"
        );
    }

    #[test]
    fn the_line_table_stays_linear_when_the_bound_allows_deep_long_keys() {
        let limits = Limits {
            expanded_bytes: usize::MAX,
            ..Limits::default()
        };
        let docs = parse_documents_within(&deep_long_keys(), &limits).expect("read");
        let key = format!("deep0{}", "x".repeat(500));
        assert!(docs[0].value[&key].is_object());
        assert_eq!(docs[0].line_of(&format!("{key}.k3")), 1);
    }

    #[test]
    fn depth_is_bounded_with_the_flag_named() {
        let text = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let err = parse_documents(&text).expect_err("too deep").to_string();
        assert!(err.contains("--max-input-depth"), "{err}");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        assert!(parse_documents("a: 1\na: 2\n").is_err());
    }

    #[test]
    fn yaml_round_trips_through_the_emitter() {
        let value = serde_json::json!({"a": [1, "2", {"b": null}], "c": "x: y", "d": 1.5});
        let text = to_yaml(std::slice::from_ref(&value));
        let back = parse_documents(&text).expect("emitted YAML parses");
        assert_eq!(back[0].value, value);
    }
}
