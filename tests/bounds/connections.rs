//! Bounds on connections, handshakes, streams and the pace of requests, each attacked over
//! real sockets while a real client is still served.

use std::{
    path::Path,
    pin::Pin,
    process::Stdio,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{
        DiscoveryRequest, DiscoveryResponse,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
};
use sextant_resources::type_url;
use sextant_testing::{SecureClient, http_get, metric, wait_for};
use tokio::{net::TcpStream, sync::mpsc};
use tonic::codegen::http;

use super::Attacked;

const ADS: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// The bookinfo productpage of the examples, and the identity its Pod runs as.
const PRODUCTPAGE: &str = "sidecar~127.0.1.1~productpage-v1-0.default~default.svc.cluster.local";

fn bounded(bound: &str) -> String {
    format!(r#"sextant_xds_bounded_total{{bound="{bound}"}}"#)
}

/// An open ADS stream: requests go in on `tx`, responses come out of `responses`.
struct Stream {
    tx: mpsc::Sender<DiscoveryRequest>,
    responses: tonic::Streaming<DiscoveryResponse>,
}

impl Stream {
    /// Opens a stream on `channel` as `node` and reads the clusters it is sent first.
    async fn open(channel: tonic::transport::Channel, node: &str) -> Result<Stream, tonic::Status> {
        let mut client =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
        let (tx, rx) = mpsc::channel(4);
        let first = DiscoveryRequest {
            node: Some(Node {
                id: node.to_owned(),
                ..Default::default()
            }),
            type_url: type_url::CLUSTER.to_owned(),
            ..Default::default()
        };
        tx.send(first).await.expect("queued");
        let mut responses = client
            .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        responses
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unknown("ended"))?;
        Ok(Stream { tx, responses })
    }

    /// Asks for `type_url` on the open stream and waits (at most 10 s) for the answer.
    async fn ask(&mut self, request: DiscoveryRequest) -> DiscoveryResponse {
        self.tx.send(request).await.expect("the stream is open");
        tokio::time::timeout(Duration::from_secs(10), self.responses.message())
            .await
            .expect("answered while the attack goes on")
            .expect("no error")
            .expect("a response")
    }
}

fn lds() -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url::LISTENER.to_owned(),
        ..Default::default()
    }
}

/// `n` TCP connections to `port` that send nothing, opened at once (a connect the server
/// leaves in its backlog for 3 s is given up).
async fn idle(port: u16, n: usize) -> Vec<TcpStream> {
    let connecting: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(tokio::time::timeout(
                Duration::from_secs(3),
                TcpStream::connect(("127.0.0.1", port)),
            ))
        })
        .collect();
    let mut held = Vec::with_capacity(n);
    for c in connecting {
        if let Ok(Ok(Ok(c))) = c.await {
            held.push(c);
        }
    }
    held
}

/// How many of `held` the server closed (read returns end of stream or an error at once).
async fn closed(held: &mut [TcpStream]) -> usize {
    use tokio::io::AsyncReadExt;
    let mut n = 0;
    for c in held {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(20), c.read(&mut byte)).await;
        if matches!(read, Ok(Ok(0) | Err(_))) {
            n += 1;
        }
    }
    n
}

/// CPU time `pid` has used, in clock ticks (`/proc/<pid>/stat`, user plus system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    // utime and stime are fields 14 and 15; the first after the command is field 3.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// The share of one core `pid` used over two seconds (ticks are 1/100 s on Linux).
fn cpu_share(pid: u32) -> f64 {
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    (cpu_ticks(pid) - before) as f64 / 200.0
}

/// A CA directory and a certificate of the productpage's identity, issued from it.
fn certificates(dir: &Path) -> (String, String, String) {
    let _ = std::fs::remove_dir_all(dir);
    let sextant = |args: &[&str]| {
        sextant_testing::run(std::process::Command::new(sextant_testing::sextant_bin()).args(args))
    };
    let path = |p: &str| dir.join(p).to_str().expect("utf-8").to_owned();
    sextant(&["ca", "init", "--dir", &path("ca")]);
    sextant(&[
        "ca",
        "issue",
        "--ca-dir",
        &path("ca"),
        "--namespace",
        "default",
        "--service-account",
        "bookinfo-productpage",
        "--out-dir",
        &path("pp"),
    ]);
    let read = |f: &str| std::fs::read_to_string(dir.join("pp").join(f)).expect("pem");
    (
        read("root-cert.pem"),
        read("cert-chain.pem"),
        read("key.pem"),
    )
}

