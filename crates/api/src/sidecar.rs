//! `networking.istio.io` Sidecar, field for field as Istio's
//! `istio.networking.v1alpha3.Sidecar` (JSON names, integer widths).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::{ConnectionPoolSettings, Destination, IstioStatus, ServerTlsSettings};

/// The ports, hosts and policies of the sidecar proxies of a set of workloads: which services
/// they import (egress), how they accept inbound traffic (ingress), and what happens to traffic
/// for destinations outside the registry.
#[skip_serializing_none]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Sidecar",
    plural = "sidecars",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    category = "istio-io",
    category = "networking-istio-io"
)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Criteria used to select the specific set of pods/VMs on which this `Sidecar`
    /// configuration should be applied.
    pub workload_selector: Option<SidecarWorkloadSelector>,
    /// Ingress specifies the configuration of the sidecar for processing inbound traffic to
    /// the attached workload instance.
    pub ingress: Option<Vec<IstioIngressListener>>,
    /// Egress specifies the configuration of the sidecar for processing outbound traffic from
    /// the attached workload instance to other services in the mesh.
    pub egress: Option<Vec<IstioEgressListener>>,
    /// Settings controlling the volume of connections Envoy will accept from the network.
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    /// Configuration for the outbound traffic policy.
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// The workloads a Sidecar applies to (`istio.networking.v1alpha3.WorkloadSelector`).
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SidecarWorkloadSelector {
    /// One or more labels that indicate a specific set of pods/VMs on which the configuration
    /// should be applied.
    #[serde(default)]
    #[schemars(schema_with = "labels_schema")]
    pub labels: Option<BTreeMap<String, String>>,
}

fn labels_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": 256,
        "additionalProperties": {
            "type": "string",
            "maxLength": 63,
            "x-kubernetes-validations": [{
                "message": "wildcard is not supported in selector",
                "rule": "!self.contains(\"*\")",
            }],
        },
    })
}

/// How the sidecar accepts inbound traffic on one port.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstioIngressListener {
    /// The port associated with the listener.
    pub port: SidecarPort,
    /// The IP(IPv4 or IPv6) to which the listener should be bound.
    pub bind: Option<String>,
    /// The captureMode option dictates how traffic to the listener is expected to be captured
    /// (or not).
    pub capture_mode: Option<CaptureMode>,
    /// The IP endpoint or Unix domain socket to which traffic should be forwarded to.
    pub default_endpoint: Option<String>,
    /// Set of TLS related options that will enable TLS termination on the sidecar for requests
    /// originating from outside the mesh.
    pub tls: Option<ServerTlsSettings>,
    /// Settings controlling the volume of connections Envoy will accept from the network.
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// The services the sidecar imports, on one port or on every other port.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstioEgressListener {
    /// The port associated with the listener.
    pub port: Option<SidecarPort>,
    /// The IP(IPv4 or IPv6) or the Unix domain socket to which the listener should be bound
    /// to.
    pub bind: Option<String>,
    /// When the bind address is an IP, the captureMode option dictates how traffic to the
    /// listener is expected to be captured (or not).
    pub capture_mode: Option<CaptureMode>,
    /// One or more service hosts exposed by the listener in `namespace/dnsName` format.
    pub hosts: Vec<String>,
}

/// A port of a Sidecar listener.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarPort {
    /// A valid non-negative integer port number.
    pub number: Option<u32>,
    /// The protocol exposed on the port.
    pub protocol: Option<String>,
    /// Label assigned to the port.
    pub name: Option<String>,
    /// Deprecated: has no effect on Sidecars.
    pub target_port: Option<u32>,
}

/// How traffic to a listener is captured. (Variants carry no doc comments: they would turn
/// the schema's `enum` into a `oneOf`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms, missing_docs)]
pub enum CaptureMode {
    DEFAULT,
    IPTABLES,
    NONE,
}

/// What happens to outbound traffic for destinations the registry does not know.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    /// `ALLOW_ANY` (the default) forwards it; `REGISTRY_ONLY` refuses it.
    pub mode: Option<OutboundTrafficMode>,
    /// Where `ALLOW_ANY` traffic goes instead of its original destination.
    pub egress_proxy: Option<Destination>,
}

/// The outbound traffic policy's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms, missing_docs)]
pub enum OutboundTrafficMode {
    REGISTRY_ONLY,
    ALLOW_ANY,
}
