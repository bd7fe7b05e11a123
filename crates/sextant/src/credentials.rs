//! Gateway credentials over SDS: the Kubernetes Secrets a Gateway server names with
//! `credentialName`, served as `kubernetes://NAME` (certificate and key) and
//! `kubernetes://NAME-cacert` (the client CA: Secret `NAME-cacert`, else the CA bundle of
//! Secret `NAME`), as istiod serves them.
//!
//! Only a node that says it is a gateway (`router~`) and proved an identity on the secure
//! port gets them, and only those of that identity's namespace: a Secret never leaves its
//! namespace. The node type is the peer's word, so any identity of a namespace can read its
//! TLS Secrets (docs/SECURITY.md); istiod narrows this with a SubjectAccessReview. Each
//! namespace's secrets are encoded once per snapshot.

use std::{collections::HashMap, sync::Mutex};

use envoy_types::pb::envoy::{
    config::core::v3::{DataSource, data_source},
    extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, Secret, TlsCertificate, secret,
    },
};
use sextant_model::{CA_CREDENTIAL_SUFFIX, CREDENTIAL_PREFIX, Proxy, ProxyKind, Snapshot};
use sextant_resources::{Encoded, List};

/// Encoded credentials by namespace, for one snapshot version.
#[derive(Default)]
pub struct Credentials {
    cache: Mutex<(u64, HashMap<String, List>)>,
    /// Gateways told why they get no credentials (once each, at most [`WARNED`]).
    warned: Mutex<std::collections::HashSet<String>>,
}

/// How many gateways' refusals are remembered so as to be logged once.
const WARNED: usize = 1024;

impl Credentials {
    /// The credentials `proxy` may get from `snapshot`, sorted by name (empty for anyone but
    /// an authenticated gateway in the Secrets' namespace).
    pub fn for_proxy(&self, snapshot: &Snapshot, proxy: &Proxy) -> List {
        let allowed = proxy.kind == ProxyKind::Router
            && proxy
                .identity
                .as_ref()
                .is_some_and(|id| id.namespace == proxy.namespace);
        if !allowed {
            if proxy.kind == ProxyKind::Router {
                self.explain(snapshot, proxy);
            }
            return List::from([]);
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != snapshot.version {
            *cache = (snapshot.version, HashMap::new());
        }
        cache
            .1
            .entry(proxy.namespace.clone())
            .or_insert_with(|| encode_namespace(snapshot, &proxy.namespace))
            .clone()
    }
}

impl Credentials {
    /// Logs, once per gateway, that its Gateways name Secrets it cannot get.
    fn explain(&self, snapshot: &Snapshot, proxy: &Proxy) {
        let names_secrets = snapshot.gateways_for(&proxy.labels).iter().any(|g| {
            g.servers.iter().any(|s| {
                s.tls
                    .as_ref()
                    .is_some_and(|t| !t.credential_names.is_empty())
            })
        });
        if !names_secrets {
            return;
        }
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.len() >= WARNED || !warned.insert(proxy.id.clone()) {
            return;
        }
        match &proxy.identity {
            None => tracing::warn!(
                proxy = %proxy.id,
                "gateway gets no credentialName Secrets: it proved no identity; connect it to the \
                 secure xDS port with a certificate or token of its namespace (README: Gateways)"
            ),
            Some(identity) => tracing::warn!(
                proxy = %proxy.id, %identity,
                "gateway gets no credentialName Secrets: its identity is not of its namespace"
            ),
        }
    }
}

/// Every SDS resource the credentials of `namespace` make, sorted by name.
fn encode_namespace(snapshot: &Snapshot, namespace: &str) -> List {
    let mut out: Vec<Encoded> = Vec::new();
    let names = snapshot
        .credentials
        .range((namespace.to_owned(), String::new())..)
        .take_while(|((ns, _), _)| ns == namespace)
        .map(|((_, name), _)| name.clone());
    for name in names {
        let Some(c) = snapshot.credential(namespace, &name) else {
            continue;
        };
        if let (Some(chain), Some(key)) = (&c.certificate_chain, &c.private_key) {
            let certificate = TlsCertificate {
                certificate_chain: Some(inline(chain)),
                private_key: Some(inline(key)),
                ocsp_staple: c.ocsp_staple.as_deref().map(inline),
                ..Default::default()
            };
            out.push(secret(
                format!("{CREDENTIAL_PREFIX}{name}"),
                secret::Type::TlsCertificate(certificate),
            ));
        } else if let Some(ca) = &c.ca_certificate {
            // A Secret with only a CA bundle is served under its own name.
            out.push(validation(
                format!("{CREDENTIAL_PREFIX}{name}"),
                ca,
                c.crl.as_deref(),
            ));
        }
        // `NAME-cacert` from Secret NAME's bundle, unless a Secret of that name exists.
        let cacert = format!("{name}{CA_CREDENTIAL_SUFFIX}");
        if c.certificate_chain.is_some()
            && !snapshot
                .credentials
                .contains_key(&(namespace.to_owned(), cacert.clone()))
            && let Some(ca) = &c.ca_certificate
        {
            out.push(validation(
                format!("{CREDENTIAL_PREFIX}{cacert}"),
                ca,
                c.crl.as_deref(),
            ));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out.into()
}

fn validation(name: String, ca: &[u8], crl: Option<&[u8]>) -> Encoded {
    secret(
        name,
        secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(inline(ca)),
            crl: crl.map(inline),
            ..Default::default()
        }),
    )
}

fn secret(name: String, kind: secret::Type) -> Encoded {
    Encoded::new(
        &name,
        &Secret {
            name: name.clone(),
            r#type: Some(kind),
        },
    )
}

fn inline(bytes: &[u8]) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes.to_vec())),
        ..Default::default()
    }
}