/// POSTs an AdmissionReview to the webhook over TLS (trusting `root_pem`) and returns the
/// response.
async fn admission_review(port: u16, root_pem: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = super::webhook::connect(port, root_pem).await;
    let review = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"review-1","operation":"CREATE","object":{"apiVersion":"networking.istio.io/v1","kind":"DestinationRule","metadata":{"name":"r","namespace":"default"},"spec":{"host":"r"}}}}"#;
    let request = format!(
        "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{review}",
        review.len()
    );
    tls.write_all(request.as_bytes()).await.expect("sent");
    let mut response = String::new();
    let _ = tls.read_to_string(&mut response).await;
    response
}

#[test]
fn idle_connections_do_not_keep_a_tls_handshake_waiting() {
    // Default handshake bounds (256 in progress, 5 s): the attack is the one filed.
    let dir = std::env::temp_dir().join(format!("sextant-bounds-tls-{}", std::process::id()));
    let (root, chain, key) = certificates(&dir);
    let ca = dir.join("ca");
    let server = Attacked::start(&["--ca-dir", ca.to_str().expect("utf-8")], Stdio::null());
    let admin = server.serve.admin_addr();
    let (secure, webhook) = (server.serve.secure_xds, server.serve.webhook);
    // Each port's handshakes in progress are all idle ones (some of the connections the
    // kernel completes for the client may never reach the server: only the count matters).
    let mut held = Vec::new();
    for port in [secure, webhook] {
        let before = metric(admin, &bounded("handshakes")).unwrap_or(0.0);
        held.extend(server.runtime.block_on(idle(port, 1000)));
        wait_for(
            "idle handshakes dropped for newer ones",
            Duration::from_secs(20),
            || metric(admin, &bounded("handshakes")).filter(|n| *n > before + 100.0),
        );
    }
    let client = SecureClient {
        root_pem: root.clone(),
        identity: Some((chain, key)),
        token: None,
    };
    let served = server.runtime.block_on(async {
        // Before the bounds, the handshake waited 29 s behind the idle connections.
        tokio::time::timeout(Duration::from_secs(5), client.clusters(secure, PRODUCTPAGE))
            .await
            .expect("served while 1,000 idle connections are open")
    });
    assert!(!served.expect("served").resources.is_empty());
    let review = server.runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), admission_review(webhook, &root))
            .await
            .expect("the webhook answers while 1,000 idle connections are open")
    });
    assert!(review.starts_with("HTTP/1.1 200"), "{review}");
    assert!(review.contains("review-1"), "{review}");
    // The idle ones left in progress are dropped at their deadline.
    wait_for(
        "idle handshakes past their deadline",
        Duration::from_secs(20),
        || metric(admin, &bounded("handshake_deadline")).filter(|n| *n >= 2.0 * 250.0),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A request body whose bytes the test hands over one by one.
struct Trickle(mpsc::Receiver<Bytes>);

impl http_body::Body for Trickle {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// Opens an ADS stream on `channel` that announces a 1 MiB request, sends one byte of it and
/// then one every 3 s, until the stream ends; returns its status code.
async fn trickle(mut channel: tonic::transport::Channel) -> Option<String> {
    use tonic::codegen::Service;
    let (tx, rx) = mpsc::channel(1);
    let mut announce = vec![0u8];
    announce.extend_from_slice(&(1u32 << 20).to_be_bytes());
    announce.push(0x0a);
    tx.send(Bytes::from(announce)).await.ok()?;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            if tx.send(Bytes::from_static(&[0x0a])).await.is_err() {
                return;
            }
        }
    });
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1{ADS}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(Trickle(rx)))
        .ok()?;
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .ok()?;
    let mut body = channel.call(request).await.ok()?.into_body();
    loop {
        let frame = std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx))
            .await?
            .ok()?;
        if let Ok(trailers) = frame.into_trailers() {
            return Some(trailers.get("grpc-status")?.to_str().ok()?.to_owned());
        }
    }
}

