//! Gateway credentials over SDS: the Kubernetes Secrets a Gateway server names with
//! `credentialName`, served as `kubernetes://NAME` (certificate and key) and
//! `kubernetes://NAME-cacert` (the client CA: Secret `NAME-cacert`, else the CA bundle of
//! Secret `NAME`), as istiod serves them.
//!
//! Only a node that says it is a gateway (`router~`) and proved an identity on the secure
//! port gets them, and only those of that identity's namespace: a Secret never leaves its
//! namespace. The node type is the peer's word, so that is not enough: as istiod does, the
//! identity must also be allowed to read the namespace's Secrets ([`Authorize`]: in a
//! cluster, a SubjectAccessReview, see `secure::SecretAccess`). Until it is known to be, the
//! gateway gets only the public `NAME-cacert` bundles. Each namespace's secrets are encoded
//! once per snapshot.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use envoy_types::pb::envoy::{
    config::core::v3::{DataSource, data_source},
    extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, Secret, TlsCertificate, secret,
    },
};
use sextant_model::{
    CA_CREDENTIAL_SUFFIX, CREDENTIAL_PREFIX, Identity, Proxy, ProxyKind, Snapshot,
};
use sextant_resources::{Encoded, List};

/// Whether a gateway's identity may read the Secrets of its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// It may: it gets every credential of its namespace.
    Allowed,
    /// It may not, and why: it gets only the public `NAME-cacert` bundles.
    Denied(String),
    /// Not known yet (being asked, or cannot be asked now): only the public bundles until the
    /// answer comes, and the proxy's stream is woken then.
    Pending,
}

/// Decides whether a gateway's proven identity may read its namespace's Secrets. Called for
/// every update of a gateway's resources: it must answer at once, from what it knows.
pub trait Authorize: Send + Sync {
    /// What `proxy`, proving `identity` (of the proxy's namespace), may read.
    fn access(&self, proxy: &Proxy, identity: &Identity) -> Access;
}

/// Encoded credentials by namespace, for one snapshot version.
#[derive(Default)]
pub struct Credentials {
    cache: Mutex<(u64, HashMap<String, Namespace>)>,
    /// Who may read Secrets; `None`: every identity of the namespace (directory mode, where
    /// the operator issues every certificate and token).
    access: Option<Arc<dyn Authorize>>,
    /// Gateways told why they get no credentials (once each, at most [`WARNED`]).
    warned: Mutex<HashSet<String>>,
}

/// One namespace's credentials: all of them, and the public CA bundles alone.
#[derive(Clone)]
struct Namespace {
    all: List,
    /// The `NAME-cacert` validation contexts, which istiod also serves without asking.
    public: List,
}

/// How many gateways' refusals are remembered so as to be logged once.
const WARNED: usize = 1024;

/// Why a gateway gets no private credentials.
enum Refusal<'a> {
    Unauthenticated,
    OtherNamespace(&'a Identity),
    Denied(&'a Identity, &'a str),
}

impl Credentials {
    /// Credentials served only to identities `access` allows.
    pub fn new(access: Arc<dyn Authorize>) -> Self {
        Credentials {
            access: Some(access),
            ..Default::default()
        }
    }

    /// The credentials `proxy` may get from `snapshot`, sorted by name (empty for anyone but
    /// an authenticated gateway in the Secrets' namespace; the public CA bundles alone for one
    /// not, or not yet, allowed to read them).
    pub fn for_proxy(&self, snapshot: &Snapshot, proxy: &Proxy) -> List {
        if proxy.kind != ProxyKind::Router {
            return List::from([]);
        }
        let identity = match &proxy.identity {
            Some(id) if id.namespace == proxy.namespace => id,
            Some(id) => {
                self.explain(snapshot, proxy, Refusal::OtherNamespace(id));
                return List::from([]);
            }
            None => {
                self.explain(snapshot, proxy, Refusal::Unauthenticated);
                return List::from([]);
            }
        };
        let namespace = self.namespace(snapshot, &proxy.namespace);
        // Nothing private to hand over: nobody need be asked.
        if namespace.all.len() == namespace.public.len() {
            return namespace.all;
        }
        let access = self
            .access
            .as_ref()
            .map_or(Access::Allowed, |a| a.access(proxy, identity));
        match access {
            Access::Allowed => namespace.all,
            Access::Denied(why) => {
                self.explain(snapshot, proxy, Refusal::Denied(identity, &why));
                namespace.public
            }
            Access::Pending => namespace.public,
        }
    }

    /// The encoded credentials of `namespace` in `snapshot`.
    fn namespace(&self, snapshot: &Snapshot, namespace: &str) -> Namespace {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != snapshot.version {
            *cache = (snapshot.version, HashMap::new());
        }
        cache
            .1
            .entry(namespace.to_owned())
            .or_insert_with(|| encode_namespace(snapshot, namespace))
            .clone()
    }

