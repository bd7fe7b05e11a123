//! Messages shared by VirtualService and DestinationRule, and the schema helpers that make the
//! generated OpenAPI match the shape of Istio's CRDs (oneof groups, wrapper types, durations).

use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// A protobuf `google.protobuf.Duration` in its JSON form (`"1.5s"`, `"100ms"`), validated by the
/// API server to be at least one millisecond, as Istio's CRDs do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Duration(pub String);

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "x-kubernetes-validations": [{
                "message": "must be a valid duration greater than 1ms",
                "rule": "duration(self) >= duration('1ms')",
            }],
        })
    }
}

impl Duration {
    /// The duration as written in the manifest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Duration {
    fn from(value: &str) -> Self {
        Duration(value.to_owned())
    }
}

/// Describes how to match a given string in HTTP headers (`oneof match_type`).
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = one_of_exact_prefix_regex)]
pub struct StringMatch {
    /// Exact string match.
    pub exact: Option<String>,
    /// Prefix-based match.
    pub prefix: Option<String>,
    /// RE2 style regex-based match (<https://github.com/google/re2/wiki/Syntax>).
    pub regex: Option<String>,
}

/// Percent specifies a percentage in the range of [0.0, 100.0].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Percent {
    /// The percentage.
    #[serde(default)]
    #[schemars(extend("format" = "double"))]
    pub value: f64,
}

/// A port on a destination service (`PortSelector`).
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PortSelector {
    /// Valid port number.
    pub number: Option<u32>,
}

/// The network addressable service to which a request or connection is sent.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Destination {
    /// The name of a service from the service registry.
    pub host: String,
    /// The name of a subset within the service.
    pub subset: Option<String>,
    /// Specifies the port on the host that is being addressed.
    pub port: Option<PortSelector>,
}

/// Selects the workloads a configuration applies to.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// One or more labels that indicate a specific set of pods/VMs on which a policy should be
    /// applied.
    #[serde(default)]
    #[schemars(schema_with = "match_labels_schema")]
    pub match_labels: Option<BTreeMap<String, String>>,
}

fn match_labels_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": 4096,
        "additionalProperties": {
            "type": "string",
            "maxLength": 63,
            "x-kubernetes-validations": [{
                "message": "wildcard not allowed in label value match",
                "rule": "!self.contains(\"*\")",
            }],
        },
        "x-kubernetes-validations": [
            {"message": "wildcard not allowed in label key match", "rule": "self.all(key, !key.contains(\"*\"))"},
            {"message": "key must not be empty", "rule": "self.all(key, key.size() != 0)"},
        ],
    })
}

/// The status Istio writes on its configuration objects (`istio.meta.v1alpha1.IstioStatus`).
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct IstioStatus {
    /// Current service state of the resource.
    pub conditions: Option<Vec<IstioCondition>>,
    /// Includes any errors or warnings detected by Istio's analyzers.
    pub validation_messages: Option<Vec<AnalysisMessage>>,
    /// The generation observed by the controller.
    #[serde(default)]
    #[schemars(schema_with = "int_or_string_schema")]
    pub observed_generation: Option<IntOrString>,
}

/// One condition of an [`IstioStatus`].
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstioCondition {
    /// Type is the type of the condition.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Status is the status of the condition.
    pub status: Option<String>,
    /// Last time we probed the condition.
    #[schemars(extend("format" = "date-time"))]
    pub last_probe_time: Option<String>,
    /// Last time the condition transitioned from one status to another.
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: Option<String>,
    /// Unique, one-word, CamelCase reason for the condition's last transition.
    pub reason: Option<String>,
    /// Human-readable message indicating details about last transition.
    pub message: Option<String>,
    /// Resource Generation to which the Condition refers.
    #[serde(default)]
    #[schemars(schema_with = "int_or_string_schema")]
    pub observed_generation: Option<IntOrString>,
}

/// An analysis message attached to a resource's status.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisMessage {
    /// A url pointing to the Istio documentation for this specific error type.
    pub documentation_url: Option<String>,
    /// Represents how severe a message is.
    pub level: Option<AnalysisLevel>,
    /// The message type.
    #[serde(rename = "type")]
    pub type_: Option<AnalysisMessageType>,
}

/// Severity of an [`AnalysisMessage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum AnalysisLevel {
    UNKNOWN,
    ERROR,
    WARNING,
    INFO,
}

/// Identifies an analysis message kind (`IST0101`, `ReferencedResourceNotFound`).
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AnalysisMessageType {
    /// A 7 character code matching `^IST[0-9]{4}$`.
    pub code: Option<String>,
    /// A human-readable name for the message type.
    pub name: Option<String>,
}

/// A value that Kubernetes accepts as either an integer or a string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// An integer.
    Int(i64),
    /// A string.
    String(String),
}

fn int_or_string_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
    })
}

/// Adds Istio's encoding of a protobuf `oneof` to an object schema: at most one of `fields` may be
/// present.
pub(crate) fn one_of(schema: &mut Schema, fields: &[&str]) {
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("oneOf".into(), one_of_value(fields));
    }
}

/// Like [`one_of`] for objects that hold several independent oneof groups (`allOf` of each).
pub(crate) fn all_one_of(schema: &mut Schema, groups: &[&[&str]]) {
    if let Some(obj) = schema.as_object_mut() {
        let all: Vec<_> = groups
            .iter()
            .map(|g| serde_json::json!({ "oneOf": one_of_value(g) }))
            .collect();
        obj.insert("allOf".into(), serde_json::Value::Array(all));
    }
}

fn one_of_value(fields: &[&str]) -> serde_json::Value {
    let required: Vec<_> = fields
        .iter()
        .map(|f| serde_json::json!({ "required": [f] }))
        .collect();
    let mut branches = vec![serde_json::json!({ "not": { "anyOf": required.clone() } })];
    branches.extend(required);
    serde_json::Value::Array(branches)
}

fn one_of_exact_prefix_regex(schema: &mut Schema) {
    one_of(schema, &["exact", "prefix", "regex"]);
}

/// Marks a field as a protobuf wrapper type (`google.protobuf.BoolValue` and friends), which
/// Istio's CRDs declare `nullable`.
pub(crate) fn nullable(schema: &mut Schema) {
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("nullable".into(), true.into());
    }
}
