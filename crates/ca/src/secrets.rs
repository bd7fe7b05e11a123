//! SDS over ADS, for plain Envoy: the root (`ROOTCA`) for every proxy, and a workload
//! certificate with its key (`default`) for a proxy that proved its identity on the secure
//! port, and only for that identity. Every proxy (node) gets a key of its own, so that one
//! compromised proxy does not expose its siblings' keys.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use envoy_types::pb::envoy::{
    config::core::v3::{DataSource, data_source},
    extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, Secret, TlsCertificate, secret,
    },
};
use sextant_model::Identity;
use sextant_resources::{
    Encoded, List,
    secret::{ROOT as ROOT_SECRET, WORKLOAD as WORKLOAD_SECRET},
};

use crate::{Ca, Error};

/// The SDS secrets of every proxy. Certificates are issued on first use, one per proxy, and
/// replaced once half their life has passed (by the CA's clock).
pub struct Secrets {
    ca: Arc<Ca>,
    ttl: Duration,
    /// `[ROOTCA]`.
    anonymous: List,
    root: Encoded,
    /// By the identity proved, then the proxy (node id): looked up without allocating.
    issued: Mutex<HashMap<Identity, HashMap<String, Issued>>>,
}

/// A workload certificate served to one proxy.
struct Issued {
    at: Instant,
    /// `[ROOTCA, default]`.
    list: List,
    /// Past half its life: the next request for it issues a new one.
    renew: bool,
}

