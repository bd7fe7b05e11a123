//! Protobuf request bodies over real HTTP that no honest client sends: each gets a `Status`
//! naming the problem (400 for a body that does not decode, 415 for a kind without a
//! message, 413 past the size bound), never a panic, and the server keeps serving.

use hyper::Method;
use serde_json::Value;
use sextant_testapi::{Options, api::MAX_BODY, start};
use sextant_testing::http;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// Field `n` of a message, length-delimited.
fn field(n: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(n << 3 | 2, &mut out);
    prost::encoding::encode_varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// `k8s\0` and a `runtime.Unknown` of `kind` at `api_version` carrying `raw`.
fn body(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let type_meta = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
    [b"k8s\0".to_vec(), field(1, &type_meta), field(2, raw)].concat()
}

async fn post(addr: std::net::SocketAddr, path: &str, body: Vec<u8>) -> (u16, Value) {
    let (status, bytes) = http::send(addr, Method::POST, path, PROTOBUF, body)
        .await
        .expect("a response");
    (
        status.as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn malformed_deep_and_huge_protobuf_bodies_are_refused_with_a_reason() {
    let server = start(Options::default()).await.expect("server");
    let addr = server.addr;
    let namespaces = "/api/v1/namespaces";

    let (code, status) = post(addr, namespaces, b"{\"kind\": \"Namespace\"}".to_vec()).await;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("k8s envelope")),
        "{status}"
    );
    // A length running past the end of the body.
    let (code, status) = post(addr, namespaces, b"k8s\0\x12\x7fshort".to_vec()).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (400, Some("BadRequest")),
        "{status}"
    );
    // A name that is not UTF-8.
    let bad_name = field(1, &field(1, b"\xc3\x28"));
    let (code, status) = post(addr, namespaces, body("v1", "Namespace", &bad_name)).await;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("v1 Namespace")),
        "{status}"
    );
    // A kind no message is known for.
    let (code, status) = post(addr, namespaces, body("example.com/v1", "Widget", b"")).await;
    assert_eq!(code, 415, "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("Widget")),
        "{status}"
    );
    // A CRD whose schema nests `not` 1,000 deep: past the decoder's recursion limit.
    let mut schema = field(5, b"string");
    for _ in 0..1000 {
        schema = field(28, &schema);
    }
    let crd = field(2, &field(7, &field(4, &field(1, &schema))));
    let (code, status) = post(
        addr,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        body("apiextensions.k8s.io/v1", "CustomResourceDefinition", &crd),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("recursion limit")),
        "{status}"
    );
    // Past the body bound.
    let huge = body("v1", "ConfigMap", &vec![0u8; MAX_BODY + 1]);
    let (code, status) = post(addr, "/api/v1/namespaces/default/configmaps", huge).await;
    assert_eq!(code, 413, "{status}");

    // Still serving, and a well-formed body is created.
    let meta = [field(1, b"bookinfo")].concat();
    let (code, status) = post(addr, namespaces, body("v1", "Namespace", &field(1, &meta))).await;
    assert_eq!(code, 201, "{status}");
    assert_eq!(status["metadata"]["name"], "bookinfo");
}
