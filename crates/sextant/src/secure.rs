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
//!
//! Callers need not be authenticated to make a review, and a remote API server may never
//! answer: each cluster's reviews are bounded apart (`queues`), a remote cluster that is
//! unreachable or has not listed yet is refused at once, and so is one whose API server just
//! failed to answer, for [`REVIEW_TIMEOUT`]. Nothing an answer holds is kept unchecked
//! (`review`).
//!
//! A gateway's identity must also be allowed to read its namespace's Secrets before it gets
//! their private keys (`secret_access`, a SubjectAccessReview as istiod asks it).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sextant_model::Identity;
use sextant_xds::grpc::{Authenticate, Authentication};
use tonic::{Status, codegen::http};

use sextant_kube::clusters::{Cluster, Clusters, State};

use crate::{metrics::Metrics, tls::Peer};

/// The config cluster's id unless told otherwise (Istio's default `CLUSTER_ID`).
const DEFAULT_CLUSTER_ID: &str = "Kubernetes";

mod cache;
mod queues;
mod review;
mod secret_access;
mod token_file;

pub use secret_access::{ALLOWED_TTL, DENIED_TTL, SecretAccess};
pub use token_file::TokenFile;

use queues::MAX_REVIEWS;
use review::{Unanswered, truncated};

/// Longest bearer token accepted (service-account tokens are about 1 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// How long a TokenReview may take, waiting for a turn included; also how long an API server
/// that gave no answer is left alone.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest cluster id echoed back in a refusal (a registered id is a Secret's data key, 253 at
/// most; a made-up one can be as long as the metadata allows).
const MAX_SHOWN_CLUSTER_CHARS: usize = 64;

/// How token reviews are kept and bounded (`sextant serve --token-review-*`).
#[derive(Clone, Copy, Debug)]
pub struct ReviewLimits {
    /// Accepted (and, apart, refused) tokens kept.
    pub cache_size: usize,
    /// Longest an acceptance is kept.
    pub cache_ttl: Duration,
    /// Callers waiting for or in a review, shared fairly among the clusters with callers
    /// waiting; one more is refused with UNAVAILABLE.
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
    cache: Arc<cache::ReviewCache>,
    queues: queues::Queues,
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
            cache: Arc::new(cache::ReviewCache::new(limits.cache_size, limits.cache_ttl)),
            queues: queues::Queues::new(limits.max_waiting),
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

    /// The registered cluster the caller names: `None` for the config cluster; refused when
    /// nobody registered it.
    fn cluster(&self, cluster: &str) -> Result<Option<Arc<Cluster>>, Status> {
        if cluster.is_empty() || cluster == self.local_cluster {
            return Ok(None);
        }
        match self.clusters.get(cluster) {
            Some(known) => Ok(Some(known)),
            None => {
                self.metrics.refused("unknown_cluster");
                Err(Status::unauthenticated(format!(
                    "client claims to be in cluster {}, but this control plane knows only the local cluster {:?} and its registered remote clusters",
                    truncated(cluster, MAX_SHOWN_CLUSTER_CHARS),
                    self.local_cluster
                )))
            }
        }
    }

