//! The accept loop of every listening port (`Gate`): connections per port and in total are
//! bounded, a connection over a bound is accepted and closed at once (refused, and counted in
//! `sextant_xds_bounded_total{bound="connections"}` or `{bound="connections_total"}`), and an
//! accept that fails for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) backs off
//! exponentially instead of retrying at once, counted as `{bound="accept_backoff"}`: the
//! connections already open keep being served, and accepting resumes when descriptors are
//! free again.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
};

use crate::metrics::Metrics;

/// Connections each xDS port holds by default: W-L's 5,000 proxies, twice over.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Connections the webhook port holds by default (API servers keep a few each).
pub const DEFAULT_MAX_WEBHOOK_CONNECTIONS: usize = 1_000;
/// Connections the admin port holds by default (probes, Prometheus, an operator).
pub const DEFAULT_MAX_ADMIN_CONNECTIONS: usize = 64;
/// Descriptors kept out of the total connection budget for everything else the process opens
/// (listeners, the runtime, watched files, Kubernetes clients).
pub const RESERVED_DESCRIPTORS: usize = 128;

/// First wait after an accept failed for want of resources; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// Longest wait between accepts while resources are short.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Refusals are logged at most this often per port (they are all counted).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Connections all the xDS and webhook ports hold together: without a flag, the process's
/// descriptor limit less the admin port's connections and [`RESERVED_DESCRIPTORS`], so that
/// connections alone cannot exhaust the descriptors and `/ready` keeps answering.
pub fn total_budget(flag: Option<usize>, admin_connections: usize) -> Option<usize> {
    if flag.is_some() {
        return flag;
    }
    let soft = open_files_limit()?;
    Some(
        soft.saturating_sub(admin_connections + RESERVED_DESCRIPTORS)
            .max(16),
    )
}

/// The soft limit on open files (Linux: `/proc/self/limits`), if there is one.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Held by an open connection: its place under its port's bound and under the total.
pub struct Slot {
    _port: OwnedSemaphorePermit,
    _total: Option<OwnedSemaphorePermit>,
}

/// A listening port with its bounds.
pub struct Gate {
    tcp: TcpListener,
    port: Arc<Semaphore>,
    max: usize,
    total: Option<Arc<Semaphore>>,
    metrics: Arc<Metrics>,
    backoff: Duration,
    last_refusal_log: Option<Instant>,
}

impl Gate {
    /// Accepts on `tcp` at most `max` connections at once, and (`total`) only while the
    /// budget shared with other ports allows.
    pub fn new(
        tcp: TcpListener,
        max: usize,
        total: Option<Arc<Semaphore>>,
        metrics: Arc<Metrics>,
    ) -> Gate {
        Gate {
            tcp,
            port: Arc::new(Semaphore::new(max)),
            max,
            total,
            metrics,
            backoff: MIN_BACKOFF,
            last_refusal_log: None,
        }
    }

