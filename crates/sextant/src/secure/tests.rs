//! The authenticator without an API server, or with one that never answers: certificates,
//! bearer headers, cluster ids and the bounds on callers waiting.

use super::*;

fn headers(value: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(value).expect("header"),
    );
    h
}

#[test]
fn bearer_tokens_are_read_and_bounded() {
    assert_eq!(bearer(&http::HeaderMap::new()), Ok(None));
    assert_eq!(bearer(&headers("Bearer abc")), Ok(Some("abc".into())));
    assert_eq!(bearer(&headers("bearer abc")), Ok(Some("abc".into())));
    assert!(bearer(&headers("Basic abc")).is_err());
    assert!(bearer(&headers("Bearer ")).is_err());
    let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES));
    assert!(
        bearer(&headers(&long))
            .expect_err("too long")
            .contains("longer than")
    );
}

fn authenticator(client: Option<kube::Client>) -> Authenticator {
    let limits = ReviewLimits {
        cache_size: 10,
        cache_ttl: Duration::from_secs(60),
        max_waiting: 1,
    };
    Authenticator::new(
        "cluster.local",
        client,
        vec!["istio-ca".into()],
        limits,
        Arc::new(Metrics::new()),
    )
}

fn peer(uri: &str) -> http::Extensions {
    let mut extensions = http::Extensions::new();
    extensions.insert(Peer {
        addr: "127.0.0.1:1".parse().expect("addr"),
        identities: Arc::from([Identity::parse(uri).expect("id")]),
    });
    extensions
}

#[tokio::test]
async fn certificates_of_another_trust_domain_are_refused_and_counted() {
    let auth = authenticator(None);
    let refused = auth
        .authenticate(
            &http::HeaderMap::new(),
            &peer("spiffe://evil.example/ns/a/sa/b"),
        )
        .await
        .expect_err("foreign trust domain");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused
            .message()
            .contains("outside the trust domain cluster.local"),
        "{refused:?}"
    );
    assert!(
        auth.metrics
            .render()
            .contains(r#"sextant_xds_auth_refused_total{reason="foreign_trust_domain"} 1"#)
    );
}

#[tokio::test]
async fn callers_past_the_waiting_bound_are_refused_at_once() {
    // An API server that never answers: the first caller waits, the second is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let config = kube::Config::new(url.parse().expect("url"));
    let auth = authenticator(Some(kube::Client::try_from(config).expect("client")));
    let first = auth.authenticate(&headers("Bearer one"), &http::Extensions::new());
    let second = auth
        .authenticate(&headers("Bearer two"), &http::Extensions::new())
        .await
        .expect_err("over the bound");
    assert_eq!(second.code(), tonic::Code::Unavailable, "{second:?}");
    assert!(
        auth.metrics
            .render()
            .contains(r#"sextant_xds_bounded_total{bound="token_reviews"} 1"#)
    );
    drop(first);
    assert_eq!(auth.queues.of("Kubernetes", None).waiting(), 0);
}

/// `cases` by default; `PROPTEST_CASES` when set (`make fuzz`).
fn fuzz_config(cases: u32) -> proptest::prelude::ProptestConfig {
    let mut c = proptest::prelude::ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

/// What an `authorization` header may hold on the wire: visible ASCII, spaces, tabs and
/// bytes above 127, around the `Bearer` scheme or not.
fn header_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let byte = prop_oneof![0x20u8..0x7f, Just(b'\t'), 0x80u8..=0xff];
    (
        prop::sample::select(vec![
            "", "Bearer ", "bearer ", "BEARER  ", "Basic ", "Bearer",
        ]),
        prop::collection::vec(byte, 0..64),
        0usize..(MAX_TOKEN_BYTES + 64),
    )
        .prop_map(|(scheme, token, pad)| {
            let mut out = scheme.as_bytes().to_vec();
            out.extend(token);
            // Sometimes long, around the bound.
            if pad > MAX_TOKEN_BYTES - 64 {
                out.resize(pad, b'a');
            }
            out
        })
}

proptest::proptest! {
    #![proptest_config(fuzz_config(512))]

    /// Fuzz target for bearer tokens: whatever the header holds, `bearer` returns a
    /// trimmed, non-empty token within the bound or says what is wrong, and the
    /// authenticator (without an API server) refuses as Unauthenticated with a reason.
    #[test]
    fn fuzz_bearer_headers_give_a_bounded_token_or_a_reason(bytes in header_bytes()) {
        let Ok(value) = http::HeaderValue::from_bytes(&bytes) else {
            return Ok(());
        };
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value);
        match bearer(&h) {
            Ok(Some(token)) => {
                proptest::prop_assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES);
                proptest::prop_assert_eq!(token.trim(), token.as_str());
            }
            Ok(None) => proptest::prop_assert!(false, "a header is there"),
            Err(why) => proptest::prop_assert!(why.starts_with("the authorization header")),
        }
        let auth = authenticator(None);
        let refused = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(auth.authenticate(&h, &http::Extensions::new()))
            .expect_err("no certificate, no API server");
        proptest::prop_assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        proptest::prop_assert!(!refused.message().is_empty());
    }
}

