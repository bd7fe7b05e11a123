//! The root (ECDSA P-256) and what it signs: serving certificates for Sextant's own TLS
//! endpoints (the admission webhook, the secure xDS port) and workload certificates.

use std::{net::IpAddr, sync::Arc, time::Duration};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use sextant_model::Identity;

use crate::{Clock, Error};

/// How long a generated root is valid.
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 86_400);

/// How long a serving certificate is valid.
pub const SERVING_TTL: Duration = Duration::from_secs(365 * 86_400);

/// How far back a serving certificate's validity starts, for clients whose clocks lag ours.
const SERVING_BACKDATE: Duration = Duration::from_secs(300);

/// How far back a workload certificate's validity starts (as Istio's).
const WORKLOAD_BACKDATE: Duration = Duration::from_secs(120);

/// The root: its certificate and key as PEM (to store them), parsed once for signing, and
/// the clock that dates what it signs.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// What follows a leaf this CA signs: the signing certificate's chain up to and including
    /// the root (just the root when the CA is the root).
    chain_pem: Vec<String>,
    /// The roots workloads trust (the trust bundle).
    roots_pem: Vec<String>,
    roots: Vec<CertificateDer<'static>>,
    /// The signing certificate's end: nothing it signs outlives it.
    not_after: std::time::SystemTime,
    clock: Arc<dyn Clock>,
}

/// A serving certificate chain and its key, as rustls takes them.
pub struct Serving {
    /// Leaf first, then the root.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

/// A workload's certificate and key, PEM.
pub struct WorkloadCert {
    /// The leaf certificate (the root is distributed separately, as `root-cert.pem`).
    pub chain_pem: String,
    /// The leaf's private key (PKCS#8).
    pub key_pem: String,
}

impl Ca {
    /// A new root, valid for ten years from `clock`'s now.
    pub fn generate(clock: Arc<dyn Clock>) -> Result<Ca, Error> {
        let key = KeyPair::generate().map_err(Error::GenerateKey)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "sextant");
        // Named after its key, so that the roots of a rotation are told apart by name.
        let tag = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.public_key_raw().hash(&mut h);
            h.finish()
        };
        dn.push(DnType::CommonName, format!("sextant root CA {tag:016x}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = clock.now();
        params.not_before = now.into();
        params.not_after = (now + ROOT_TTL).into();
        let cert = params.self_signed(&key).map_err(Error::SignRoot)?;
        Ca::from_pem(&cert.pem(), &key.serialize_pem(), clock)
    }

    /// The root from PEM text, checked to be usable.
    pub fn from_pem(cert_pem: &str, key_pem: &str, clock: Arc<dyn Clock>) -> Result<Ca, Error> {
        Ca::intermediate(cert_pem, key_pem, &[], cert_pem, clock)
    }

    /// A CA signing with `cert_pem` and `key_pem` under the roots of `roots_pem`:
    /// `chain_pem` is what links the signing certificate to a root (Istio's `cert-chain.pem`,
    /// the signing certificate first; empty when the signing certificate is a root itself).
    pub fn intermediate(
        cert_pem: &str,
        key_pem: &str,
        chain_pem: &[String],
        roots_pem: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Ca, Error> {
        let key = KeyPair::from_pem(key_pem).map_err(Error::RootKey)?;
        let key_der = key.public_key_raw().to_vec();
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(Error::RootCert)?;
        let signing =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(Error::RootPem)?;
        let not_after = crate::identity::not_after(&signing).ok_or(Error::RootValidity)?;
        let roots: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(roots_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(Error::RootPem)?;
        if roots.is_empty() {
            return Err(Error::NoRoots);
        }
        let roots_pem: Vec<String> = roots.iter().map(|r| pem("CERTIFICATE", r)).collect();
        // Signing certificate first, then the given chain (its copy of the signing
        // certificate dropped), ending at a root: the first root unless the chain has one.
        let mut chain = vec![signing.clone()];
        if !roots.contains(&signing) {
            for c in chain_pem {
                for der in CertificateDer::pem_slice_iter(c.as_bytes()) {
                    let der = der.map_err(Error::RootPem)?;
                    if der != signing {
                        chain.push(der);
                    }
                }
            }
            if !chain.last().is_some_and(|c| roots.contains(c)) {
                chain.push(roots[0].clone());
            }
        }
        check_chain(&key_der, &chain, &roots)?;
        let chain: Vec<String> = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
            chain_pem: chain,
            roots_pem,
            roots,
            not_after,
            clock,
        })
    }

    /// What follows a leaf this CA signs, PEM, up to and including the root.
    pub fn chain_pem(&self) -> &[String] {
        &self.chain_pem
    }

    /// The trust bundle: every root workloads trust, PEM, concatenated.
    pub fn roots_pem(&self) -> String {
        self.roots_pem.concat()
    }

    /// When the signing certificate expires.
    pub fn not_after(&self) -> std::time::SystemTime {
        self.not_after
    }

    /// When what the CA rests on expires: `root` (the first of the trust bundle's roots to
    /// expire) and, for an intermediate, `intermediate` (the signing certificate).
    pub fn expiries(&self) -> Vec<(&'static str, std::time::SystemTime)> {
        let mut out = Vec::new();
        if let Some(root) = self
            .roots
            .iter()
            .filter_map(|r| crate::identity::not_after(r))
            .min()
        {
            out.push(("root", root));
        }
        if self.chain_pem.len() > 1 {
            out.push(("intermediate", self.not_after));
        }
        out
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// The signing certificate (the root, unless the CA is an intermediate), PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The signing key, PEM (to store it).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The trust bundle as a `caBundle` (base64 of the PEM).
    pub fn bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.roots_pem().as_bytes())
    }