#[test]
fn streams_trickling_large_requests_hold_no_permit_and_are_cut() {
    // A 1 MiB request must arrive within 2 s plus 1 s (its size at 1 MiB/s).
    let server = Attacked::start(
        &[
            "--request-grace-ms",
            "2000",
            "--min-request-bytes-per-second",
            "1048576",
        ],
        Stdio::null(),
    );
    let admin = server.serve.admin_addr();
    let tricklers = server.runtime.block_on(async {
        let channel = server.connect().await;
        (0..40)
            .map(|_| tokio::spawn(trickle(channel.clone())))
            .collect::<Vec<_>>()
    });
    // A proxy's EDS request of about 200 KB, on a connection of its own.
    let eds = DiscoveryRequest {
        type_url: type_url::ENDPOINT.to_owned(),
        resource_names: std::iter::once(
            "outbound|9080||productpage.default.svc.cluster.local".to_owned(),
        )
        .chain(
            (0..3600).map(|i| format!("outbound|9080||padding-{i:05}.default.svc.cluster.local")),
        )
        .collect(),
        ..Default::default()
    };
    assert!(prost::Message::encoded_len(&eds) > 195_000);
    let answered = server.runtime.block_on(async {
        let mut stream = Stream::open(
            server.connect().await,
            "sidecar~127.0.3.6~eds.default~default.svc.cluster.local",
        )
        .await
        .expect("stream");
        // Before the bounds the tricklers held every permit and this was never answered.
        stream.ask(eds).await
    });
    assert_eq!(answered.type_url, type_url::ENDPOINT);
    let statuses = server.runtime.block_on(async {
        let mut statuses = Vec::new();
        for t in tricklers {
            let status = tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("cut at its deadline")
                .expect("joined");
            statuses.push(status);
        }
        statuses
    });
    // DEADLINE_EXCEEDED.
    assert!(
        statuses.iter().all(|s| s.as_deref() == Some("4")),
        "{statuses:?}"
    );
    assert_eq!(metric(admin, &bounded("request_progress")), Some(40.0));
    server.still_serves("sidecar~127.0.3.7~productpage-ok.default~default.svc.cluster.local");
}

#[test]
fn connections_over_the_port_bound_are_refused_while_open_streams_are_served() {
    let server = Attacked::start(&["--max-connections", "50"], Stdio::null());
    let admin = server.serve.admin_addr();
    let node = "sidecar~127.0.3.8~productpage-held.default~default.svc.cluster.local";
    let (mut stream, mut attack) = server.runtime.block_on(async {
        let stream = Stream::open(server.connect().await, node)
            .await
            .expect("stream");
        (stream, idle(server.serve.xds, 80).await)
    });
    wait_for("refusals counted", Duration::from_secs(10), || {
        metric(admin, &bounded("connections")).filter(|n| *n >= 31.0)
    });
    let refused = server.runtime.block_on(closed(&mut attack));
    assert!((31..=40).contains(&refused), "{refused} refused");
    let listeners = server.runtime.block_on(stream.ask(lds()));
    assert_eq!(listeners.type_url, type_url::LISTENER);
    drop(attack);
    // Places given back: a new proxy is served.
    wait_for("a new proxy served", Duration::from_secs(10), || {
        server.runtime.block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(format!(
                "http://127.0.0.1:{}",
                server.serve.xds
            ))
            .ok()?
            .connect()
            .await
            .ok()?;
            sextant_testing::first_clusters(
                channel,
                "sidecar~127.0.3.9~pp-new.default~default.svc.cluster.local",
                None,
            )
            .await
            .ok()
        })
    });
}

#[test]
fn streams_over_the_connection_bound_are_refused() {
    let server = Attacked::start(&["--max-streams-per-connection", "2"], Stdio::null());
    let admin = server.serve.admin_addr();
    let node = |i: u8| format!("sidecar~127.0.4.{i}~pp-{i}.default~default.svc.cluster.local");
    let (mut first, _second, third) = server.runtime.block_on(async {
        let channel = server.connect().await;
        let first = Stream::open(channel.clone(), &node(1)).await;
        let second = Stream::open(channel.clone(), &node(2)).await;
        let third = Stream::open(channel, &node(3)).await;
        (first.expect("first"), second.expect("second"), third)
    });
    let refused = third.err().expect("the third stream is refused");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("--max-streams-per-connection"),
        "{refused:?}"
    );
    assert_eq!(metric(admin, &bounded("streams")), Some(1.0));
    let listeners = server.runtime.block_on(first.ask(lds()));
    assert_eq!(listeners.type_url, type_url::LISTENER);
    server.still_serves(&node(4));
}

