//! Reading a running Sextant's admin port (`/debug/syncz`, `/debug/config_dump`) for
//! `proxy-status` and `proxy-config --server`, over kube's HTTP client (plain HTTP; the admin
//! port has no TLS).

use axum::http::{Request, StatusCode, Uri};
use serde_json::Value;

use crate::admin::NEXT_START;

/// Pages of `/debug/syncz` read at most: a million streams at the default page size. A server
/// whose next page never ends is cut off there rather than read forever.
const MAX_PAGES: usize = 1_000;
/// Bytes of one answer read at most: a W-L proxy's whole configuration dump fits many times.
pub const MAX_ANSWER_BYTES: usize = 256 << 20;
/// Bytes of all `/debug/syncz` pages read at most.
const MAX_SYNCZ_BYTES: usize = 256 << 20;
/// Time one request may take, its answer's body included.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A running Sextant's admin port.
pub struct AdminClient {
    client: kube::Client,
    base: String,
}

/// One answer of the admin port.
pub struct Answer {
    /// Its headers.
    pub headers: axum::http::HeaderMap,
    /// Its body.
    pub body: bytes::Bytes,
}

impl AdminClient {
    /// A client of the admin port at `server`, `HOST:PORT` or `http://HOST:PORT`. Call within
    /// a Tokio runtime.
    pub fn new(server: &str) -> Result<AdminClient, String> {
        let base = if server.contains("://") {
            server.trim_end_matches('/').to_owned()
        } else {
            format!("http://{server}")
        };
        let uri: Uri = base
            .parse()
            .map_err(|e| format!("--server {server}: not an address: {e}"))?;
        let client = kube::Client::try_from(kube::Config::new(uri))
            .map_err(|e| format!("--server {server}: {e}"))?;
        Ok(AdminClient { client, base })
    }

    /// `GET path` (with its query), bounded in time and size; an answer other than 200 is an
    /// error with its text.
    pub async fn get(&self, path: &str) -> Result<Answer, String> {
        let url = format!("{}{path}", self.base);
        tokio::time::timeout(REQUEST_TIMEOUT, self.get_unbounded_in_time(&url))
            .await
            .map_err(|_| format!("{url}: no whole answer within {REQUEST_TIMEOUT:?}"))?
    }

    async fn get_unbounded_in_time(&self, url: &str) -> Result<Answer, String> {
        let request = Request::get(url)
            .body(kube::client::Body::empty())
            .map_err(|e| format!("{url}: {e}"))?;
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(axum::body::Body::new(body), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| {
                format!("{url}: reading the answer (at most {MAX_ANSWER_BYTES} bytes): {e}")
            })?;
        if parts.status != StatusCode::OK {
            return Err(format!(
                "{url}: {}: {}",
                parts.status,
                String::from_utf8_lossy(&body).trim()
            ));
        }
        Ok(Answer {
            headers: parts.headers,
            body,
        })
    }

    /// Every stream of `/debug/syncz`, page after page.
    pub async fn syncz(&self) -> Result<Vec<Value>, String> {
        let mut all = Vec::new();
        let mut start = 0usize;
        let mut read = 0usize;
        for _ in 0..MAX_PAGES {
            let answer = self.get(&format!("/debug/syncz?start={start}")).await?;
            read += answer.body.len();
            if read > MAX_SYNCZ_BYTES {
                return Err(format!("/debug/syncz: more than {MAX_SYNCZ_BYTES} bytes"));
            }
            let page: Vec<Value> = serde_json::from_slice(&answer.body)
                .map_err(|e| format!("/debug/syncz: not a list of streams: {e}"))?;
            all.extend(page);
            let next = answer
                .headers
                .get(NEXT_START)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            match next {
                Some(next) if next > start => start = next,
                Some(_) => return Err("/debug/syncz: a next page that does not advance".into()),
                None => return Ok(all),
            }
        }
        Err(format!("/debug/syncz: more than {MAX_PAGES} pages"))
    }
}

/// `value` for a URL's query: everything but RFC 3986's unreserved characters escaped.
pub fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Tokio runtime for one command's requests.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))
}

/// The short name of a node id, as istioctl shows it: `POD.NAMESPACE` from
/// `sidecar~IP~POD.NAMESPACE~DOMAIN`, else the id itself.
pub fn short_name(node_id: &str) -> &str {
    let mut parts = node_id.split('~');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some(name), Some(_)) if !name.is_empty() => name,
        _ => node_id,
    }
}

/// The streams of `streams` (syncz entries) whose proxy is `name`: its node id or short name.
pub fn find<'a>(streams: &'a [Value], name: &str) -> Vec<&'a Value> {
    streams
        .iter()
        .filter(|s| {
            let id = s["proxy"].as_str().unwrap_or_default();
            id == name || short_name(id) == name
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_pod_and_namespace() {
        assert_eq!(
            short_name("sidecar~10.0.0.1~reviews-v1-0.default~default.svc.cluster.local"),
            "reviews-v1-0.default"
        );
        assert_eq!(short_name("a-plain-id"), "a-plain-id");
        assert_eq!(short_name("sidecar~10.0.0.1~~x"), "sidecar~10.0.0.1~~x");
    }

    #[test]
    fn proxies_are_found_by_node_id_or_short_name() {
        let streams = vec![
            serde_json::json!({"proxy": "sidecar~1.1.1.1~a-0.ns~ns.svc.cluster.local"}),
            serde_json::json!({"proxy": "b"}),
        ];
        assert_eq!(find(&streams, "a-0.ns").len(), 1);
        assert_eq!(
            find(&streams, "sidecar~1.1.1.1~a-0.ns~ns.svc.cluster.local").len(),
            1
        );
        assert_eq!(find(&streams, "b").len(), 1);
        assert!(find(&streams, "c").is_empty());
    }
}
