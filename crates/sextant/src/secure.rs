//! Who may use the secure xDS port (15012), as istiod decides it: a client certificate
//! signed by Sextant's CA carrying a SPIFFE identity, or else a Kubernetes service-account
//! token (`authorization: Bearer ...`, audience `istio-ca`) that the API server's TokenReview
//! accepts. The stream's node must then agree with the identity (see
//! [`sextant_model::Identity::admits`]); the plaintext port does no authentication.
//!
//! As istiod does, gRPC metadata `clusterid` names the cluster a token comes from: a remote
//! cluster's token is reviewed by that cluster's API server (the client its registration
//! made, see `sextant_kube::remote`), and an unknown cluster is refused. Every cluster's
//! workloads get identities in the one trust domain.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use sextant_model::Identity;
use sextant_xds::grpc::{Authenticate, Authentication};
use tonic::{Status, codegen::http};

use sextant_kube::clusters::Clusters;

use crate::{metrics::Metrics, tls::Peer};

/// The config cluster's id unless told otherwise (Istio's default `CLUSTER_ID`).
const DEFAULT_CLUSTER_ID: &str = "Kubernetes";

mod cache;
mod token_file;

pub use token_file::TokenFile;

/// Longest bearer token accepted (service-account tokens are about 1 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// TokenReviews in flight at once: callers need not be authenticated to make one, so they
/// must not be able to flood the API server.
const MAX_REVIEWS: usize = 16;

/// How long a TokenReview may take.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// How token reviews are kept and bounded (`sextant serve --token-review-*`).
#[derive(Clone, Copy, Debug)]
pub struct ReviewLimits {
    /// Accepted (and, apart, refused) tokens kept.
    pub cache_size: usize,
    /// Longest an acceptance is kept.
    pub cache_ttl: Duration,
    /// Callers waiting for or in a review; one more is refused with UNAVAILABLE.
    pub max_waiting: usize,
}

/// Authenticates callers of the secure xDS port.
pub struct Authenticator {
    trust_domain: String,
    /// Reviews tokens; without a cluster, `tokens` does (else only client certificates are
    /// accepted).
    client: Option<kube::Client>,
    tokens: Option<Arc<TokenFile>>,
    /// The config cluster's id: tokens naming no cluster, or this one, are its.
    local_cluster: String,
    /// Remote clusters, whose clients review their own tokens.
    clusters: Clusters,
    audiences: Vec<String>,
    reviews: Arc<tokio::sync::Semaphore>,
    cache: Arc<cache::ReviewCache>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    /// Identities in `trust_domain`; tokens reviewed by `client` for `audiences`.
    pub fn new(
        trust_domain: &str,
        client: Option<kube::Client>,
        audiences: Vec<String>,
        limits: ReviewLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        Authenticator {
            trust_domain: trust_domain.to_owned(),
            client,
            tokens: None,
            local_cluster: DEFAULT_CLUSTER_ID.to_owned(),
            clusters: Clusters::default(),
            audiences,
            reviews: Arc::new(tokio::sync::Semaphore::new(MAX_REVIEWS)),
            cache: Arc::new(cache::ReviewCache::new(limits.cache_size, limits.cache_ttl)),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting: limits.max_waiting,
            metrics,
        }
    }

    /// Reviews tokens against `tokens` when there is no cluster (`serve --token-file`).
    pub fn with_token_file(mut self, tokens: Option<TokenFile>) -> Self {
        self.tokens = tokens.map(Arc::new);
        self
    }

    /// Tokens naming no cluster (or `local`) are the config cluster's; those naming one of
    /// `clusters` are reviewed by its API server.
    pub fn with_clusters(mut self, local: &str, clusters: Clusters) -> Self {
        self.local_cluster = local.to_owned();
        self.clusters = clusters;
        self
    }

    /// The client that reviews tokens of the cluster the caller names: `None` for the config
    /// cluster's own (its client or token file), else the remote cluster's. The outer error
    /// refuses a cluster nobody registered; the inner one a remote cluster not connected.
    fn remote_client(&self, cluster: &str) -> Result<Result<Option<kube::Client>, Status>, Status> {
        if cluster.is_empty() || cluster == self.local_cluster {
            return Ok(Ok(None));
        }
        let Some(known) = self.clusters.get(cluster) else {
            self.metrics.refused("unknown_cluster");
            return Err(Status::unauthenticated(format!(
                "client claims to be in cluster {cluster:?}, but this control plane knows only the local cluster {:?} and its registered remote clusters",
                self.local_cluster
            )));
        };
        Ok(known.client().map(Some).ok_or_else(|| {
            Status::unavailable(format!(
                "remote cluster {cluster:?} is not connected (see /debug/clusterz); its tokens cannot be reviewed now"
            ))
        }))
    }

