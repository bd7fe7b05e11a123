//! `security.istio.io` PeerAuthentication, field for field as Istio's
//! `istio.security.v1beta1.PeerAuthentication` (JSON names, integer widths).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::{IstioStatus, WorkloadSelector};

/// Peer authentication configuration for workloads: whether their sidecars accept mutual
/// TLS, plaintext or both.
#[skip_serializing_none]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "PeerAuthentication",
    plural = "peerauthentications",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    shortname = "pa",
    category = "istio-io",
    category = "security-istio-io"
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "message": "portLevelMtls requires selector",
    "rule": "has(self.portLevelMtls) ? (((has(self.selector) && has(self.selector.matchLabels)) ? self.selector.matchLabels : {}).size() > 0) : true",
}]))]
pub struct PeerAuthenticationSpec {
    /// The selector determines the workloads to apply the PeerAuthentication on.
    pub selector: Option<WorkloadSelector>,
    /// Mutual TLS settings for workload.
    pub mtls: Option<MutualTls>,
    /// Port specific mutual TLS settings.
    #[schemars(extend(
        "minProperties" = 1,
        "x-kubernetes-validations" = [{
            "message": "port must be between 1-65535",
            "rule": "self.all(key, 0 < int(key) && int(key) <= 65535)",
        }],
    ))]
    pub port_level_mtls: Option<BTreeMap<String, MutualTls>>,
}

/// Mutual TLS settings.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MutualTls {
    /// Defines the mTLS mode used for peer authentication.
    pub mode: Option<MtlsMode>,
}

/// The mTLS mode of a PeerAuthentication: UNSET inherits from the parent (PERMISSIVE when
/// nothing sets it), DISABLE accepts plaintext, PERMISSIVE plaintext and mutual TLS, STRICT
/// only mutual TLS. (Variants carry no doc comments: they would turn the schema's `enum`
/// into a `oneOf`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms, missing_docs)]
pub enum MtlsMode {
    UNSET,
    DISABLE,
    PERMISSIVE,
    STRICT,
}
