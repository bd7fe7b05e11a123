//! The ADS gRPC service with responses written straight from shared resource bytes.
//!
//! tonic's codec encodes each response message whole into a buffer of its own: 2.7 MB per
//! proxy at W-M, held until the proxy has read it. Here a response stays a list of shared
//! `Bytes` until the HTTP/2 connection asks for data; the body then writes gRPC frames in
//! chunks of at most [`CHUNK`] bytes (small resources copied, large ones passed on without a
//! copy). Requests are decoded here too, so an idle stream keeps no large read buffer.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use http_body::Frame;
use tokio::sync::mpsc;
use tonic::{
    Status,
    body::Body,
    codegen::{Service, http},
    server::NamedService,
};

use sextant_model::Identity;

use crate::protocol::{DeltaResponse, SotwRequest, SotwResponse};

/// Bytes written per body frame: small resources are gathered up to this size (HTTP/2's
/// default frame size; small buffers are reused by the allocator instead of fresh pages).
pub const CHUNK: usize = 16 * 1024;
/// Resources at least this large are sent without copying.
const ZERO_COPY: usize = 8 * 1024;

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_METHOD: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_METHOD: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// A response on its way to the wire.
#[derive(Debug)]
pub enum Outgoing {
    /// State of the world.
    Sotw(SotwResponse),
    /// Incremental.
    Delta(DeltaResponse),
}

fn varint_len(v: usize) -> usize {
    prost::encoding::encoded_len_varint(v as u64)
}

/// Length of a length-delimited field with a one-byte tag.
fn field_len(len: usize) -> usize {
    1 + varint_len(len) + len
}

fn put_varint(buf: &mut BytesMut, mut v: usize) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Opens a length-delimited field (tag below 16).
fn open(buf: &mut BytesMut, tag: u8, len: usize) {
    buf.put_u8((tag << 3) | 2);
    put_varint(buf, len);
}

fn string(buf: &mut BytesMut, tag: u8, s: &str) {
    if !s.is_empty() {
        open(buf, tag, s.len());
        buf.put_slice(s.as_bytes());
    }
}

fn string_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { field_len(s.len()) }
}

impl Outgoing {
    fn count(&self) -> usize {
        match self {
            Outgoing::Sotw(r) => r.resources.len(),
            Outgoing::Delta(r) => r.resources.len(),
        }
    }

    fn value(&self, i: usize) -> &sextant_resources::Body {
        match self {
            Outgoing::Sotw(r) => &r.resources[i],
            Outgoing::Delta(r) => &r.resources[i].body,
        }
    }

    /// The response's type URL.
    pub fn type_url(&self) -> &'static str {
        match self {
            Outgoing::Sotw(r) => r.type_url,
            Outgoing::Delta(r) => r.type_url,
        }
    }

    /// `google.protobuf.Any { type_url = 1, value = 2 }` of the i-th resource.
    fn any_len(&self, i: usize) -> usize {
        field_len(self.type_url().len()) + field_len(self.value(i).len())
    }

    /// Length of the i-th entry of `resources` (field 2), without its own tag and length.
    fn entry_len(&self, i: usize) -> usize {
        match self {
            Outgoing::Sotw(_) => self.any_len(i),
            Outgoing::Delta(r) => {
                let e = &r.resources[i];
                // Resource { version = 1, resource = 2, name = 3 }
                field_len(16) + field_len(self.any_len(i)) + string_len(&e.name)
            }
        }
    }

    /// Everything but the resources: the gRPC frame prefix and the scalar fields.
    fn head(&self) -> BytesMut {
        let mut head = BytesMut::with_capacity(128);
        head.put_u8(0); // not compressed
        head.put_u32(0); // length, set below
        match self {
            Outgoing::Sotw(r) => {
                string(&mut head, 1, &r.version_info);
                string(&mut head, 4, r.type_url);
                string(&mut head, 5, &r.nonce);
            }
            Outgoing::Delta(r) => {
                string(&mut head, 1, &r.system_version_info);
                string(&mut head, 4, r.type_url);
                string(&mut head, 5, &r.nonce);
                for name in &r.removed_resources {
                    open(&mut head, 6, name.len());
                    head.put_slice(name.as_bytes());
                }
            }
        }
        let resources: usize = (0..self.count())
            .map(|i| field_len(self.entry_len(i)))
            .sum();
        let total = head.len() - 5 + resources;
        head[1..5].copy_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
        head
    }

    /// The i-th entry up to the resource bytes (which follow it directly).
    fn entry_head(&self, i: usize, buf: &mut BytesMut) {
        let url = self.type_url();
        let value = self.value(i).len();
        open(buf, 2, self.entry_len(i));
        if let Outgoing::Delta(r) = self {
            let e = &r.resources[i];
            string(buf, 3, &e.name);
            open(buf, 1, 16);
            buf.put_slice(e.version().as_bytes());
            open(buf, 2, self.any_len(i));
        }
        string(buf, 1, url);
        open(buf, 2, value);
    }
}