#[tokio::test]
async fn a_cluster_id_nobody_registered_is_refused_and_an_unconnected_one_is_unavailable() {
    let clusters = Clusters::default();
    let auth = authenticator(None).with_clusters("Kubernetes", clusters.clone());
    let mut h = headers("Bearer abc");
    h.insert("clusterid", http::HeaderValue::from_static("B"));
    for extensions in [
        http::Extensions::new(),
        peer("spiffe://cluster.local/ns/a/sa/b"),
    ] {
        let refused = auth
            .authenticate(&h, &extensions)
            .await
            .expect_err("unknown cluster");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(
            refused
                .message()
                .starts_with("client claims to be in cluster \"B\""),
            "{refused:?}"
        );
    }
    clusters.insert(sextant_kube::clusters::Cluster::new("B", "test", 5));
    let waiting = auth
        .authenticate(&h, &http::Extensions::new())
        .await
        .expect_err("not connected");
    assert_eq!(waiting.code(), tonic::Code::Unavailable, "{waiting:?}");
    // A certificate needs no review: a known cluster is enough.
    assert!(
        auth.authenticate(&h, &peer("spiffe://cluster.local/ns/a/sa/b"))
            .await
            .is_ok()
    );
    // The config cluster's own id is the config cluster's.
    h.insert("clusterid", http::HeaderValue::from_static("Kubernetes"));
    let local = auth
        .authenticate(&h, &http::Extensions::new())
        .await
        .expect_err("no API server, no token file");
    assert!(local.message().contains("client certificate"), "{local:?}");
}

#[tokio::test]
async fn without_a_certificate_or_token_the_caller_is_refused() {
    let auth = authenticator(None);
    let none = auth
        .authenticate(&http::HeaderMap::new(), &http::Extensions::new())
        .await
        .expect_err("refused");
    assert_eq!(none.code(), tonic::Code::Unauthenticated);
    let token = auth
        .authenticate(&headers("Bearer abc"), &http::Extensions::new())
        .await
        .expect_err("no API server to review it");
    assert!(token.message().contains("client certificate"), "{token:?}");
    let id = Identity::parse("spiffe://cluster.local/ns/a/sa/b").expect("id");
    assert_eq!(
        auth.authenticate(
            &http::HeaderMap::new(),
            &peer("spiffe://cluster.local/ns/a/sa/b")
        )
        .await
        .expect("certificate"),
        vec![id]
    );
}

/// A client of an API server that accepts connections and never answers, and the task
/// holding them.
fn hanging_client() -> (kube::Client, tokio::task::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let config = kube::Config::new(url.parse().expect("url"));
    (kube::Client::try_from(config).expect("client"), held)
}

fn naming(cluster: &str, token: &str) -> http::HeaderMap {
    let mut h = headers(&format!("Bearer {token}"));
    h.insert(
        "clusterid",
        http::HeaderValue::from_str(cluster).expect("header"),
    );
    h
}

#[tokio::test]
async fn a_made_up_cluster_id_is_echoed_cut_and_escaped() {
    let auth = authenticator(None);
    let long = format!("x\"{}", "y".repeat(10_000));
    let refused = auth
        .authenticate(&naming(&long, "abc"), &http::Extensions::new())
        .await
        .expect_err("unknown cluster");
    let message = refused.message();
    assert!(
        message.starts_with(&format!(
            "client claims to be in cluster \"x\\\"{}\"…",
            "y".repeat(62)
        )),
        "{message}"
    );
    assert!(message.len() < 300, "{}", message.len());
}

#[tokio::test]
async fn a_remote_cluster_unreachable_or_not_listed_is_refused_at_once() {
    use futures_util::FutureExt;
    let (client, _held) = hanging_client();
    let clusters = Clusters::default();
    let auth = authenticator(None).with_clusters("Kubernetes", clusters.clone());
    // Registered, connected, but none of its watches has listed.
    let syncing = Cluster::new("B", "test", 2);
    syncing.set_client(client.clone());
    clusters.insert(syncing.clone());
    // Every watch failing.
    let unreachable = Cluster::new("C", "test", 1);
    unreachable.set_client(client);
    unreachable.failed(sextant_model::Kind::Service, "connection refused".into());
    clusters.insert(unreachable);
    for (cluster, why) in [
        ("B", "has not answered its first lists yet"),
        ("C", "is unreachable"),
    ] {
        let refused = auth
            .authenticate(&naming(cluster, "t"), &http::Extensions::new())
            .now_or_never()
            .expect("refused at once, without asking the API server")
            .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert!(refused.message().contains(why), "{refused:?}");
    }
    assert!(
        auth.metrics
            .render()
            .contains(r#"sextant_xds_auth_refused_total{reason="cluster_unavailable"} 2"#)
    );
    // Once listed, its tokens are reviewed (here: the review waits on the silent server).
    syncing.listed(sextant_model::Kind::Service, 1);
    syncing.listed(sextant_model::Kind::Pod, 1);
    let mut pending = auth.authenticate(&naming("B", "t"), &http::Extensions::new());
    assert!(
        (&mut pending).now_or_never().is_none(),
        "waits for a review"
    );
}

#[tokio::test]
async fn an_api_server_that_gave_no_answer_is_left_alone_for_a_while() {
    // A closed port: the connection is refused.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let client =
        kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
    let clusters = Clusters::default();
    let auth = authenticator(None).with_clusters("Kubernetes", clusters.clone());
    let b = Cluster::fixed("B", "test");
    b.set_client(client);
    clusters.insert(b);
    let first = auth
        .authenticate(&naming("B", "one"), &http::Extensions::new())
        .await
        .expect_err("no API server");
    assert_eq!(first.code(), tonic::Code::Unavailable, "{first:?}");
    assert!(
        first.message().contains("could not be reviewed"),
        "{first:?}"
    );
    let second = auth
        .authenticate(&naming("B", "two"), &http::Extensions::new())
        .await
        .expect_err("left alone");
    assert!(
        second
            .message()
            .contains("did not answer a token review just now"),
        "{second:?}"
    );
    // Its unanswered review was not kept: nothing is known of the token.
    let b = clusters.get("B").expect("registered");
    let key = cache::key("B", auth.queues.of("B", Some(&b)).registration, "one");
    assert!(auth.cache.get(&key, Instant::now()).is_none());
}
