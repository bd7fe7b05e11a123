//! Token reviews of several clusters against real API servers (`sextant-testapi`): a remote
//! cluster whose API server accepts connections and never answers holds only its own
//! callers, while the config cluster's tokens are reviewed and accepted; an acceptance does
//! not outlive the registration of the API server that gave it; and what an answer says is
//! checked before it is used or kept.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures_util::FutureExt;
use sextant::{
    metrics::Metrics,
    secure::{Authenticator, ReviewLimits},
};
use sextant_kube::clusters::{Cluster, Clusters};
use sextant_model::Identity;
use sextant_xds::grpc::Authenticate;
use tonic::{Code, codegen::http};

/// An API server whose TokenReview accepts `tokens` (token, service account `NS:NAME`) for
/// audience `istio-ca`.
async fn api_server(tokens: &[(String, String)]) -> sextant_testapi::Handle {
    let tokens = tokens
        .iter()
        .map(|(token, account)| {
            (
                token.clone(),
                format!("system:serviceaccount:{account}@istio-ca"),
            )
        })
        .collect::<BTreeMap<_, _>>();
    sextant_testapi::start(sextant_testapi::Options {
        tokens,
        ..Default::default()
    })
    .await
    .expect("the API server starts")
}

fn client(url: &str) -> kube::Client {
    kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client")
}

/// An API server that accepts connections and never answers: the URL, and the task holding
/// the connections open.
async fn hanging_api_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    (url, held)
}

/// An authenticator whose config cluster is reviewed by `config` and whose remote clusters
/// are `clusters`.
fn authenticator(config: &str, clusters: &Clusters, max_waiting: usize) -> Arc<Authenticator> {
    let limits = ReviewLimits {
        cache_size: 1000,
        cache_ttl: Duration::from_secs(60),
        max_waiting,
    };
    Arc::new(
        Authenticator::new(
            "cluster.local",
            Some(client(config)),
            vec!["istio-ca".into()],
            limits,
            Arc::new(Metrics::new()),
        )
        .with_clusters("Kubernetes", clusters.clone()),
    )
}

/// A remote cluster `id` whose tokens `url` reviews, registered as listed.
fn register(clusters: &Clusters, id: &str, url: &str) {
    let cluster = Cluster::fixed(id, format!("test {url}"));
    cluster.set_client(client(url));
    clusters.insert(cluster);
}

fn request(cluster: Option<&str>, token: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    if let Some(cluster) = cluster {
        h.insert(
            "clusterid",
            http::HeaderValue::from_str(cluster).expect("header"),
        );
    }
    h
}

fn identity(namespace: &str, service_account: &str) -> Vec<Identity> {
    vec![Identity {
        trust_domain: "cluster.local".into(),
        namespace: namespace.into(),
        service_account: service_account.into(),
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_cluster_that_never_answers_neither_delays_nor_refuses_the_config_clusters_callers()
 {
    const PROXIES: usize = 24;
    const FLOOD: usize = 300;
    const MAX_WAITING: usize = 64;
    let tokens: Vec<(String, String)> = (0..PROXIES)
        .map(|i| (format!("valid-{i}"), format!("default:proxy-{i}")))
        .collect();
    let config = api_server(&tokens).await;
    let (b_url, _held) = hanging_api_server().await;
    let clusters = Clusters::default();
    register(&clusters, "B", &b_url);
    let auth = authenticator(&config.url(), &clusters, MAX_WAITING);

    // The flood: made-up tokens naming B. B's share of the waiting bound waits on its silent
    // API server (until the review timeout); the rest is refused at once, naming B.
    let mut refused = 0;
    let mut pending = Vec::new();
    for i in 0..FLOOD {
        let mut review = auth.authenticate(
            &request(Some("B"), &format!("junk-{i}")),
            &Default::default(),
        );
        match (&mut review).now_or_never() {
            Some(answer) => {
                let refusal = answer.expect_err("junk");
                assert_eq!(refusal.code(), Code::Unavailable, "{refusal:?}");
                assert!(
                    refusal.message().contains("by cluster \"B\"'s API server"),
                    "{refusal:?}"
                );
                refused += 1;
            }
            None => pending.push(tokio::spawn(review)),
        }
    }
    assert!(refused >= FLOOD - MAX_WAITING, "{refused} refused");
    assert!(!pending.is_empty());

    // The config cluster's proxies, all at once (each token reviewed once: none is cached):
    // served, not refused, while B's callers still wait on their reviews.
    let served = futures_util::future::join_all((0..PROXIES).map(|i| {
        let auth = auth.clone();
        async move {
            let no_cluster = (i % 2 == 0).then_some("Kubernetes");
            auth.authenticate(
                &request(no_cluster, &format!("valid-{i}")),
                &Default::default(),
            )
            .await
        }
    }))
    .await;
    for (i, answer) in served.into_iter().enumerate() {
        assert_eq!(
            answer.expect("the config cluster's token is accepted"),
            identity("default", &format!("proxy-{i}"))
        );
    }
    let still_waiting = pending.iter().filter(|t| !t.is_finished()).count();
    assert_eq!(
        still_waiting,
        pending.len(),
        "the config cluster was served while every review of B was still pending"
    );
    // A made-up token of the config cluster is reviewed and refused by its API server, not
    // by a bound.
    let junk = auth
        .authenticate(&request(None, "junk"), &Default::default())
        .await
        .expect_err("made up");
    assert_eq!(junk.code(), Code::Unauthenticated, "{junk:?}");
    for task in pending {
        task.abort();
    }
}

#[tokio::test]
async fn an_acceptance_does_not_outlive_the_registration_of_the_api_server_that_gave_it() {
    let config = api_server(&[]).await;
    let token = "b-token".to_owned();
    let first = api_server(&[(token.clone(), "default:reviews".into())]).await;
    let second = api_server(&[]).await;
    let clusters = Clusters::default();
    let auth = authenticator(&config.url(), &clusters, 16);
    register(&clusters, "B", &first.url());
    let accepted = auth
        .authenticate(&request(Some("B"), &token), &Default::default())
        .await
        .expect("B's API server accepts it");
    assert_eq!(accepted, identity("default", "reviews"));

    // B registered again, against another API server that knows nothing of the token.
    register(&clusters, "B", &second.url());
    let refused = auth
        .authenticate(&request(Some("B"), &token), &Default::default())
        .await
        .expect_err("the new API server does not accept it");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("not accepted"), "{refused:?}");
}

#[tokio::test]
async fn a_review_answer_is_used_only_when_its_names_are_valid_and_its_text_is_bounded() {
    let long_name = "a".repeat(10_000);
    let config = api_server(&[
        ("bad-namespace".into(), "Bad_NS:reviews".into()),
        ("long-name".into(), format!("default:{long_name}")),
    ])
    .await;
    let auth = authenticator(&config.url(), &Clusters::default(), 16);
    for token in ["bad-namespace", "long-name"] {
        // Twice: the refusal is kept as it was given.
        for _ in 0..2 {
            let refused = auth
                .authenticate(&request(None, token), &Default::default())
                .await
                .expect_err("not a valid service account");
            assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
            assert!(
                refused
                    .message()
                    .contains("is not a service account with a valid namespace and name"),
                "{refused:?}"
            );
            assert!(
                refused.message().len() < 1024,
                "{}",
                refused.message().len()
            );
        }
    }
}
