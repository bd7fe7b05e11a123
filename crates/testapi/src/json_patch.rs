//! JSON Patch (RFC 6902), the form mutating admission webhooks answer in: `add`, `remove`,
//! `replace`, `move`, `copy` and `test`, with JSON Pointer paths (RFC 6901: `~1` for `/`, `~0`
//! for `~`, `-` for the end of an array). A patch applies whole or not at all.

use serde_json::Value;

/// Applies `patch` (an array of operations) to `doc`. When an operation fails, `doc` is left
/// as it was and the error names the operation (`operation 2 (add /spec/x/-): ...`).
pub fn apply(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let operations = patch
        .as_array()
        .ok_or("a JSON Patch must be an array of operations")?;
    let mut patched = doc.clone();
    for (i, operation) in operations.iter().enumerate() {
        apply_one(&mut patched, operation).map_err(|e| {
            let op = operation["op"].as_str().unwrap_or("?");
            let path = operation["path"].as_str().unwrap_or("?");
            format!("operation {i} ({op} {path}): {e}")
        })?;
    }
    *doc = patched;
    Ok(())
}

fn apply_one(doc: &mut Value, operation: &Value) -> Result<(), String> {
    let op = operation["op"].as_str().ok_or("op: Required value")?;
    let path = pointer(operation, "path")?;
    let value = || {
        operation
            .get("value")
            .cloned()
            .ok_or_else(|| format!("value: Required value for {op}"))
    };
    match op {
        "add" => add(doc, &path, value()?),
        "remove" => remove(doc, &path).map(drop),
        "replace" => {
            let target = get_mut(doc, &path).ok_or("the path does not exist")?;
            *target = value()?;
            Ok(())
        }
        "move" => {
            let from = pointer(operation, "from")?;
            if from == path {
                return Ok(());
            }
            if path.starts_with(&from) {
                return Err("a value cannot be moved into one of its children".into());
            }
            let moved = remove(doc, &from).map_err(|e| format!("from: {e}"))?;
            add(doc, &path, moved)
        }
        "copy" => {
            let from = pointer(operation, "from")?;
            let copied = get(doc, &from)
                .cloned()
                .ok_or("from: the path does not exist")?;
            add(doc, &path, copied)
        }
        "test" => {
            let expected = value()?;
            match get(doc, &path) {
                Some(found) if equal(found, &expected) => Ok(()),
                Some(found) => Err(format!("test failed: found {found}, expected {expected}")),
                None => Err("test failed: the path does not exist".into()),
            }
        }
        other => Err(format!(
            "op: Unsupported value: {other:?}: supported values: add, remove, replace, move, copy, test"
        )),
    }
}

/// The reference tokens of the JSON Pointer in `operation[field]`, unescaped.
fn pointer(operation: &Value, field: &str) -> Result<Vec<String>, String> {
    let text = operation[field]
        .as_str()
        .ok_or_else(|| format!("{field}: Required value"))?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let rest = text
        .strip_prefix('/')
        .ok_or_else(|| format!("{field}: {text:?} must be empty or start with '/'"))?;
    rest.split('/')
        .map(|token| unescape(token).map_err(|e| format!("{field}: {e}")))
        .collect()
}

/// `~1` is `/` and `~0` is `~`, decoded in one pass (so `~01` is `~1`, not `/`).
fn unescape(token: &str) -> Result<String, String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => return Err(format!("{token:?}: '~' must be followed by '0' or '1'")),
        }
    }
    Ok(out)
}

