//! TLS listeners: the admission webhook's (15017, for axum) and the secure xDS port's (15012,
//! for tonic). Handshakes run concurrently, each bounded by a timeout, so an idle or slow
//! client cannot hold up the others; failed ones are dropped. A connection carries the SPIFFE
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
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// How long a client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once per listener; further connections wait in the backlog.
const MAX_HANDSHAKES: usize = 256;

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
}

/// Accepted connections, handshakes done.
pub struct TlsListener {
    ready: mpsc::Receiver<Connection>,
    addr: SocketAddr,
}

impl TlsListener {
    /// Listens on `addr` with `config`.
    pub async fn bind(
        addr: SocketAddr,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        Self::new(TcpListener::bind(addr).await?, config)
    }

    /// Accepts TLS connections on `tcp` with `config`.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let addr = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = handshakes.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = tokio::select! {
                    () = tx.closed() => return,
                    accepted = tcp.accept() => match accepted {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(%addr, error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    drop(permit);
                    match handshake {
                        Ok(Ok(tls)) => {
                            let identities = client_identities(&tls);
                            let peer = Peer {
                                addr: peer,
                                identities,
                            };
                            let _ = tx.send(Connection { tls, peer }).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%addr, %peer, "TLS handshake timed out"),
                    }
                });
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