    /// Refuses at once a review a remote cluster cannot give now: unreachable (every watch
    /// failing), not every watch listed yet (its API server may never have answered at all),
    /// or its API server just failed to answer a review. Waiting would only hold the caller
    /// until the timeout.
    fn answering(&self, cluster: &Cluster, queue: &queues::Queue) -> Result<(), Status> {
        let id = truncated(cluster.id(), MAX_SHOWN_CLUSTER_CHARS);
        let why = if cluster.unreachable_since().is_some() {
            "is unreachable"
        } else if cluster.status().state == State::Syncing {
            "has not answered its first lists yet"
        } else if queue.is_quiet(Instant::now()) {
            "did not answer a token review just now"
        } else {
            return Ok(());
        };
        self.metrics.refused("cluster_unavailable");
        Err(Status::unavailable(format!(
            "remote cluster {id} {why} (see /debug/clusterz); its tokens cannot be reviewed now, retry later"
        )))
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

    /// Refuses a caller no queue has room for.
    fn full(&self, cluster: &str, full: queues::Full) -> Status {
        self.metrics.bounded("token_reviews");
        let queues::Full { bound, total } = full;
        Status::unavailable(if total {
            format!(
                "{bound} callers are already waiting for a token review over every cluster \
                 (twice --max-token-reviews-waiting); retry later"
            )
        } else {
            format!(
                "{bound} callers are already waiting for a token review by cluster {}'s API server \
                 (its share of --max-token-reviews-waiting); retry later",
                truncated(cluster, MAX_SHOWN_CLUSTER_CHARS)
            )
        })
    }

    /// Without a cluster: the token as the token file (`serve --token-file`) has it, if any.
    fn token_file(&self, token: &str) -> Result<Vec<Identity>, Status> {
        match &self.tokens {
            Some(tokens) => tokens
                .review(token, &self.audiences)
                .map(|who| self.identity(who))
                .map_err(|why| Status::unauthenticated(format!("authentication failed: {why}"))),
            None => Err(Status::unauthenticated(
                "authentication failed: bearer tokens are reviewed by the Kubernetes API \
                 server, or against a token file (--token-file), and this server has \
                 neither; present a client certificate",
            )),
        }
    }

    fn identity(&self, (namespace, service_account): (String, String)) -> Vec<Identity> {
        vec![Identity {
            trust_domain: self.trust_domain.clone(),
            namespace,
            service_account,
        }]
    }
}

impl Authenticate for Authenticator {
    fn authenticate(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Authentication {
        // A cluster nobody registered is refused whatever the credential, as istiod does.
        let remote = match cluster_id(headers).and_then(|c| self.cluster(&c)) {
            Ok(r) => r,
            Err(status) => return ready(Err(status)),
        };
        if let Some(peer) = extensions.get::<Peer>()
            && !peer.identities.is_empty()
        {
            return ready(self.certificate(&peer.identities));
        }
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
        let client = match &remote {
            Some(cluster) => match cluster.client() {
                Some(client) => client,
                None => {
                    return ready(Err(Status::unavailable(format!(
                        "remote cluster {} is not connected (see /debug/clusterz); its tokens cannot be reviewed now",
                        truncated(cluster.id(), MAX_SHOWN_CLUSTER_CHARS)
                    ))));
                }
            },
            None => match &self.client {
                Some(client) => client.clone(),
                None => return ready(self.token_file(&token)),
            },
        };
        let cluster = remote
            .as_ref()
            .map_or(self.local_cluster.as_str(), |c| c.id());
        let queue = self.queues.of(cluster, remote.as_ref());
        let key = cache::key(cluster, queue.registration, &token);
        match self.cache.get(&key, Instant::now()) {
            Some(Ok(who)) => return ready(Ok(self.identity(who))),
            Some(Err(why)) => {
                return ready(Err(Status::unauthenticated(format!(
                    "authentication failed: {why}"
                ))));
            }
            None => {}
        }
        if let Some(cluster) = &remote
            && let Err(status) = self.answering(cluster, &queue)
        {
            return ready(Err(status));
        }
        let waiting = match self.queues.wait(&queue) {
            Ok(w) => w,
            Err(full) => return ready(Err(self.full(cluster, full))),
        };
        let audiences = self.audiences.clone();
        let cache = self.cache.clone();
        let (metrics, trust_domain) = (self.metrics.clone(), self.trust_domain.clone());
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + REVIEW_TIMEOUT;
            let queue = waiting.queue();
            let answer = match tokio::time::timeout_at(deadline, queue.reviews.acquire()).await {
                Err(_) => Err(Unanswered {
                    why: format!(
                        "no token review could start within {REVIEW_TIMEOUT:?} ({MAX_REVIEWS} run at once per cluster)"
                    ),
                    server_silent: false,
                }),
                Ok(Err(_)) => Err(Unanswered {
                    why: "token reviews are shut down".to_owned(),
                    server_silent: false,
                }),
                Ok(Ok(_permit)) => {
                    metrics.token_reviews.inc();
                    tokio::time::timeout_at(deadline, review::review(client, &token, audiences))
                        .await
                        .unwrap_or_else(|_| {
                            Err(Unanswered {
                                why: format!(
                                    "the API server did not answer the token review within {REVIEW_TIMEOUT:?}"
                                ),
                                server_silent: true,
                            })
                        })
                }
            };
            let now = Instant::now();
            match answer {
                Ok(Ok(who)) => {
                    queue.answered();
                    cache.accept(key, &token, who.clone(), now);
                    let (namespace, service_account) = who;
                    Ok(vec![Identity {
                        trust_domain,
                        namespace,
                        service_account,
                    }])
                }
                Ok(Err(why)) => {
                    queue.answered();
                    cache.refuse(key, why.clone(), now);
                    Err(Status::unauthenticated(format!(
                        "authentication failed: {why}"
                    )))
                }
                Err(Unanswered { why, server_silent }) => {
                    if server_silent {
                        queue.unanswered(now, REVIEW_TIMEOUT);
                    }
                    Err(Status::unavailable(format!("authentication failed: {why}")))
                }
            }
        })
    }
}

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

#[cfg(test)]
mod tests;
