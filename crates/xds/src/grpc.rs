//! The ADS gRPC service with responses written straight from shared resource bytes.
//!
//! tonic's codec encodes each response message whole into a buffer of its own: 2.7 MB per
//! proxy at W-M, held until the proxy has read it. Here a response stays a list of shared
//! `Bytes` until the HTTP/2 connection asks for data; the body then writes gRPC frames in
//! chunks of at most [`CHUNK`] bytes (small resources copied, large ones passed on without a
//! copy). Requests are decoded here too, so an idle stream keeps no large read buffer.
//!
//! `outgoing` encodes a response's envelope around the shared resource bytes, `body` is the
//! response body (chunks, the bound on copies in flight, trailers), `requests` reassembles
//! and decodes requests (large ones only with a permit), and this module routes the
//! `AggregatedDiscoveryService` methods to a [`Streams`] as a tower service.

mod body;
mod outgoing;
mod requests;

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tokio::sync::mpsc;
use tonic::{
    Status,
    body::Body,
    codegen::{Service, http},
    server::NamedService,
};

use sextant_model::Identity;

use crate::protocol::SotwRequest;

pub use body::CHUNK;
pub use outgoing::Outgoing;
pub use requests::{
    DEFAULT_MIN_REQUEST_BYTES_PER_SECOND, DEFAULT_REQUEST_GRACE, LARGE_REQUEST, LargeRequests,
    OnBound, Progress, Requests, large_requests,
};

use body::ResponseBody;

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_METHOD: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_METHOD: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Who opened a stream, as its listener established it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A listener that does not authenticate (plaintext xDS, 15010).
    Anonymous,
    /// The identities the caller proved (a client certificate or a token); the stream's node
    /// must agree with one of them.
    Authenticated(Vec<Identity>),
}

/// The future of an authentication.
pub type Authentication = Pin<Box<dyn Future<Output = Result<Vec<Identity>, Status>> + Send>>;

/// Establishes who the caller of a stream is, from the request's headers and its connection's
/// extensions (a TLS listener puts the peer's certificates there). An error refuses the
/// stream with that status (`UNAUTHENTICATED`).
pub trait Authenticate: Send + Sync + 'static {
    /// The caller's identities.
    fn authenticate(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Authentication;
}

/// Opens streams for the service: each returns the receiving end of its responses.
pub trait Streams: Send + Sync + 'static {
    /// A state-of-the-world stream.
    fn sotw(
        &self,
        requests: Requests<SotwRequest>,
        caller: Caller,
    ) -> Result<mpsc::Receiver<Result<Box<Outgoing>, Status>>, Status>;
    /// A delta stream.
    fn delta(
        &self,
        requests: Requests<DeltaDiscoveryRequest>,
        caller: Caller,
    ) -> Result<mpsc::Receiver<Result<Box<Outgoing>, Status>>, Status>;
    /// Largest request accepted.
    fn max_request_bytes(&self) -> usize;
}

/// `AggregatedDiscoveryService` as a tower service for tonic's router.
pub struct AdsService<S> {
    streams: Arc<S>,
    authenticate: Option<Arc<dyn Authenticate>>,
    permits: LargeRequests,
}

impl<S> Clone for AdsService<S> {
    fn clone(&self) -> Self {
        AdsService {
            streams: self.streams.clone(),
            authenticate: self.authenticate.clone(),
            permits: self.permits.clone(),
        }
    }
}

impl<S> AdsService<S> {
    /// Serves `streams` to anyone (plaintext xDS).
    pub fn new(streams: Arc<S>) -> Self {
        AdsService {
            streams,
            authenticate: None,
            permits: large_requests(),
        }
    }

    /// Requests must arrive at `progress`; a stream a bound ends (`request_bytes`,
    /// `request_progress`) is told to `on_bound`.
    pub fn bounded(mut self, progress: Progress, on_bound: OnBound) -> Self {
        self.permits = self.permits.bounded(progress, on_bound);
        self
    }

    /// Serves only callers that `authenticate` accepts (the TLS listener).
    pub fn authenticated(mut self, authenticate: Arc<dyn Authenticate>) -> Self {
        self.authenticate = Some(authenticate);
        self
    }
}

impl<S> NamedService for AdsService<S> {
    const NAME: &'static str = SERVICE;
}

fn grpc_response(rx: mpsc::Receiver<Result<Box<Outgoing>, Status>>) -> http::Response<Body> {
    let mut response = http::Response::new(Body::new(ResponseBody::new(rx)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

fn open_stream<S: Streams>(
    streams: &S,
    request: http::Request<Body>,
    caller: Caller,
    permits: LargeRequests,
) -> http::Response<Body> {
    let max = streams.max_request_bytes();
    let path = request.uri().path().to_owned();
    let body = request.into_body();
    let opened = match path.as_str() {
        SOTW_METHOD => streams.sotw(Requests::new(body, max, permits), caller),
        DELTA_METHOD => streams.delta(Requests::new(body, max, permits), caller),
        other => Err(Status::unimplemented(format!("unknown method {other}"))),
    };
    match opened {
        Ok(rx) => grpc_response(rx),
        Err(status) => status.into_http(),
    }
}

impl<S: Streams> Service<http::Request<Body>> for AdsService<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let streams = self.streams.clone();
        let Some(authenticate) = &self.authenticate else {
            let response = open_stream(&*streams, request, Caller::Anonymous, self.permits.clone());
            return Box::pin(std::future::ready(Ok(response)));
        };
        let authentication = authenticate.authenticate(request.headers(), request.extensions());
        let permits = self.permits.clone();
        Box::pin(async move {
            Ok(match authentication.await {
                Ok(identities) => open_stream(
                    &*streams,
                    request,
                    Caller::Authenticated(identities),
                    permits,
                ),
                Err(status) => {
                    tracing::warn!(
                        message = status.message(),
                        "refusing unauthenticated stream"
                    );
                    status.into_http()
                }
            })
        })
    }
}
