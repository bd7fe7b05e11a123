//! `explain --server`: the request as `/debug/explain`'s query, both ways, and the client that
//! asks a running server. Both sides live here so they cannot drift apart.

use std::time::Duration;

use hyper_util::rt::TokioIo;

use super::steps::{Explanation, Request};

/// The longest query `/debug/explain` reads: the admin port answers anyone who reaches it.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;
/// The most `header` parameters `/debug/explain` reads.
pub const MAX_HEADERS: usize = 32;
/// The largest answer the CLI reads.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/debug/explain`'s query for `request` through proxy `proxy`.
pub fn query(proxy: &str, request: &Request) -> String {
    let mut pairs = vec![
        ("proxyID", proxy.to_owned()),
        ("host", request.host.clone()),
        ("port", request.port.to_string()),
        ("path", request.path.clone()),
        ("method", request.method.clone()),
    ];
    pairs.extend(
        request
            .headers
            .iter()
            .map(|(k, v)| ("header", format!("{k}:{v}"))),
    );
    pairs.extend(request.address.map(|a| ("address", a.to_string())));
    pairs.extend(request.sni.clone().map(|s| ("sni", s)));
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The proxy and request of `/debug/explain`'s decoded query, within its bounds.
pub fn from_query(pairs: &[(String, String)]) -> Result<(String, Request), String> {
    let size: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if size > MAX_QUERY_BYTES {
        return Err(format!("query longer than {MAX_QUERY_BYTES} bytes"));
    }
    let one = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let proxy = one("proxyID")
        .or_else(|| one("proxy"))
        .ok_or("missing ?proxyID=NODE_ID")?;
    let host = one("host").ok_or("missing &host=HOST")?;
    let port = one("port")
        .ok_or("missing &port=PORT")?
        .parse::<u16>()
        .map_err(|e| format!("port: {e}"))?;
    let headers: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k == "header")
        .map(|(_, v)| {
            v.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| format!("header {v:?}: expected NAME:VALUE"))
        })
        .collect::<Result<_, _>>()?;
    if headers.len() > MAX_HEADERS {
        return Err(format!("more than {MAX_HEADERS} header parameters"));
    }
    let address = one("address")
        .map(|a| a.parse().map_err(|e| format!("address: {e}")))
        .transpose()?;
    let request = Request {
        host,
        port,
        path: one("path").unwrap_or_else(|| "/".to_owned()),
        method: one("method").unwrap_or_else(|| "GET".to_owned()),
        headers,
        address,
        sni: one("sni"),
    };
    Ok((proxy, request))
}

/// Asks the admin server at `server` (`HOST:PORT`) to explain `request` through `proxy`.
pub fn fetch(server: &str, proxy: &str, request: &Request) -> Result<Explanation, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let path = format!("/debug/explain?{}", query(proxy, request));
    let answer = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), get(server, &path))
            .await
            .map_err(|_| format!("{server}: no answer within 30s"))?
    })?;
    serde_json::from_slice(&answer).map_err(|e| format!("{server}: not an explanation: {e}"))
}

/// The node id of `proxy` as `proxy-status` names it: a node id is itself; `POD.NAMESPACE` is
/// looked up among the server's connected streams (`/debug/syncz`).
pub fn resolve(server: &str, proxy: &str) -> Result<String, String> {
    if proxy.contains('~') {
        return Ok(proxy.to_owned());
    }
    use crate::cmd::proxy_status::client::{self, AdminClient};
    client::runtime()?.block_on(async {
        let streams = AdminClient::new(server)?.syncz().await?;
        match client::find(&streams, proxy).first() {
            Some(stream) => Ok(stream["proxy"].as_str().unwrap_or_default().to_owned()),
            None => Err(format!(
                "no proxy {proxy} is connected to {server} (give its node id to explain an \
                 unconnected one)"
            )),
        }
    })
}

async fn get(server: &str, path: &str) -> Result<Vec<u8>, String> {
    let stream = tokio::net::TcpStream::connect(server)
        .await
        .map_err(|e| format!("{server}: {e}"))?;
    let (mut send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{server}: {e}"))?;
    tokio::spawn(connection);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, server)
        .body(axum::body::Body::empty())
        .map_err(|e| e.to_string())?;
    let response = send
        .send_request(req)
        .await
        .map_err(|e| format!("{server}: {e}"))?;
    let status = response.status();
    let bytes = axum::body::to_bytes(
        axum::body::Body::new(response.into_body()),
        MAX_ANSWER_BYTES,
    )
    .await
    .map_err(|e| format!("{server}: reading the answer (at most {MAX_ANSWER_BYTES} bytes): {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "{server}{}: {status}: {}",
            path.split('?').next().unwrap_or_default(),
            String::from_utf8_lossy(&bytes).trim()
        ));
    }
    Ok(bytes.to_vec())
}
