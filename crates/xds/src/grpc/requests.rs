//! The requests of one stream, reassembled from the HTTP/2 body and decoded. Every request
//! must arrive at a pace its size allows ([`Progress`]): a peer that announces a large request
//! and trickles it is cut, whatever the gaps between its bytes. A large request is read past
//! its first [`LARGE_REQUEST`] bytes only with one of its listener's permits, and only once
//! those bytes have arrived, so a stream that has not shown progress holds no permit.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{BufMut, BytesMut};
use tokio::time::{Instant, Sleep};
use tonic::{Status, body::Body};

use super::CHUNK;

/// Requests at least this large are reassembled only with a permit from the listener's
/// [`LargeRequests`].
pub const LARGE_REQUEST: usize = 64 * 1024;

/// How many streams of one listener may reassemble a large request at once. A
/// state-of-the-world proxy sends its whole load-assignment subscription in every EDS request
/// (150 KB at W-M); in a connect storm a thousand of them arrive together, and holding all of
/// them at once costs more memory than everything else the server keeps. A stream reads the
/// first [`LARGE_REQUEST`] bytes of a request without a permit (what its HTTP/2 window lets
/// the proxy send anyway), then waits for one without reading, so HTTP/2 flow control holds
/// its proxy back.
const LARGE_REQUEST_PERMITS: usize = 32;

/// Time a request may take by default beyond what its size needs at the minimum rate.
pub const DEFAULT_REQUEST_GRACE: Duration = Duration::from_secs(10);

/// Slowest pace a request may arrive at by default (bytes per second): a 195 KB EDS request
/// of W-L gets 13 s, the 16 MiB limit 266 s.
pub const DEFAULT_MIN_REQUEST_BYTES_PER_SECOND: u64 = 64 * 1024;

/// How fast a request must arrive once its first bytes have: within `grace` plus its size at
/// `min_bytes_per_second`, not counting time spent waiting for a permit. The deadline is set
/// by the size the request announces, so a peer cannot stretch it by trickling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Time allowed beyond what the size needs.
    pub grace: Duration,
    /// The slowest pace accepted.
    pub min_bytes_per_second: u64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            grace: DEFAULT_REQUEST_GRACE,
            min_bytes_per_second: DEFAULT_MIN_REQUEST_BYTES_PER_SECOND,
        }
    }
}

impl Progress {
    /// How long a request of `len` bytes may take to arrive.
    pub fn deadline(&self, len: usize) -> Duration {
        let rate = self.min_bytes_per_second.max(1) as f64;
        self.grace + Duration::from_secs_f64(len as f64 / rate)
    }
}

