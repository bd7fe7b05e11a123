//! Selecting workloads by their labels.

use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

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
