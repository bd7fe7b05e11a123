//! What can go wrong in the CA, with the library error that caused it.

use sextant_model::Identity;

/// A CA operation that failed; the message says which, the source why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating a key")]
    GenerateKey(#[source] rcgen::Error),
    #[error("signing the CA certificate")]
    SignRoot(#[source] rcgen::Error),
    #[error("the CA key is not a PEM private key")]
    RootKey(#[source] rcgen::Error),
    #[error("the CA certificate cannot be read")]
    RootCert(#[source] rcgen::Error),
    #[error("the CA certificate is not PEM")]
    RootPem(#[source] rustls::pki_types::pem::Error),
    #[error("the CA certificate's validity cannot be read")]
    RootValidity,
    #[error("no root certificate to trust")]
    NoRoots,
    #[error("the CA is not usable: {0}")]
    Chain(String),
    #[error("invalid serving certificate names")]
    ServingNames(#[source] rcgen::Error),
    #[error("signing a serving certificate")]
    SignServing(#[source] rcgen::Error),
    #[error("{identity} cannot be a certificate's URI")]
    IdentityUri {
        identity: Identity,
        #[source]
        source: rcgen::Error,
    },
    #[error("signing a workload certificate for {identity}")]
    SignWorkload {
        identity: Identity,
        #[source]
        source: rcgen::Error,
    },
    #[error("building the TLS configuration")]
    Tls(#[source] rustls::Error),
    #[error("building the client certificate verifier")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
}