/// Told the bound (`request_bytes`, `request_progress`) whenever one ends a stream, for
/// `sextant_xds_bounded_total`.
pub type OnBound = Arc<dyn Fn(&'static str) + Send + Sync>;

/// What the streams of one listener share: the large-request permits (so that callers of the
/// plaintext port cannot hold those of the authenticated one), the pace requests must keep,
/// and who counts the streams a bound ends.
#[derive(Clone)]
pub struct LargeRequests {
    permits: Arc<tokio::sync::Semaphore>,
    progress: Progress,
    on_bound: OnBound,
}

impl LargeRequests {
    /// Requests must arrive at `progress`; streams a bound ends are told to `on_bound`.
    pub fn bounded(mut self, progress: Progress, on_bound: OnBound) -> Self {
        self.progress = progress;
        self.on_bound = on_bound;
        self
    }

    /// Permits not held now.
    pub fn available_permits(&self) -> usize {
        self.permits.available_permits()
    }
}

/// A listener's permits, with the default pace and no counting.
pub fn large_requests() -> LargeRequests {
    LargeRequests {
        permits: Arc::new(tokio::sync::Semaphore::new(LARGE_REQUEST_PERMITS)),
        progress: Progress::default(),
        on_bound: Arc::new(|_| {}),
    }
}

type Permit = Pin<
    Box<
        dyn Future<Output = Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError>>
            + Send,
    >,
>;

/// A permit being waited for, and since when (the wait does not count against the deadline).
struct Waiting {
    permit: Permit,
    since: Instant,
}

/// The requests of one stream, decoded from the HTTP/2 body. The read buffer is released
/// when empty once it has grown past [`CHUNK`], so an idle stream holds no large buffer, and
/// a large request is read only with a permit (see [`LARGE_REQUEST_PERMITS`]).
pub struct Requests<T> {
    body: Body,
    buf: BytesMut,
    max: usize,
    done: bool,
    /// Where permits come from, the pace, the counting.
    permits: LargeRequests,
    /// Held while a large request is reassembled.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Waiting for one.
    waiting: Option<Waiting>,
    /// When the partial request in the buffer must be complete, and how long it was given.
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
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
            deadline: None,
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
            (self.permits.on_bound)("request_bytes");
            return Some(Err(Status::out_of_range(format!(
                "request of {len} bytes is larger than the limit of {} bytes (--max-request-bytes)",
                self.max
            ))));
        }
        if self.buf.len() < 5 + len {
            if self.deadline.is_none() {
                let allowed = self.permits.progress.deadline(len);
                self.deadline = Some((Box::pin(tokio::time::sleep(allowed)), allowed));
            }
            if len >= LARGE_REQUEST && self.permit.is_none() && self.buf.len() >= LARGE_REQUEST {
                if self.waiting.is_none() {
                    self.waiting = Some(Waiting {
                        permit: Box::pin(self.permits.permits.clone().acquire_owned()),
                        since: Instant::now(),
                    });
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
        self.deadline = None;
        if self.buf.capacity() > CHUNK && self.buf.len() <= CHUNK {
            // Keep what follows (the start of the next message) in a small buffer.
            self.buf = BytesMut::from(&self.buf[..]);
        }
        Some(T::decode(message).map_err(|e| Status::invalid_argument(format!("bad request: {e}"))))
    }

    /// Ends the stream: its partial request did not arrive within `allowed`.
    fn too_slow(&mut self, allowed: Duration) -> Status {
        self.done = true;
        self.permit = None;
        self.deadline = None;
        (self.permits.on_bound)("request_progress");
        let progress = self.permits.progress;
        Status::deadline_exceeded(format!(
            "a request did not arrive within {allowed:?} ({:?} plus its size at {} bytes/s, \
             --request-grace-ms and --min-request-bytes-per-second); {} bytes arrived",
            progress.grace,
            progress.min_bytes_per_second,
            self.buf.len()
        ))
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
                this.permit = std::task::ready!(waiting.permit.as_mut().poll(cx)).ok();
                // Time spent waiting for the permit is not the peer's.
                let waited = waiting.since.elapsed();
                if let Some((deadline, _)) = &mut this.deadline {
                    let at = deadline.deadline() + waited;
                    deadline.as_mut().reset(at);
                }
                this.waiting = None;
                continue;
            }
            let frame = match http_body::Body::poll_frame(Pin::new(&mut this.body), cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    if let Some((deadline, allowed)) = &mut this.deadline
                        && deadline.as_mut().poll(cx).is_ready()
                    {
                        let allowed = *allowed;
                        return Poll::Ready(Some(Err(this.too_slow(allowed))));
                    }
                    return Poll::Pending;
                }
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.buf.put_slice(&data);
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use bytes::Bytes;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use http_body::Frame;
    use prost::Message;
    use sextant_resources::type_url;

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

    #[tokio::test(start_paused = true)]
    async fn streams_that_trickle_hold_no_permit_and_are_cut_at_their_deadline() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio_stream::StreamExt;
        let cut = Arc::new(AtomicUsize::new(0));
        let counter = cut.clone();
        let permits = large_requests().bounded(
            Progress {
                grace: Duration::from_secs(1),
                min_bytes_per_second: 1 << 20,
            },
            Arc::new(move |bound| {
                assert_eq!(bound, "request_progress");
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        );
        // More streams than permits announce 1 MiB and send a few bytes of it.
        let mut announced = vec![0];
        announced.extend_from_slice(&(1u32 << 20).to_be_bytes());
        announced.extend_from_slice(&[0x0a; 100]);
        let mut tricklers: Vec<Requests<DiscoveryRequest>> = (0..LARGE_REQUEST_PERMITS + 8)
            .map(|_| {
                let pieces = VecDeque::from([Bytes::copy_from_slice(&announced)]);
                Requests::new(
                    Body::new(Pieces::then_stall(pieces)),
                    16 << 20,
                    permits.clone(),
                )
            })
            .collect();
        for t in &mut tricklers {
            let pending = tokio::time::timeout(Duration::from_millis(1), t.next()).await;
            assert!(pending.is_err(), "still waiting for the rest");
        }
        assert_eq!(permits.available_permits(), LARGE_REQUEST_PERMITS);
        // A real large request is read meanwhile.
        let big = DiscoveryRequest {
            resource_names: (0..8000).map(|i| format!("outbound|80||svc-{i}")).collect(),
            ..Default::default()
        };
        let pieces: VecDeque<Bytes> = framed(&big)
            .chunks(16 << 10)
            .map(Bytes::copy_from_slice)
            .collect();
        let mut real: Requests<DiscoveryRequest> =
            Requests::new(Body::new(Pieces::new(pieces)), 16 << 20, permits.clone());
        assert_eq!(real.next().await.expect("one").expect("decodes"), big);
        // Their deadline (1 s plus 1 MiB at 1 MiB/s) ends them, whatever they send.
        for t in &mut tricklers {
            let err = t.next().await.expect("an error").expect_err("cut");
            assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
            assert!(err.message().contains("within 2s"), "{err:?}");
        }
        assert_eq!(cut.load(Ordering::SeqCst), LARGE_REQUEST_PERMITS + 8);
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

    /// `cases` by default; `PROPTEST_CASES` when set (`make fuzz`).
    fn fuzz_config(cases: u32) -> proptest::prelude::ProptestConfig {
        let mut c = proptest::prelude::ProptestConfig::default();
        if std::env::var_os("PROPTEST_CASES").is_none() {
            c.cases = cases;
        }
        c
    }

    /// A piece of a request body: a well-formed request, or a frame of any flag, claimed
    /// length and content.
    fn segment() -> impl proptest::strategy::Strategy<Value = (Option<DiscoveryRequest>, Vec<u8>)> {
        use proptest::prelude::*;
        let request = (
            "[a-z./]{0,40}",
            prop::collection::vec("[a-z|0-9]{0,12}", 0..20),
            "[0-9a-f]{0,8}",
        )
            .prop_map(
                |(type_url, resource_names, response_nonce)| DiscoveryRequest {
                    type_url,
                    resource_names,
                    response_nonce,
                    ..Default::default()
                },
            );
        prop_oneof![
            request.prop_map(|r| (Some(r.clone()), framed(&r))),
            (
                0u8..3,
                prop_oneof![0u32..64, any::<u32>()],
                prop::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(flag, claimed, bytes)| {
                    let mut out = vec![flag];
                    out.extend_from_slice(&claimed.to_be_bytes());
                    out.extend(bytes);
                    (None, out)
                }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(fuzz_config(256))]

        /// Fuzz target for the gRPC request reader: any bytes, cut anywhere. Well-formed
        /// requests before the first bad frame decode as sent; a bad frame ends the stream
        /// with one error naming what was wrong; the buffer grows with the data that arrived,
        /// never with what a header claims.
        #[test]
        fn fuzz_request_bytes_decode_or_end_the_stream_with_a_reason(
            segments in proptest::collection::vec(segment(), 0..6),
            cut in 1usize..200,
        ) {
            use tokio_stream::StreamExt;
            let wire: Vec<u8> = segments.iter().flat_map(|(_, b)| b.clone()).collect();
            let pieces: VecDeque<Bytes> = wire.chunks(cut).map(Bytes::copy_from_slice).collect();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("runtime");
            let (items, capacity) = runtime.block_on(async {
                let mut requests: Requests<DiscoveryRequest> =
                    Requests::new(Body::new(Pieces::new(pieces)), 1 << 20, large_requests());
                let mut items = Vec::new();
                let mut capacity = 0;
                while let Some(item) = requests.next().await {
                    capacity = capacity.max(requests.buf.capacity());
                    items.push(item);
                }
                (items, capacity)
            });
            proptest::prop_assert!(capacity <= 2 * (wire.len() + LARGE_REQUEST), "{} for {} bytes", capacity, wire.len());
            let expected: Vec<&DiscoveryRequest> =
                segments.iter().map_while(|(r, _)| r.as_ref()).collect();
            for (i, item) in items.iter().enumerate() {
                match item {
                    Ok(r) if i < expected.len() => proptest::prop_assert_eq!(r, expected[i]),
                    Ok(_) => {}
                    Err(e) => {
                        proptest::prop_assert_eq!(i, items.len() - 1, "an error ends the stream");
                        proptest::prop_assert!(!e.message().is_empty());
                        proptest::prop_assert!(matches!(
                            e.code(),
                            tonic::Code::InvalidArgument
                                | tonic::Code::OutOfRange
                                | tonic::Code::Unimplemented
                                | tonic::Code::DeadlineExceeded
                        ), "{:?}", e);
                    }
                }
            }
            if expected.len() == segments.len() {
                proptest::prop_assert_eq!(items.len(), expected.len());
            }
        }
    }
}
