//! Bounds on what a peer can make `sextant serve` hold, each attacked over a real socket while
//! another client is still served: the bound holds, the cut or refusal is counted in
//! `sextant_xds_bounded_total`, and the server keeps answering.

use std::{process::Stdio, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{
            DiscoveryRequest, aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        },
    },
    google::rpc::Status,
};
use sextant_resources::type_url;
use sextant_testing::{Process, Serve, first_clusters, http_get, metric, syncz, wait_for};

#[path = "bounds/connections.rs"]
mod connections;
#[path = "bounds/webhook.rs"]
mod webhook;

/// NACK text a hostile peer sends: 8 MiB, three times.
const NACK_BYTES: usize = 8 << 20;

/// `sextant serve` on the example mesh with `args`, its log in `stderr`, and a runtime whose
/// worker keeps an attacker's streams flowing while the test checks from outside.
struct Attacked {
    serve: Serve,
    runtime: tokio::runtime::Runtime,
    sextant: Process,
}

impl Attacked {
    fn start(args: &[&str], stderr: Stdio) -> Attacked {
        Attacked::start_limited(args, stderr, None)
    }

    /// `sextant serve` with `args` and, if given, at most `open_files` descriptors.
    fn start_limited(args: &[&str], stderr: Stdio, open_files: Option<u32>) -> Attacked {
        let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
        let serve = Serve::new();
        let mut command = serve.command(&sextant_testing::sextant_bin());
        command.args(["--config-dir", examples]).args(args);
        if let Some(n) = open_files {
            let mut limited = std::process::Command::new("sh");
            limited
                .arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(command.get_program())
                .args(command.get_args());
            command = limited;
        }
        let sextant = Process(
            command
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("sextant serve starts"),
        );
        serve.wait_ready(Duration::from_secs(20)).expect("ready");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        Attacked {
            serve,
            runtime,
            sextant,
        }
    }

    /// A new connection to the plaintext xDS port.
    async fn connect(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", self.serve.xds))
            .expect("endpoint")
            .connect()
            .await
            .expect("connects")
    }

    /// Another proxy, `node`, is still served while the attack goes on.
    fn still_serves(&self, node: &str) {
        let served = self
            .runtime
            .block_on(async { first_clusters(self.connect().await, node, None).await });
        assert!(!served.expect("served").resources.is_empty());
    }
}

#[test]
fn nack_messages_are_kept_truncated_and_counted() {
    let log = std::env::temp_dir().join(format!("sextant-bounds-{}.log", std::process::id()));
    // NACKs from the plaintext port hold nothing back unless --hold-on-plaintext-nacks says
    // so: an anonymous peer must not be able to hold back other teams' objects.
    let server = Attacked::start(&[], std::fs::File::create(&log).expect("log file").into());
    let admin = server.serve.admin_addr();
    let node = "sidecar~127.0.3.1~productpage-nack.default~default.svc.cluster.local";
    let (tx, _stream) = server.runtime.block_on(async {
        let mut client = AggregatedDiscoveryServiceClient::new(server.connect().await)
            .max_decoding_message_size(64 << 20);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(DiscoveryRequest {
            node: Some(Node {
                id: node.to_owned(),
                ..Default::default()
            }),
            type_url: type_url::CLUSTER.to_owned(),
            ..Default::default()
        })
        .await
        .expect("queued");
        let mut stream = client
            .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("stream")
            .into_inner();
        let first = stream.message().await.expect("a response").expect("open");
        for _ in 0..3 {
            tx.send(DiscoveryRequest {
                type_url: type_url::CLUSTER.to_owned(),
                response_nonce: first.nonce.clone(),
                error_detail: Some(Status {
                    code: 3,
                    message: "x".repeat(NACK_BYTES),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("queued");
        }
        (tx, stream)
    });

    let bounded = r#"sextant_xds_bounded_total{bound="nack_message"}"#;
    wait_for(
        "three NACKs cut and counted",
        Duration::from_secs(20),
        || metric(admin, bounded).filter(|n| *n >= 3.0),
    );
    // What the server keeps and renders of them is the bound, not the peer's megabytes.
    let stream = syncz(admin, node).expect("the stream");
    assert_eq!(stream["held"], serde_json::json!([]), "{stream}");
    let kept = stream["types"][type_url::CLUSTER]["last_nack"]["error"]
        .as_str()
        .expect("the NACK's text")
        .to_owned();
    assert!(kept.len() < 4200, "{} bytes kept", kept.len());
    assert!(
        kept.ends_with("more bytes cut)"),
        "{}",
        &kept[kept.len() - 40..]
    );
    let syncz_bytes = http_get(admin, "/debug/syncz").expect("syncz").len();
    assert!(
        syncz_bytes < 64 << 10,
        "/debug/syncz is {syncz_bytes} bytes"
    );
    let log_bytes = std::fs::metadata(&log).expect("log").len();
    assert!(log_bytes < 1 << 20, "the log grew to {log_bytes} bytes");
    server.still_serves("sidecar~127.0.3.2~productpage-ok.default~default.svc.cluster.local");
    assert!(http_get(admin, "/ready").is_some());
    drop(tx);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn subscriptions_past_the_name_limit_end_their_stream_and_are_counted() {
    let server = Attacked::start(&["--max-subscription-names", "1000"], Stdio::null());
    let admin = server.serve.admin_addr();
    let refused = server.runtime.block_on(async {
        let mut client = AggregatedDiscoveryServiceClient::new(server.connect().await);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(DiscoveryRequest {
            node: Some(Node {
                id: "sidecar~127.0.3.3~productpage-names.default~default.svc.cluster.local"
                    .to_owned(),
                ..Default::default()
            }),
            type_url: type_url::ENDPOINT.to_owned(),
            resource_names: (0..1001).map(|i| format!("outbound|9080||s{i}")).collect(),
            ..Default::default()
        })
        .await
        .expect("queued");
        let mut stream = client
            .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("stream")
            .into_inner();
        stream.message().await.expect_err("refused")
    });
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("1001 names, more than 1000"),
        "{refused:?}"
    );
    let bounded = r#"sextant_xds_bounded_total{bound="subscription_names"}"#;
    assert_eq!(metric(admin, bounded), Some(1.0));
    server.still_serves("sidecar~127.0.3.4~productpage-ok.default~default.svc.cluster.local");
}

/// Sends and receives gRPC messages as raw bytes, so a test can send what no protobuf
/// encoder would.
#[derive(Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n)))
    }
}

#[test]
fn malformed_requests_end_their_stream_with_invalid_argument() {
    let server = Attacked::start(&[], Stdio::null());
    let status = server.runtime.block_on(async {
        let mut grpc = tonic::client::Grpc::new(server.connect().await);
        grpc.ready().await.expect("ready");
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
        );
        // Not a DiscoveryRequest: field 31 with wire type 7, which protobuf does not have.
        let garbage = tokio_stream::once(bytes::Bytes::from_static(&[0xff, 0x01, 0x02]));
        match grpc
            .streaming(tonic::Request::new(garbage), path, Raw)
            .await
        {
            Err(status) => status,
            Ok(response) => response
                .into_inner()
                .message()
                .await
                .expect_err("the stream ends with an error"),
        }
    });
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("bad request"), "{status:?}");
    server.still_serves("sidecar~127.0.3.5~productpage-ok.default~default.svc.cluster.local");
}
