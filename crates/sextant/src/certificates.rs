//! Istio's certificate service on the secure port (15012), so that Istio's own sidecars
//! (istio-agent) and any client built from Istio's `ca.proto` get their workload
//! certificates from Sextant: `istio.v1.auth.IstioCertificateService/CreateCertificate`.
//!
//! As istiod does it (`security/pkg/server/ca/server.go`): the caller authenticates with a
//! client certificate from Sextant's CA or a service-account token (TokenReview, or the token
//! file without a cluster); a `clusterid` other than this cluster's is refused; impersonation
//! (`ImpersonatedIdentity`) is refused, as Sextant trusts no node agents; the TTL is the
//! requested one (the default when zero or less), refused above the maximum; the answer is
//! the chain, leaf first and root last. Unlike istiod, which ignores the CSR's names, Sextant
//! refuses a CSR that names anything but the caller.

use std::{sync::Arc, time::Duration};

use sextant_ca::{Ca, CsrError};
use sextant_model::Identity;
use sextant_xds::grpc::Authenticate;
use tonic::{Request, Response, Status};

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
    cluster_id: String,
    metrics: Arc<Metrics>,
}

impl Certificates {
    /// Signs with `ca` for callers `authenticator` accepts, in cluster `cluster_id`.
    pub fn new(
        ca: Arc<Ca>,
        authenticator: Arc<Authenticator>,
        ttls: Ttls,
        cluster_id: &str,
        metrics: Arc<Metrics>,
    ) -> Self {
        Certificates {
            ca,
            authenticator,
            ttls,
            cluster_id: cluster_id.to_owned(),
            metrics,
        }
    }

    /// The gRPC service, reading requests of at most 64 KiB.
    pub fn into_service(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    async fn create(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<IstioCertificateResponse, Status> {
        let clusters: Vec<_> = request.metadata().get_all("clusterid").iter().collect();
        if let [cluster] = clusters.as_slice() {
            let cluster = cluster.to_str().unwrap_or_default();
            if !cluster.is_empty() && cluster != self.cluster_id {
                return Err(Status::unauthenticated(format!(
                    "client claims to be in cluster {cluster:?}, but we only know about local \
                     cluster {:?}",
                    self.cluster_id
                )));
            }
        }
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
            return Err(Status::unauthenticated(format!(
                "request impersonation authentication failure: Sextant trusts no node agent to \
                 ask for another identity ({impersonated})"
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
            Err(status) => format!("{:?}", status.code()).to_lowercase(),
        };
        self.metrics.certificate_request(&outcome);
        if let Err(status) = &result {
            tracing::debug!(code = ?status.code(), message = status.message(), "certificate request refused");
        }
        result.map(Response::new)
    }
}