    /// The clock that dates what this CA signs.
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// A serving certificate for these names and addresses, valid for a year.
    pub fn serving(&self, names: &[String], ips: &[IpAddr]) -> Result<Serving, Error> {
        let key = KeyPair::generate().map_err(Error::GenerateKey)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(Error::ServingNames)?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or("sextant", String::as_str),
        );
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = self.clock.now();
        params.not_before = (now - SERVING_BACKDATE).into();
        params.not_after = (now + SERVING_TTL).into();
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(Error::SignServing)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(
            self.chain_pem
                .iter()
                .filter_map(|c| CertificateDer::from_pem_slice(c.as_bytes()).ok()),
        );
        Ok(Serving {
            chain,
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }

    /// A rustls server configuration serving a certificate for `names` and `ips`.
    pub fn server_config(
        &self,
        names: &[String],
        ips: &[IpAddr],
    ) -> Result<Arc<rustls::ServerConfig>, Error> {
        self.tls(names, ips, None)
    }

    /// The secure xDS port's configuration: HTTP/2, and a client certificate verified against
    /// this root when the client presents one (istiod's `VerifyClientCertIfGiven`; callers
    /// without one must authenticate with a token).
    pub fn xds_server_config(
        &self,
        names: &[String],
        ips: &[IpAddr],
    ) -> Result<Arc<rustls::ServerConfig>, Error> {
        self.tls(names, ips, Some(self.client_verifier(true)?))
    }

    /// Verifies client certificates against this root; `optional`: clients may present none.
    pub fn client_verifier(
        &self,
        optional: bool,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, Error> {
        let mut roots = rustls::RootCertStore::empty();
        for root in &self.roots {
            roots.add(root.clone()).map_err(Error::Tls)?;
        }
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        );
        let builder = if optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder.build().map_err(Error::ClientVerifier)
    }

    /// A serving certificate for `names` and `ips` with `clients` verifying client
    /// certificates (and HTTP/2 by ALPN), or none.
    fn tls(
        &self,
        names: &[String],
        ips: &[IpAddr],
        clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    ) -> Result<Arc<rustls::ServerConfig>, Error> {
        let serving = self.serving(names, ips)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(Error::Tls)?;
        let mut config = match &clients {
            Some(v) => builder.with_client_cert_verifier(v.clone()),
            None => builder.with_no_client_auth(),
        }
        .with_single_cert(serving.chain, serving.key)
        .map_err(Error::Tls)?;
        if clients.is_some() {
            config.alpn_protocols = vec![b"h2".to_vec()];
        }
        Ok(Arc::new(config))
    }

    /// A workload certificate for `identity` as Istio issues them: the SPIFFE id as the only
    /// (URI) SAN, an empty subject, usable for serving and as a client, valid from two minutes
    /// ago for `ttl`.
    pub fn workload(&self, identity: &Identity, ttl: Duration) -> Result<WorkloadCert, Error> {
        let key = KeyPair::generate().map_err(Error::GenerateKey)?;
        let params = self.workload_params(identity, ttl)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| Error::SignWorkload {
                identity: identity.clone(),
                source,
            })?;
        let mut chain_pem = cert.pem();
        for c in self
            .chain_pem
            .iter()
            .filter(|c| !self.roots_pem.contains(c))
        {
            chain_pem.push_str(c);
        }
        Ok(WorkloadCert {
            chain_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// A workload leaf's fields (Istio's): the identity as the only (URI) SAN, critical as the
    /// subject is empty; digital signature and key encipherment; server and client auth;
    /// valid from two minutes ago for `ttl`, never past the signing certificate.
    pub(crate) fn workload_params(
        &self,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<CertificateParams, Error> {
        let uri = identity
            .to_string()
            .try_into()
            .map_err(|source| Error::IdentityUri {
                identity: identity.clone(),
                source,
            })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = self.clock.now();
        params.not_before = (now - WORKLOAD_BACKDATE).into();
        params.not_after = (now + ttl).min(self.not_after).into();
        Ok(params)
    }
}

/// Refuses a CA that cannot work, as istiod does at start: the key must be the signing
/// certificate's, every certificate of the chain a CA certificate signed by the next, and the
/// chain must end at one of the roots.
fn check_chain(
    key_raw: &[u8],
    chain: &[CertificateDer<'static>],
    roots: &[CertificateDer<'static>],
) -> Result<(), Error> {
    use x509_parser::prelude::FromDer;
    fn parse<'a>(der: &'a [u8]) -> Result<x509_parser::certificate::X509Certificate<'a>, Error> {
        x509_parser::certificate::X509Certificate::from_der(der)
            .map(|(_, c)| c)
            .map_err(|e| Error::Chain(format!("a certificate cannot be read: {e}")))
    }
    let certs = chain
        .iter()
        .map(|c| parse(c))
        .collect::<Result<Vec<_>, _>>()?;
    let signing = &certs[0];
    if signing.public_key().subject_public_key.data.as_ref() != key_raw {
        return Err(Error::Chain(
            "the key is not the signing certificate's (ca-key.pem / ca.key does not match ca-cert.pem / ca.crt)".to_owned(),
        ));
    }
    for (i, cert) in certs.iter().enumerate() {
        if !cert.is_ca() {
            return Err(Error::Chain(format!(
                "{} is not a CA certificate (basicConstraints CA:TRUE)",
                cert.subject()
            )));
        }
        let issuer = certs.get(i + 1).unwrap_or(cert);
        if cert.verify_signature(Some(issuer.public_key())).is_err() {
            return Err(Error::Chain(format!(
                "{} is not signed by {} (cert-chain.pem or root-cert.pem is not this certificate's chain)",
                cert.subject(),
                issuer.subject()
            )));
        }
    }
    if !chain.last().is_some_and(|last| roots.contains(last)) {
        return Err(Error::Chain(
            "the chain does not end at a root of root-cert.pem".to_owned(),
        ));
    }
    Ok(())
}

/// One DER object as PEM text.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use rustls::pki_types::UnixTime;

    use super::*;
    use crate::{FakeClock, certificate_identities};

    /// 2023-11-14: far from the real date, so nothing passes by reading the system clock.
    fn start() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn unix(t: SystemTime) -> UnixTime {
        UnixTime::since_unix_epoch(t.duration_since(UNIX_EPOCH).expect("after 1970"))
    }

    /// The validity of a DER certificate, as times.
    fn validity(der: &[u8]) -> (SystemTime, SystemTime) {
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).expect("DER");
        let at = |t: x509_parser::time::ASN1Time| {
            UNIX_EPOCH + Duration::from_secs(t.timestamp().try_into().expect("after 1970"))
        };
        (
            at(cert.validity().not_before),
            at(cert.validity().not_after),
        )
    }

    #[test]
    fn a_generated_root_signs_serving_certificates_and_round_trips_through_pem() {
        let clock: Arc<dyn Clock> = Arc::new(FakeClock::new(start()));
        let ca = Ca::generate(clock.clone()).expect("root");
        let again = Ca::from_pem(&ca.cert_pem, &ca.key_pem, clock).expect("reads back");
        let serving = again
            .serving(
                &["sextant.istio-system.svc".into()],
                &["127.0.0.1".parse().expect("ip")],
            )
            .expect("serving certificate");
        assert_eq!(serving.chain.len(), 2);
        assert!(again.server_config(&["localhost".into()], &[]).is_ok());
        assert!(Ca::from_pem("not pem", &ca.key_pem, ca.clock().clone()).is_err());
        assert!(ca.bundle().len() > 100);
    }

    #[test]
    fn workload_certificates_carry_only_the_spiffe_identity_and_chain_to_the_root() {
        let clock = Arc::new(FakeClock::new(start()));
        let ca = Ca::generate(clock.clone()).expect("root");
        let id = Identity::parse("spiffe://cluster.local/ns/bookinfo/sa/reviews").expect("id");
        let workload = ca
            .workload(&id, Duration::from_secs(86_400))
            .expect("signed");
        let leaf = CertificateDer::from_pem_slice(workload.chain_pem.as_bytes()).expect("pem");
        assert_eq!(&*certificate_identities(&leaf), std::slice::from_ref(&id));
        let verifier = ca.client_verifier(false).expect("verifier");
        let now = unix(clock.now());
        verifier
            .verify_client_cert(&leaf, &[], now)
            .expect("a client certificate the secure xDS port accepts");
        let other = Ca::generate(clock).expect("another root");
        let foreign = other
            .workload(&id, Duration::from_secs(60))
            .expect("signed");
        let foreign = CertificateDer::from_pem_slice(foreign.chain_pem.as_bytes()).expect("pem");
        assert!(verifier.verify_client_cert(&foreign, &[], now).is_err());
    }

    #[test]
    fn validity_follows_the_clock() {
        let clock = Arc::new(FakeClock::new(start()));
        let ca = Ca::generate(clock.clone()).expect("root");
        let root = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("pem");
        assert_eq!(validity(&root), (start(), start() + ROOT_TTL));

        clock.advance(Duration::from_secs(3600));
        let now = start() + Duration::from_secs(3600);
        let serving = ca.serving(&["localhost".into()], &[]).expect("serving");
        assert_eq!(
            validity(&serving.chain[0]),
            (now - SERVING_BACKDATE, now + SERVING_TTL)
        );
        let id = Identity::parse("spiffe://cluster.local/ns/a/sa/b").expect("id");
        let ttl = Duration::from_secs(86_400);
        let workload = ca.workload(&id, ttl).expect("signed");
        let leaf = CertificateDer::from_pem_slice(workload.chain_pem.as_bytes()).expect("pem");
        assert_eq!(validity(&leaf), (now - WORKLOAD_BACKDATE, now + ttl));

        let verifier = ca.client_verifier(false).expect("verifier");
        verifier
            .verify_client_cert(&leaf, &[], unix(now + ttl - Duration::from_secs(1)))
            .expect("valid until its end");
        assert!(
            verifier
                .verify_client_cert(&leaf, &[], unix(now + ttl + Duration::from_secs(1)))
                .is_err(),
            "expired after its ttl"
        );
    }
}
