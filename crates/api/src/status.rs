//! The status Istio writes on its configuration objects.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

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
    /// What was found, for people (Sextant's; Istio's status carries only the type).
    pub description: Option<String>,
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
