//! Sextant's certificate authority: a self-signed root (ECDSA P-256) that signs the serving
//! certificates of Sextant's own TLS endpoints (the admission webhook, the secure xDS port)
//! and workload certificates (`sextant ca issue`). The root comes from
//! files (`--ca-dir DIR` with `ca.crt` and `ca.key`), from the cluster (the Secret
//! `sextant-ca`, created by the first replica and shared by the others, so every replica's
//! serving certificate is trusted by one `caBundle`), or is generated for this process.

use std::{net::IpAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sextant_model::Identity;

/// Name of the Secret holding the root in the cluster.
pub const SECRET: &str = "sextant-ca";

/// The root: its certificate and key as PEM (to store them), and parsed once for signing.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    root: rustls::pki_types::CertificateDer<'static>,
}

/// A serving certificate chain and its key, as rustls takes them.
pub struct Serving {
    /// Leaf first, then the root.
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl Ca {
    /// A new root, valid for ten years.
    pub fn generate() -> anyhow::Result<Ca> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "sextant");
        dn.push(DnType::CommonName, "sextant root CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = std::time::SystemTime::now();
        params.not_before = now.into();
        params.not_after = (now + Duration::from_secs(10 * 365 * 86_400)).into();
        let cert = params
            .self_signed(&key)
            .context("signing the CA certificate")?;
        Ca::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// The root from PEM text, checked to be usable.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<Ca> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let key = KeyPair::from_pem(key_pem).context("the CA key is not a PEM private key")?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).context("the CA certificate cannot be read")?;
        let root = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("the CA certificate is not PEM: {e}"))?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
            root,
        })
    }

    /// `DIR/ca.crt` and `DIR/ca.key`.
    pub fn from_dir(dir: &Path) -> anyhow::Result<Ca> {
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .with_context(|| format!("reading {}", dir.join(f).display()))
        };
        Ca::from_pem(&read("ca.crt")?, &read("ca.key")?)
    }

    /// The Secret `sextant-ca` in `namespace`, created with a new root if missing. Replicas
    /// racing to create it all end up with the one that was created first.
    pub async fn from_cluster(client: kube::Client, namespace: &str) -> anyhow::Result<Ca> {
        use k8s_openapi::{ByteString, api::core::v1::Secret};
        use kube::api::{Api, PostParams};
        let api: Api<Secret> = Api::namespaced(client, namespace);
        for _ in 0..3 {
            if let Some(secret) = api.get_opt(SECRET).await.context("reading the CA Secret")? {
                let data = secret.data.unwrap_or_default();
                let field = |k: &str| {
                    data.get(k)
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                        .with_context(|| format!("the Secret {SECRET} has no {k}"))
                };
                return Ca::from_pem(&field("ca.crt")?, &field("ca.key")?);
            }
            let ca = Ca::generate()?;
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(SECRET.to_owned()),
                    ..Default::default()
                },
                data: Some(
                    [
                        (
                            "ca.crt".to_owned(),
                            ByteString(ca.cert_pem.clone().into_bytes()),
                        ),
                        (
                            "ca.key".to_owned(),
                            ByteString(ca.key_pem.clone().into_bytes()),
                        ),
                    ]
                    .into(),
                ),
                type_: Some("Opaque".to_owned()),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &secret).await {
                Ok(_) => return Ok(ca),
                // Another replica was first: use its root.
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e).context("creating the CA Secret"),
            }
        }
        anyhow::bail!("the CA Secret {SECRET} keeps changing")
    }

    /// The root certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The root certificate as a `caBundle` (base64 of the PEM).
    pub fn bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.cert_pem.as_bytes())
    }

    /// A serving certificate for these names and addresses, valid for a year.
    pub fn serving(&self, names: &[String], ips: &[IpAddr]) -> anyhow::Result<Serving> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
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
        let now = std::time::SystemTime::now();
        params.not_before = (now - Duration::from_secs(300)).into();
        params.not_after = (now + Duration::from_secs(365 * 86_400)).into();
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Serving {
            chain: vec![cert.der().clone(), self.root.clone()],
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }

    /// A rustls server configuration serving a certificate for `names` and `ips`.
    pub fn server_config(
        &self,
        names: &[String],
        ips: &[IpAddr],
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        self.tls(names, ips, None)
    }

    /// The secure xDS port's configuration: HTTP/2, and a client certificate verified against
    /// this root when the client presents one (istiod's `VerifyClientCertIfGiven`; callers
    /// without one must authenticate with a token).
    pub fn xds_server_config(
        &self,
        names: &[String],
        ips: &[IpAddr],
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        self.tls(names, ips, Some(self.client_verifier(true)?))
    }

    /// Verifies client certificates against this root; `optional`: clients may present none.
    pub fn client_verifier(
        &self,
        optional: bool,
    ) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root.clone())?;
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        );
        let builder = if optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        Ok(builder.build()?)
    }

    /// A serving certificate for `names` and `ips` with `clients` verifying client
    /// certificates (and HTTP/2 by ALPN), or none.
    fn tls(
        &self,
        names: &[String],
        ips: &[IpAddr],
        clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let serving = self.serving(names, ips)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let mut config = match &clients {
            Some(v) => builder.with_client_cert_verifier(v.clone()),
            None => builder.with_no_client_auth(),
        }
        .with_single_cert(serving.chain, serving.key)?;
        if clients.is_some() {
            config.alpn_protocols = vec![b"h2".to_vec()];
        }
        Ok(Arc::new(config))
    }

    /// A workload certificate for `identity` as Istio issues them: the SPIFFE id as the only
    /// (URI) SAN, an empty subject, usable for serving and as a client, valid from two minutes
    /// ago for `ttl`.
    pub fn workload(&self, identity: &Identity, ttl: Duration) -> anyhow::Result<Workload> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = std::time::SystemTime::now();
        params.not_before = (now - Duration::from_secs(120)).into();
        params.not_after = (now + ttl).into();
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Workload {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `DIR/ca.crt` and `DIR/ca.key` (the key readable by the owner only).
    pub fn write_dir(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_file(&dir.join("ca.crt"), &self.cert_pem, 0o644)?;
        write_file(&dir.join("ca.key"), &self.key_pem, 0o600)
    }
}

