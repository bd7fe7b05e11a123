//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), turned into the
//! JSON the rest of the server handles. Clients send built-in kinds this way: helm's release
//! storage (Secrets, ConfigMaps, and DeleteOptions on delete), and kubectl's typed commands
//! (`create namespace`, `create deployment`, `create role`, `create token`, ...).
//!
//! The body is `k8s\0` followed by a `runtime.Unknown` whose `typeMeta` names the kind and
//! whose `raw` is the object's message. The messages come from the Kubernetes API's own
//! `generated.proto` files (k8s.io/api, apimachinery and apiextensions-apiserver v0.35,
//! vendored under `proto/k8s` and compiled at build time into a descriptor pool), so every
//! built-in kind decodes the same way, generically. The conversion to JSON follows the types'
//! JSON forms: field names are the JSON names (go-to-protobuf names fields so), `Time` and
//! `MicroTime` are RFC 3339 strings (a zero time is `null`, as Go writes it), `Duration` is
//! Go's duration string, `IntOrString` an integer or a string, `Quantity` a string,
//! `RawExtension`, `FieldsV1` and apiextensions' `JSON` the JSON they carry, byte fields base64,
//! maps objects, and the `JSONSchemaProps` family its own JSON names and unions.
//!
//! A Go struct's non-pointer fields are always encoded, zero or not, where its JSON leaves
//! them out (`omitempty`): so an empty string, a zero number and `false` are left out of the
//! JSON (for a non-pointer field, Go's zero value is the same as absent), except for the
//! fields in `KEEPS_ZERO`, pointers whose zero is an explicit value (`replicas: 0`,
//! `runAsUser: 0`, `ready: false`), and every number of a `JSONSchemaProps` (all pointers).
//!
//! Bounds: the body is at most `api::MAX_BODY`; messages nest at most 100 deep (prost's
//! recursion limit) and the JSON made of them at most `MAX_DEPTH`. A body that does not decode
//! is `Malformed` (400), naming the problem; a kind without a message here is `Unsupported`.

use std::sync::LazyLock;

use base64::Engine;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value as Proto,
};
use serde_json::{Map, Value, json};

/// The descriptors of the vendored Kubernetes protos (see `build.rs`).
static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(
        include_bytes!(concat!(env!("OUT_DIR"), "/k8s_descriptors.bin")).as_slice(),
    )
    .expect("build.rs encodes a valid descriptor set")
});

/// How deep the JSON of one body may nest.
pub const MAX_DEPTH: usize = 100;

/// Fields whose zero or `false` is kept: pointers in the Go types of the served kinds, where
/// zero means something else than absent, and a few non-`omitempty` ones.
const KEEPS_ZERO: &[&str] = &[
    "activeDeadlineSeconds",
    "allocateLoadBalancerNodePorts",
    "allowPrivilegeEscalation",
    "automountServiceAccountToken",
    "defaultMode",
    "enableServiceLinks",
    "expirationSeconds",
    "fsGroup",
    "gracePeriodSeconds",
    "hostUsers",
    "immutable",
    "leaseDurationSeconds",
    "leaseTransitions",
    "minReplicas",
    "mode",
    "optional",
    "orphanDependents",
    "privileged",
    "progressDeadlineSeconds",
    "readOnlyRootFilesystem",
    "ready",
    "replicas",
    "revisionHistoryLimit",
    "runAsGroup",
    "runAsNonRoot",
    "runAsUser",
    "served",
    "serving",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "storage",
    "terminating",
    "terminationGracePeriodSeconds",
    "timeoutSeconds",
    "xKubernetesPreserveUnknownFields",
];

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";
const EXTENSIONS: &str = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1";

/// Why a protobuf body was not turned into JSON.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// The body is not a valid encoding of what it claims to be.
    Malformed(String),
    /// Valid, but of a kind or encoding this server has no message for.
    Unsupported(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Malformed(m) | Error::Unsupported(m) => f.write_str(m),
        }
    }
}