/// Copied bytes a stream may have handed to HTTP/2 and not seen written yet. HTTP/2 asks for
/// data as long as the proxy's window (Envoy: 256 MiB) and its send buffer allow, so without
/// this bound a connect storm would hold hundreds of megabytes of copies at once.
const MAX_IN_FLIGHT: usize = 4 * CHUNK;

/// Copied bytes of one stream that HTTP/2 has not dropped yet, and who to wake when it does.
#[derive(Default)]
struct InFlight {
    bytes: std::sync::atomic::AtomicUsize,
    waker: std::sync::Mutex<Option<std::task::Waker>>,
}

/// A copied chunk; gives its size back when HTTP/2 has written (dropped) it.
struct Chunk {
    data: Bytes,
    in_flight: Arc<InFlight>,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        self.in_flight
            .bytes
            .fetch_sub(self.data.len(), Ordering::AcqRel);
        let waker = self
            .in_flight
            .waker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl InFlight {
    /// `chunk` as bytes counted until dropped.
    fn track(self: &Arc<Self>, chunk: BytesMut) -> Bytes {
        use std::sync::atomic::Ordering;
        if chunk.is_empty() {
            return Bytes::new();
        }
        self.bytes.fetch_add(chunk.len(), Ordering::AcqRel);
        Bytes::from_owner(Chunk {
            data: chunk.freeze(),
            in_flight: self.clone(),
        })
    }

    /// Whether another chunk may be copied now; if not, `cx` is woken when one is written.
    fn has_room(&self, cx: &Context<'_>) -> bool {
        use std::sync::atomic::Ordering;
        if self.bytes.load(Ordering::Acquire) < MAX_IN_FLIGHT {
            return true;
        }
        *self.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        // Written meanwhile: the wake may have found no waker.
        self.bytes.load(Ordering::Acquire) < MAX_IN_FLIGHT
    }
}

/// The response body of one stream: gRPC frames written from the queued responses as HTTP/2
/// asks for data, then the trailers with the stream's status.
struct ResponseBody {
    rx: mpsc::Receiver<Result<Box<Outgoing>, Status>>,
    in_flight: Arc<InFlight>,
    /// The message being written, its next resource and that resource's next part (a
    /// resource in parts is written a part at a time).
    current: Option<(Outgoing, usize, usize)>,
    /// Frames ready to go (a chunk followed by a large resource).
    ready: VecDeque<Bytes>,
    /// Status for the trailers, once the stream ends.
    end: Option<Status>,
    done: bool,
}

impl ResponseBody {
    /// Writes into `chunk` until it is full or a large part is queued after it.
    fn fill(&mut self, chunk: &mut BytesMut) {
        while chunk.len() < CHUNK {
            let Some((out, next, part)) = &mut self.current else {
                return;
            };
            if *next == out.count() {
                self.current = None;
                return;
            }
            if *part == 0 {
                out.entry_head(*next, chunk);
            }
            let parts = out.value(*next).chunks();
            let Some(value) = parts.get(*part) else {
                (*next, *part) = (*next + 1, 0);
                continue;
            };
            *part += 1;
            if value.len() >= ZERO_COPY {
                self.ready
                    .push_back(self.in_flight.track(std::mem::take(chunk)));
                self.ready.push_back(value.clone());
                return;
            }
            chunk.put_slice(value);
        }
    }
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.insert("grpc-status", http::HeaderValue::from_static("13"));
    }
    map
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if let Some(data) = this.ready.pop_front() {
                if data.is_empty() {
                    continue;
                }
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(status) = this.end.take() {
                this.done = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))));
            }
            if !this.in_flight.has_room(cx) {
                return Poll::Pending;
            }
            let mut chunk = BytesMut::with_capacity(CHUNK);
            this.fill(&mut chunk);
            while this.current.is_none() && this.ready.is_empty() && chunk.len() < CHUNK {
                match this.rx.poll_recv(cx) {
                    Poll::Ready(Some(Ok(out))) => {
                        let out = *out;
                        chunk.put_slice(&out.head());
                        this.current = Some((out, 0, 0));
                        this.fill(&mut chunk);
                    }
                    Poll::Ready(Some(Err(status))) => {
                        this.end = Some(status);
                        break;
                    }
                    Poll::Ready(None) => {
                        this.end = Some(Status::ok(""));
                        break;
                    }
                    Poll::Pending => {
                        if chunk.is_empty() {
                            return Poll::Pending;
                        }
                        break;
                    }
                }
            }
            if !chunk.is_empty() {
                let tracked = this.in_flight.track(chunk);
                this.ready.push_front(tracked);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Requests at least this large are reassembled only with a permit from the listener's
/// [`LargeRequests`].
pub const LARGE_REQUEST: usize = 64 * 1024;

/// How many streams of one listener may reassemble a large request at once. A
/// state-of-the-world proxy sends its whole load-assignment subscription in every EDS request
/// (150 KB at W-M); in a connect storm a thousand of them arrive together, and holding all of
/// them at once costs more memory than everything else the server keeps. Streams waiting for
/// a permit stop reading, so HTTP/2 flow control (the server's stream window) holds their
/// proxies back.
const LARGE_REQUEST_PERMITS: usize = 32;

/// How long a stream may hold a permit without receiving data: a client that stops sending
/// in the middle of a large request must not keep the others waiting.
const LARGE_REQUEST_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The permits of one listener (so that callers of the plaintext port cannot hold those of
/// the authenticated one).
pub type LargeRequests = Arc<tokio::sync::Semaphore>;

/// A listener's permits.
pub fn large_requests() -> LargeRequests {
    Arc::new(tokio::sync::Semaphore::new(LARGE_REQUEST_PERMITS))
}

type Permit = Pin<
    Box<
        dyn Future<Output = Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError>>
            + Send,
    >,
>;

/// The requests of one stream, decoded from the HTTP/2 body. The read buffer is released
/// when empty once it has grown past [`CHUNK`], so an idle stream holds no large buffer, and
/// a large request is read only with a permit (see [`LARGE_REQUEST_PERMITS`]).
pub struct Requests<T> {
    body: Body,
    buf: BytesMut,
    max: usize,
    done: bool,
    /// Where permits come from.
    permits: LargeRequests,
    /// Held while a large request is reassembled, with the time by which more data must
    /// arrive.
    permit: Option<(
        tokio::sync::OwnedSemaphorePermit,
        Pin<Box<tokio::time::Sleep>>,
    )>,
    /// Waiting for one.
    waiting: Option<Permit>,
    _message: std::marker::PhantomData<fn() -> T>,
}

impl<T: prost::Message + Default> Requests<T> {
    /// Requests of at most `max` bytes each from `body`; large ones reassembled with one of
    /// `permits`.
    pub fn new(body: Body, max: usize, permits: LargeRequests) -> Self {
        Requests {
            body,
            buf: BytesMut::new(),
            max,
            done: false,
            permits,
            permit: None,
            waiting: None,
            _message: std::marker::PhantomData,
        }
    }

    /// The next complete message in the buffer, if any.
    fn take(&mut self) -> Option<Result<T, Status>> {
        use bytes::Buf;
        if self.buf.len() < 5 {
            return None;
        }
        if self.buf[0] != 0 {
            return Some(Err(Status::unimplemented(
                "compressed requests are not supported",
            )));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max {
            return Some(Err(Status::out_of_range(format!(
                "request of {len} bytes is larger than the limit of {} bytes",
                self.max
            ))));
        }
        if self.buf.len() < 5 + len {
            if len >= LARGE_REQUEST && self.permit.is_none() {
                if self.waiting.is_none() {
                    self.waiting = Some(Box::pin(self.permits.clone().acquire_owned()));
                }
                return None;
            }
            // Grown as data arrives, not by what the header claims.
            self.buf
                .reserve((5 + len - self.buf.len()).min(LARGE_REQUEST));
            return None;
        }
        self.buf.advance(5);
        let message = self.buf.split_to(len).freeze();
        self.permit = None;
        if self.buf.capacity() > CHUNK && self.buf.len() <= CHUNK {
            // Keep what follows (the start of the next message) in a small buffer.
            self.buf = BytesMut::from(&self.buf[..]);
        }
        Some(T::decode(message).map_err(|e| Status::invalid_argument(format!("bad request: {e}"))))
    }
}

impl<T: prost::Message + Default> tokio_stream::Stream for Requests<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(message) = this.take() {
                if message.is_err() {
                    this.done = true;
                }
                return Poll::Ready(Some(message));
            }
            if let Some(waiting) = &mut this.waiting {
                // The semaphore is never closed.
                this.permit = std::task::ready!(waiting.as_mut().poll(cx))
                    .ok()
                    .map(|p| (p, Box::pin(tokio::time::sleep(LARGE_REQUEST_IDLE))));
                this.waiting = None;
                continue;
            }
            let frame = match http_body::Body::poll_frame(Pin::new(&mut this.body), cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    if let Some((_, idle)) = &mut this.permit
                        && idle.as_mut().poll(cx).is_ready()
                    {
                        this.done = true;
                        this.permit = None;
                        return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                            "a request larger than {LARGE_REQUEST} bytes stopped arriving for {LARGE_REQUEST_IDLE:?}"
                        )))));
                    }
                    return Poll::Pending;
                }
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.buf.put_slice(&data);
                    }
                    if let Some((_, idle)) = &mut this.permit {
                        idle.as_mut()
                            .reset(tokio::time::Instant::now() + LARGE_REQUEST_IDLE);
                    }
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.done = true;
                    if !this.buf.is_empty() {
                        return Poll::Ready(Some(Err(Status::invalid_argument(
                            "stream ended inside a message",
                        ))));
                    }
                }
            }
        }
    }
}

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
    let body = ResponseBody {
        rx,
        in_flight: Arc::default(),
        current: None,
        ready: VecDeque::new(),
        end: None,
        done: false,
    };
    let mut response = http::Response::new(Body::new(body));
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

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    };
    use http_body::Body as _;
    use prost::Message;
    use sextant_resources::{Encoded, type_url};

    /// Everything the body writes: data bytes and the trailers.
    async fn drain(mut body: ResponseBody) -> (Vec<u8>, http::HeaderMap) {
        let mut data = Vec::new();
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            let frame = frame
                .expect("the body ends with trailers")
                .expect("no error");
            match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => return (data, f.into_trailers().expect("trailers")),
            }
        }
    }

    /// Splits gRPC length-prefixed messages.
    fn messages(mut data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !data.is_empty() {
            assert_eq!(data[0], 0, "uncompressed");
            let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
            out.push(data[5..5 + len].to_vec());
            data = &data[5 + len..];
        }
        out
    }

    fn body(items: Vec<Result<Outgoing, Status>>) -> ResponseBody {
        let (tx, rx) = mpsc::channel(items.len() + 1);
        for i in items {
            tx.try_send(i.map(Box::new)).expect("room");
        }
        ResponseBody {
            rx,
            in_flight: Arc::default(),
            current: None,
            ready: VecDeque::new(),
            end: None,
            done: false,
        }
    }

    fn resource(name: &str, size: usize) -> Encoded {
        Encoded::from_bytes(name, vec![b'x'; size])
    }

    #[tokio::test]
    async fn responses_decode_as_envoys_messages_across_chunks() {
        // Small resources are gathered into chunks, large ones pass through uncopied.
        let sizes = [10, ZERO_COPY + 5, 3, CHUNK, 0, 700];
        let mut resources: Vec<Encoded> = sizes
            .iter()
            .enumerate()
            .map(|(i, s)| resource(&format!("r{i}"), *s))
            .collect();
        // Resources in parts: many small parts across chunk boundaries, a large part between
        // small ones, and no parts at all.
        let part = |n: usize, b: u8| Bytes::from(vec![b; n]);
        resources.push(Encoded::from_parts(
            "p0",
            (0..200).map(|i| part(300, i as u8)).collect(),
        ));
        resources.push(Encoded::from_parts(
            "p1",
            vec![part(7, 1), part(ZERO_COPY * 2, 2), part(9, 3)],
        ));
        resources.push(Encoded::from_parts("p2", Vec::new()));
        let mut many = Vec::new();
        for i in 0..2000 {
            many.push(resource(&format!("m{i}"), 100));
        }
        let sotw = SotwResponse {
            version_info: "v1".into(),
            type_url: type_url::CLUSTER,
            nonce: "n1".into(),
            resources: resources.iter().map(|e| e.body.clone()).collect(),
        };
        let delta = DeltaResponse {
            system_version_info: "sv".into(),
            type_url: type_url::ENDPOINT,
            nonce: "n2".into(),
            resources: many.clone(),
            removed_resources: vec!["gone".into(), "also-gone".into()],
        };
        let (data, trailers) = drain(body(vec![
            Ok(Outgoing::Sotw(sotw)),
            Ok(Outgoing::Delta(delta)),
        ]))
        .await;
        let msgs = messages(&data);
        assert_eq!(msgs.len(), 2);
        let first = DiscoveryResponse::decode(msgs[0].as_slice()).expect("decodes");
        assert_eq!(
            (first.version_info.as_str(), first.nonce.as_str()),
            ("v1", "n1")
        );
        assert_eq!(first.type_url, type_url::CLUSTER);
        assert_eq!(first.resources.len(), resources.len());
        for (any, e) in first.resources.iter().zip(&resources) {
            assert_eq!(any.type_url, type_url::CLUSTER);
            assert_eq!(any.value, e.body.to_bytes());
        }
        let second = DeltaDiscoveryResponse::decode(msgs[1].as_slice()).expect("decodes");
        assert_eq!(second.system_version_info, "sv");
        assert_eq!(second.removed_resources, ["gone", "also-gone"]);
        assert_eq!(second.resources.len(), many.len());
        for (r, e) in second.resources.iter().zip(&many) {
            assert_eq!(r.name, e.name);
            assert_eq!(r.version, e.version());
            let any = r.resource.as_ref().expect("resource");
            assert_eq!(any.value, e.body.to_bytes());
        }
        assert_eq!(trailers["grpc-status"], "0");
    }

    /// A request body delivered in the given pieces.
    #[tokio::test]
    async fn large_requests_of_more_streams_than_permits_all_decode() {
        use tokio_stream::StreamExt;
        let big = DiscoveryRequest {
            resource_names: (0..4000).map(|i| format!("outbound|80||svc-{i}")).collect(),
            ..Default::default()
        };
        assert!(big.encoded_len() >= LARGE_REQUEST);
        let wire = framed(&big);
        let permits = large_requests();
        let streams: Vec<_> = (0..LARGE_REQUEST_PERMITS * 2)
            .map(|_| {
                let permits = permits.clone();
                let pieces: VecDeque<Bytes> =
                    wire.chunks(4096).map(Bytes::copy_from_slice).collect();
                let big = big.clone();
                tokio::spawn(async move {
                    let mut requests: Requests<DiscoveryRequest> =
                        Requests::new(Body::new(Pieces::new(pieces)), 1 << 20, permits);
                    assert_eq!(requests.next().await.expect("one").expect("decodes"), big);
                })
            })
            .collect();
        for stream in streams {
            tokio::time::timeout(std::time::Duration::from_secs(10), stream)
                .await
                .expect("every permit is given back")
                .expect("decoded");
        }
        assert_eq!(permits.available_permits(), LARGE_REQUEST_PERMITS);
    }

    #[tokio::test]
    async fn copies_handed_to_http2_are_bounded_until_it_writes_them() {
        use std::future::poll_fn;
        let many: Vec<Encoded> = (0..3000).map(|i| resource(&format!("m{i}"), 100)).collect();
        let sotw = SotwResponse {
            version_info: "v1".into(),
            type_url: type_url::CLUSTER,
            nonce: "n1".into(),
            resources: many.iter().map(|e| e.body.clone()).collect(),
        };
        let mut body = body(vec![Ok(Outgoing::Sotw(sotw))]);
        // HTTP/2 that never writes: frames stop coming once MAX_IN_FLIGHT is held.
        let mut held = Vec::new();
        let stalled = loop {
            let frame = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
                Poll::Pending => Poll::Ready(None),
                Poll::Ready(f) => Poll::Ready(Some(f)),
            })
            .await;
            match frame {
                Some(Some(Ok(f))) => held.push(f.into_data().expect("data")),
                Some(other) => panic!("unexpected end: {:?}", other.map(|r| r.is_ok())),
                None => break held.iter().map(Bytes::len).sum::<usize>(),
            }
        };
        assert!(
            (MAX_IN_FLIGHT..MAX_IN_FLIGHT + 2 * CHUNK).contains(&stalled),
            "{stalled} bytes handed over before waiting"
        );
        // Written: the rest follows.
        let mut data: Vec<u8> = held.iter().flat_map(|b| b.iter().copied()).collect();
        drop(held);
        let (rest, _) = drain(body).await;
        data.extend(rest);
        assert!(
            data.len() > 3000 * 100,
            "everything arrives: {}",
            data.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_request_that_stops_arriving_ends_its_stream_and_frees_the_permit() {
        use tokio_stream::StreamExt;
        let big = DiscoveryRequest {
            resource_names: (0..4000).map(|i| format!("outbound|80||svc-{i}")).collect(),
            ..Default::default()
        };
        let wire = framed(&big);
        let permits = large_requests();
        let mut stalled: Requests<DiscoveryRequest> = Requests::new(
            Body::new(Pieces::then_stall(VecDeque::from([
                Bytes::copy_from_slice(&wire[..1000]),
            ]))),
            1 << 20,
            permits.clone(),
        );
        let err = stalled
            .next()
            .await
            .expect("an error")
            .expect_err("timed out");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
        assert!(stalled.next().await.is_none());
        assert_eq!(permits.available_permits(), LARGE_REQUEST_PERMITS);
    }

    /// A request body of these pieces; then its end, or (`stall`) nothing, forever.
    struct Pieces(VecDeque<Bytes>, bool);

    impl Pieces {
        fn new(pieces: VecDeque<Bytes>) -> Pieces {
            Pieces(pieces, false)
        }

        fn then_stall(pieces: VecDeque<Bytes>) -> Pieces {
            Pieces(pieces, true)
        }
    }

    impl http_body::Body for Pieces {
        type Data = Bytes;
        type Error = Status;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            match self.0.pop_front() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None if self.1 => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn framed(message: &impl Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[tokio::test]
    async fn requests_split_across_frames_decode_and_oversized_ones_end_the_stream() {
        use tokio_stream::StreamExt;
        let big = DiscoveryRequest {
            resource_names: (0..3000).map(|i| format!("outbound|80||svc-{i}")).collect(),
            ..Default::default()
        };
        let small = DiscoveryRequest {
            type_url: type_url::CLUSTER.into(),
            ..Default::default()
        };
        let mut wire = framed(&big);
        wire.extend(framed(&small));
        // Cut everywhere: mid-prefix, mid-message, across the two messages.
        let pieces: VecDeque<Bytes> = wire.chunks(7).map(Bytes::copy_from_slice).collect();
        let mut requests: Requests<DiscoveryRequest> =
            Requests::new(Body::new(Pieces::new(pieces)), 1 << 20, large_requests());
        assert_eq!(requests.next().await.expect("first").expect("decodes"), big);
        assert!(
            requests.buf.capacity() <= CHUNK,
            "the large read buffer is released"
        );
        assert_eq!(
            requests.next().await.expect("second").expect("decodes"),
            small
        );
        assert!(requests.next().await.is_none());

        let pieces = VecDeque::from([Bytes::from(framed(&big))]);
        let mut limited: Requests<DiscoveryRequest> =
            Requests::new(Body::new(Pieces::new(pieces)), 1024, large_requests());
        let err = limited
            .next()
            .await
            .expect("an error")
            .expect_err("too large");
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        assert!(limited.next().await.is_none());
    }

    #[tokio::test]
    async fn an_error_ends_the_stream_with_its_status() {
        let (data, trailers) = drain(body(vec![Err(Status::invalid_argument("bad node"))])).await;
        assert!(data.is_empty());
        assert_eq!(trailers["grpc-status"], "3");
        assert_eq!(trailers["grpc-message"], "bad%20node");
    }
}