    /// The address listened on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The next connection within the bounds; those over them are closed as they come.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, Slot) {
        loop {
            let (stream, peer) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    self.accept_failed(e).await;
                    continue;
                }
            };
            self.backoff = MIN_BACKOFF;
            match self.admit() {
                Ok(slot) => {
                    let _ = stream.set_nodelay(true);
                    return (stream, peer, slot);
                }
                Err(bound) => self.refuse(stream, peer, bound),
            }
        }
    }

    /// A place for one more connection, or the bound it would pass.
    fn admit(&self) -> Result<Slot, &'static str> {
        let total = match &self.total {
            Some(total) => Some(
                total
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| "connections_total")?,
            ),
            None => None,
        };
        let port = self
            .port
            .clone()
            .try_acquire_owned()
            .map_err(|_| "connections")?;
        Ok(Slot {
            _port: port,
            _total: total,
        })
    }

    /// Closes a connection over `bound`, counted (and logged now and then).
    fn refuse(&mut self, stream: TcpStream, peer: SocketAddr, bound: &'static str) {
        drop(stream);
        self.metrics.bounded(bound);
        let now = Instant::now();
        if self
            .last_refusal_log
            .is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_INTERVAL)
        {
            self.last_refusal_log = Some(now);
            let addr = self.tcp.local_addr().ok();
            tracing::warn!(
                ?addr, %peer, bound, max = self.max,
                "refusing connections over the bound (--max-connections, --max-connections-total; counted in sextant_xds_bounded_total)"
            );
        }
    }

    /// Waits before accepting again if `e` says resources are short; a failure of one
    /// connection (reset before it was accepted) is not.
    async fn accept_failed(&mut self, e: std::io::Error) {
        use std::io::ErrorKind;
        if matches!(
            e.kind(),
            ErrorKind::ConnectionAborted
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionRefused
        ) {
            return;
        }
        self.metrics.bounded("accept_backoff");
        let addr = self.tcp.local_addr().ok();
        tracing::warn!(?addr, error = %e, backoff = ?self.backoff, "accept failed; waiting before the next");
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// The accepted connections as tonic's `serve_with_incoming` takes them; accepting stops
    /// (and the port closes) when the server drops the stream.
    pub fn into_incoming(
        mut self,
    ) -> impl tokio_stream::Stream<Item = std::io::Result<Admitted>> + Send + 'static {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let (stream, _, slot) = tokio::select! {
                    () = tx.closed() => return,
                    accepted = self.accept() => accepted,
                };
                if tx
                    .send(Ok(Admitted {
                        stream,
                        _slot: slot,
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// An accepted connection that holds its [`Slot`] until closed.
pub struct Admitted {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Admitted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The same connect info a plain TCP connection gives tonic (the peer's address).
impl tonic::transport::server::Connected for Admitted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl axum::serve::Listener for Gate {
    type Io = Admitted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, peer, slot) = Gate::accept(self).await;
        (
            Admitted {
                stream,
                _slot: slot,
            },
            peer,
        )
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Gate::local_addr(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn gate(max: usize, total: Option<Arc<Semaphore>>) -> (Gate, SocketAddr, Arc<Metrics>) {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let metrics = Arc::new(Metrics::new());
        (Gate::new(tcp, max, total, metrics.clone()), addr, metrics)
    }

    fn counted(metrics: &Metrics, bound: &str) -> u64 {
        metrics
            .bounded
            .get_or_create(&crate::metrics::BoundLabels {
                bound: bound.to_owned(),
            })
            .get()
    }

    /// Whether the server closed `c` (read returns end of stream or an error).
    async fn closed(c: &mut TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), c.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn connections_over_the_port_bound_are_closed_and_counted_until_one_ends() {
        let (mut gate, addr, metrics) = gate(2, None).await;
        let _a = TcpStream::connect(addr).await.expect("connects");
        let first = gate.accept().await;
        let _b = TcpStream::connect(addr).await.expect("connects");
        let _second = gate.accept().await;
        let mut over = TcpStream::connect(addr).await.expect("connects");
        let waited = tokio::time::timeout(Duration::from_millis(300), gate.accept()).await;
        assert!(waited.is_err(), "nothing admitted over the bound");
        assert!(closed(&mut over).await);
        assert_eq!(counted(&metrics, "connections"), 1);
        // A place given back is taken by the next.
        drop(first);
        let next = TcpStream::connect(addr).await.expect("connects");
        let (_, peer, _) = gate.accept().await;
        assert_eq!(peer, next.local_addr().expect("addr"));
    }

    #[tokio::test]
    async fn the_total_is_shared_by_every_port() {
        let total = Arc::new(Semaphore::new(1));
        let (mut one, a, _) = gate(10, Some(total.clone())).await;
        let (mut two, b, metrics) = gate(10, Some(total)).await;
        let _x = TcpStream::connect(a).await.expect("connects");
        let held = one.accept().await;
        let mut refused = TcpStream::connect(b).await.expect("connects");
        let waited = tokio::time::timeout(Duration::from_millis(300), two.accept()).await;
        assert!(waited.is_err(), "nothing admitted over the total");
        assert!(closed(&mut refused).await);
        assert_eq!(counted(&metrics, "connections_total"), 1);
        drop(held);
        let next = TcpStream::connect(b).await.expect("connects");
        assert_eq!(two.accept().await.1, next.local_addr().expect("addr"));
    }

    #[test]
    fn the_total_budget_is_the_descriptor_limit_less_a_reserve() {
        assert_eq!(total_budget(Some(7), 64), Some(7));
        let soft = open_files_limit().expect("Linux has /proc/self/limits");
        assert_eq!(
            total_budget(None, 64),
            Some(soft.saturating_sub(64 + RESERVED_DESCRIPTORS).max(16))
        );
    }
}
