//! Multi-document YAML (or JSON) manifests read into JSON values, remembering the line each field
//! came from so that errors can point at it, as a compiler would.
//!
//! Input is untrusted: its size, nesting depth and the number of nodes (aliases counted as
//! expanded) are bounded, so a hostile file costs bounded time and memory.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser, Tag},
    scanner::{Marker, TScalarStyle},
};

/// The largest manifest text accepted, in bytes.
pub const MAX_INPUT_BYTES: usize = 16 * 1024 * 1024;
/// The deepest nesting of mappings and sequences accepted.
pub const MAX_DEPTH: usize = 128;
/// The most nodes one input may expand to (aliases count every time they are used).
pub const MAX_NODES: usize = 2_000_000;

/// One document of a manifest stream.
#[derive(Clone, Debug)]
pub struct Document {
    /// Position of the document in its stream, from 0.
    pub index: usize,
    /// Line (from 1) where the document's content starts.
    pub line: usize,
    /// The document as JSON. `Null` for an empty document.
    pub value: Value,
    lines: HashMap<Vec<Segment>, usize>,
    prefix: Vec<Segment>,
}

/// A step in a field path: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The text is not well-formed YAML.
    #[error("line {line}: invalid YAML: {message}")]
    Syntax { line: usize, message: String },
    /// The text is larger than [`MAX_INPUT_BYTES`].
    #[error("input is {size} bytes; the limit is {MAX_INPUT_BYTES}")]
    TooLarge { size: usize },
    /// A limit on depth or node count was reached.
    #[error("line {line}: {what}")]
    Limit { line: usize, what: &'static str },
    /// A construct this reader does not accept (duplicate keys, unknown anchors, ...).
    #[error("line {line}: {message}")]
    Unsupported { line: usize, message: String },
}

impl Document {
    /// The line of the field at `path` (`spec.http[0].route[1].weight`, `metadata.labels[app]`),
    /// or of its nearest ancestor present in the document.
    pub fn line_of(&self, path: &str) -> usize {
        let mut segments = self.prefix.clone();
        segments.extend(parse_path(path));
        loop {
            if let Some(line) = self.lines.get(&segments) {
                return *line;
            }
            if segments.pop().is_none() {
                return self.line;
            }
        }
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

/// Reads every document of a YAML stream (JSON is YAML too).
pub fn parse_documents(text: &str) -> Result<Vec<Document>, ManifestError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(ManifestError::TooLarge { size: text.len() });
    }
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let result = parser.load(&mut builder, true);
    if let Some(err) = builder.error.take() {
        return Err(err);
    }
    result.map_err(|e| ManifestError::Syntax {
        line: e.marker().line(),
        message: e.info().to_owned(),
    })?;
    Ok(builder.documents)
}

#[derive(Default)]
struct Builder {
    documents: Vec<Document>,
    stack: Vec<Frame>,
    path: Vec<Segment>,
    lines: HashMap<Vec<Segment>, usize>,
    anchors: HashMap<usize, (Value, usize)>,
    doc_line: usize,
    nodes: usize,
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
    fn fail(&mut self, err: ManifestError) {
        if self.error.is_none() {
            self.error = Some(err);
        }
    }

    /// Records where the next value starts, and for mapping keys, pushes the key.
    fn begin_value(&mut self, line: usize) {
        if self.stack.is_empty() {
            self.doc_line = line;
        }
        if let Some(Frame::Seq { items, .. }) = self.stack.last() {
            self.path.push(Segment::Index(items.len()));
        }
        self.lines.entry(self.path.clone()).or_insert(line);
    }

    fn end_value(&mut self, value: Value, size: usize) {
        self.nodes += size;
        if self.nodes > MAX_NODES {
            self.fail(ManifestError::Limit {
                line: self.doc_line,
                what: "document expands to too many nodes (YAML aliases?)",
            });
            return;
        }
        match self.stack.last_mut() {
            None => {
                let lines = std::mem::take(&mut self.lines);
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

    fn scalar(&mut self, value: Value, anchor: usize, line: usize) {
        // A scalar in key position of a mapping is a key, not a value.
        if let Some(Frame::Map { map, key, .. }) = self.stack.last_mut()
            && key.is_none()
        {
            let k = match value {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            let duplicate = map.contains_key(&k);
            *key = Some(k.clone());
            if duplicate {
                self.fail(ManifestError::Unsupported {
                    line,
                    message: format!("mapping key {k:?} already defined"),
                });
            }
            self.path.push(Segment::Key(k));
            self.lines.insert(self.path.clone(), line);
            return;
        }
        self.begin_value(line);
        if anchor > 0 {
            self.anchors.insert(anchor, (value.clone(), 1));
        }
        self.end_value(value, 1);
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
                self.doc_line = line;
                self.lines.clear();
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
            Event::Alias(id) => {
                let Some((value, size)) = self.anchors.get(&id).cloned() else {
                    self.fail(ManifestError::Unsupported {
                        line,
                        message: "alias to an unknown anchor".into(),
                    });
                    return;
                };
                if self.in_key_position() {
                    self.scalar(value, 0, line);
                } else {
                    self.begin_value(line);
                    self.end_value(value, size);
                }
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.in_key_position() {
                    self.fail(ManifestError::Unsupported {
                        line,
                        message: "complex mapping keys are not supported".into(),
                    });
                    return;
                }
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(ManifestError::Limit {
                        line,
                        what: "nesting is too deep",
                    });
                    return;
                }
                self.begin_value(line);
                self.stack.push(if matches!(ev, Event::SequenceStart(..)) {
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
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, anchor, size) = match self.stack.pop() {
                    Some(Frame::Seq { items, anchor }) => {
                        let n = items.len();
                        (Value::Array(items), anchor, n + 1)
                    }
                    Some(Frame::Map { map, anchor, .. }) => {
                        let n = map.len();
                        (Value::Object(map), anchor, n + 1)
                    }
                    None => return,
                };
                if anchor > 0 {
                    let expanded = count_nodes(&value);
                    self.anchors.insert(anchor, (value.clone(), expanded));
                }
                // Children were already counted as they were added.
                self.nodes = self.nodes.saturating_sub(size - 1);
                self.end_value(value, size);
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

fn count_nodes(value: &Value) -> usize {
    match value {
        Value::Array(a) => 1 + a.iter().map(count_nodes).sum::<usize>(),
        Value::Object(m) => 1 + m.values().map(count_nodes).sum::<usize>(),
        _ => 1,
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
