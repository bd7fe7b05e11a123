//! Secret access against the test API server (its RBAC answers the reviews), against one
//! that never answers, and without one.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use k8s_openapi::api::{
    core::v1::Namespace,
    rbac::v1::{Role, RoleBinding},
};
use serde_json::json;

use super::*;
use crate::metrics::RefusalLabels;

fn client(url: &str) -> kube::Client {
    kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client")
}

fn limits(max_waiting: usize) -> ReviewLimits {
    ReviewLimits {
        cache_size: 100,
        cache_ttl: Duration::from_secs(60),
        max_waiting,
    }
}

/// An API server where `istio-system/istio-ingressgateway` may read Secrets, as Istio's
/// gateway chart lets it, and every service account of the namespace is bound as a group to
/// the same Role (which a review naming the user alone does not count).
async fn api_server() -> sextant_testapi::Handle {
    let api = sextant_testapi::start(Default::default())
        .await
        .expect("the API server starts");
    let client = client(&api.url());
    let create = kube::api::PostParams::default();
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "istio-system"}})).expect("namespace");
    kube::Api::<Namespace>::all(client.clone())
        .create(&create, &namespace)
        .await
        .expect("namespace created");
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "gateway-secrets"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch", "list"]}]
    }))
    .expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "gateway-secrets"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gateway-secrets"},
        "subjects": [{"kind": "ServiceAccount", "name": "istio-ingressgateway"},
                     {"kind": "Group", "name": "system:serviceaccounts:istio-system"}]
    }))
    .expect("binding");
    kube::Api::<Role>::namespaced(client.clone(), "istio-system")
        .create(&create, &role)
        .await
        .expect("role created");
    kube::Api::<RoleBinding>::namespaced(client, "istio-system")
        .create(&create, &binding)
        .await
        .expect("binding created");
    api
}

fn gateway(service_account: &str, cluster: &str) -> (Proxy, Identity) {
    let mut proxy = Proxy::from_node_id(
        "router~10.0.0.1~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local",
    )
    .expect("node id");
    proxy.cluster_id = cluster.into();
    let identity = Identity {
        trust_domain: "cluster.local".into(),
        namespace: "istio-system".into(),
        service_account: service_account.into(),
    };
    (proxy, identity)
}

/// Secret access whose wakes are counted.
fn counted(client: Option<kube::Client>, max_waiting: usize) -> (SecretAccess, Arc<AtomicUsize>) {
    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = wakes.clone();
    let access = SecretAccess::new(
        client,
        limits(max_waiting),
        Arc::new(Metrics::new()),
        move || {
            counter.fetch_add(1, Ordering::SeqCst);
        },
    );
    (access, wakes)
}

/// Asks until the answer is no longer pending.
async fn settled(access: &SecretAccess, service_account: &str) -> Access {
    let (proxy, identity) = gateway(service_account, "Kubernetes");
    for _ in 0..500 {
        match access.access(&proxy, &identity) {
            Access::Pending => tokio::time::sleep(Duration::from_millis(10)).await,
            answer => return answer,
        }
    }
    panic!("no answer for {service_account}");
}

