//! Scalar-like messages both kinds use: durations, string matches and percentages.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::schema::one_of;

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

fn one_of_exact_prefix_regex(schema: &mut Schema) {
    one_of(schema, &["exact", "prefix", "regex"]);
}
