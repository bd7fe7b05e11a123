//! Validated Gateways and the credentials (Kubernetes Secrets) their TLS servers name, and
//! Istio's rules for which router proxies a Gateway configures.

use std::{collections::BTreeMap, fmt, sync::Arc};

use crate::{ObjectRef, Protocol, Snapshot};

/// A validated Gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct Gateway {
    /// Which object this came from.
    pub id: ObjectRef,
    /// Creation time (RFC 3339): Gateways merge oldest first.
    pub creation_timestamp: Option<String>,
    /// Router proxies whose labels include all of these (empty: every router).
    pub selector: BTreeMap<String, String>,
    /// The servers, in order.
    pub servers: Vec<Server>,
}

impl Gateway {
    /// `namespace/name`, as VirtualServices bind to it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.id.namespace, self.id.name)
    }

    /// Whether the Gateway configures a router with `labels`.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// One `servers[]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    /// `port.number`: the port clients use (the Service port of the gateway).
    pub port: u16,
    /// `port.name`.
    pub port_name: String,
    /// `port.protocol`, parsed (`HTTP`, `HTTPS`, `TLS`, `TCP`, ...).
    pub protocol: Protocol,
    /// `hosts`, with their namespace part.
    pub hosts: Vec<ServerHost>,
    /// `bind`: an IP address the listener binds instead of the wildcard.
    pub bind: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `tls`.
    pub tls: Option<ServerTls>,
}

impl Server {
    /// Whether the server terminates or passes through TLS (`HTTPS`, `TLS`, or any
    /// non-HTTP server with TLS settings), so that it shares its port by SNI.
    pub fn is_tls(&self) -> bool {
        matches!(self.protocol, Protocol::Https | Protocol::Tls)
            || (self.tls.is_some() && !self.protocol.is_http())
    }

    /// Host names without their namespace part, deduplicated and sorted.
    pub fn dns_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.hosts.iter().map(|h| h.host.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// A `[namespace/]dnsName` of a server.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerHost {
    /// Namespace whose VirtualServices may bind this host: `None` for any (`*/`, or none
    /// written); `./` is resolved to the Gateway's namespace.
    pub namespace: Option<String>,
    /// A lower-case FQDN, `*.suffix`, `*` or an IP address.
    pub host: String,
}

/// `tls` of a server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerTls {
    /// `httpsRedirect`: plain-text requests get a 301 to https.
    pub https_redirect: bool,
    /// `mode`.
    pub mode: ServerTlsMode,
    /// `credentialName`, or `credentialNames`: Secrets in the gateway's namespace, served as
    /// `kubernetes://NAME` over SDS.
    pub credential_names: Vec<String>,
    /// `caCertCredentialName`: the Secret with the client CA, instead of `NAME-cacert`.
    pub ca_credential_name: Option<String>,
    /// `serverCertificate`+`privateKey`, then `tlsCertificates`: files in the gateway pod.
    pub files: Vec<CertificateFiles>,
    /// `caCertificates`: a file of client CAs in the gateway pod.
    pub ca_certificates: Option<String>,
    /// `caCrl`: a file in the gateway pod.
    pub ca_crl: Option<String>,
    /// `subjectAltNames`: client certificates must carry one of these.
    pub subject_alt_names: Vec<String>,
    /// `verifyCertificateSpki`.
    pub verify_certificate_spki: Vec<String>,
    /// `verifyCertificateHash`.
    pub verify_certificate_hash: Vec<String>,
    /// `minProtocolVersion`.
    pub min_protocol_version: TlsVersion,
    /// `maxProtocolVersion`.
    pub max_protocol_version: TlsVersion,
    /// `cipherSuites`, invalid and duplicate names dropped.
    pub cipher_suites: Vec<String>,
    /// `ecdhCurves`.
    pub ecdh_curves: Vec<String>,
    /// `insecureSkipVerify`.
    pub insecure_skip_verify: bool,
}

/// A server certificate and its key, as paths in the gateway pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFiles {
    /// PEM certificate chain.
    pub certificate: String,
    /// PEM private key.
    pub private_key: String,
}

