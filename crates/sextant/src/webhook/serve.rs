//! The webhook port's HTTP/1.1 connections, each bounded in time wherever it waits on its
//! peer: a request's head must arrive within `--webhook-header-timeout-ms` (hyper's header
//! read timeout, which also closes a kept-alive connection idle that long), its body within
//! its own deadline (`body`), and an answer the peer stops reading is cut after the same
//! timeout, so that no connection holds an answer, or its place, for a peer that went quiet.
//! Shutdown is graceful: no new connection is accepted, and each open one finishes the
//! request it is answering.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Budget;
use crate::metrics::Metrics;

/// The largest read buffer of a connection: request heads are small, and bodies are read in
/// pieces of at most this much.
const MAX_BUFFER: usize = 64 << 10;
/// How long a closing connection keeps reading what its peer still sends, and how much: a
/// refusal is answered before the body is read, and closing a socket with bytes unread
/// makes the kernel reset it, which can destroy the answer before the peer reads it.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 16 << 20;

/// Serves `router` on the connections `listener` accepts, each bounded by `budget`, until
/// `shutdown` completes; then waits for the open connections to finish what they are
/// answering. Connections cut at a deadline are counted in `metrics` under `deadlines`
/// (the webhook's `webhook_header_deadline`, `webhook_write_deadline`; the admin port's
/// `admin_header_deadline`, `admin_write_deadline`).
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    budget: Budget,
    metrics: Arc<Metrics>,
    deadlines: Deadlines,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    L: axum::serve::Listener,
{
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, _peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let activity = Arc::new(Activity::default());
        let io = Watched::new(io, activity.clone(), budget.header_timeout);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(budget.header_timeout)
            .max_buf_size(MAX_BUFFER);
        let connection =
            http.serve_connection(TokioIo::new(io), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let outcome = connection.await;
            if activity.write_stalled.load(Ordering::Relaxed) {
                metrics.bounded(deadlines.write);
            } else if let Err(e) = outcome
                && e.is_timeout()
                && activity.mid_request.load(Ordering::Relaxed)
            {
                // A kept-alive connection with nothing more to say is closed too; only a
                // head that stopped arriving is a refusal.
                metrics.bounded(deadlines.header);
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The bound names a port's cut connections are counted under.
#[derive(Clone, Copy)]
pub struct Deadlines {
    /// A request's head stopped arriving.
    pub header: &'static str,
    /// An answer the peer stopped reading.
    pub write: &'static str,
}

impl Deadlines {
    /// The webhook port's.
    pub const WEBHOOK: Deadlines = Deadlines {
        header: "webhook_header_deadline",
        write: "webhook_write_deadline",
    };
    /// The admin port's.
    pub const ADMIN: Deadlines = Deadlines {
        header: "admin_header_deadline",
        write: "admin_write_deadline",
    };
}

/// What a connection's peer has been doing.
#[derive(Default)]
struct Activity {
    /// Bytes arrived since the last answer was written: a request is under way.
    mid_request: AtomicBool,
    /// An answer waited longer than the timeout for the peer to read it.
    write_stalled: AtomicBool,
}

/// A connection whose writes fail once the peer has read nothing for `stall`, which notes
/// whether a request is under way, and which lingers when it closes.
struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
    stall: Duration,
    stalled_since: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Once its side is closed: until when the peer's bytes are read and dropped.
    lingering: Option<Pin<Box<tokio::time::Sleep>>>,
    lingered: usize,
}

impl<T> Watched<T> {
    fn new(io: T, activity: Arc<Activity>, stall: Duration) -> Self {
        Watched {
            io,
            activity,
            stall,
            stalled_since: None,
            lingering: None,
            lingered: 0,
        }
    }

    /// `Pending` from a write: fails once the peer has read nothing for the timeout.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let stall = self.stall;
        let timer = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        ready!(timer.as_mut().poll(cx));
        self.activity.write_stalled.store(true, Ordering::Relaxed);
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the peer read nothing of the answer for {stall:?}"),
        ))
    }

    /// Progress on a write: the peer reads again.
    fn progressed<R>(
        &mut self,
        outcome: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        match outcome {
            Poll::Pending => self.poll_stalled(cx).map(Err),
            done => {
                self.stalled_since = None;
                done
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let outcome = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.mid_request.store(true, Ordering::Relaxed);
        }
        outcome
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // An answer is going out: the request it answers is over.
        this.activity.mid_request.store(false, Ordering::Relaxed);
        let outcome = Pin::new(&mut this.io).poll_write(cx, buf);
        this.progressed(outcome, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.activity.mid_request.store(false, Ordering::Relaxed);
        let outcome = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.progressed(outcome, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.io).poll_flush(cx);
        this.progressed(outcome, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.lingering.is_none() {
            let outcome = Pin::new(&mut this.io).poll_shutdown(cx);
            ready!(this.progressed(outcome, cx))?;
            this.lingering = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        // The answer is out and this side closed: read what the peer still sends, a while,
        // so that the close does not reset the connection before the peer reads the answer.
        let mut scratch = [0u8; 8 << 10];
        loop {
            let timer = this.lingering.as_mut().expect("set above");
            if this.lingered >= LINGER_BYTES || timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    this.lingered += buf.filled().len();
                }
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn an_answer_the_peer_stops_reading_fails_after_the_timeout() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::default());
        let mut watched = Watched::new(ours, activity.clone(), Duration::from_millis(200));
        // Read slowly but steadily: never cut.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = theirs.read(&mut buf).await;
            }
            theirs
        });
        watched.write_all(&[b'x'; 256]).await.expect("read in time");
        let _theirs = reader.await.expect("reader");
        assert!(!activity.write_stalled.load(Ordering::Relaxed));
        // Then stop reading.
        let started = std::time::Instant::now();
        let error = watched
            .write_all(&[b'x'; 256])
            .await
            .expect_err("the peer reads nothing");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(activity.write_stalled.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_closing_connection_reads_what_the_peer_still_sends() {
        let (ours, mut theirs) = tokio::io::duplex(64 << 10);
        let activity = Arc::new(Activity::default());
        let mut watched = Watched::new(ours, activity.clone(), Duration::from_secs(5));
        // The peer is still sending the body of a request answered already.
        let sender = tokio::spawn(async move {
            theirs
                .write_all(&[b' '; 300 << 10])
                .await
                .expect("all read");
            let mut answer = Vec::new();
            theirs.read_to_end(&mut answer).await.expect("the answer");
            answer
        });
        watched.write_all(b"HTTP/1.1 413").await.expect("written");
        watched.shutdown().await.expect("closed");
        assert_eq!(sender.await.expect("sender"), b"HTTP/1.1 413");
        assert_eq!(watched.lingered, 300 << 10);
        assert!(!activity.mid_request.load(Ordering::Relaxed));
    }
}