/// The JSON object a protobuf body carries, with its `apiVersion` and `kind`.
pub fn decode(body: &[u8]) -> Result<Value, Error> {
    let unknown = body.strip_prefix(b"k8s\0").ok_or_else(|| {
        Error::Malformed("a protobuf body must start with the k8s envelope (\"k8s\\x00\")".into())
    })?;
    let envelope = message_named("k8s.io.apimachinery.pkg.runtime.Unknown");
    let envelope = DynamicMessage::decode(envelope, unknown)
        .map_err(|e| Error::Malformed(format!("the runtime.Unknown envelope: {e}")))?;
    let field = |name: &str| envelope.get_field_by_name(name).map(|v| v.into_owned());
    let type_meta = match field("typeMeta") {
        Some(Proto::Message(m)) => m,
        _ => return Err(Error::Malformed("the envelope has no typeMeta".into())),
    };
    let text = |m: &DynamicMessage, name: &str| match m.get_field_by_name(name).as_deref() {
        Some(Proto::String(s)) => s.clone(),
        _ => String::new(),
    };
    let (api_version, kind) = (text(&type_meta, "apiVersion"), text(&type_meta, "kind"));
    let encoding = text(&envelope, "contentEncoding");
    if !encoding.is_empty() {
        return Err(Error::Unsupported(format!(
            "content encoding {encoding:?} is not supported"
        )));
    }
    let raw = match field("raw") {
        Some(Proto::Bytes(b)) => b,
        _ => Default::default(),
    };
    let desc = descriptor(&api_version, &kind).ok_or_else(|| {
        Error::Unsupported(format!(
            "no protobuf message is known for apiVersion {api_version:?}, kind {kind:?}; send JSON"
        ))
    })?;
    let decoded = DynamicMessage::decode(desc, raw)
        .map_err(|e| Error::Malformed(format!("{api_version} {kind}: {e}")))?;
    let mut object = match to_json(&decoded)? {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    // A Go object always encodes its status struct; an empty one says nothing (and a
    // TokenRequest's would lack the fields a status must have).
    if object.get("status").is_some_and(|s| s == &json!({})) {
        object.remove("status");
    }
    object.insert("apiVersion".into(), json!(api_version));
    object.insert("kind".into(), json!(kind));
    let object = Value::Object(object);
    if depth(&object) > MAX_DEPTH {
        return Err(Error::Malformed(format!(
            "{api_version} {kind}: nested deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(object)
}

fn message_named(name: &str) -> MessageDescriptor {
    POOL.get_message_by_name(name)
        .expect("the vendored protos define it")
}

/// The message of `kind` at `api_version`: the core group is `k8s.io.api.core`, other groups
/// are named by their first label (`rbac.authorization.k8s.io` is `k8s.io.api.rbac`), CRDs are
/// apiextensions-apiserver's, and options (`DeleteOptions`) are meta's whatever the group.
fn descriptor(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if kind.is_empty() || version.is_empty() || !is_identifier(kind) || !is_identifier(version) {
        return None;
    }
    let package = match group {
        "" => format!("k8s.io.api.core.{version}"),
        "apiextensions.k8s.io" => EXTENSIONS.replace(".v1", &format!(".{version}")),
        "meta.k8s.io" => META.replace(".v1", &format!(".{version}")),
        g => format!("k8s.io.api.{}.{version}", g.split('.').next()?),
    };
    POOL.get_message_by_name(&format!("{package}.{kind}"))
        .or_else(|| POOL.get_message_by_name(&format!("{META}.{kind}")))
}

fn is_identifier(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric())
}

/// A message as its JSON; `Null` for what Go writes as `null` (a zero `Time`).
fn to_json(m: &DynamicMessage) -> Result<Value, Error> {
    let name = m.descriptor().full_name().to_owned();
    let get = |field: &str| m.get_field_by_name(field).map(|v| v.into_owned());
    let int = |field: &str| match get(field) {
        Some(Proto::I64(v)) => v,
        Some(Proto::I32(v)) => i64::from(v),
        _ => 0,
    };
    let string = |field: &str| match get(field) {
        Some(Proto::String(s)) => s,
        _ => String::new(),
    };
    let present = |field: &str| m.has_field_by_name(field);
    let short = name.rsplit('.').next().unwrap_or_default();
    match name.as_str() {
        n if n == format!("{META}.Time") || n == format!("{META}.MicroTime") => {
            let (seconds, nanos) = (int("seconds"), int("nanos"));
            if seconds == 0 && nanos == 0 {
                return Ok(Value::Null);
            }
            return time(seconds, nanos, short == "MicroTime").map(Value::String);
        }
        n if n == format!("{META}.Duration") => return Ok(json!(go_duration(int("duration")))),
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => {
            return Ok(if int("type") == 1 {
                json!(string("strVal"))
            } else {
                json!(int("intVal"))
            });
        }
        "k8s.io.apimachinery.pkg.api.resource.Quantity"
        | "k8s.io.apimachinery.pkg.api.resource.QuantityValue" => {
            return Ok(json!(string("string")));
        }
        n if n == format!("{META}.FieldsV1")
            || n == "k8s.io.apimachinery.pkg.runtime.RawExtension"
            || n == format!("{EXTENSIONS}.JSON") =>
        {
            let raw = match get(if short == "FieldsV1" { "Raw" } else { "raw" }) {
                Some(Proto::Bytes(b)) => b,
                _ => Default::default(),
            };
            if raw.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&raw).map_err(|e| {
                Error::Malformed(format!("{short}: its raw bytes are not JSON: {e}"))
            });
        }
        n if n == format!("{META}.Verbs") || short == "ExtraValue" => {
            return field(m, "items").map(|v| v.unwrap_or_else(|| json!([])));
        }
        n if n == format!("{EXTENSIONS}.JSONSchemaPropsOrArray") => {
            return if present("schema") {
                field(m, "schema").map(Option::unwrap_or_default)
            } else {
                field(m, "jSONSchemas").map(|v| v.unwrap_or_else(|| json!([])))
            };
        }
        n if n == format!("{EXTENSIONS}.JSONSchemaPropsOrBool") => {
            return if present("schema") {
                field(m, "schema").map(Option::unwrap_or_default)
            } else {
                Ok(json!(matches!(get("allows"), Some(Proto::Bool(true)))))
            };
        }
        n if n == format!("{EXTENSIONS}.JSONSchemaPropsOrStringArray") => {
            return if present("schema") {
                field(m, "schema").map(Option::unwrap_or_default)
            } else {
                field(m, "property").map(|v| v.unwrap_or_else(|| json!([])))
            };
        }
        _ => {}
    }
    let schema_props = name == format!("{EXTENSIONS}.JSONSchemaProps");
    let mut out = Map::new();
    for (f, v) in m.fields() {
        let Some(value) = value(v)? else { continue };
        let zero = match &value {
            Value::Bool(b) => !b,
            Value::Number(n) => !schema_props && n.as_f64() == Some(0.0),
            _ => false,
        };
        if zero && !KEEPS_ZERO.contains(&f.name()) {
            continue;
        }
        let key = if schema_props {
            schema_key(f.name())
        } else {
            f.name().to_owned()
        };
        out.insert(key, value);
    }
    Ok(Value::Object(out))
}

/// The JSON of field `name` of `m`, if it has one.
fn field(m: &DynamicMessage, name: &str) -> Result<Option<Value>, Error> {
    match m.get_field_by_name(name) {
        Some(v) if m.has_field_by_name(name) => value(&v),
        _ => Ok(None),
    }
}

/// A field's value as JSON; `None` when it is left out (an empty string, a `null`).
fn value(v: &Proto) -> Result<Option<Value>, Error> {
    let out = match v {
        Proto::Bool(b) => json!(b),
        Proto::I32(n) => json!(n),
        Proto::I64(n) => json!(n),
        Proto::U32(n) => json!(n),
        Proto::U64(n) => json!(n),
        Proto::F32(n) => number(f64::from(*n))?,
        Proto::F64(n) => number(*n)?,
        Proto::String(s) if s.is_empty() => return Ok(None),
        Proto::String(s) => json!(s),
        Proto::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Proto::EnumNumber(n) => json!(n),
        Proto::Message(m) => match to_json(m)? {
            Value::Null => return Ok(None),
            v => v,
        },
        Proto::List(items) => Value::Array(items.iter().map(element).collect::<Result<_, _>>()?),
        Proto::Map(entries) => {
            let mut out = Map::new();
            for (k, v) in entries {
                let key = match k {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                out.insert(key, element(v)?);
            }
            Value::Object(out)
        }
    };
    Ok(Some(out))
}

/// An element of a list or a map: an empty string stays (`apiGroups: [""]`, `data: {k: ""}`).
fn element(v: &Proto) -> Result<Value, Error> {
    match v {
        Proto::String(s) => Ok(json!(s)),
        v => Ok(value(v)?.unwrap_or(Value::Null)),
    }
}

fn number(n: f64) -> Result<Value, Error> {
    serde_json::Number::from_f64(n)
        .map(Value::Number)
        .ok_or_else(|| Error::Malformed(format!("{n} is not a JSON number")))
}

/// `JSONSchemaProps`' JSON names: `$schema`, `$ref`, `x-kubernetes-...`.
fn schema_key(name: &str) -> String {
    match name {
        "schema" => "$schema".into(),
        "ref" => "$ref".into(),
        n => match n.strip_prefix("xKubernetes") {
            Some(rest) => {
                let mut out = String::from("x-kubernetes");
                for c in rest.chars() {
                    if c.is_ascii_uppercase() {
                        out.push('-');
                    }
                    out.push(c.to_ascii_lowercase());
                }
                out
            }
            None => n.to_owned(),
        },
    }
}

/// `Time` (whole seconds) or `MicroTime` (microseconds) in RFC 3339, UTC.
fn time(seconds: i64, nanos: i64, micro: bool) -> Result<String, Error> {
    let nanos = i32::try_from(nanos).unwrap_or(-1);
    let t = k8s_openapi::jiff::Timestamp::new(seconds, if micro { nanos } else { 0 })
        .map_err(|e| Error::Malformed(format!("a time of {seconds}s {nanos}ns: {e}")))?;
    Ok(if micro {
        t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    } else {
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    })
}

/// Nanoseconds as Go's `time.Duration.String` writes them: `1h2m3.5s`, `1.5ms`, `0s`.
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    // Digits after the point, trailing zeros dropped.
    let fraction = |value: u64, digits: u32| -> String {
        let scale = 10u64.pow(digits);
        let (whole, frac) = (value / scale, value % scale);
        if frac == 0 {
            return whole.to_string();
        }
        let frac = format!("{frac:0width$}", width = digits as usize);
        format!("{whole}.{}", frac.trim_end_matches('0'))
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", fraction(n, 3));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", fraction(n, 6));
    }
    let (hours, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (minutes, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let seconds = format!("{}s", fraction(rest, 9));
    match (hours, minutes) {
        (0, 0) => format!("{sign}{seconds}"),
        (0, m) => format!("{sign}{m}m{seconds}"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}"),
    }
}

/// How deep a JSON value nests (a scalar is 0).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
#[path = "protobuf/tests.rs"]
mod tests;