/// A Gateway server's `tls.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServerTlsMode {
    /// Forward by SNI without terminating (the default).
    #[default]
    Passthrough,
    /// Terminate with a server certificate.
    Simple,
    /// Terminate and require a client certificate.
    Mutual,
    /// Forward by SNI to the cluster the SNI names (`outbound_.PORT_.SUBSET_.HOST`).
    AutoPassthrough,
    /// Terminate with the mesh certificate and require a mesh client certificate.
    IstioMutual,
    /// Terminate, and verify a client certificate when one is sent.
    OptionalMutual,
}

impl ServerTlsMode {
    /// Istio's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerTlsMode::Passthrough => "PASSTHROUGH",
            ServerTlsMode::Simple => "SIMPLE",
            ServerTlsMode::Mutual => "MUTUAL",
            ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
            ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
            ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
        }
    }

    /// Whether the gateway terminates TLS in this mode.
    pub fn terminates(self) -> bool {
        !matches!(
            self,
            ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
        )
    }
}

/// A TLS protocol version bound; the numbering is Envoy's and Istio's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsVersion {
    /// Envoy's default.
    #[default]
    Auto,
    /// TLS 1.0.
    V1_0,
    /// TLS 1.1.
    V1_1,
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

/// A Kubernetes Secret holding a credential a Gateway can name: a certificate chain and key
/// (`tls.crt`/`tls.key` or `cert`/`key`), and or a CA bundle (`ca.crt` or `cacert`) with its
/// CRL. Secrets with none of these are not kept.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The Secret.
    pub id: ObjectRef,
    /// PEM certificate chain.
    pub certificate_chain: Option<Arc<[u8]>>,
    /// PEM private key.
    pub private_key: Option<Arc<[u8]>>,
    /// `tls.ocsp-staple`.
    pub ocsp_staple: Option<Arc<[u8]>>,
    /// PEM CA certificates (`ca.crt` or `cacert`).
    pub ca_certificate: Option<Arc<[u8]>>,
    /// PEM CRL (`ca.crl` or `crl`).
    pub crl: Option<Arc<[u8]>>,
}

impl fmt::Debug for Credential {
    // Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.id)
            .field("certificate_chain", &self.certificate_chain.is_some())
            .field("private_key", &self.private_key.is_some())
            .field("ca_certificate", &self.ca_certificate.is_some())
            .field("crl", &self.crl.is_some())
            .finish()
    }
}

/// Suffix of the SDS name of a credential's CA bundle (`kubernetes://NAME-cacert`).
pub const CA_CREDENTIAL_SUFFIX: &str = "-cacert";

/// Prefix of SDS names served from Kubernetes Secrets.
pub const CREDENTIAL_PREFIX: &str = "kubernetes://";

impl Snapshot {
    /// The Gateways that configure a router proxy with `labels`, oldest first.
    pub fn gateways_for(&self, labels: &BTreeMap<String, String>) -> Vec<&Arc<Gateway>> {
        self.gateways.iter().filter(|g| g.selects(labels)).collect()
    }

    /// The credential `name` (`kubernetes://` stripped) for a proxy in `namespace`: the
    /// Secret `name`, or for `NAME-cacert`, that Secret if it exists or else the CA bundle of
    /// Secret `NAME` (Istio's convention).
    pub fn credential(&self, namespace: &str, name: &str) -> Option<Credential> {
        let get = |n: &str| {
            self.credentials
                .get(&(namespace.to_owned(), n.to_owned()))
                .map(|c| c.as_ref().clone())
        };
        if let Some(c) = get(name) {
            return Some(c);
        }
        let base = name.strip_suffix(CA_CREDENTIAL_SUFFIX)?;
        let c = get(base)?;
        // Only its CA bundle is served under the `-cacert` name.
        c.ca_certificate.as_ref()?;
        Some(Credential {
            certificate_chain: None,
            private_key: None,
            ocsp_staple: None,
            ..c
        })
    }
}
