//! Signing workloads' certificate requests, as Istio's certificate service does
//! (`CreateCertificate`): only the request's public key is used, and the CA decides the rest.
//! A request is refused unless its signature verifies, its key is an accepted type and size,
//! and its subject alternative names are exactly the caller's identity.

use std::time::Duration;

use rcgen::CertificateSigningRequestParams;
use rustls::pki_types::{CertificateSigningRequestDer, pem::PemObject};
use sextant_model::Identity;
use x509_parser::{
    certification_request::X509CertificationRequest, extensions::GeneralName, oid_registry,
    prelude::FromDer, public_key::PublicKey,
};

use crate::Ca;

/// Longest CSR accepted, PEM (a 4096-bit RSA request is about 1.7 KiB).
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// Smallest and largest RSA keys accepted, in bits (Istio's agent uses 2048 by default).
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// Why a certificate request was refused; each says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    /// Not one PEM certificate request, or not readable as one.
    #[error("the CSR cannot be read: {0}")]
    Malformed(String),
    /// Its signature does not verify with its own key.
    #[error("the CSR's signature does not verify with its public key")]
    Signature,
    /// A key type or size the CA does not sign for.
    #[error("the CSR's key is {0}; accepted: ECDSA P-256 or P-384, or RSA of 2048 to 4096 bits")]
    Key(String),
    /// Its SANs are not the caller's identity.
    #[error(
        "the CSR names {found:?}, but the caller is {expected}: a CSR must name only the caller's identity"
    )]
    Names {
        /// The SANs the CSR holds.
        found: Vec<String>,
        /// The caller's identity.
        expected: String,
    },
    /// Signing failed.
    #[error("signing the certificate for {0} failed")]
    Sign(String),
}

impl Ca {
    /// Signs `csr_pem` for `identity`: the certificate chain, PEM, leaf first and the root
    /// last. The leaf carries the identity as its only (URI) SAN, an empty subject, Istio's key
    /// usages, and is valid from two minutes ago for `ttl`, but never past the signing
    /// certificate.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<Vec<String>, CsrError> {
        if csr_pem.len() > MAX_CSR_BYTES {
            return Err(CsrError::Malformed(format!(
                "it is {} bytes, more than the {MAX_CSR_BYTES} accepted",
                csr_pem.len()
            )));
        }
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| CsrError::Malformed(format!("no PEM CERTIFICATE REQUEST ({e})")))?;
        check_key_and_names(&der, identity)?;
        let request = CertificateSigningRequestParams::from_der(&der).map_err(|e| match e {
            rcgen::Error::InvalidCertificationRequestSignature => CsrError::Signature,
            rcgen::Error::UnsupportedExtension => CsrError::Malformed(
                "it requests an extension other than SANs, key usage, extended key usage or \
                 basic constraints"
                    .to_owned(),
            ),
            other => CsrError::Malformed(other.to_string()),
        })?;
        // Everything but the key comes from the CA: a request for CA rights or other names
        // gets none of them.
        let signed = CertificateSigningRequestParams {
            params: self
                .workload_params(identity, ttl)
                .map_err(|e| CsrError::Sign(format!("{identity}: {e}")))?,
            public_key: request.public_key,
        }
        .signed_by(self.issuer())
        .map_err(|e| CsrError::Sign(format!("{identity}: {e}")))?;
        // Leaf, intermediates, then every trusted root as one element, as istiod answers:
        // istio-agent trusts the last element, so both roots of a rotation reach it.
        let roots = self.roots_pem();
        let mut chain = vec![signed.pem()];
        chain.extend(
            self.chain_pem()
                .iter()
                .filter(|c| !roots.contains(c.as_str()))
                .cloned(),
        );
        chain.push(roots);
        Ok(chain)
    }
}