/// Descriptors `pid` has open.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Sets the soft limit on `pid`'s descriptors (the hard one stays 256, so it can be raised
/// again).
fn set_open_files(pid: u32, n: usize) {
    sextant_testing::run(
        std::process::Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--nofile={n}:256")),
    );
}

#[test]
fn out_of_descriptors_the_server_backs_off_and_keeps_serving() {
    // 256 descriptors: the total for the xDS and webhook ports is 256 less the admin port's
    // 64 and a reserve of 128.
    let server = Attacked::start_limited(&[], Stdio::null(), Some(256));
    let admin = server.serve.admin_addr();
    let pid = server.sextant.0.id();
    let node = "sidecar~127.0.3.10~productpage-held.default~default.svc.cluster.local";
    let mut stream = server.runtime.block_on(async {
        Stream::open(server.connect().await, node)
            .await
            .expect("stream")
    });
    let baseline = open_files(pid);

    // 1. Connections alone: past the total they are refused, and the descriptors last.
    let attack = server.runtime.block_on(idle(server.serve.xds, 400));
    wait_for(
        "connections over the total refused",
        Duration::from_secs(20),
        || metric(admin, &bounded("connections_total")).filter(|n| *n >= 300.0),
    );
    let share = cpu_share(pid);
    assert!(share < 0.2, "sextant used {share} of a core");
    assert!(http_get(admin, "/ready").is_some(), "/ready answers");
    let listeners = server.runtime.block_on(stream.ask(lds()));
    assert_eq!(listeners.type_url, type_url::LISTENER);
    drop(attack);

    // 2. Descriptors gone (the limit lowered under the process's feet): accepting backs off
    //    instead of spinning, open streams are served, and accepting resumes afterwards.
    wait_for(
        "the attack's connections closed",
        Duration::from_secs(10),
        || (open_files(pid) <= baseline + 2).then_some(()),
    );
    set_open_files(pid, open_files(pid) + 2);
    let attack = server.runtime.block_on(idle(server.serve.xds, 50));
    wait_for("descriptors exhausted", Duration::from_secs(20), || {
        at_descriptor_limit(pid)
    });
    let share = cpu_share(pid);
    assert!(share < 0.2, "sextant used {share} of a core");
    let again = server.runtime.block_on(stream.ask(lds()));
    assert_eq!(again.type_url, type_url::LISTENER);
    set_open_files(pid, 256);
    drop(attack);
    wait_for("/ready again", Duration::from_secs(10), || {
        http_get(admin, "/ready")
    });
    let backoffs = metric(admin, &bounded("accept_backoff")).expect("counted");
    assert!((1.0..100.0).contains(&backoffs), "{backoffs} backoffs");
    server.still_serves("sidecar~127.0.3.11~productpage-new.default~default.svc.cluster.local");
}

/// Whether `pid` has every descriptor its limit allows open (so accepting fails with EMFILE,
/// and the admin port cannot be asked either).
fn at_descriptor_limit(pid: u32) -> Option<()> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let soft: usize = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    (open_files(pid) >= soft).then_some(())
}

#[test]
fn silent_connections_cannot_hold_the_admin_port_from_the_probes() {
    // Every place of the admin port taken by connections that never send a request: each is
    // closed at the header timeout, so /ready answers again and xDS is served throughout.
    let server = Attacked::start(
        &[
            "--max-admin-connections",
            "8",
            "--webhook-header-timeout-ms",
            "500",
        ],
        Stdio::null(),
    );
    let admin = server.serve.admin_addr();
    let silent: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(admin).expect("connect"))
        .collect();
    server.still_serves("sidecar~127.0.3.20~productpage-admin.default~default.svc.cluster.local");
    wait_for("/ready answers", Duration::from_secs(10), || {
        http_get(admin, "/ready")
    });
    for mut s in silent {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        let read = s.read(&mut buf);
        assert!(
            matches!(&read, Ok(0))
                || read
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "a silent connection is closed by the server: {read:?}"
        );
    }
}
