//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) for the kinds
//! clients send that way: helm's release storage writes Secrets (and ConfigMaps) as protobuf,
//! and deletes with protobuf DeleteOptions (accepted and ignored: deletion is immediate);
//! kubectl's `create namespace`, `create serviceaccount` and `create token` send theirs so.
//! The body is `k8s\0` followed by a `runtime.Unknown` wrapping the object; it is turned into
//! the JSON the rest of the server handles. Other kinds are refused with a clear error.

use base64::Engine;
use serde_json::{Map, Value, json};

/// One field of a protobuf message: its number and payload.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn fields(mut data: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let varint = |d: &mut &[u8]| -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = d.split_first().ok_or("truncated varint")?;
            *d = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    };
    let mut out = Vec::new();
    while !data.is_empty() {
        let key = varint(&mut data)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut data)?),
            2 => {
                let len = usize::try_from(varint(&mut data)?).map_err(|e| e.to_string())?;
                let (payload, rest) = data.split_at_checked(len).ok_or("truncated field")?;
                data = rest;
                Field::Bytes(payload)
            }
            1 => {
                data = data.get(8..).ok_or("truncated field")?;
                continue;
            }
            5 => {
                data = data.get(4..).ok_or("truncated field")?;
                continue;
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        out.push((key >> 3, field));
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_owned())
}

/// A `map<string, T>` entry: key and raw value.
fn entry(b: &[u8]) -> Result<(String, &[u8]), String> {
    let (mut key, mut value) = (String::new(), &[][..]);
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(k)) => key = text(k)?,
            (2, Field::Bytes(v)) => value = v,
            _ => {}
        }
    }
    Ok((key, value))
}

fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    let (mut labels, mut annotations, mut finalizers) = (Map::new(), Map::new(), Vec::new());
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(v)) => {
                m.insert("name".into(), json!(text(v)?));
            }
            (2, Field::Bytes(v)) => {
                m.insert("generateName".into(), json!(text(v)?));
            }
            (3, Field::Bytes(v)) => {
                m.insert("namespace".into(), json!(text(v)?));
            }
            (6, Field::Bytes(v)) => {
                m.insert("resourceVersion".into(), json!(text(v)?));
            }
            (11, Field::Bytes(v)) => {
                let (k, v) = entry(v)?;
                labels.insert(k, json!(text(v)?));
            }
            (12, Field::Bytes(v)) => {
                let (k, v) = entry(v)?;
                annotations.insert(k, json!(text(v)?));
            }
            (14, Field::Bytes(v)) => finalizers.push(json!(text(v)?)),
            _ => {}
        }
    }
    for (k, v) in [("labels", labels), ("annotations", annotations)] {
        if !v.is_empty() {
            m.insert(k.into(), Value::Object(v));
        }
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(m))
}

/// The strings of a repeated string field `number`.
fn strings(b: &[u8], number: u64) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (n, f) in fields(b)? {
        if let (true, Field::Bytes(v)) = (n == number, f) {
            out.push(text(v)?);
        }
    }
    Ok(out)
}

/// `TokenRequestSpec`: audiences 1, boundObjectRef 3 (kind 1, apiVersion 2, name 3, uid 4),
/// expirationSeconds 4.
fn token_request_spec(b: &[u8]) -> Result<Value, String> {
    let mut spec = json!({"audiences": strings(b, 1)?});
    for (n, f) in fields(b)? {
        match (n, f) {
            (3, Field::Bytes(v)) => {
                let mut bound = Map::new();
                for (n, f) in fields(v)? {
                    let key = match n {
                        1 => "kind",
                        2 => "apiVersion",
                        3 => "name",
                        4 => "uid",
                        _ => continue,
                    };
                    if let Field::Bytes(v) = f {
                        bound.insert(key.into(), json!(text(v)?));
                    }
                }
                spec["boundObjectRef"] = Value::Object(bound);
            }
            (4, Field::Varint(v)) => spec["expirationSeconds"] = json!(v as i64),
            _ => {}
        }
    }
    Ok(spec)
}

