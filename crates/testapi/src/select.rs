//! Label selectors (`app=a,tier!=db,env in (x,y),!legacy,owner`) and the field selectors
//! clients use (`metadata.name=`, `metadata.namespace=`).

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label or field selector; empty matches everything.
#[derive(Debug, Default, PartialEq)]
pub struct Selector(Vec<Requirement>);

/// Splits at commas outside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn set(values: &str) -> Result<Vec<String>, String> {
    let inner = values
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set, got {values:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect())
}

impl Selector {
    /// Parses a selector; the error says which term is wrong.
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut out = Vec::new();
        for term in terms(s) {
            let r = if let Some(key) = term.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_owned())
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==") {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once('=') {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set(v)?)
            } else if let Some((k, v)) = term.split_once(" in ") {
                Requirement::In(k.trim().into(), set(v)?)
            } else if term.contains(char::is_whitespace) || term.contains('(') {
                return Err(format!("unable to parse requirement: {term:?}"));
            } else {
                Requirement::Exists(term.to_owned())
            };
            out.push(r);
        }
        Ok(Selector(out))
    }

    /// Whether the labels (or fields) satisfy every requirement; `get` looks a key up.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }

    /// Whether an object's labels match.
    pub fn matches_labels(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.matches(|k| labels.get(k).and_then(Value::as_str))
    }

    /// Whether an object's fields match (only `metadata.name`, `metadata.namespace`, and a
    /// Secret's `type`, which Sextant's Secret watch selects on).
    pub fn matches_fields(&self, object: &Value) -> bool {
        self.matches(|k| match k {
            "metadata.name" => object["metadata"]["name"].as_str(),
            "metadata.namespace" => object["metadata"]["namespace"].as_str(),
            "type" => object["type"].as_str(),
            _ => None,
        })
    }

    /// Field selectors this server does not understand.
    pub fn unsupported_fields(&self) -> Vec<&str> {
        self.0
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _)
                | Requirement::Exists(k)
                | Requirement::NotExists(k) => k.as_str(),
            })
            .filter(|k| !matches!(*k, "metadata.name" | "metadata.namespace" | "type"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_operator() {
        let o = json!({"metadata": {"labels": {"app": "a", "tier": "web"}}});
        let yes = [
            "",
            "app=a",
            "app==a",
            "app=a,tier!=db",
            "tier in (web, api)",
            "tier notin (db)",
            "app",
            "!legacy",
        ];
        for s in yes {
            assert!(Selector::parse(s).expect(s).matches_labels(&o), "{s}");
        }
        let no = ["app=b", "tier in (db)", "legacy", "!app", "app=a,tier=db"];
        for s in no {
            assert!(!Selector::parse(s).expect(s).matches_labels(&o), "{s}");
        }
        assert!(Selector::parse("app in x").is_err());
    }

    #[test]
    fn field_selectors() {
        let o = json!({"metadata": {"name": "n", "namespace": "ns"}});
        let s = Selector::parse("metadata.name=n,metadata.namespace=ns").expect("parses");
        assert!(s.matches_fields(&o));
        assert!(s.unsupported_fields().is_empty());
        let bad = Selector::parse("spec.nodeName=x").expect("parses");
        assert_eq!(bad.unsupported_fields(), ["spec.nodeName"]);
        let secret = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls"});
        let not_helm = Selector::parse("type!=helm.sh/release.v1").expect("parses");
        assert!(not_helm.unsupported_fields().is_empty());
        assert!(not_helm.matches_fields(&secret));
        assert!(
            !Selector::parse("type=Opaque")
                .expect("parses")
                .matches_fields(&secret)
        );
    }
}
