//! Envoy resources as JSON with Envoy's (proto) field names, for `proxy-config -o json`, golden
//! tests and debug endpoints. Reflection uses the descriptor set `envoy-types` ships.

use std::sync::LazyLock;

use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::{Map, Value};

use crate::Resources;

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_types.bin"));

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(DESCRIPTORS).expect("envoy-types ships a valid descriptor set")
});

/// A message as JSON: proto field names, defaults omitted, `Any` expanded, keys sorted so the
/// output is stable (protobuf maps have no order).
pub fn to_json<M: Message + Name>(message: &M) -> Value {
    encoded_to_json(&M::full_name(), &message.encode_to_vec())
}

/// An encoded message of type `full_name` as JSON.
pub fn encoded_to_json(full_name: &str, bytes: &[u8]) -> Value {
    let Some(descriptor) = POOL.get_message_by_name(full_name) else {
        return Value::String(format!("<no descriptor for {full_name}>"));
    };
    let dynamic = match DynamicMessage::decode(descriptor, bytes) {
        Ok(d) => d,
        Err(e) => return Value::String(format!("<undecodable {full_name}: {e}>")),
    };
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true);
    match dynamic.serialize_with_options(serde_json::value::Serializer, &options) {
        Ok(v) => sorted(v),
        Err(e) => Value::String(format!("<unserializable {full_name}: {e}>")),
    }
}

fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted(v)))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// All resources of a proxy as one JSON document, keyed by xDS type.
pub fn resources(r: &Resources) -> Value {
    serde_json::json!({
        "clusters": r.clusters.iter().map(to_json).collect::<Vec<_>>(),
        "endpoints": r.endpoints.iter().map(to_json).collect::<Vec<_>>(),
        "listeners": r.listeners.iter().map(to_json).collect::<Vec<_>>(),
        "routes": r.routes.iter().map(to_json).collect::<Vec<_>>(),
    })
}
