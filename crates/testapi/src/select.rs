//! Label selectors (`app=a,tier!=db,env in (x,y),!legacy,owner`) and the field selectors
//! clients use (`metadata.name=`, `metadata.namespace=`), and label selectors written as
//! objects (`matchLabels`, `matchExpressions`), as webhook configurations hold them.

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

    /// A `LabelSelector` object: `matchLabels` and `matchExpressions` (`In`, `NotIn`, `Exists`,
    /// `DoesNotExist`), all of which must hold; absent or `{}` matches everything. The error
    /// names the field, relative to the selector (`matchExpressions[0].operator`).
    pub fn from_object(selector: &Value) -> Result<Selector, String> {
        let mut out = Vec::new();
        if selector.is_null() {
            return Ok(Selector(out));
        }
        let labels = &selector["matchLabels"];
        if !labels.is_null() {
            let labels = labels
                .as_object()
                .ok_or("matchLabels: Invalid value: must be an object")?;
            for (k, v) in labels {
                let v = v.as_str().ok_or_else(|| {
                    format!("matchLabels[{k}]: Invalid value: {v}: must be a string")
                })?;
                out.push(Requirement::Equals(k.clone(), v.to_owned()));
            }
        }
        let expressions = &selector["matchExpressions"];
        for (i, e) in expressions.as_array().into_iter().flatten().enumerate() {
            let field = format!("matchExpressions[{i}]");
            let key = e["key"]
                .as_str()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| format!("{field}.key: Required value"))?
                .to_owned();
            let values: Vec<String> = match &e["values"] {
                Value::Null => Vec::new(),
                Value::Array(a) => a
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_owned).ok_or_else(|| {
                            format!("{field}.values: Invalid value: {v}: must be a string")
                        })
                    })
                    .collect::<Result<_, _>>()?,
                other => return Err(format!("{field}.values: Invalid value: {other}")),
            };
            let operator = e["operator"].as_str().unwrap_or_default();
            let r = match operator {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "{field}.values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
                    ));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!(
                        "{field}.values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                    ));
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::NotExists(key),
                other => {
                    return Err(format!(
                        "{field}.operator: Unsupported value: \"{other}\": supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\""
                    ));
                }
            };
            out.push(r);
        }
        if !expressions.is_null() && !expressions.is_array() {
            return Err("matchExpressions: Invalid value: must be a list".into());
        }
        Ok(Selector(out))
    }

    /// Whether the selector has no requirement (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
    fn selector_objects_match_labels_and_expressions() {
        let o = json!({"metadata": {"labels": {"istio-injection": "enabled", "app": "a"}}});
        let bare = json!({"metadata": {}});
        let matching = |s: Value, o: &Value| {
            Selector::from_object(&s)
                .expect("a valid selector")
                .matches_labels(o)
        };
        assert!(matching(Value::Null, &o));
        assert!(matching(json!({}), &bare));
        assert!(matching(json!({"matchLabels": {"app": "a"}}), &o));
        assert!(!matching(json!({"matchLabels": {"app": "b"}}), &o));
        let injection = |op: &str, values: Value| json!({"matchExpressions": [{"key": "istio-injection", "operator": op, "values": values}]});
        assert!(matching(injection("In", json!(["enabled"])), &o));
        assert!(!matching(injection("In", json!(["enabled"])), &bare));
        assert!(!matching(injection("NotIn", json!(["enabled", "x"])), &o));
        // NotIn holds where the label is absent, as Istio's `sidecar.istio.io/inject NotIn
        // [false]` relies on.
        assert!(matching(injection("NotIn", json!(["false"])), &bare));
        assert!(matching(injection("Exists", Value::Null), &o));
        assert!(!matching(injection("Exists", json!([])), &bare));
        assert!(matching(injection("DoesNotExist", Value::Null), &bare));
        assert!(!matching(injection("DoesNotExist", Value::Null), &o));
        // Labels and expressions together: all must hold.
        let both = json!({"matchLabels": {"app": "a"},
            "matchExpressions": [{"key": "istio-injection", "operator": "DoesNotExist"}]});
        assert!(!matching(both, &o));
        assert!(Selector::from_object(&json!({})).expect("valid").is_empty());
    }

    #[test]
    fn invalid_selector_objects_name_the_field() {
        let error = |s: Value| Selector::from_object(&s).expect_err("invalid");
        assert!(
            error(
                json!({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]})
            )
            .starts_with("matchExpressions[0].operator: Unsupported value: \"Equals\"")
        );
        assert!(
            error(json!({"matchExpressions": [{"key": "a", "operator": "In"}]}))
                .starts_with("matchExpressions[0].values: Required value")
        );
        assert!(
            error(
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})
            )
            .starts_with("matchExpressions[0].values: Forbidden")
        );
        assert!(
            error(json!({"matchExpressions": [{"operator": "Exists"}]}))
                .starts_with("matchExpressions[0].key")
        );
        assert!(error(json!({"matchLabels": {"a": 1}})).starts_with("matchLabels[a]"));
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
