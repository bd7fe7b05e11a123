//! Streams per connection on the xDS ports: a stream past `--max-streams-per-connection` on
//! one connection is refused with RESOURCE_EXHAUSTED, counted in
//! `sextant_xds_bounded_total{bound="streams"}`; the connection's other streams go on. HTTP/2
//! itself (`SETTINGS_MAX_CONCURRENT_STREAMS`) is told twice the bound, so a client that
//! ignores the setting is reset by the protocol, and one that keeps to it gets the clear
//! refusal.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use tonic::{
    Status,
    body::Body,
    codegen::{Service, http},
};

use crate::metrics::Metrics;

/// Streams one connection may hold by default (Envoy opens one ADS stream per connection;
/// the common HTTP/2 default is 100).
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: usize = 100;

/// The bound, as a tower layer for tonic's server. Connections are told apart by the peer's
/// address, which tonic puts into every request (a TLS listener's `Peer`, or plain TCP's
/// connect info).
#[derive(Clone)]
pub struct StreamCap {
    max: usize,
    open: Arc<Mutex<HashMap<SocketAddr, usize>>>,
    metrics: Arc<Metrics>,
}

impl StreamCap {
    /// At most `max` streams per connection, refusals counted in `metrics`.
    pub fn new(max: usize, metrics: Arc<Metrics>) -> StreamCap {
        StreamCap {
            max,
            open: Arc::default(),
            metrics,
        }
    }

    /// What HTTP/2 is told (see the module's comment).
    pub fn http2_limit(&self) -> u32 {
        u32::try_from(self.max.saturating_mul(2)).unwrap_or(u32::MAX)
    }

    /// A place for one more stream of the connection from `peer`, if it has room.
    fn open(&self, peer: SocketAddr) -> Option<StreamGuard> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(peer).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(StreamGuard {
            peer,
            open: self.open.clone(),
        })
    }
}

/// One open stream; gives its place back when its response body is dropped (the stream
/// ended or was reset).
struct StreamGuard {
    peer: SocketAddr,
    open: Arc<Mutex<HashMap<SocketAddr, usize>>>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

impl<S> tower::Layer<S> for StreamCap {
    type Service = Capped<S>;

    fn layer(&self, inner: S) -> Capped<S> {
        Capped {
            inner,
            cap: self.clone(),
        }
    }
}

/// A service whose streams are bounded per connection.
#[derive(Clone)]
pub struct Capped<S> {
    inner: S,
    cap: StreamCap,
}

/// The address of the peer a request came from.
fn peer_of(extensions: &http::Extensions) -> Option<SocketAddr> {
    if let Some(peer) = extensions.get::<crate::tls::Peer>() {
        return Some(peer.addr);
    }
    extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
}

impl<S> Service<http::Request<Body>> for Capped<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let guard = match peer_of(request.extensions()) {
            Some(peer) => match self.cap.open(peer) {
                Some(guard) => Some(guard),
                None => {
                    self.cap.metrics.bounded("streams");
                    let status = Status::resource_exhausted(format!(
                        "this connection already has {} streams, the most allowed \
                         (--max-streams-per-connection)",
                        self.cap.max
                    ));
                    return Box::pin(std::future::ready(Ok(status.into_http())));
                }
            },
            None => None,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let Ok(response) = response.await;
            Ok(response.map(|body| match guard {
                Some(guard) => Body::new(Guarded {
                    body,
                    _guard: guard,
                }),
                None => body,
            }))
        })
    }
}

/// A response body that holds its stream's place.
struct Guarded {
    body: Body,
    _guard: StreamGuard,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_gets_its_places_back_as_its_streams_end() {
        let cap = StreamCap::new(2, Arc::new(Metrics::new()));
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let one = cap.open(a).expect("room");
        let _two = cap.open(a).expect("room");
        assert!(cap.open(a).is_none(), "a third on the same connection");
        let _other = cap.open(b).expect("another connection has its own");
        drop(one);
        assert!(cap.open(a).is_some());
        assert_eq!(cap.http2_limit(), 4);
    }
}
