//! Istio's certificate service on the secure port (15012), so that Istio's own sidecars
//! (istio-agent) and any client built from Istio's `ca.proto` get their workload
//! certificates from Sextant: `istio.v1.auth.IstioCertificateService/CreateCertificate`.
//!
//! As istiod does it (`security/pkg/server/ca/server.go`): the caller authenticates with a
//! client certificate from Sextant's CA or a service-account token (TokenReview, or the token
//! file without a cluster); a `clusterid` naming a remote cluster has that cluster's API
//! server review the token, and one naming no known cluster is refused (both in
//! [`Authenticator`], which the secure ADS port shares); impersonation
//! (`ImpersonatedIdentity`) is refused, as Sextant trusts no node agents; the TTL is the
//! requested one (the default when zero or less), refused above the maximum; the answer is
//! the chain, leaf first and root last. Unlike istiod, which ignores the CSR's names, Sextant
//! refuses a CSR that names anything but the caller.

use std::{sync::Arc, time::Duration};

use sextant_ca::{Ca, CsrError};
use sextant_model::Identity;
use sextant_xds::grpc::Authenticate;
use tonic::{Request, Response, Status, codegen::http};

use crate::{metrics::Metrics, secure::Authenticator};

/// The messages and service generated from `proto/istio/v1/auth/ca.proto`.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("istio.v1.auth");
}

use proto::{
    IstioCertificateRequest, IstioCertificateResponse,
    istio_certificate_service_server::{IstioCertificateService, IstioCertificateServiceServer},
};

/// Largest request accepted (a CSR and a little metadata).
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Longest a call may take, reading its request included (a token review takes at most 5 s).
const CALL_DEADLINE: Duration = Duration::from_secs(15);

/// Longest identity echoed back in a refusal (a SPIFFE id is well under this).
const MAX_SHOWN_IDENTITY_CHARS: usize = 256;

/// Istio's TTLs for workload certificates.
#[derive(Clone, Copy, Debug)]
pub struct Ttls {
    /// When the request asks for none (`DEFAULT_WORKLOAD_CERT_TTL`, 24 h).
    pub default: Duration,
    /// The longest granted (`MAX_WORKLOAD_CERT_TTL`, 90 days).
    pub max: Duration,
}

/// The service: signs for authenticated callers with the current CA.
pub struct Certificates {
    ca: Arc<Ca>,
    authenticator: Arc<Authenticator>,
    ttls: Ttls,
    metrics: Arc<Metrics>,
}

impl Certificates {
    /// Signs with `ca` for callers `authenticator` accepts.
    pub fn new(
        ca: Arc<Ca>,
        authenticator: Arc<Authenticator>,
        ttls: Ttls,
        metrics: Arc<Metrics>,
    ) -> Self {
        Certificates {
            ca,
            authenticator,
            ttls,
            metrics,
        }
    }

    /// The gRPC service, reading requests of at most 64 KiB, each call ended after 15 s
    /// (a caller trickling its request cannot hold the call open).
    pub fn into_service(self) -> Deadline<IstioCertificateServiceServer<Self>> {
        Deadline {
            inner: IstioCertificateServiceServer::new(self)
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            limit: CALL_DEADLINE,
        }
    }

    async fn create(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<IstioCertificateResponse, Status> {
        let headers = request.metadata().clone().into_headers();
        let callers = self
            .authenticator
            .authenticate(&headers, request.extensions())
            .await?;
        let body = request.into_inner();
        if let Some(impersonated) = body
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get("ImpersonatedIdentity"))
            .and_then(|v| match &v.kind {
                Some(prost_types::value::Kind::StringValue(s)) if !s.is_empty() => Some(s),
                _ => None,
            })
        {
            // Echoed cut: the request may be 64 KiB.
            let shown: String = impersonated
                .chars()
                .take(MAX_SHOWN_IDENTITY_CHARS)
                .collect();
            return Err(Status::unauthenticated(format!(
                "request impersonation authentication failure: Sextant trusts no node agent to \
                 ask for another identity ({shown:?})"
            )));
        }
        let ttl = match u64::try_from(body.validity_duration) {
            Ok(0) | Err(_) => self.ttls.default,
            Ok(secs) if Duration::from_secs(secs) > self.ttls.max => {
                return Err(Status::invalid_argument(format!(
                    "CSR signing error (requested TTL {secs}s is greater than the max allowed \
                     TTL {}s)",
                    self.ttls.max.as_secs()
                )));
            }
            Ok(secs) => Duration::from_secs(secs),
        };
        let chain = sign(&self.ca, &body.csr, &callers, ttl).map_err(|e| match e {
            CsrError::Names { .. } => Status::permission_denied(e.to_string()),
            CsrError::Sign(_) => Status::internal(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        })?;
        Ok(IstioCertificateResponse { cert_chain: chain })
    }
}

/// `InvalidArgument` → `invalid_argument`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Signs `csr` for the caller identity it names (a caller may hold several).
fn sign(ca: &Ca, csr: &str, callers: &[Identity], ttl: Duration) -> Result<Vec<String>, CsrError> {
    let mut refusal = None;
    for identity in callers {
        match ca.sign_csr(csr, identity, ttl) {
            Err(e @ CsrError::Names { .. }) => refusal = Some(e),
            other => return other,
        }
    }
    Err(refusal.unwrap_or_else(|| CsrError::Sign("a caller without an identity".to_owned())))
}

#[tonic::async_trait]
impl IstioCertificateService for Certificates {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let result = self.create(request).await;
        let outcome = match &result {
            Ok(_) => "signed".to_owned(),
            Err(status) => snake_case(&format!("{:?}", status.code())),
        };
        self.metrics.certificate_request(&outcome);
        if let Err(status) = &result {
            tracing::debug!(code = ?status.code(), message = status.message(), "certificate request refused");
        }
        result.map(Response::new)
    }
}

/// A gRPC service whose calls end with DEADLINE_EXCEEDED after `limit`, however slowly the
/// caller sends its request.
#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Deadline<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let call = self.inner.call(request);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, call).await {
                Ok(response) => response,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "the call took longer than {}s",
                    limit.as_secs()
                ))
                .into_http()),
            }
        })
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Deadline<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{Service, ServiceExt};

    use super::{Deadline, http};

    #[tokio::test]
    async fn a_call_that_outlives_its_deadline_ends_with_deadline_exceeded() {
        // A call that never finishes, as one whose caller never sends the whole request.
        let stuck = tower::service_fn(|_: http::Request<tonic::body::Body>| async {
            std::future::pending::<
                Result<http::Response<tonic::body::Body>, std::convert::Infallible>,
            >()
            .await
        });
        let mut service = Deadline {
            inner: stuck,
            limit: Duration::from_millis(20),
        };
        let response = service
            .ready()
            .await
            .expect("ready")
            .call(http::Request::new(tonic::body::Body::empty()))
            .await
            .expect("a response");
        assert_eq!(
            response.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(b"4".as_slice()),
            "DEADLINE_EXCEEDED"
        );
    }
}
