use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject, WatchParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use sextant_model::Kind;

/// A watch event that reads, then no newline ever again.
const FIRST_EVENT: &str = r#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Service","metadata":{"name":"a","namespace":"default","resourceVersion":"1"}}}"#;

/// An API server answering every request with a chunked body that never ends (a watch gets
/// one good event first); the bytes it managed to send.
async fn endless_server() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let sent = counted.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let watch = String::from_utf8_lossy(&head).contains("watch=true");
                let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                if watch {
                    let line = format!("{FIRST_EVENT}\n");
                    out.extend(format!("{:x}\r\n{line}\r\n", line.len()).into_bytes());
                }
                let chunk = vec![b'x'; 64 * 1024];
                if conn.write_all(&out).await.is_err() {
                    return;
                }
                loop {
                    let framed =
                        [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                    if conn.write_all(&framed).await.is_err() {
                        return;
                    }
                    sent.fetch_add(chunk.len(), Ordering::Relaxed);
                }
            });
        }
    });
    (format!("http://{addr}"), sent)
}

fn client(url: &str, bounds: ResponseBounds) -> kube::Client {
    let config = kube::Config::new(url.parse().expect("a URL"));
    bounded(config, bounds).expect("a client")
}

const BOUNDS: ResponseBounds = ResponseBounds {
    list_bytes: 1 << 20,
    line_bytes: 256 * 1024,
};

#[tokio::test]
async fn an_endless_list_response_is_cut_at_the_list_bound() {
    let (url, sent) = endless_server().await;
    let request = http::Request::get("/api/v1/services?limit=500")
        .body(Vec::new())
        .expect("a request");
    let error = client(&url, BOUNDS)
        .request_text(request)
        .await
        .expect_err("cut");
    let cut = too_large(&error).unwrap_or_else(|| panic!("not cut at the bound: {error}"));
    assert!(!cut.watch);
    assert!(
        cut.to_string().contains("--max-list-bytes (1048576 bytes)"),
        "{cut}"
    );
    // The client stopped reading: the server could send little more than the bound.
    assert!(sent.load(Ordering::Relaxed) < 32 << 20, "{sent:?}");
}

#[tokio::test]
async fn an_endless_watch_line_is_cut_after_the_events_before_it() {
    let (url, _) = endless_server().await;
    let api: Api<DynamicObject> =
        Api::all_with(client(&url, BOUNDS), &crate::api_resource(Kind::Service));
    let mut events = api
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watching")
        .boxed();
    assert!(
        matches!(events.next().await, Some(Ok(_))),
        "the first event reads"
    );
    let error = match events.next().await {
        Some(Err(e)) => e,
        other => panic!("expected the cut, got {:?}", other.map(|r| r.map(|_| ()))),
    };
    let cut = too_large(&error).unwrap_or_else(|| panic!("not cut at the bound: {error}"));
    assert!(cut.watch && cut.bound == BOUNDS.line_bytes, "{cut}");
}

#[test]
fn watch_lines_are_counted_across_chunks_and_reset_at_each_newline() {
    let mut body = Bounded {
        inner: (),
        limit: Limit::Line(10),
        seen: 0,
    };
    assert!(body.count(b"12345").is_ok());
    assert!(body.count(b"678\n1234567890\n12").is_ok());
    assert!(body.count(b"345678").is_ok());
    assert!(body.count(b"901").is_err(), "11 bytes without a newline");
    let mut body = Bounded {
        inner: (),
        limit: Limit::Line(4),
        seen: 0,
    };
    assert!(
        body.count(b"1\n12345\n1").is_err(),
        "a long line inside a chunk"
    );
    assert!(is_watch(
        &"/api/v1/pods?watch=true&resourceVersion=1"
            .parse()
            .expect("uri")
    ));
    assert!(!is_watch(&"/api/v1/pods?limit=500".parse().expect("uri")));
}
