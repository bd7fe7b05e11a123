//! Clients whose responses are bounded: an API server, the config cluster's or a remote
//! cluster's (whose kubeconfig anyone allowed to write a Secret can hand Sextant), can make
//! Sextant hold only so much of what it sends.
//!
//! kube-client reads a list response whole before parsing it, and splits a watch stream into
//! lines with no length limit: a server streaming one endless annotation made Sextant's memory
//! grow to 5.3 GB before `--max-input-bytes` refused the object. Here every response body is
//! counted as it arrives and cut once it passes its bound:
//! - a watch (`?watch=true`) by the line, each line being one event: at most the input bound
//!   (`--max-input-bytes`, as a file or an admission review) plus [`EVENT_SLACK`];
//! - anything else (a list page, a get) in total, at most `--max-list-bytes`. Lists are asked
//!   for in pages of [`PAGE_SIZE`] objects (as client-go's informers do), so the bound is per
//!   page, not per cluster: [`DEFAULT_MAX_LIST_BYTES`] is 256 KiB per object of a full page,
//!   ten times a Pod with its managed fields.
//!
//! A cut response is an error of the watch that asked for it, naming the bound: the watch
//! fails, is counted and retried with backoff, and what it held stays until a list succeeds.

use std::{
    error::Error as StdError,
    fmt,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use kube::client::ClientBuilder;
use tower::{BoxError, Layer, Service};

/// Objects asked for in one list page (kube-runtime's and client-go's default, said here
/// because [`DEFAULT_MAX_LIST_BYTES`] is reasoned per page).
pub const PAGE_SIZE: u32 = 500;

/// Default `--max-list-bytes`: one response other than a watch (a list page of at most
/// [`PAGE_SIZE`] objects).
pub const DEFAULT_MAX_LIST_BYTES: usize = 128 * 1024 * 1024;

/// What a watch event's line may add to the object it carries (`{"type":…,"object":…}`).
pub const EVENT_SLACK: usize = 64 * 1024;

/// How much one response may make Sextant hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseBounds {
    /// Bytes of one response that is not a watch (`--max-list-bytes`).
    pub list_bytes: usize,
    /// Bytes of one line of a watch: one event.
    pub line_bytes: usize,
}

impl ResponseBounds {
    /// Lists within `list_bytes`, watch events within the input bound now configured
    /// (`--max-input-bytes`).
    pub fn new(list_bytes: usize) -> ResponseBounds {
        let input = sextant_index::manifest::Limits::current().input_bytes;
        ResponseBounds {
            list_bytes,
            line_bytes: input.saturating_add(EVENT_SLACK),
        }
    }
}

impl Default for ResponseBounds {
    fn default() -> Self {
        ResponseBounds::new(DEFAULT_MAX_LIST_BYTES)
    }
}

/// A client for `config` whose responses are cut at `bounds`.
pub fn bounded(config: kube::Config, bounds: ResponseBounds) -> Result<kube::Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&BoundLayer(bounds))
        .build())
}

/// The client of the kubeconfig or in-cluster configuration found as kubectl finds it, bounded,
/// and its API server's URL.
pub async fn infer(bounds: ResponseBounds) -> Result<(kube::Client, String), kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    let server = config.cluster_url.to_string();
    Ok((bounded(config, bounds)?, server))
}

/// A response cut at its bound.
#[derive(Debug)]
pub struct TooLarge {
    /// A watch event (one line), or a whole response.
    pub watch: bool,
    /// The bound passed.
    pub bound: usize,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.watch {
            write!(
                f,
                "a watch event is larger than --max-input-bytes allows ({} bytes with its envelope); the response is cut",
                self.bound
            )
        } else {
            write!(
                f,
                "a response (a list page of at most {PAGE_SIZE} objects) is larger than --max-list-bytes ({} bytes); the response is cut",
                self.bound
            )
        }
    }
}

impl StdError for TooLarge {}

/// Whether `error` (or one of its sources) is a response cut at its bound.
pub fn too_large<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a TooLarge> {
    let mut e: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(current) = e {
        if let Some(t) = current.downcast_ref::<TooLarge>() {
            return Some(t);
        }
        // kube's body error wraps ours in a `Box<dyn Error>` without naming it a source.
        if let Some(kube::Error::Service(inner)) = current.downcast_ref::<kube::Error>()
            && let Some(t) = too_large(inner.as_ref())
        {
            return Some(t);
        }
        // An `io::Error` names its inner error's source, not the inner error.
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(t) = too_large(inner)
        {
            return Some(t);
        }
        e = current.source();
    }
    None
}

#[derive(Clone, Copy)]
struct BoundLayer(ResponseBounds);

impl<S> Layer<S> for BoundLayer {
    type Service = BoundService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BoundService {
            inner,
            bounds: self.0,
        }
    }
}

#[derive(Clone)]
struct BoundService<S> {
    inner: S,
    bounds: ResponseBounds,
}

/// Whether `uri` asks for a watch (kube sends `watch=true`).
fn is_watch(uri: &http::Uri) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair, "watch=true" | "watch=1"))
    })
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for BoundService<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = Response<Bounded<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let limit = if is_watch(request.uri()) {
            Limit::Line(self.bounds.line_bytes)
        } else {
            Limit::Total(self.bounds.list_bytes)
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| Bounded {
                inner,
                limit,
                seen: 0,
            }))
        })
    }
}

#[derive(Clone, Copy, Debug)]
enum Limit {
    /// The whole body.
    Total(usize),
    /// Each newline-delimited line.
    Line(usize),
}

/// A response body cut once it passes its [`Limit`].
pub struct Bounded<B> {
    inner: B,
    limit: Limit,
    /// Bytes of the body (`Total`) or of the current line (`Line`) so far.
    seen: usize,
}

impl<B> Bounded<B> {
    /// Counts `data`; the bound passed, if it is.
    fn count(&mut self, data: &[u8]) -> Result<(), TooLarge> {
        match self.limit {
            Limit::Total(max) => {
                self.seen = self.seen.saturating_add(data.len());
                if self.seen > max {
                    return Err(TooLarge {
                        watch: false,
                        bound: max,
                    });
                }
            }
            Limit::Line(max) => {
                let mut lines = data.split(|b| *b == b'\n').peekable();
                while let Some(line) = lines.next() {
                    self.seen = self.seen.saturating_add(line.len());
                    if self.seen > max {
                        return Err(TooLarge {
                            watch: true,
                            bound: max,
                        });
                    }
                    if lines.peek().is_some() {
                        self.seen = 0;
                    }
                }
            }
        }
        Ok(())
    }
}

impl<B> Body for Bounded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref()
                    && let Err(e) = this.count(data)
                {
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
