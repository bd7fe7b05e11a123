//! `explain --server`: the request as `/debug/explain`'s query, both ways, and the client that
//! asks a running server. Both sides live here so they cannot drift apart.

use super::steps::{Explanation, Request};
use crate::cmd::proxy_status::client::{self, AdminClient, query_escape};

/// The longest query `/debug/explain` reads: the admin port answers anyone who reaches it.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;
/// The most `header` parameters `/debug/explain` reads.
pub const MAX_HEADERS: usize = 32;

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
        .map(|(k, v)| format!("{k}={}", query_escape(v)))
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
    let path = format!("/debug/explain?{}", query(proxy, request));
    // The admin client bounds the answer in time and size, as proxy-status's reads.
    let answer =
        client::runtime()?.block_on(async { AdminClient::new(server)?.get(&path).await })?;
    serde_json::from_slice(&answer.body).map_err(|e| format!("{server}: not an explanation: {e}"))
}

/// The node id of `proxy` as `proxy-status` names it: a node id is itself; `POD.NAMESPACE` is
/// looked up among the server's connected streams (`/debug/syncz`).
pub fn resolve(server: &str, proxy: &str) -> Result<String, String> {
    if proxy.contains('~') {
        return Ok(proxy.to_owned());
    }
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