/// Checks the key (type, size, and that its signature algorithm fits it, so the leaf names
/// the key's real curve) and that the SANs are exactly `identity`.
fn check_key_and_names(der: &[u8], identity: &Identity) -> Result<(), CsrError> {
    let (_, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    let info = &csr.certification_request_info;
    let signature = &csr.signature_algorithm.algorithm;
    let spki = &info.subject_pki;
    match spki.parsed() {
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            let (name, hash) = if curve.as_ref() == Some(&oid_registry::OID_EC_P256) {
                ("P-256", oid_registry::OID_SIG_ECDSA_WITH_SHA256)
            } else if curve.as_ref() == Some(&oid_registry::OID_NIST_EC_P384) {
                ("P-384", oid_registry::OID_SIG_ECDSA_WITH_SHA384)
            } else {
                return Err(CsrError::Key(format!(
                    "ECDSA on curve {}",
                    curve.map_or("(none)".to_owned(), |c| c.to_id_string())
                )));
            };
            if *signature != hash {
                return Err(CsrError::Key(format!(
                    "ECDSA {name} signed with {}; sign a {name} request with {}",
                    signature.to_id_string(),
                    hash.to_id_string()
                )));
            }
        }
        Ok(PublicKey::RSA(rsa)) => {
            // The modulus's exact bit length (`key_size` rounds to whole bytes).
            let modulus: &[u8] = {
                let m = rsa.modulus;
                let start = m.iter().position(|b| *b != 0).unwrap_or(m.len());
                &m[start..]
            };
            let bits = modulus.first().map_or(0, |top| {
                (modulus.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
            });
            if !RSA_BITS.contains(&bits) {
                return Err(CsrError::Key(format!("RSA of {bits} bits")));
            }
        }
        Ok(other) => return Err(CsrError::Key(key_name(&other).to_owned())),
        Err(e) => return Err(CsrError::Malformed(format!("its public key: {e}"))),
    }
    let mut found = Vec::new();
    if let Some(extensions) = csr.requested_extensions() {
        for ext in extensions {
            if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    found.push(match name {
                        GeneralName::URI(uri) => (*uri).to_owned(),
                        other => other.to_string(),
                    });
                }
            }
        }
    }
    let expected = identity.to_string();
    if found != [expected.as_str()] {
        return Err(CsrError::Names { found, expected });
    }
    Ok(())
}