    /// The certificate's identities in our trust domain; refused when it has only others
    /// (the CA signs what it is asked to, so the trust domain must be checked here).
    fn certificate(&self, identities: &[Identity]) -> Result<Vec<Identity>, Status> {
        let ours: Vec<Identity> = identities
            .iter()
            .filter(|id| id.trust_domain == self.trust_domain)
            .cloned()
            .collect();
        if ours.is_empty() {
            self.metrics.refused("foreign_trust_domain");
            let names: Vec<String> = identities.iter().map(Identity::to_string).collect();
            return Err(Status::permission_denied(format!(
                "the client certificate's identity ({}) is outside the trust domain {}",
                names.join(", "),
                self.trust_domain
            )));
        }
        Ok(ours)
    }

    /// Marks one more caller waiting for a review, or refuses it when too many are.
    fn wait_turn(&self) -> Result<Waiting, Status> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.metrics.bounded("token_reviews");
            return Err(Status::unavailable(format!(
                "{} callers are already waiting for a token review \
                 (--max-token-reviews-waiting); retry later",
                self.max_waiting
            )));
        }
        Ok(Waiting(self.waiting.clone()))
    }

    fn identity(&self, (namespace, service_account): (String, String)) -> Vec<Identity> {
        vec![Identity {
            trust_domain: self.trust_domain.clone(),
            namespace,
            service_account,
        }]
    }
}

/// One caller counted among those waiting for a review, until dropped.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Authenticate for Authenticator {
    fn authenticate(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Authentication {
        // A cluster nobody registered is refused whatever the credential, as istiod does.
        let remote = match cluster_id(headers).and_then(|c| {
            let remote = self.remote_client(&c)?;
            Ok((c, remote))
        }) {
            Ok(r) => r,
            Err(status) => return ready(Err(status)),
        };
        if let Some(peer) = extensions.get::<Peer>()
            && !peer.identities.is_empty()
        {
            return ready(self.certificate(&peer.identities));
        }
        let (cluster, remote) = match remote {
            (cluster, Ok(remote)) => (cluster, remote),
            (_, Err(status)) => return ready(Err(status)),
        };
        let token = match bearer(headers) {
            Ok(Some(t)) => t,
            Ok(None) => {
                return ready(Err(Status::unauthenticated(
                    "authentication failed: no client certificate with a SPIFFE identity \
                     signed by Sextant's CA, and no bearer token",
                )));
            }
            Err(e) => return ready(Err(Status::unauthenticated(e))),
        };
        let Some(client) = remote.or_else(|| self.client.clone()) else {
            return ready(match &self.tokens {
                Some(tokens) => tokens
                    .review(&token, &self.audiences)
                    .map(|who| self.identity(who))
                    .map_err(|why| {
                        Status::unauthenticated(format!("authentication failed: {why}"))
                    }),
                None => Err(Status::unauthenticated(
                    "authentication failed: bearer tokens are reviewed by the Kubernetes API \
                     server, or against a token file (--token-file), and this server has \
                     neither; present a client certificate",
                )),
            });
        };
        let key = cache::key(&cluster, &token);
        match self.cache.get(&key, Instant::now()) {
            Some(Ok(who)) => return ready(Ok(self.identity(who))),
            Some(Err(why)) => {
                return ready(Err(Status::unauthenticated(format!(
                    "authentication failed: {why}"
                ))));
            }
            None => {}
        }
        let waiting = match self.wait_turn() {
            Ok(w) => w,
            Err(status) => return ready(Err(status)),
        };
        let audiences = self.audiences.clone();
        let (reviews, cache) = (self.reviews.clone(), self.cache.clone());
        let (metrics, trust_domain) = (self.metrics.clone(), self.trust_domain.clone());
        Box::pin(async move {
            let _waiting = waiting;
            let reviewed = async {
                let _permit = reviews
                    .acquire()
                    .await
                    .map_err(|_| Unanswered("token reviews are shut down".to_owned()))?;
                metrics.token_reviews.inc();
                review(client, &token, audiences).await
            };
            let answer = tokio::time::timeout(REVIEW_TIMEOUT, reviewed)
                .await
                .unwrap_or_else(|_| {
                    Err(Unanswered(format!(
                        "the token review took longer than {REVIEW_TIMEOUT:?}"
                    )))
                });
            let now = Instant::now();
            match answer {
                Ok(Ok(who)) => {
                    cache.accept(key, &token, who.clone(), now);
                    let (namespace, service_account) = who;
                    Ok(vec![Identity {
                        trust_domain,
                        namespace,
                        service_account,
                    }])
                }
                Ok(Err(why)) => {
                    cache.refuse(key, why.clone(), now);
                    Err(Status::unauthenticated(format!(
                        "authentication failed: {why}"
                    )))
                }
                Err(Unanswered(why)) => {
                    Err(Status::unavailable(format!("authentication failed: {why}")))
                }
            }
        })
    }
}