fn refusals(access: &SecretAccess) -> u64 {
    access
        .inner
        .metrics
        .auth_refused
        .get_or_create(&RefusalLabels {
            reason: "gateway_secrets".into(),
        })
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_service_account_bound_to_read_secrets_is_allowed_and_the_answer_is_kept() {
    let api = api_server().await;
    let (access, wakes) = counted(Some(client(&api.url())), 64);
    let (proxy, identity) = gateway("istio-ingressgateway", "");
    assert_eq!(access.access(&proxy, &identity), Access::Pending);
    assert_eq!(
        settled(&access, "istio-ingressgateway").await,
        Access::Allowed
    );
    // The answer gave the gateway its credentials: the streams were woken once.
    assert_eq!(wakes.load(Ordering::SeqCst), 1);

    // Another account of the namespace: only bound as a group, which istiod's review (the
    // user alone) does not count.
    let Access::Denied(why) = settled(&access, "reviews").await else {
        panic!("reviews may not read Secrets");
    };
    assert_eq!(
        why,
        "no RBAC rule lets system:serviceaccount:istio-system:reviews list secrets in namespace istio-system"
    );
    assert_eq!(refusals(&access), 1);
    // A first refusal wakes the streams too, so that the gateway's stream logs why.
    assert_eq!(wakes.load(Ordering::SeqCst), 2);

    // Kept: the API server is not asked again while the verdicts are fresh.
    api.stop();
    for _ in 0..3 {
        assert_eq!(access.access(&proxy, &identity), Access::Allowed);
        assert!(matches!(
            access.access(
                &gateway("reviews", "Kubernetes").0,
                &gateway("reviews", "").1
            ),
            Access::Denied(_)
        ));
    }
    assert_eq!(refusals(&access), 1);
}

#[tokio::test]
async fn a_node_of_an_unregistered_cluster_is_refused_and_directory_mode_allows_everyone() {
    let (access, _) = counted(Some(client("http://127.0.0.1:1")), 64);
    let (proxy, identity) = gateway("istio-ingressgateway", "elsewhere");
    let Access::Denied(why) = access.access(&proxy, &identity) else {
        panic!("an unknown cluster");
    };
    assert!(
        why.contains("names cluster \"elsewhere\" (CLUSTER_ID), which is neither the config cluster \"Kubernetes\" nor a registered remote cluster"),
        "{why}"
    );
    let (directory, wakes) = counted(None, 64);
    assert_eq!(directory.access(&proxy, &identity), Access::Allowed);
    assert_eq!(wakes.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_an_api_server_never_answers_are_bounded_and_never_block() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let (access, _) = counted(Some(client(&url)), 4);
    let started = Instant::now();
    for i in 0..40 {
        let (proxy, identity) = gateway(&format!("gw-{i}"), "");
        assert_eq!(access.access(&proxy, &identity), Access::Pending);
        // Asked again while its review waits: not a second review.
        assert_eq!(access.access(&proxy, &identity), Access::Pending);
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let bounded = access
        .inner
        .metrics
        .bounded
        .get_or_create(&crate::metrics::BoundLabels {
            bound: "secret_access_reviews".into(),
        })
        .get();
    // Four wait their turn; every other identity is refused a place (and asked again later).
    assert_eq!(bounded, 36 * 2);
    assert_eq!(access.inner.verdicts().len(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_the_api_server_refuses_keeps_no_verdict() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Answers every request as an API server does when Sextant may not create reviews.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    let _server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = vec![0; 64 * 1024];
            let _ = stream.read(&mut request).await;
            let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"subjectaccessreviews.authorization.k8s.io is forbidden: User \"system:serviceaccount:istio-system:sextant\" cannot create resource \"subjectaccessreviews\"","reason":"Forbidden","code":403}"#;
            let response = format!(
                "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    let (access, wakes) = counted(Some(client(&url)), 64);
    let (proxy, identity) = gateway("istio-ingressgateway", "");
    assert_eq!(access.access(&proxy, &identity), Access::Pending);
    for _ in 0..500 {
        if answered.load(Ordering::SeqCst) > 0 && access.inner.verdicts().start(&key()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The review ended without a verdict: none kept, no refusal counted, nothing woken now
    // (it is asked again a minute later).
    assert_eq!(answered.load(Ordering::SeqCst), 1);
    assert_eq!(access.inner.verdicts().len(), (0, 0));
    assert_eq!(refusals(&access), 0);
    assert_eq!(wakes.load(Ordering::SeqCst), 0);
    let due = access
        .inner
        .next_wake
        .lock()
        .expect("lock")
        .expect("a wake is due");
    assert!(
        due > Instant::now() + DENIED_TTL - Duration::from_secs(5),
        "{due:?}"
    );
}

/// The key of the gateway of `gateway("istio-ingressgateway", "")`, as the config cluster's
/// first registration answers for it.
fn key() -> Key {
    Key {
        cluster: "Kubernetes".into(),
        registration: 0,
        namespace: "istio-system".into(),
        service_account: "istio-ingressgateway".into(),
    }
}