/// The JSON object a protobuf body carries.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let unknown = body
        .strip_prefix(b"k8s\0")
        .ok_or("a protobuf body must start with the k8s envelope")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(unknown)? {
        match (n, f) {
            (1, Field::Bytes(type_meta)) => {
                for (n, f) in fields(type_meta)? {
                    match (n, f) {
                        (1, Field::Bytes(v)) => api_version = text(v)?,
                        (2, Field::Bytes(v)) => kind = text(v)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(v)) => raw = v,
            (3, Field::Bytes(v)) if !v.is_empty() => {
                return Err(format!("content encoding {:?} is not supported", text(v)?));
            }
            _ => {}
        }
    }
    let b64 = |v: &[u8]| json!(base64::engine::general_purpose::STANDARD.encode(v));
    let mut object = json!({"apiVersion": api_version, "kind": kind});
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Secret") => {
            let (mut data, mut string_data) = (Map::new(), Map::new());
            for (n, f) in fields(raw)? {
                match (n, f) {
                    (1, Field::Bytes(v)) => object["metadata"] = object_meta(v)?,
                    (2, Field::Bytes(v)) => {
                        let (k, v) = entry(v)?;
                        data.insert(k, b64(v));
                    }
                    (3, Field::Bytes(v)) => object["type"] = json!(text(v)?),
                    (4, Field::Bytes(v)) => {
                        let (k, v) = entry(v)?;
                        string_data.insert(k, json!(text(v)?));
                    }
                    (5, Field::Varint(v)) => object["immutable"] = json!(v != 0),
                    _ => {}
                }
            }
            object["data"] = Value::Object(data);
            if !string_data.is_empty() {
                object["stringData"] = Value::Object(string_data);
            }
        }
        ("v1", "ConfigMap") => {
            let (mut data, mut binary) = (Map::new(), Map::new());
            for (n, f) in fields(raw)? {
                match (n, f) {
                    (1, Field::Bytes(v)) => object["metadata"] = object_meta(v)?,
                    (2, Field::Bytes(v)) => {
                        let (k, v) = entry(v)?;
                        data.insert(k, json!(text(v)?));
                    }
                    (3, Field::Bytes(v)) => {
                        let (k, v) = entry(v)?;
                        binary.insert(k, b64(v));
                    }
                    (4, Field::Varint(v)) => object["immutable"] = json!(v != 0),
                    _ => {}
                }
            }
            object["data"] = Value::Object(data);
            if !binary.is_empty() {
                object["binaryData"] = Value::Object(binary);
            }
        }
        // `kubectl create namespace`.
        ("v1", "Namespace") => {
            for (n, f) in fields(raw)? {
                match (n, f) {
                    (1, Field::Bytes(v)) => object["metadata"] = object_meta(v)?,
                    (2, Field::Bytes(spec)) => {
                        let finalizers = strings(spec, 1)?;
                        if !finalizers.is_empty() {
                            object["spec"] = json!({"finalizers": finalizers});
                        }
                    }
                    _ => {}
                }
            }
        }
        // `kubectl create serviceaccount`.
        ("v1", "ServiceAccount") => {
            let (mut secrets, mut pull_secrets) = (Vec::new(), Vec::new());
            for (n, f) in fields(raw)? {
                match (n, f) {
                    (1, Field::Bytes(v)) => object["metadata"] = object_meta(v)?,
                    // ObjectReference: namespace 2, name 3.
                    (2, Field::Bytes(v)) => {
                        let mut reference = Map::new();
                        for (n, f) in fields(v)? {
                            match (n, f) {
                                (2, Field::Bytes(ns)) => {
                                    reference.insert("namespace".into(), json!(text(ns)?));
                                }
                                (3, Field::Bytes(name)) => {
                                    reference.insert("name".into(), json!(text(name)?));
                                }
                                _ => {}
                            }
                        }
                        secrets.push(Value::Object(reference));
                    }
                    // LocalObjectReference: name 1.
                    (3, Field::Bytes(v)) => {
                        let name = strings(v, 1)?.into_iter().next().unwrap_or_default();
                        pull_secrets.push(json!({"name": name}));
                    }
                    (4, Field::Varint(v)) => {
                        object["automountServiceAccountToken"] = json!(v != 0);
                    }
                    _ => {}
                }
            }
            if !secrets.is_empty() {
                object["secrets"] = Value::Array(secrets);
            }
            if !pull_secrets.is_empty() {
                object["imagePullSecrets"] = Value::Array(pull_secrets);
            }
        }
        // `kubectl create token`: the body of the ServiceAccount's `token` subresource.
        ("authentication.k8s.io/v1", "TokenRequest") => {
            for (n, f) in fields(raw)? {
                match (n, f) {
                    (1, Field::Bytes(v)) => object["metadata"] = object_meta(v)?,
                    (2, Field::Bytes(v)) => object["spec"] = token_request_spec(v)?,
                    _ => {}
                }
            }
        }
        // The body of a DELETE: this server deletes at once, whatever the options.
        (_, "DeleteOptions") => {}
        _ => {
            return Err(format!(
                "protobuf bodies are accepted for v1 Secret, ConfigMap, Namespace and ServiceAccount, and authentication.k8s.io/v1 TokenRequest only (got {api_version} {kind}); send JSON"
            ));
        }
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_secret_decodes_to_its_json() {
        let meta = [
            field(1, b"sh.helm.release.v1.r.v1"),
            field(3, b"istio-system"),
            field(11, &[field(1, b"owner"), field(2, b"helm")].concat()),
        ]
        .concat();
        let secret = [
            field(1, &meta),
            field(2, &[field(1, b"release"), field(2, b"\x00\x01")].concat()),
            field(3, b"helm.sh/release.v1"),
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"Secret")].concat();
        let body = [b"k8s\0".to_vec(), field(1, &type_meta), field(2, &secret)].concat();
        let v = decode(&body).expect("decodes");
        assert_eq!(v["kind"], "Secret");
        assert_eq!(v["metadata"]["name"], "sh.helm.release.v1.r.v1");
        assert_eq!(v["metadata"]["labels"]["owner"], "helm");
        assert_eq!(v["data"]["release"], "AAE=");
        assert_eq!(v["type"], "helm.sh/release.v1");
        assert!(decode(b"not protobuf").is_err());
    }
}