/// `a` and `b` (each sorted by name) as one list sorted by name.
pub fn merged(a: &List, b: &List) -> List {
    if b.is_empty() {
        return a.clone();
    }
    let mut all: Vec<Encoded> = a.iter().chain(b.iter()).cloned().collect();
    all.sort_by(|x, y| x.name.cmp(&y.name));
    all.into()
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Arc};

    use sextant_model::{Credential, Identity, Kind, ObjectRef};

    use super::*;

    fn credential(name: &str, cert: bool, ca: bool) -> ((String, String), Arc<Credential>) {
        let bytes = |s: &str| Some(Arc::<[u8]>::from(s.as_bytes()));
        (
            ("gw".to_owned(), name.to_owned()),
            Arc::new(Credential {
                id: ObjectRef {
                    kind: Kind::Secret,
                    namespace: "gw".into(),
                    name: name.into(),
                },
                certificate_chain: if cert { bytes("chain") } else { None },
                private_key: if cert { bytes("key") } else { None },
                ocsp_staple: None,
                ca_certificate: if ca { bytes("ca") } else { None },
                crl: None,
            }),
        )
    }

    fn router(namespace: &str, identity_namespace: Option<&str>) -> Proxy {
        let mut p = Proxy::from_node_id(&format!(
            "router~10.0.0.1~gw-1.{namespace}~{namespace}.svc.cluster.local"
        ))
        .expect("a router node id");
        p.identity = identity_namespace.map(|ns| Identity {
            trust_domain: "cluster.local".into(),
            namespace: ns.into(),
            service_account: "gw".into(),
        });
        p
    }

    fn names(list: &List) -> Vec<&str> {
        list.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn an_authenticated_gateway_gets_its_namespace_credentials_and_their_ca_bundles() {
        let snapshot = Snapshot {
            version: 1,
            credentials: BTreeMap::from([
                credential("both", true, true),
                credential("cert", true, false),
                credential("cert-cacert", false, true),
                credential("only-ca", false, true),
            ]),
            ..Default::default()
        };
        let credentials = Credentials::default();
        let list = credentials.for_proxy(&snapshot, &router("gw", Some("gw")));
        assert_eq!(
            names(&list),
            [
                "kubernetes://both",
                "kubernetes://both-cacert",
                "kubernetes://cert",
                "kubernetes://cert-cacert",
                "kubernetes://only-ca",
            ]
        );
        // Unauthenticated, another namespace's identity, a sidecar: nothing.
        assert!(
            credentials
                .for_proxy(&snapshot, &router("gw", None))
                .is_empty()
        );
        assert!(
            credentials
                .for_proxy(&snapshot, &router("gw", Some("other")))
                .is_empty()
        );
        let mut sidecar = router("gw", Some("gw"));
        sidecar.kind = ProxyKind::Sidecar;
        assert!(credentials.for_proxy(&snapshot, &sidecar).is_empty());
        // Another namespace's gateway sees none of these.
        assert!(
            credentials
                .for_proxy(&snapshot, &router("other", Some("other")))
                .is_empty()
        );
    }
}