impl Secrets {
    /// Secrets from `ca`, workload certificates valid for `ttl`.
    pub fn new(ca: Arc<Ca>, ttl: Duration) -> Secrets {
        let root = Encoded::new(
            ROOT_SECRET,
            &Secret {
                name: ROOT_SECRET.to_owned(),
                r#type: Some(secret::Type::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: Some(inline(&ca.roots_pem())),
                        ..Default::default()
                    },
                )),
            },
        );
        Secrets {
            ca,
            ttl,
            anonymous: Arc::from([root.clone()]),
            root,
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// The secrets of `proxy`, which proved `identity`, when nothing needs signing for them
    /// (cheap enough for an async task): `None` when [`Secrets::list`] would issue.
    pub fn cached(&self, proxy: &str, identity: Option<&Identity>) -> Option<List> {
        let Some(identity) = identity else {
            return Some(self.anonymous.clone());
        };
        let issued = self.issued();
        let i = issued.get(identity)?.get(proxy)?;
        self.usable(i).then(|| i.list.clone())
    }

    /// The secrets of `proxy`, which proved `identity` (`None`: it proved none).
    pub fn list(&self, proxy: &str, identity: Option<&Identity>) -> List {
        if let Some(list) = self.cached(proxy, identity) {
            return list;
        }
        let Some(identity) = identity else {
            return self.anonymous.clone();
        };
        // One to renew, or none yet.
        let current = self
            .issued()
            .get(identity)
            .and_then(|by_proxy| by_proxy.get(proxy))
            .map(|i| (i.at, i.list.clone()));
        // Signing takes a while: not under the lock (two streams of one proxy may both
        // issue; the first stored wins).
        let fresh: List = match self.issue(identity) {
            Ok(default) => Arc::from([self.root.clone(), default]),
            Err(e) => {
                tracing::error!(
                    %identity,
                    proxy,
                    error = &e as &dyn std::error::Error,
                    "cannot issue a workload certificate"
                );
                // A certificate still valid stays served.
                return match current {
                    Some((at, list)) if self.age(at) < self.ttl => list,
                    _ => self.anonymous.clone(),
                };
            }
        };
        let mut issued = self.issued();
        let by_proxy = issued.entry(identity.clone()).or_default();
        match by_proxy.get(proxy) {
            Some(i) if self.usable(i) => i.list.clone(),
            _ => {
                by_proxy.insert(
                    proxy.to_owned(),
                    Issued {
                        at: self.ca.clock().instant(),
                        list: fresh.clone(),
                        renew: false,
                    },
                );
                fresh
            }
        }
    }

    /// Forgets the certificate of `proxy` as `identity` (its stream ended): a proxy that
    /// comes back gets a new key, and nothing is kept for proxies that are gone. Another
    /// identity's stream under the same node id keeps its own.
    pub fn forget(&self, proxy: &str, identity: Option<&Identity>) {
        let Some(identity) = identity else { return };
        let mut issued = self.issued();
        if let Some(by_proxy) = issued.get_mut(identity) {
            by_proxy.remove(proxy);
            if by_proxy.is_empty() {
                issued.remove(identity);
            }
        }
    }

    /// When the oldest certificate held expires (none held: `None`).
    pub fn oldest_expiry(&self) -> Option<std::time::SystemTime> {
        let oldest = self
            .issued()
            .values()
            .flat_map(HashMap::values)
            .map(|i| i.at)
            .min()?;
        Some(self.ca.clock().now() - self.age(oldest) + self.ttl)
    }

    /// Proxies holding a certificate.
    pub fn len(&self) -> usize {
        self.issued().values().map(HashMap::len).sum()
    }

    /// Whether no proxy holds a certificate.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn issue(&self, identity: &Identity) -> Result<Encoded, Error> {
        let workload = self.ca.workload(identity, self.ttl)?;
        Ok(Encoded::new(
            WORKLOAD_SECRET,
            &Secret {
                name: WORKLOAD_SECRET.to_owned(),
                r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: Some(inline(&workload.chain_pem)),
                    private_key: Some(inline(&workload.key_pem)),
                    ..Default::default()
                })),
            },
        ))
    }

    /// Marks certificates past half their life for renewal at the next update (and drops
    /// expired ones nobody renewed); whether any were marked. All renewals go through here,
    /// so that a renewal wakes the proxy for its new certificate.
    pub fn expire(&self) -> bool {
        let mut issued = self.issued();
        issued.retain(|_, by_proxy| {
            by_proxy.retain(|_, i| self.age(i.at) < self.ttl);
            !by_proxy.is_empty()
        });
        let mut marked = false;
        for i in issued.values_mut().flat_map(HashMap::values_mut) {
            if !i.renew && self.age(i.at) >= self.ttl / 2 {
                i.renew = true;
                marked = true;
            }
        }
        marked
    }

    fn issued(&self) -> std::sync::MutexGuard<'_, HashMap<Identity, HashMap<String, Issued>>> {
        self.issued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `i` can still be served as it is: not due for renewal, not expired.
    fn usable(&self, i: &Issued) -> bool {
        !i.renew && self.age(i.at) < self.ttl
    }

    /// How long ago `at` was, by the CA's clock.
    fn age(&self, at: Instant) -> Duration {
        self.ca.clock().instant().saturating_duration_since(at)
    }
}

