//! HTTP/1.1 through hyper's client: one request at a time for code that is not async (the
//! demo's traffic, tests' probes of Envoy and of Sextant's admin port), and `send` and `open`
//! for async tests of HTTP servers (the test API server).

use std::{fmt::Write, net::SocketAddr, time::Duration};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;

/// How long a request may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `GET path` from `addr` with `Host: host` and `headers`: `(status, body, response head)`,
/// the head as `HTTP/1.1 STATUS` and a `name: value` line per header. `None` when the
/// request fails or takes longer than 5 s. Each request has a connection of its own.
pub fn request(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String, String)> {
    let mut req = http::Request::get(path).header(http::header::HOST, host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::new())).ok()?;
    let fetch = async move {
        let response = exchange(addr, req).await.ok()?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        let mut head = format!("HTTP/1.1 {}\r\n", parts.status.as_u16());
        for (name, value) in &parts.headers {
            let _ = write!(
                head,
                "{name}: {}\r\n",
                String::from_utf8_lossy(value.as_bytes())
            );
        }
        Some((
            parts.status.as_u16(),
            String::from_utf8_lossy(&body).into_owned(),
            head,
        ))
    };
    block_on(async { tokio::time::timeout(TIMEOUT, fetch).await.ok().flatten() })
}

/// `method path` to `addr` with `body` of `content_type` (none when empty): the status and
/// the whole body.
pub async fn send(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<(http::StatusCode, Bytes), String> {
    let response = open(addr, method, path, content_type, body).await?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// Like [`send`], but returns as soon as the response's head arrives, its body still
/// streaming (a watch, a log).
pub async fn open(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<http::Response<Incoming>, String> {
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    if !body.is_empty() {
        request = request.header(http::header::CONTENT_TYPE, content_type);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("{path}: {e}"))?;
    exchange(addr, request).await
}

/// Sends `request` (its URI a path) to `addr` on a connection of its own, without a client's
/// pool: some tests make thousands, and each probe must see a fresh connection.
async fn exchange(
    addr: SocketAddr,
    request: http::Request<Full<Bytes>>,
) -> Result<http::Response<Incoming>, String> {
    let path = request.uri().to_string();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("{addr}{path}: {e}"))
}

/// What an HTTPS exchange saw: the answer, and the server's leaf certificate (DER).
#[derive(Debug)]
pub struct HttpsAnswer {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: String,
    /// Head, as [`request`] gives it.
    pub head: String,
    /// The certificate the server presented.
    pub server_certificate: Vec<u8>,
}

/// The TLS side of [`https_request`]: which name to send, whom to trust, who to be.
pub struct TlsClient<'a> {
    /// SNI and the name the server's certificate must carry.
    pub server_name: &'a str,
    /// PEM roots the server's chain must lead to.
    pub roots: &'a [u8],
    /// PEM certificate chain and key to present, if any.
    pub identity: Option<(&'a [u8], &'a [u8])>,
}

/// `GET path` over TLS to `addr` with `Host: host`. `Err` says where it failed (the
/// handshake, the request); each request has a connection of its own and 5 s at most.
pub fn https_request(
    addr: SocketAddr,
    tls: &TlsClient<'_>,
    host: &str,
    path: &str,
) -> Result<HttpsAnswer, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(tls.roots) {
        roots
            .add(cert.map_err(|e| format!("roots: {e}"))?)
            .map_err(|e| format!("roots: {e}"))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match tls.identity {
        Some((chain, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("client chain: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("client key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = ServerName::try_from(tls.server_name.to_owned()).map_err(|e| e.to_string())?;
    let request = http::Request::get(path)
        .header(http::header::HOST, host)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let exchange = async move {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let server_certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let mut head = format!("HTTP/1.1 {}\r\n", parts.status.as_u16());
        for (name, value) in &parts.headers {
            let _ = write!(
                head,
                "{name}: {}\r\n",
                String::from_utf8_lossy(value.as_bytes())
            );
        }
        Ok::<_, String>(HttpsAnswer {
            status: parts.status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
            head,
            server_certificate,
        })
    };
    block_on(async {
        Some(match tokio::time::timeout(TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err("timed out".to_owned()),
        })
    })
    .unwrap_or_else(|| Err("no runtime".to_owned()))
}

/// The body of a `200 OK` answer to `GET path` from `addr`.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    request(addr, "localhost", path, &[])
        .filter(|(s, _, _)| *s == 200)
        .map(|(_, b, _)| b)
}

/// `POST path` to `addr` with no body: the status, `None` when the request fails.
pub fn http_post(addr: SocketAddr, path: &str) -> Option<u16> {
    let path = path.to_owned();
    block_on(async move {
        let send = send(addr, http::Method::POST, &path, "", Vec::new());
        let (status, _) = tokio::time::timeout(TIMEOUT, send).await.ok()?.ok()?;
        Some(status.as_u16())
    })
}

/// Runs `f` to completion on this thread's runtime (one per thread, kept for the next
/// request); on a thread of its own when called from async code, where a runtime cannot be
/// entered.
fn block_on<T: Send>(f: impl Future<Output = Option<T>> + Send) -> Option<T> {
    thread_local! {
        static RUNTIME: Option<tokio::runtime::Runtime> = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok();
    }
    let run = move || RUNTIME.with(|r| r.as_ref()?.block_on(f));
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(run).join().ok().flatten())
    } else {
        run()
    }
}
