//! `networking.istio.io` Gateway, field for field as Istio's
//! `istio.networking.v1alpha3.Gateway` (JSON names, integer widths).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::{IstioStatus, schema::nullable};

/// Configuration affecting edge load balancer: the ports a set of router proxies listen on,
/// their protocols, host names and TLS.
#[skip_serializing_none]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Gateway",
    plural = "gateways",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    shortname = "gw",
    category = "istio-io",
    category = "networking-istio-io"
)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// A list of server specifications.
    pub servers: Option<Vec<Server>>,
    /// One or more labels that indicate a specific set of pods/VMs on which this gateway
    /// configuration should be applied.
    pub selector: Option<BTreeMap<String, String>>,
}

/// One port a gateway listens on, with its hosts and TLS settings.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    /// The Port on which the proxy should listen for incoming connections.
    pub port: Port,
    /// The ip or the Unix domain socket to which the listener should be bound to.
    pub bind: Option<String>,
    /// One or more hosts exposed by this gateway.
    pub hosts: Vec<String>,
    /// Set of TLS related options that govern the server's behavior.
    pub tls: Option<ServerTlsSettings>,
    /// The loopback IP endpoint or Unix domain socket to which traffic should be forwarded to
    /// by default (not implemented by Istio).
    pub default_endpoint: Option<String>,
    /// An optional name of the server, when set must be unique across all servers.
    pub name: Option<String>,
}

/// A port of a server.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// A valid non-negative integer port number.
    pub number: u32,
    /// The protocol exposed on the port.
    pub protocol: String,
    /// Label assigned to the port.
    pub name: String,
    /// Deprecated: has no effect on gateways.
    pub target_port: Option<u32>,
}

/// TLS settings of a server.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
// Istio's third rule checks credentialNames with tlsCertificates again under the message of
// credentialName with tlsCertificates; it is copied as Istio's CRD has it.
#[schemars(extend("x-kubernetes-validations" = [
    {
        "message": "only one of credentialNames or tlsCertificates can be set",
        "rule": "(has(self.tlsCertificates) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1",
    },
    {
        "message": "only one of credentialName or credentialNames can be set",
        "rule": "(has(self.credentialName) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1",
    },
    {
        "message": "only one of credentialName or tlsCertificates can be set",
        "rule": "(has(self.credentialNames) ? 1 : 0) + (has(self.tlsCertificates) ? 1 : 0) <= 1",
    },
]))]
pub struct ServerTlsSettings {
    /// If set to true, the load balancer will send a 301 redirect for all http connections,
    /// asking the clients to use HTTPS.
    pub https_redirect: Option<bool>,
    /// Indicates whether connections to this port should be secured using TLS.
    pub mode: Option<ServerTlsMode>,
    /// REQUIRED if mode is `SIMPLE` or `MUTUAL`: the path to the server's certificate.
    pub server_certificate: Option<String>,
    /// REQUIRED if mode is `SIMPLE` or `MUTUAL`: the path to the server's private key.
    pub private_key: Option<String>,
    /// REQUIRED if mode is `MUTUAL` or `OPTIONAL_MUTUAL`: the path to the client CA bundle.
    pub ca_certificates: Option<String>,
    /// The path to the file containing the certificate revocation list (CRL) to use in
    /// verifying a presented client side certificate.
    pub ca_crl: Option<String>,
    /// For gateways running on Kubernetes, the name of the secret that holds the TLS certs
    /// including the CA certificates.
    pub credential_name: Option<String>,
    /// Same as CredentialName but for multiple certificates.
    #[schemars(length(min = 1, max = 2))]
    pub credential_names: Option<Vec<String>>,
    /// Server certificates and keys as files (an RSA and an ECDSA one).
    #[schemars(length(min = 1, max = 2))]
    pub tls_certificates: Option<Vec<TlsCertificate>>,
    /// For mutual TLS, the name of the secret or the configmap that holds CA certificates.
    pub ca_cert_credential_name: Option<String>,
    /// A list of alternate names to verify the subject identity in the certificate presented
    /// by the client.
    pub subject_alt_names: Option<Vec<String>>,
    /// An optional list of base64-encoded SHA-256 hashes of the SPKIs of authorized client
    /// certificates.
    pub verify_certificate_spki: Option<Vec<String>>,
    /// An optional list of hex-encoded SHA-256 hashes of the authorized client certificates.
    pub verify_certificate_hash: Option<Vec<String>>,
    /// Minimum TLS protocol version.
    pub min_protocol_version: Option<TlsProtocol>,
    /// Maximum TLS protocol version.
    pub max_protocol_version: Option<TlsProtocol>,
    /// If specified, only support the specified cipher list.
    pub cipher_suites: Option<Vec<String>>,
    /// If specified, only support the specified ECDH curves.
    pub ecdh_curves: Option<Vec<String>>,
    /// If set to true, the proxy will try to validate the certificate, but even if the
    /// validation fails, it will allow the connection through.
    #[schemars(transform = nullable)]
    pub insecure_skip_verify: Option<bool>,
}

/// A server certificate and key given as files.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsCertificate {
    /// REQUIRED if mode is `SIMPLE` or `MUTUAL`: the path to the server's certificate.
    pub server_certificate: Option<String>,
    /// REQUIRED if mode is `SIMPLE` or `MUTUAL`: the path to the server's private key.
    pub private_key: Option<String>,
    /// The path to a client CA bundle.
    pub ca_certificates: Option<String>,
}

/// TLS mode of a server. (Variants carry no doc comments: they would turn the schema's
/// `enum` into a `oneOf`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms, missing_docs)]
pub enum ServerTlsMode {
    PASSTHROUGH,
    SIMPLE,
    MUTUAL,
    AUTO_PASSTHROUGH,
    ISTIO_MUTUAL,
    OPTIONAL_MUTUAL,
}

/// A TLS protocol version bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms, missing_docs)]
pub enum TlsProtocol {
    TLS_AUTO,
    TLSV1_0,
    TLSV1_1,
    TLSV1_2,
    TLSV1_3,
}