/// The API server gave no answer (unreachable, too slow): nothing to keep.
struct Unanswered(String);

fn ready(result: Result<Vec<Identity>, Status>) -> Authentication {
    Box::pin(std::future::ready(result))
}

/// The cluster a caller's token comes from: its `clusterid` metadata, empty when none.
fn cluster_id(headers: &http::HeaderMap) -> Result<String, Status> {
    let mut values = headers.get_all("clusterid").iter();
    let Some(first) = values.next() else {
        return Ok(String::new());
    };
    if values.next().is_some() {
        return Err(Status::unauthenticated(
            "the clusterid metadata is given more than once",
        ));
    }
    first
        .to_str()
        .map(|c| c.trim().to_owned())
        .map_err(|_| Status::unauthenticated("the clusterid metadata is not text"))
}

/// The bearer token of `authorization`, if any.
fn bearer(headers: &http::HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    if value.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "the authorization header is longer than {MAX_TOKEN_BYTES} bytes"
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| "the authorization header is not text".to_owned())?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err("the authorization header is not `Bearer <token>`".to_owned()),
    }
}

/// Asks the API server who `token` belongs to: the namespace and name of its service
/// account, or why the token is refused (the outer error: no answer at all).
async fn review(
    client: kube::Client,
    token: &str,
    audiences: Vec<String>,
) -> Result<Result<(String, String), String>, Unanswered> {
    let api: kube::Api<TokenReview> = kube::Api::all(client);
    let request = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(audiences.clone()),
        },
        ..Default::default()
    };
    let reviewed = api
        .create(&kube::api::PostParams::default(), &request)
        .await
        .map_err(|e| Unanswered(format!("the token could not be reviewed: {e}")))?;
    let status = reviewed.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Ok(Err(format!(
            "the token was not accepted: {}",
            status.error.as_deref().unwrap_or("not authenticated")
        )));
    }
    // An audience-aware API server names the audiences the token is valid for among those
    // asked; none named means it is only valid for the API server itself.
    let granted = status.audiences.unwrap_or_default();
    if !audiences.iter().any(|a| granted.contains(a)) {
        return Ok(Err(format!(
            "the token is not for audience {}",
            audiences.join(" or ")
        )));
    }
    let user = status.user.unwrap_or_default();
    let name = user.username.unwrap_or_default();
    let in_group = user
        .groups
        .unwrap_or_default()
        .iter()
        .any(|g| g == "system:serviceaccounts");
    Ok(match service_account(&name) {
        Some(account) if in_group => Ok(account),
        _ => Err(format!("{name:?} is not a service account")),
    })
}

/// `system:serviceaccount:NAMESPACE:NAME` → (NAMESPACE, NAME).
fn service_account(user: &str) -> Option<(String, String)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':'))
        .then(|| (namespace.to_owned(), name.to_owned()))
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn only_service_account_users_have_an_identity() {
        assert_eq!(
            service_account("system:serviceaccount:bookinfo:reviews"),
            Some(("bookinfo".into(), "reviews".into()))
        );
        for user in [
            "alice",
            "system:serviceaccount:bookinfo",
            "system:serviceaccount::reviews",
            "system:serviceaccount:a:b:c",
        ] {
            assert_eq!(service_account(user), None, "{user}");
        }
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
        assert_eq!(auth.waiting.load(Ordering::SeqCst), 0);
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

        /// The user a TokenReview names, whatever it is, yields a namespace and name only for
        /// `system:serviceaccount:NS:NAME`.
        #[test]
        fn fuzz_bearer_reviewed_users_map_to_service_accounts(user in "(system:serviceaccount:)?[a-z:]{0,12}") {
            if let Some((ns, name)) = service_account(&user) {
                proptest::prop_assert_eq!(format!("system:serviceaccount:{ns}:{name}"), user);
            }
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
}
