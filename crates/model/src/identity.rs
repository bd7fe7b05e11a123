//! Workload identities: SPIFFE ids `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`, and
//! the rule that a proxy may only ask for configuration as the identity it proved.

use std::fmt;

use crate::Proxy;

/// A workload's SPIFFE identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    /// Trust domain, `cluster.local` by default.
    pub trust_domain: String,
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
}

impl Identity {
    /// Reads `spiffe://TD/ns/NS/sa/SA`; anything else (other paths, empty parts) is `None`.
    pub fn parse(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let (td, ns_key, ns, sa_key, sa) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if parts.next().is_some()
            || ns_key != "ns"
            || sa_key != "sa"
            || [td, ns, sa].iter().any(|p| p.is_empty())
        {
            return None;
        }
        Some(Identity {
            trust_domain: td.to_owned(),
            namespace: ns.to_owned(),
            service_account: sa.to_owned(),
        })
    }

    /// Whether a proxy proving this identity may ask as `proxy`: same namespace, and the same
    /// service account as the proxy's metadata names and as its Pod runs as, where known.
    /// This is istiod's XDS identity check, plus the Pod: a node must not claim another
    /// workload of the namespace.
    pub fn admits(&self, proxy: &Proxy) -> bool {
        let same = |sa: &Option<String>| sa.as_ref().is_none_or(|sa| *sa == self.service_account);
        self.namespace == proxy.namespace
            && same(&proxy.service_account)
            && same(&proxy.workload_service_account)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_parse_and_print_back() {
        let id = "spiffe://cluster.local/ns/bookinfo/sa/reviews";
        let parsed = Identity::parse(id).expect("valid id");
        assert_eq!(parsed.namespace, "bookinfo");
        assert_eq!(parsed.service_account, "reviews");
        assert_eq!(parsed.to_string(), id);
        for bad in [
            "https://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/sa/a/ns/b",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe:///ns/a/sa/b",
        ] {
            assert_eq!(Identity::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_identity_admits_only_proxies_of_its_namespace_and_service_account() {
        let id = Identity::parse("spiffe://cluster.local/ns/bookinfo/sa/reviews").expect("id");
        let mut proxy =
            Proxy::from_node_id("sidecar~10.0.0.1~reviews-v1.bookinfo~bookinfo.svc.cluster.local")
                .expect("node id");
        assert!(
            id.admits(&proxy),
            "no service account named: namespace decides"
        );
        proxy.service_account = Some("reviews".into());
        assert!(id.admits(&proxy));
        proxy.service_account = Some("ratings".into());
        assert!(!id.admits(&proxy));
        proxy.service_account = Some("reviews".into());
        proxy.workload_service_account = Some("ratings".into());
        assert!(
            !id.admits(&proxy),
            "metadata naming our account while the Pod runs as another"
        );
        proxy.workload_service_account = Some("reviews".into());
        assert!(id.admits(&proxy));
        proxy.namespace = "default".into();
        assert!(!id.admits(&proxy));
    }
}