fn inline(text: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(
            text.as_bytes().to_vec(),
        )),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    use prost::Message;
    use rustls::pki_types::{CertificateDer, pem::PemObject};

    use super::*;
    use crate::{Clock, FakeClock, certificate_identities};

    fn names(l: &List) -> Vec<String> {
        l.iter().map(|e| e.name.clone()).collect()
    }

    fn reviews() -> Identity {
        Identity::parse("spiffe://cluster.local/ns/bookinfo/sa/reviews").expect("id")
    }

    fn clock() -> Arc<FakeClock> {
        Arc::new(FakeClock::new(
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ))
    }

    /// The `default` secret's leaf certificate.
    fn leaf(list: &List) -> CertificateDer<'static> {
        let default = Secret::decode(list[1].body.to_bytes()).expect("a Secret");
        let Some(secret::Type::TlsCertificate(cert)) = default.r#type else {
            panic!("not a certificate: {default:?}");
        };
        let Some(Specifier::InlineBytes(chain)) = cert.certificate_chain.and_then(|d| d.specifier)
        else {
            panic!("no inline chain");
        };
        CertificateDer::from_pem_slice(&chain)
            .expect("PEM")
            .into_owned()
    }

    #[test]
    fn secrets_are_the_root_for_everyone_and_a_certificate_only_for_a_proved_identity() {
        let clock = clock();
        let ca = Arc::new(Ca::generate(clock.clone()).expect("root"));
        let secrets = Secrets::new(ca.clone(), Duration::from_secs(3600));
        assert_eq!(names(&secrets.list("a", None)), [ROOT_SECRET]);
        let id = reviews();
        let list = secrets.list("a", Some(&id));
        assert_eq!(names(&list), [ROOT_SECRET, WORKLOAD_SECRET]);
        assert!(
            Arc::ptr_eq(&list, &secrets.list("a", Some(&id))),
            "issued once"
        );
        assert_eq!(
            &*certificate_identities(&leaf(&list)),
            std::slice::from_ref(&id)
        );
        assert!(!secrets.expire(), "nothing is past half its life");
        // Another proxy of the same identity gets a key of its own.
        let other = secrets.list("b", Some(&id));
        assert!(!Arc::ptr_eq(&list, &other));
        assert_ne!(leaf(&list), leaf(&other));
        assert_eq!(secrets.len(), 2);
        secrets.forget("b", Some(&reviews()));
        secrets.forget("a", None);
        assert_eq!(secrets.len(), 1, "a proxy gone is forgotten");
        let again = secrets.list("b", Some(&id));
        assert_ne!(
            leaf(&other),
            leaf(&again),
            "and gets a new key when it comes back"
        );

        // Renewal: only through `expire`, which wakes the proxies to renew.
        let short = Secrets::new(ca, Duration::from_secs(2));
        let first = short.list("a", Some(&id));
        clock.advance(Duration::from_millis(1100));
        assert!(
            Arc::ptr_eq(&first, &short.list("a", Some(&id))),
            "past half its life, but not renewed until marked"
        );
        assert!(short.expire(), "marked for renewal");
        assert!(!short.expire(), "marked once");
        let second = short.list("a", Some(&id));
        assert!(!Arc::ptr_eq(&first, &second), "issued again");
        assert!(Arc::ptr_eq(&second, &short.list("a", Some(&id))));
    }

    #[test]
    fn certificates_are_renewed_at_half_their_life_and_dropped_at_its_end() {
        let clock = clock();
        let ca = Arc::new(Ca::generate(clock.clone()).expect("root"));
        let ttl = Duration::from_secs(3600);
        let secrets = Secrets::new(ca, ttl);
        let id = reviews();
        let first = secrets.list("a", Some(&id));

        clock.advance(ttl / 2 - Duration::from_secs(1));
        assert!(!secrets.expire(), "a second short of half its life");
        clock.advance(Duration::from_secs(1));
        assert!(secrets.expire(), "at half its life");
        let second = secrets.list("a", Some(&id));
        assert!(!Arc::ptr_eq(&first, &second), "renewed");

        // Nobody asks for it again: at the end of its life it is dropped, not marked.
        clock.advance(ttl);
        assert!(!secrets.expire(), "expired, not marked");
        let third = secrets.list("a", Some(&id));
        assert!(!Arc::ptr_eq(&second, &third), "issued anew");
    }

    #[test]
    fn a_renewed_certificate_is_dated_by_the_clock() {
        let clock = clock();
        let ca = Arc::new(Ca::generate(clock.clone()).expect("root"));
        let ttl = Duration::from_secs(3600);
        let secrets = Secrets::new(ca.clone(), ttl);
        let id = reviews();
        let verifier = ca.client_verifier(false).expect("verifier");
        let unix = |t: SystemTime| {
            rustls::pki_types::UnixTime::since_unix_epoch(
                t.duration_since(UNIX_EPOCH).expect("after 1970"),
            )
        };
        let first = leaf(&secrets.list("a", Some(&id)));
        clock.advance(ttl / 2);
        assert!(secrets.expire());
        let second = leaf(&secrets.list("a", Some(&id)));
        // Past the first certificate's end, inside the second's.
        let later = clock.now() + ttl / 2 + Duration::from_secs(1);
        assert!(
            verifier
                .verify_client_cert(&first, &[], unix(later))
                .is_err()
        );
        verifier
            .verify_client_cert(&second, &[], unix(later))
            .expect("the renewal is valid for a full ttl from its issue");
    }
}