    /// Logs, once per gateway, that its Gateways name Secrets it cannot get.
    fn explain(&self, snapshot: &Snapshot, proxy: &Proxy, refusal: Refusal<'_>) {
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
        match refusal {
            Refusal::Unauthenticated => tracing::warn!(
                proxy = %proxy.id,
                "gateway gets no credentialName Secrets: it proved no identity; connect it to the \
                 secure xDS port with a certificate or token of its namespace (README: Gateways)"
            ),
            Refusal::OtherNamespace(identity) => tracing::warn!(
                proxy = %proxy.id, %identity,
                "gateway gets no credentialName Secrets: its identity is not of its namespace"
            ),
            Refusal::Denied(identity, why) => tracing::warn!(
                proxy = %proxy.id, %identity, namespace = %proxy.namespace, %why,
                "gateway gets no credentialName Secrets (only their -cacert CA bundles): its \
                 service account may not list Secrets in its namespace; bind it to a Role with \
                 get, watch and list on secrets there, as Istio's gateway chart does"
            ),
        }
    }
}

/// Every SDS resource the credentials of `namespace` make, sorted by name, and the public
/// ones among them.
fn encode_namespace(snapshot: &Snapshot, namespace: &str) -> Namespace {
    let mut out: Vec<Encoded> = Vec::new();
    let names = snapshot
        .credentials
        .range((namespace.to_owned(), String::new())..)
        .take_while(|((ns, _), _)| ns == namespace)
        .map(|((_, name), _)| name.clone());
    let mut public: Vec<Encoded> = Vec::new();
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
            let bundle = validation(format!("{CREDENTIAL_PREFIX}{name}"), ca, c.crl.as_deref());
            if name.ends_with(CA_CREDENTIAL_SUFFIX) {
                public.push(bundle.clone());
            }
            out.push(bundle);
        }
        // `NAME-cacert` from Secret NAME's bundle, unless a Secret of that name exists.
        let cacert = format!("{name}{CA_CREDENTIAL_SUFFIX}");
        if c.certificate_chain.is_some()
            && !snapshot
                .credentials
                .contains_key(&(namespace.to_owned(), cacert.clone()))
            && let Some(ca) = &c.ca_certificate
        {
            let bundle = validation(format!("{CREDENTIAL_PREFIX}{cacert}"), ca, c.crl.as_deref());
            public.push(bundle.clone());
            out.push(bundle);
        }
    }
    let sorted = |mut list: Vec<Encoded>| -> List {
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list.dedup_by(|a, b| a.name == b.name);
        list.into()
    };
    Namespace {
        all: sorted(out),
        public: sorted(public),
    }
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
    use std::collections::BTreeMap;

    use sextant_model::{Credential, Kind, ObjectRef};

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

    /// Answers every question with `access`, counting the questions.
    struct Fixed {
        access: Access,
        asked: Mutex<Vec<String>>,
    }

    impl Authorize for Fixed {
        fn access(&self, proxy: &Proxy, identity: &Identity) -> Access {
            assert_eq!(identity.namespace, proxy.namespace);
            self.asked.lock().expect("lock").push(identity.to_string());
            self.access.clone()
        }
    }

    fn fixed(access: Access) -> Arc<Fixed> {
        Arc::new(Fixed {
            access,
            asked: Mutex::new(Vec::new()),
        })
    }

    #[test]
    fn a_gateway_not_allowed_to_read_secrets_gets_only_the_public_ca_bundles() {
        let snapshot = Snapshot {
            version: 1,
            credentials: BTreeMap::from([
                credential("both", true, true),
                credential("cert", true, false),
                credential("cert-cacert", false, true),
                credential("only-ca", false, true),
                // A certificate and key under a `-cacert` name stay private.
                credential("key-cacert", true, false),
            ]),
            ..Default::default()
        };
        for access in [Access::Denied("no RBAC rule".into()), Access::Pending] {
            let authorize = fixed(access.clone());
            let credentials = Credentials::new(authorize.clone());
            let list = credentials.for_proxy(&snapshot, &router("gw", Some("gw")));
            assert_eq!(
                names(&list),
                ["kubernetes://both-cacert", "kubernetes://cert-cacert"],
                "{access:?}"
            );
            assert_eq!(
                *authorize.asked.lock().expect("lock"),
                ["spiffe://cluster.local/ns/gw/sa/gw"]
            );
        }
        let allowed = Credentials::new(fixed(Access::Allowed));
        assert_eq!(
            allowed
                .for_proxy(&snapshot, &router("gw", Some("gw")))
                .len(),
            6
        );
    }

    #[test]
    fn nobody_is_asked_when_there_is_nothing_private_or_no_proven_identity() {
        let snapshot = Snapshot {
            version: 1,
            credentials: BTreeMap::from([credential("trust-cacert", false, true)]),
            ..Default::default()
        };
        let authorize = fixed(Access::Denied("never asked".into()));
        let credentials = Credentials::new(authorize.clone());
        assert_eq!(
            names(&credentials.for_proxy(&snapshot, &router("gw", Some("gw")))),
            ["kubernetes://trust-cacert"]
        );
        assert!(
            credentials
                .for_proxy(&snapshot, &router("gw", None))
                .is_empty()
        );
        let mut sidecar = router("gw", Some("gw"));
        sidecar.kind = ProxyKind::Sidecar;
        assert!(credentials.for_proxy(&snapshot, &sidecar).is_empty());
        assert!(authorize.asked.lock().expect("lock").is_empty());
    }
}