fn key_name(key: &PublicKey<'_>) -> &'static str {
    match key {
        PublicKey::RSA(_) => "RSA",
        PublicKey::EC(_) => "ECDSA",
        PublicKey::DSA(_) => "DSA",
        PublicKey::GostR3410(_) | PublicKey::GostR3410_2012(_) => "GOST",
        PublicKey::Unknown(_) => "of an unknown type (Ed25519 and others are not accepted)",
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Arc,
        time::{Duration, SystemTime, UNIX_EPOCH},
    };

    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, IsCa, Issuer, KeyPair,
        KeyUsagePurpose, SanType,
    };
    use rustls::pki_types::{CertificateDer, UnixTime, pem::PemObject};
    use sextant_model::Identity;

    use super::CsrError;
    use crate::{Ca, Clock, FakeClock, certificate_identities, identity::not_after};

    fn start() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn id(sa: &str) -> Identity {
        Identity::parse(&format!("spiffe://cluster.local/ns/default/sa/{sa}")).expect("id")
    }

    /// A CSR for `sans` (URIs) signed by `key`, with `ca` asking for CA rights.
    fn csr(key: &KeyPair, sans: &[&str], ca: bool) -> String {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans
            .iter()
            .map(|s| SanType::URI((*s).try_into().expect("uri")))
            .collect();
        if ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        params
            .serialize_request(key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    fn ders(chain: &[String]) -> Vec<CertificateDer<'static>> {
        chain
            .iter()
            .map(|c| CertificateDer::from_pem_slice(c.as_bytes()).expect("pem"))
            .collect()
    }

    #[test]
    fn a_request_naming_the_caller_is_signed_with_its_key_and_chains_to_the_root() {
        let clock = Arc::new(FakeClock::new(start()));
        let ca = Ca::generate(clock.clone()).expect("root");
        let key = KeyPair::generate().expect("key");
        let me = id("reviews");
        let ttl = Duration::from_secs(3600);
        // Asking for CA rights gets none: only the key comes from the request.
        let chain = ca
            .sign_csr(&csr(&key, &[&me.to_string()], true), &me, ttl)
            .expect("signed");
        assert_eq!(chain.len(), 2, "leaf, root");
        assert_eq!(chain[1], ca.roots_pem());
        let chain = ders(&chain);
        assert_eq!(
            &*certificate_identities(&chain[0]),
            std::slice::from_ref(&me)
        );
        use x509_parser::prelude::FromDer;
        let (_, leaf) =
            x509_parser::certificate::X509Certificate::from_der(&chain[0]).expect("der");
        assert!(!leaf.is_ca());
        assert_eq!(
            leaf.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        assert!(
            leaf.subject_alternative_name()
                .expect("san")
                .expect("san")
                .critical
        );
        assert_eq!(not_after(&chain[0]), Some(start() + ttl));
        let verifier = ca.client_verifier(false).expect("verifier");
        let now = UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000));
        verifier
            .verify_client_cert(&chain[0], &[], now)
            .expect("verifies to the root");
    }

    #[test]
    fn requests_are_refused_with_what_is_wrong() {
        let ca = Ca::generate(Arc::new(FakeClock::new(start()))).expect("root");
        let me = id("reviews");
        let ttl = Duration::from_secs(3600);
        let key = KeyPair::generate().expect("key");
        let other = id("admin").to_string();
        assert!(matches!(
            ca.sign_csr(&csr(&key, &[&other], false), &me, ttl),
            Err(CsrError::Names { .. })
        ));
        assert!(matches!(
            ca.sign_csr(&csr(&key, &[&me.to_string(), &other], false), &me, ttl),
            Err(CsrError::Names { .. })
        ));
        assert!(matches!(
            ca.sign_csr(&csr(&key, &[], false), &me, ttl),
            Err(CsrError::Names { .. })
        ));
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
        assert!(matches!(
            ca.sign_csr(&csr(&ed, &[&me.to_string()], false), &me, ttl),
            Err(CsrError::Key(_))
        ));
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
        assert!(
            ca.sign_csr(&csr(&p384, &[&me.to_string()], false), &me, ttl)
                .is_ok()
        );
        // A signature that does not verify: one bit of the signature flipped.
        let good = csr(&key, &[&me.to_string()], false);
        let mut der =
            rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(good.as_bytes())
                .expect("pem")
                .as_ref()
                .to_vec();
        let last = der.len() - 3;
        der[last] ^= 1;
        let tampered = crate::authority::pem("CERTIFICATE REQUEST", &der);
        assert_eq!(ca.sign_csr(&tampered, &me, ttl), Err(CsrError::Signature));
        assert!(matches!(
            ca.sign_csr("not a csr", &me, ttl),
            Err(CsrError::Malformed(_))
        ));
        let huge = "A".repeat(super::MAX_CSR_BYTES + 1);
        assert!(matches!(
            ca.sign_csr(&huge, &me, ttl),
            Err(CsrError::Malformed(_))
        ));
    }

    #[test]
    fn an_intermediate_signs_leaves_that_chain_through_it_and_never_outlive_it() {
        let clock: Arc<dyn Clock> = Arc::new(FakeClock::new(start()));
        let root = Ca::generate(clock.clone()).expect("root");
        // The operator's intermediate, valid for a day, signed by their root.
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = start().into();
        params.not_after = (start() + Duration::from_secs(86_400)).into();
        let root_issuer = Issuer::from_ca_cert_pem(
            root.cert_pem(),
            KeyPair::from_pem(root.key_pem()).expect("key"),
        )
        .expect("issuer");
        let cert = params.signed_by(&key, &root_issuer).expect("intermediate");
        let chain_file = format!("{}{}", cert.pem(), root.cert_pem());
        let ca = Ca::intermediate(
            &cert.pem(),
            &key.serialize_pem(),
            &[chain_file],
            root.cert_pem(),
            clock,
        )
        .expect("intermediate CA");
        assert_eq!(ca.roots_pem(), root.roots_pem());
        let me = id("reviews");
        let leaf_key = KeyPair::generate().expect("key");
        let chain = ca
            .sign_csr(
                &csr(&leaf_key, &[&me.to_string()], false),
                &me,
                Duration::from_secs(7 * 86_400),
            )
            .expect("signed");
        let chain = ders(&chain);
        assert_eq!(chain.len(), 3, "leaf, intermediate, root");
        assert_eq!(chain[1], *cert.der());
        assert_eq!(
            not_after(&chain[0]),
            Some(start() + Duration::from_secs(86_400)),
            "clamped to the intermediate"
        );
        let verifier = root.client_verifier(false).expect("verifier");
        verifier
            .verify_client_cert(
                &chain[0],
                &chain[1..2],
                UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
            )
            .expect("verifies to the operator's root through the intermediate");
    }

    #[test]
    fn a_ca_that_cannot_work_is_refused_at_once() {
        let clock: Arc<dyn Clock> = Arc::new(FakeClock::new(start()));
        let root = Ca::generate(clock.clone()).expect("root");
        let other = Ca::generate(clock.clone()).expect("another root");
        let root_issuer = Issuer::from_ca_cert_pem(
            root.cert_pem(),
            KeyPair::from_pem(root.key_pem()).expect("key"),
        )
        .expect("issuer");
        let intermediate = |ca: bool| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::default();
            if ca {
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            }
            params.not_before = start().into();
            params.not_after = (start() + Duration::from_secs(86_400)).into();
            let cert = params.signed_by(&key, &root_issuer).expect("signed");
            (cert.pem(), key.serialize_pem())
        };
        let refusal = |cert: &str, key: &str, roots: &str| match Ca::intermediate(
            cert,
            key,
            &[],
            roots,
            clock.clone(),
        ) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        let (cert, key) = intermediate(true);
        assert!(Ca::intermediate(&cert, &key, &[], root.cert_pem(), clock.clone()).is_ok());
        let (_, stranger) = intermediate(true);
        assert!(
            refusal(&cert, &stranger, root.cert_pem())
                .contains("the key is not the signing certificate's")
        );
        assert!(refusal(&cert, &key, other.cert_pem()).contains("is not signed by"));
        let (leaf, leaf_key) = intermediate(false);
        assert!(refusal(&leaf, &leaf_key, root.cert_pem()).contains("is not a CA certificate"));
        assert!(
            refusal(root.cert_pem(), other.key_pem(), root.cert_pem()).contains("the key is not")
        );
    }
}
