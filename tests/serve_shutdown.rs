//! `sextant serve` on SIGTERM: it stops being ready, closes open xDS streams (so proxies move
//! to another replica) and exits cleanly, within its drain grace period even when a proxy
//! keeps its side of the stream open.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{
        DiscoveryRequest, aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
};
use sextant_resources::type_url;
use sextant_testing::{Process, Serve, request};
use tokio_stream::StreamExt;

#[test]
fn sigterm_closes_streams_and_exits_cleanly() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let serve = Serve::new();
    let (xds, admin_addr) = (serve.xds, serve.admin_addr());
    // Killed on drop if the test fails half way.
    let mut sextant = Process(
        serve
            .command(&sextant_testing::sextant_bin())
            .args(["--config-dir", examples])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sextant serve starts"),
    );
    serve.wait_ready(Duration::from_secs(20)).expect("ready");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let closed_after = runtime.block_on(async {
        let mut client =
            AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{xds}"))
                .await
                .expect("connect");
        let first = DiscoveryRequest {
            node: Some(Node {
                id: "sidecar~127.0.0.9~client-0.default~default.svc.cluster.local".into(),
                ..Default::default()
            }),
            type_url: type_url::CLUSTER.into(),
            ..Default::default()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(first).await.expect("send");
        let mut stream = client
            .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("stream")
            .into_inner();
        let clusters = stream.next().await.expect("a response").expect("clusters");
        assert!(!clusters.resources.is_empty());

        let status = Command::new("kill")
            .args(["-TERM", &sextant.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let sent = Instant::now();
        // The stream ends (cleanly or with an error) while the request side is still open.
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
        assert!(end.is_ok(), "the xDS stream was not closed on SIGTERM");
        // The request side stays open, like a proxy that never closes its stream: the server
        // must still exit once the drain grace period is over.
        (sent.elapsed(), tx, client)
    });
    let (closed_after, _requests, _client) = closed_after;
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(status) = sextant.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "sextant did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status {exit}");
    assert!(closed_after < Duration::from_secs(10));
    // Not ready any more: nothing answers on the admin port.
    assert!(request(admin_addr, "localhost", "/ready", &[]).is_none_or(|(s, _, _)| s != 200));
}
