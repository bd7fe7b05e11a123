//! Sextant's certificate authority. A root (ECDSA P-256) signs the serving certificates of
//! Sextant's own TLS endpoints (the admission webhook, the secure xDS port) and workload
//! certificates, and [`Secrets`] serves them to Envoy over SDS. Where the root is kept (files,
//! a Kubernetes Secret) is the binary's business: this crate takes and gives PEM text. Time
//! comes from an injected [`Clock`], so validity and renewal are tested without waiting.

mod authority;
mod clock;
mod csr;
mod error;
mod identity;
mod secrets;

#[cfg(test)]
pub use clock::FakeClock;
pub use {
    authority::{Ca, SERVING_TTL, Serving, WorkloadCert},
    clock::{Clock, SystemClock},
    csr::{CsrError, MAX_CSR_BYTES},
    error::Error,
    identity::certificate_identities,
    secrets::Secrets,
};
