//! TLS listeners: the admission webhook's (15017, for axum) and the secure xDS port's (15012,
//! for tonic). Connections are accepted by a [`Gate`] (bounded per port and in total), and
//! their handshakes run concurrently, each with a deadline (`--handshake-timeout-ms`, counted
//! as `handshake_deadline`); when `--max-handshakes` are in progress, the oldest is dropped
//! (counted as `handshakes`) for the newest, so idle connections cannot keep a real client's
//! handshake waiting: it completes in a round trip, long before it becomes the oldest. A connection carries the SPIFFE
//! identities of the client certificate it presented (verified by rustls against Sextant's
//! root when the configuration asks for client certificates).

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use sextant_model::Identity;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::{
    listen::{Gate, Slot},
    metrics::Metrics,
};

/// How long a client may take to complete its handshake by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshakes in progress at once per listener by default.
pub const DEFAULT_MAX_HANDSHAKES: usize = 256;

/// The bounds on a listener's handshakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshakes {
    /// In progress at once; past it, the oldest is dropped.
    pub max: usize,
    /// How long one may take.
    pub timeout: Duration,
}

impl Default for Handshakes {
    fn default() -> Self {
        Handshakes {
            max: DEFAULT_MAX_HANDSHAKES,
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Handshakes in progress, oldest first: dropping one's sender ends it.
type InProgress = Arc<std::sync::Mutex<std::collections::BTreeMap<u64, oneshot::Sender<()>>>>;

/// A listening socket for a port every proxy of the mesh may connect to at once: a connect
/// storm must not overflow the accept backlog (a dropped SYN costs a proxy a second).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Who is on the other end of a TLS connection.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// SPIFFE identities in the URI SANs of the client certificate, if one was presented
    /// (and verified).
    pub identities: Arc<[Identity]>,
}

/// An accepted TLS connection.
pub struct Connection {
    tls: TlsStream<TcpStream>,
    peer: Peer,
    _slot: Slot,
}

/// Accepted connections, handshakes done.
pub struct TlsListener {
    ready: mpsc::Receiver<Connection>,
    addr: SocketAddr,
}

impl TlsListener {
    /// Accepts TLS connections from `gate` with `config`, handshakes bounded by `handshakes`.
    pub fn new(
        mut gate: Gate,
        config: Arc<rustls::ServerConfig>,
        handshakes: Handshakes,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let addr = gate.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        let in_progress = InProgress::default();
        tokio::spawn(async move {
            for id in 0u64.. {
                let (stream, peer, slot) = tokio::select! {
                    () = tx.closed() => return,
                    accepted = gate.accept() => accepted,
                };
                let evicted = make_room(&in_progress, id, handshakes.max, &metrics);
                let handshake = Handshake {
                    id,
                    peer,
                    slot,
                    timeout: handshakes.timeout,
                    in_progress: in_progress.clone(),
                    metrics: metrics.clone(),
                    ready: tx.clone(),
                };
                tokio::spawn(handshake.run(acceptor.clone(), stream, evicted));
            }
        });
        Ok(TlsListener { ready, addr })
    }

    /// The connections as tonic's `serve_with_incoming` takes them.
    pub fn into_incoming(
        self,
    ) -> impl tokio_stream::Stream<Item = std::io::Result<Connection>> + Send + 'static {
        use tokio_stream::StreamExt;
        tokio_stream::wrappers::ReceiverStream::new(self.ready).map(Ok)
    }
}

/// Registers handshake `id` among those in progress, dropping the oldest while there are
/// `max` (counted); the receiver tells the new one it was dropped in turn.
fn make_room(
    in_progress: &InProgress,
    id: u64,
    max: usize,
    metrics: &Metrics,
) -> oneshot::Receiver<()> {
    let mut map = in_progress.lock().unwrap_or_else(|p| p.into_inner());
    while map.len() >= max.max(1) {
        if map.pop_first().is_none() {
            break;
        }
        metrics.bounded("handshakes");
    }
    let (tx, rx) = oneshot::channel();
    map.insert(id, tx);
    rx
}

/// One handshake in progress.
struct Handshake {
    id: u64,
    peer: SocketAddr,
    slot: Slot,
    timeout: Duration,
    in_progress: InProgress,
    metrics: Arc<Metrics>,
    ready: mpsc::Sender<Connection>,
}

impl Handshake {
    /// Completes the handshake on `stream` within the deadline unless `evicted` first, and
    /// hands the connection over.
    async fn run(self, acceptor: TlsAcceptor, stream: TcpStream, evicted: oneshot::Receiver<()>) {
        let peer = self.peer;
        let outcome = tokio::select! {
            done = tokio::time::timeout(self.timeout, acceptor.accept(stream)) => done,
            _ = evicted => {
                tracing::debug!(%peer, "TLS handshake dropped for a newer one (--max-handshakes)");
                return;
            }
        };
        self.in_progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        match outcome {
            Ok(Ok(tls)) => {
                let identities = client_identities(&tls);
                let peer = Peer {
                    addr: peer,
                    identities,
                };
                let connection = Connection {
                    tls,
                    peer,
                    _slot: self.slot,
                };
                let _ = self.ready.send(connection).await;
            }
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => {
                self.metrics.bounded("handshake_deadline");
                tracing::debug!(%peer, timeout = ?self.timeout, "TLS handshake timed out (--handshake-timeout-ms)");
            }
        }
    }
}

/// The SPIFFE ids of the leaf certificate the client presented.
fn client_identities(tls: &TlsStream<TcpStream>) -> Arc<[Identity]> {
    let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
        return Arc::from([]);
    };
    sextant_ca::certificate_identities(leaf.as_ref())
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }
}

/// tonic puts the peer into every request's extensions, where the authenticator finds it.
impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => {
                let addr = c.peer.addr;
                (c, addr)
            }
            // The accepting task ended: nothing more will arrive.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