/// An index into an array: digits without leading zeros.
fn index(token: &str) -> Result<usize, String> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return Err(format!("{token:?} is not an array index"));
    }
    token
        .parse()
        .map_err(|_| format!("{token:?} is not an array index"))
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, token| match v {
        Value::Object(m) => m.get(token),
        Value::Array(a) => index(token).ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn get_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(doc, |v, token| match v {
        Value::Object(m) => m.get_mut(token),
        Value::Array(a) => index(token).ok().and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent) {
        Some(Value::Object(m)) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let i = if last == "-" { a.len() } else { index(last)? };
            if i > a.len() {
                return Err(format!(
                    "index {i} is past the end of the array ({} elements)",
                    a.len()
                ));
            }
            a.insert(i, value);
            Ok(())
        }
        Some(_) => Err("the parent of the path is neither an object nor an array".into()),
        None => Err("the parent of the path does not exist".into()),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    let (last, parent) = path
        .split_last()
        .ok_or("the whole document cannot be removed")?;
    let removed = match get_mut(doc, parent) {
        Some(Value::Object(m)) => m.shift_remove(last),
        Some(Value::Array(a)) => {
            let i = index(last)?;
            (i < a.len()).then(|| a.remove(i))
        }
        _ => None,
    };
    removed.ok_or_else(|| "the path does not exist".into())
}

/// JSON equality as RFC 6902's `test` defines it: numbers by value (`1` equals `1.0`), objects
/// whatever their members' order.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| equal(v, w))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(doc: Value, patch: Value) -> Result<Value, String> {
        let mut doc = doc;
        apply(&mut doc, &patch).map(|()| doc)
    }

    #[test]
    fn add_inserts_members_and_elements() {
        let doc = json!({"foo": ["bar", "baz"]});
        assert_eq!(
            patched(
                doc.clone(),
                json!([{"op": "add", "path": "/foo/1", "value": "qux"}])
            ),
            Ok(json!({"foo": ["bar", "qux", "baz"]}))
        );
        assert_eq!(
            patched(
                doc.clone(),
                json!([{"op": "add", "path": "/foo/-", "value": ["x"]}])
            ),
            Ok(json!({"foo": ["bar", "baz", ["x"]]}))
        );
        assert_eq!(
            patched(
                doc.clone(),
                json!([{"op": "add", "path": "/foo/2", "value": 1}])
            ),
            Ok(json!({"foo": ["bar", "baz", 1]}))
        );
        // An existing member is replaced; the whole document can be.
        assert_eq!(
            patched(
                doc.clone(),
                json!([{"op": "add", "path": "/foo", "value": null}])
            ),
            Ok(json!({"foo": null}))
        );
        assert_eq!(
            patched(doc.clone(), json!([{"op": "add", "path": "", "value": 7}])),
            Ok(json!(7))
        );
        // Unknown members of an operation are ignored.
        assert_eq!(
            patched(
                json!({}),
                json!([{"op": "add", "path": "/a", "value": 1, "extra": true}])
            ),
            Ok(json!({"a": 1}))
        );
    }

    #[test]
    fn add_refuses_missing_parents_and_bad_indices() {
        let doc = json!({"foo": ["bar"], "s": "x"});
        let error = |patch: Value| patched(doc.clone(), patch).expect_err("fails");
        assert_eq!(
            error(json!([{"op": "add", "path": "/baz/bat", "value": 1}])),
            "operation 0 (add /baz/bat): the parent of the path does not exist"
        );
        assert!(
            error(json!([{"op": "add", "path": "/foo/2", "value": 1}])).contains("past the end")
        );
        assert!(
            error(json!([{"op": "add", "path": "/foo/01", "value": 1}]))
                .contains("not an array index")
        );
        assert!(error(json!([{"op": "add", "path": "/s/x", "value": 1}])).contains("neither"));
        assert!(error(json!([{"op": "add", "path": "/foo"}])).contains("value: Required value"));
        assert!(error(json!([{"op": "add", "path": "foo", "value": 1}])).contains("start with"));
        assert!(error(json!({"op": "add"})).contains("array of operations"));
        assert!(error(json!([{"op": "merge", "path": "/foo"}])).contains("Unsupported value"));
    }

    #[test]
    fn remove_and_replace_need_the_target() {
        let doc = json!({"baz": "qux", "foo": ["bar", "qux", "baz"]});
        assert_eq!(
            patched(
                doc.clone(),
                json!([{"op": "remove", "path": "/baz"}, {"op": "remove", "path": "/foo/1"}])
            ),
            Ok(json!({"foo": ["bar", "baz"]}))
        );
        assert_eq!(
            patched(
                doc.clone(),
                json!([{"op": "replace", "path": "/baz", "value": "boo"}])
            ),
            Ok(json!({"baz": "boo", "foo": ["bar", "qux", "baz"]}))
        );
        for patch in [
            json!([{"op": "remove", "path": "/nope"}]),
            json!([{"op": "remove", "path": "/foo/3"}]),
            json!([{"op": "remove", "path": "/foo/-"}]),
            json!([{"op": "replace", "path": "/nope", "value": 1}]),
        ] {
            assert!(
                patched(doc.clone(), patch.clone()).is_err(),
                "{patch} applied"
            );
        }
    }

    #[test]
    fn move_and_copy_take_from_another_path() {
        let doc = json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"},
                         "list": ["all", "grass", "cows", "eat"]});
        let moved = patched(
            doc.clone(),
            json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"},
                   {"op": "move", "from": "/list/1", "path": "/list/3"}]),
        )
        .expect("applies");
        assert_eq!(moved["foo"], json!({"bar": "baz"}));
        assert_eq!(moved["qux"], json!({"corge": "grault", "thud": "fred"}));
        assert_eq!(moved["list"], json!(["all", "cows", "eat", "grass"]));
        let copied = patched(
            doc.clone(),
            json!([{"op": "copy", "from": "/qux", "path": "/foo/qux"}]),
        )
        .expect("applies");
        assert_eq!(copied["foo"]["qux"], json!({"corge": "grault"}));
        assert_eq!(copied["qux"], json!({"corge": "grault"}));
        assert!(
            patched(
                doc.clone(),
                json!([{"op": "move", "from": "/foo", "path": "/foo/bar/x"}])
            )
            .expect_err("into a child")
            .contains("children")
        );
        assert!(
            patched(
                doc.clone(),
                json!([{"op": "copy", "from": "/nope", "path": "/x"}])
            )
            .is_err()
        );
    }

    #[test]
    fn escapes_decode_in_one_pass() {
        let doc = json!({"/": 9, "~1": 10, "a/b": {"c~d": 1}});
        assert_eq!(
            patched(
                doc.clone(),
                json!([{"op": "test", "path": "/~01", "value": 10},
                       {"op": "test", "path": "/~1", "value": 9},
                       {"op": "replace", "path": "/a~1b/c~0d", "value": 2}])
            )
            .map(|d| d["a/b"]["c~d"].clone()),
            Ok(json!(2))
        );
        assert!(
            patched(doc, json!([{"op": "test", "path": "/~2", "value": 1}]))
                .expect_err("a bad escape")
                .contains("'~' must be followed")
        );
    }

    #[test]
    fn test_compares_values_and_a_failure_leaves_the_document_unchanged() {
        let mut doc = json!({"baz": "qux", "n": 1, "o": {"a": 1, "b": [1, "2"]}});
        let before = doc.clone();
        let failed = apply(
            &mut doc,
            &json!([{"op": "add", "path": "/added", "value": 1},
                    {"op": "test", "path": "/baz", "value": "bar"}]),
        );
        assert_eq!(
            failed,
            Err("operation 1 (test /baz): test failed: found \"qux\", expected \"bar\"".into())
        );
        assert_eq!(doc, before);
        // A string is not a number; numbers compare by value; members in any order.
        assert!(
            apply(
                &mut doc,
                &json!([{"op": "test", "path": "/n", "value": "1"}])
            )
            .is_err()
        );
        apply(
            &mut doc,
            &json!([{"op": "test", "path": "/n", "value": 1.0},
                    {"op": "test", "path": "/o", "value": {"b": [1.0, "2"], "a": 1}}]),
        )
        .expect("equal values");
    }
}
