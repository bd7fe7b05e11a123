//! The response body of one stream: gRPC frames written from the queued responses as HTTP/2
//! asks for data, in chunks of at most [`CHUNK`] bytes (small resources copied, large ones
//! passed on without a copy), with at most [`MAX_IN_FLIGHT`] bytes of copies handed to HTTP/2
//! and not yet written; then the trailers with the stream's status.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use tokio::sync::mpsc;
use tonic::{Status, codegen::http};

use super::Outgoing;

/// Bytes written per body frame: small resources are gathered up to this size (HTTP/2's
/// default frame size; small buffers are reused by the allocator instead of fresh pages).
pub const CHUNK: usize = 16 * 1024;
/// Resources at least this large are sent without copying.
const ZERO_COPY: usize = 8 * 1024;

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
pub(super) struct ResponseBody {
    rx: mpsc::Receiver<Result<Box<Outgoing>, Status>>,
    in_flight: Arc<InFlight>,
    current: Option<Writing>,
    /// Frames ready to go (a chunk followed by a large resource).
    ready: VecDeque<Bytes>,
    /// Status for the trailers, once the stream ends.
    end: Option<Status>,
    done: bool,
}

/// The message being written (a resource in parts is written a part at a time).
struct Writing {
    out: Outgoing,
    /// Its next resource.
    next: usize,
    /// That resource's next part.
    part: usize,
}

impl ResponseBody {
    /// The body of the responses that arrive on `rx`; an error ends it with that status.
    pub(super) fn new(rx: mpsc::Receiver<Result<Box<Outgoing>, Status>>) -> ResponseBody {
        ResponseBody {
            rx,
            in_flight: Arc::default(),
            current: None,
            ready: VecDeque::new(),
            end: None,
            done: false,
        }
    }

    /// Writes into `chunk` until it is full or a large part is queued after it.
    fn fill(&mut self, chunk: &mut BytesMut) {
        while chunk.len() < CHUNK {
            let Some(Writing { out, next, part }) = &mut self.current else {
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
                        this.current = Some(Writing {
                            out,
                            next: 0,
                            part: 0,
                        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };
    use http_body::Body as _;
    use prost::Message;
    use sextant_resources::{Encoded, type_url};

    use crate::protocol::{DeltaResponse, SotwResponse};

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
        ResponseBody::new(rx)
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
            aliases: Vec::new(),
            unresolved: Vec::new(),
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

    #[tokio::test]
    async fn an_error_ends_the_stream_with_its_status() {
        let (data, trailers) = drain(body(vec![Err(Status::invalid_argument("bad node"))])).await;
        assert!(data.is_empty());
        assert_eq!(trailers["grpc-status"], "3");
        assert_eq!(trailers["grpc-message"], "bad%20node");
    }
}