/// A workload's certificate and key, PEM.
pub struct Workload {
    /// The leaf certificate (the root is distributed separately, as `root-cert.pem`).
    pub chain_pem: String,
    /// The leaf's private key (PKCS#8).
    pub key_pem: String,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Writes `text` to `path` with `mode` (on Unix), replacing what is there.
pub fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    use std::io::Write;
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // An existing file keeps its mode on open: set it, before the content goes in.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_root_signs_serving_certificates_and_round_trips_through_pem() {
        let ca = Ca::generate().expect("root");
        let again = Ca::from_pem(&ca.cert_pem, &ca.key_pem).expect("reads back");
        let serving = again
            .serving(
                &["sextant.istio-system.svc".into()],
                &["127.0.0.1".parse().expect("ip")],
            )
            .expect("serving certificate");
        assert_eq!(serving.chain.len(), 2);
        assert!(again.server_config(&["localhost".into()], &[]).is_ok());
        assert!(Ca::from_pem("not pem", &ca.key_pem).is_err());
        assert!(ca.bundle().len() > 100);
    }

    #[test]
    fn workload_certificates_carry_only_the_spiffe_identity_and_chain_to_the_root() {
        let ca = Ca::generate().expect("root");
        let id = Identity::parse("spiffe://cluster.local/ns/bookinfo/sa/reviews").expect("id");
        let workload = ca
            .workload(&id, Duration::from_secs(86_400))
            .expect("signed");
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let leaf = CertificateDer::from_pem_slice(workload.chain_pem.as_bytes()).expect("pem");
        assert_eq!(
            &*crate::tls::certificate_identities(&leaf),
            std::slice::from_ref(&id)
        );
        let verifier = ca.client_verifier(false).expect("verifier");
        let now = rustls::pki_types::UnixTime::now();
        verifier
            .verify_client_cert(&leaf, &[], now)
            .expect("a client certificate the secure xDS port accepts");
        let other = Ca::generate().expect("another root");
        let foreign = other
            .workload(&id, Duration::from_secs(60))
            .expect("signed");
        let foreign = CertificateDer::from_pem_slice(foreign.chain_pem.as_bytes()).expect("pem");
        assert!(verifier.verify_client_cert(&foreign, &[], now).is_err());
    }
}
