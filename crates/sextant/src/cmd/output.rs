//! The output formats istioctl's everyday commands share: a table for people, `-o json` and
//! `-o yaml` for tools. Each command builds one JSON value and a table from it, so the three
//! formats cannot disagree.

use clap::ValueEnum;
use serde_json::Value;

/// `-o` of `proxy-status`, `proxy-config --server`, `analyze` and `explain`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Columns, like istioctl.
    #[default]
    Table,
    /// One JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

/// Prints `value` as `format` asks; `table` renders it for people.
pub fn print(format: Format, value: &Value, table: impl FnOnce(&Value) -> String) {
    let text = render(format, value, table);
    super::out(format_args!("{text}"));
}

/// What `print` writes.
pub fn render(format: Format, value: &Value, table: impl FnOnce(&Value) -> String) -> String {
    match format {
        Format::Table => table(value),
        Format::Json => {
            let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
            text.push('\n');
            text
        }
        Format::Yaml => sextant_index::manifest::to_yaml(std::slice::from_ref(value)),
    }
}

/// `text` safe for a terminal: control characters (escape sequences, line breaks a peer put
/// in a node id or a NACK) are shown escaped, as Rust writes them (`\u{1b}`, `\n`).
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// Rows as aligned columns under `headers`, two spaces apart, as istioctl prints them; cells
/// are made `printable`.
pub fn columns(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c).into_owned()).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            let pad = widths.get(i).copied().unwrap_or(0) - cell.chars().count();
            text.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_their_headers() {
        let text = columns(
            &["NAME", "CDS"],
            &[
                vec!["a-long-name".into(), "SYNCED".into()],
                vec!["b".into(), "STALE".into()],
            ],
        );
        assert_eq!(
            text,
            "NAME         CDS\na-long-name  SYNCED\nb            STALE\n"
        );
    }

    #[test]
    fn control_characters_a_peer_sent_are_shown_escaped() {
        let text = columns(&["NAME"], &[vec!["evil\u{1b}[2J\nfake-0.default".into()]]);
        assert_eq!(text, "NAME\nevil\\u{1b}[2J\\nfake-0.default\n");
        assert_eq!(printable("plain"), "plain");
    }

    #[test]
    fn json_and_yaml_carry_the_same_value() {
        let value = serde_json::json!({"proxies": [{"name": "a", "cds": "SYNCED"}]});
        let json = render(Format::Json, &value, |_| String::new());
        assert_eq!(
            serde_json::from_str::<Value>(&json).ok(),
            Some(value.clone())
        );
        let yaml = render(Format::Yaml, &value, |_| String::new());
        assert!(yaml.contains("cds: SYNCED"), "{yaml}");
    }
}
