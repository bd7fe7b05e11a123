//! `networking.istio.io` ServiceEntry, field for field as Istio's
//! `istio.networking.v1alpha3.ServiceEntry` (JSON names, integer widths).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::{IstioStatus, WorkloadEntryEndpoint};

/// Adds an entry to the service registry: hosts outside the mesh, or workloads Kubernetes
/// does not know as Services.
#[skip_serializing_none]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "ServiceEntry",
    plural = "serviceentries",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    shortname = "se",
    category = "istio-io",
    category = "networking-istio-io"
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "message": "only one of WorkloadSelector or Endpoints can be set",
        "rule": "(has(self.workloadSelector) ? 1 : 0) + (has(self.endpoints) ? 1 : 0) <= 1",
    },
    {
        "message": "CIDR addresses are allowed only for NONE/STATIC resolution types",
        "rule": "!((has(self.addresses) ? self.addresses : []).exists(k, k.contains(\"/\")) && !((has(self.resolution) ? self.resolution : \"NONE\") in [\"STATIC\", \"NONE\"]))",
    },
    {
        "message": "NONE mode cannot set endpoints",
        "rule": "((has(self.resolution) ? self.resolution : \"NONE\") == \"NONE\") ? !has(self.endpoints) : true",
    },
    {
        "message": "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
        "rule": "((has(self.resolution) ? self.resolution : \"\") == \"DNS_ROUND_ROBIN\") ? ((has(self.endpoints) ? self.endpoints : []).size() <= 1) : true",
    },
]))]
pub struct ServiceEntrySpec {
    /// The hosts associated with the ServiceEntry.
    #[schemars(schema_with = "hosts_schema")]
    pub hosts: Vec<String>,
    /// The virtual IP addresses associated with the service.
    #[serde(default)]
    #[schemars(schema_with = "addresses_schema")]
    pub addresses: Option<Vec<String>>,
    /// The ports associated with the external service.
    #[serde(default)]
    #[schemars(schema_with = "ports_schema")]
    pub ports: Option<Vec<ServicePort>>,
    /// Whether the service is external to the mesh or part of the mesh.
    pub location: Option<Location>,
    /// Service resolution mode for the hosts.
    pub resolution: Option<Resolution>,
    /// One or more endpoints associated with the service.
    #[schemars(extend("maxItems" = 4096))]
    pub endpoints: Option<Vec<WorkloadEntryEndpoint>>,
    /// Applicable only for MESH_INTERNAL services: selects Pods and WorkloadEntries of the
    /// ServiceEntry's namespace.
    pub workload_selector: Option<ServiceEntrySelector>,
    /// A list of namespaces to which this service is exported.
    pub export_to: Option<Vec<String>>,
    /// If specified, the proxy will verify that the server certificate's subject alternate
    /// name matches one of the specified values.
    pub subject_alt_names: Option<Vec<String>>,
}

/// One port of a ServiceEntry.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// A valid non-negative integer port number.
    #[schemars(schema_with = "port_number_schema")]
    pub number: u32,
    /// The protocol exposed on the port.
    #[schemars(length(max = 256))]
    pub protocol: Option<String>,
    /// Label assigned to the port.
    #[schemars(length(max = 256))]
    pub name: String,
    /// The port number on the endpoint where the traffic will be received.
    #[schemars(schema_with = "port_number_schema")]
    pub target_port: Option<u32>,
}

/// The workloads a ServiceEntry selects (`labels`, not Kubernetes' `matchLabels`).
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceEntrySelector {
    /// One or more labels that indicate a specific set of pods/VMs on which the configuration
    /// should be applied.
    #[serde(default)]
    #[schemars(schema_with = "selector_labels_schema")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Where a ServiceEntry's service runs. (Variants carry no doc comments: they would turn the
/// schema's `enum` into a `oneOf`.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms, missing_docs)]
pub enum Location {
    #[default]
    MESH_EXTERNAL,
    MESH_INTERNAL,
}

/// How a ServiceEntry's endpoints are resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms, missing_docs)]
pub enum Resolution {
    #[default]
    NONE,
    STATIC,
    DNS,
    DNS_ROUND_ROBIN,
    DYNAMIC_DNS,
}

fn hosts_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 256,
        "items": {
            "type": "string",
            "x-kubernetes-validations": [
                {"message": "hostname cannot be wildcard", "rule": "self != \"*\""},
            ],
        },
    })
}

fn addresses_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 256,
        "items": {"type": "string", "maxLength": 64},
    })
}

fn ports_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut item = generator.subschema_for::<ServicePort>();
    if let Some(obj) = item.as_object_mut() {
        obj.insert("required".into(), serde_json::json!(["number", "name"]));
    }
    json_schema!({
        "type": "array",
        "maxItems": 256,
        "items": item,
        "x-kubernetes-list-map-keys": ["name"],
        "x-kubernetes-list-type": "map",
        "x-kubernetes-validations": [{
            "message": "port number cannot be duplicated",
            "rule": "self.all(l1, self.exists_one(l2, l1.number == l2.number))",
        }],
    })
}

fn port_number_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "minimum": 0,
        "maximum": 4294967295u64,
        "x-kubernetes-validations": [
            {"message": "port must be between 1-65535", "rule": "0 < self && self <= 65535"},
        ],
    })
}

fn selector_labels_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": 256,
        "additionalProperties": {
            "type": "string",
            "maxLength": 63,
            "x-kubernetes-validations": [
                {"message": "wildcard is not supported in selector", "rule": "!self.contains(\"*\")"},
            ],
        },
    })
}
