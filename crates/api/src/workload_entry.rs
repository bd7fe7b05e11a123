//! `networking.istio.io` WorkloadEntry, field for field as Istio's
//! `istio.networking.v1alpha3.WorkloadEntry` (JSON names, integer widths). The same message is
//! a ServiceEntry's inline endpoint.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::IstioStatus;

/// A workload outside Kubernetes (a VM, a bare-metal host), or one endpoint of a
/// ServiceEntry.
#[skip_serializing_none]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "WorkloadEntry",
    plural = "workloadentries",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    shortname = "we",
    category = "istio-io",
    category = "networking-istio-io"
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"message": "Address is required", "rule": "has(self.address) || has(self.network)"},
    {
        "message": "UDS may not include ports",
        "rule": "(has(self.address) ? self.address : \"\").startsWith(\"unix://\") ? !has(self.ports) : true",
    },
]))]
pub struct WorkloadEntrySpec {
    /// Address associated with the network endpoint without the port: an IP, a host name
    /// (DNS ServiceEntries only) or `unix:///path` / `unix://@abstract`.
    #[serde(default)]
    #[schemars(schema_with = "address_schema")]
    pub address: Option<String>,
    /// Set of ports associated with the endpoint, by the name of the service port.
    #[serde(default)]
    #[schemars(schema_with = "ports_schema")]
    pub ports: Option<BTreeMap<String, u32>>,
    /// One or more labels associated with the endpoint.
    #[schemars(extend("maxProperties" = 256))]
    pub labels: Option<BTreeMap<String, String>>,
    /// Network enables Istio to group endpoints resident in the same L3 domain/network.
    #[schemars(length(max = 2048))]
    pub network: Option<String>,
    /// The locality associated with the endpoint (`region/zone/subzone`).
    #[schemars(length(max = 2048))]
    pub locality: Option<String>,
    /// The load balancing weight associated with the endpoint.
    pub weight: Option<u32>,
    /// The service account associated with the workload if a sidecar is present in the
    /// workload.
    #[schemars(length(max = 253))]
    pub service_account: Option<String>,
}

/// The inline endpoints of a ServiceEntry are WorkloadEntries.
pub type WorkloadEntryEndpoint = WorkloadEntrySpec;

fn address_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 256,
        "x-kubernetes-validations": [
            {
                "message": "UDS must be an absolute path or abstract socket",
                "rule": "self.startsWith(\"unix://\") ? (self.substring(7, 8) == \"/\" || self.substring(7, 8) == \"@\") : true",
            },
            {
                "message": "UDS may not be a dir",
                "rule": "self.startsWith(\"unix://\") ? !self.endsWith(\"/\") : true",
            },
        ],
    })
}

fn ports_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": 128,
        "additionalProperties": {
            "type": "integer",
            "minimum": 0,
            "maximum": 4294967295u64,
            "x-kubernetes-validations": [
                {"message": "port must be between 1-65535", "rule": "0 < self && self <= 65535"},
            ],
        },
        "x-kubernetes-validations": [{
            "message": "port name must be valid",
            "rule": "self.all(key, size(key) < 63 && key.matches(\"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$\"))",
        }],
    })
}
