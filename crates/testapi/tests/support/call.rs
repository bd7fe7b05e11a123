//! One request to the test API server over real HTTP, shared by the test binaries that
//! include this file.

use std::net::SocketAddr;

use serde_json::Value;
use sextant_testing::http;

/// One request through hyper's client: the status code and the body as JSON (`null` when
/// it is not JSON).
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ctype: &str,
    body: &Value,
) -> (u16, Value) {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let method = method.parse().expect("an HTTP method");
    let (status, body) = http::send(addr, method, path, ctype, body)
        .await
        .expect("a response");
    (
        status.as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}
