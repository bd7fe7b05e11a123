//! Whether a gateway's identity may read its namespace's Secrets, as istiod decides it
//! (`pilot/pkg/credentials/kube/secrets.go`, `Authorize`): a SubjectAccessReview asks the API
//! server of the proxy's cluster (its `CLUSTER_ID`, as istiod picks it) whether the user
//! `system:serviceaccount:NS:SA` may `list` `secrets` in NS. As istiod, the review names the
//! user alone, without the service-account groups: only a binding to the account itself (or
//! its user name) lets it, which is what Istio's gateway chart makes (a Role with get, watch
//! and list on secrets). The node type (`router~`) is the peer's word; this is what stops any
//! workload of the namespace from claiming to be a gateway to read its private keys.
//!
//! The credentials are computed synchronously, for every update of a gateway's resources, so
//! the question is asked in the background: the first time an identity is seen (and whenever
//! its verdict is past its time, `verdicts`) the gateway gets only the public CA bundles, a
//! review starts, and every stream is woken once the answer is the first for that identity or
//! changes what the gateway gets. Reviews are bounded like TokenReviews (`queues`: [`MAX_REVIEWS`] in flight per cluster,
//! callers waiting shared fairly among clusters) and never block a stream: a review that
//! cannot start, or gets no answer within [`REVIEW_TIMEOUT`], is asked again
//! [`REVIEW_TIMEOUT`] later ([`DENIED_TTL`] when the API server refuses the review itself,
//! as when Sextant may not create SubjectAccessReviews), and the verdict it would replace
//! serves meanwhile.
//!
//! In directory mode there is no API server: every identity of the namespace is allowed (the
//! operator issues every certificate and token there).

mod verdicts;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use sextant_kube::clusters::{Cluster, Clusters, State};
use sextant_model::{Identity, Proxy};

use super::{
    DEFAULT_CLUSTER_ID, MAX_SHOWN_CLUSTER_CHARS, REVIEW_TIMEOUT, ReviewLimits,
    queues::{self, MAX_REVIEWS, Queue},
    review::{MAX_REASON_CHARS, truncated},
};
use crate::{
    credentials::{Access, Authorize},
    metrics::Metrics,
};

pub use verdicts::{ALLOWED_TTL, DENIED_TTL};
use verdicts::{Key, Verdicts};

/// Asks the API servers whether gateways' identities may read their namespaces' Secrets.
pub struct SecretAccess {
    inner: Arc<Inner>,
}

struct Inner {
    /// The config cluster's API server; `None` in directory mode (everyone is allowed).
    local: Option<kube::Client>,
    /// The config cluster's id: nodes naming no cluster, or this one, are its.
    local_cluster: String,
    /// Remote clusters, whose API servers answer for their own proxies.
    clusters: Clusters,
    queues: queues::Queues,
    verdicts: Mutex<Verdicts>,
    /// Wakes every stream, so that gateways take a new verdict (and log a refusal).
    wake: Box<dyn Fn() + Send + Sync>,
    /// When the next wake is due, if one is.
    next_wake: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
    runtime: tokio::runtime::Handle,
}

/// A review that gave no verdict.
struct Failed {
    /// Why, for the log.
    why: String,
    /// The API server could not be reached or did not answer in time: it is left alone for
    /// a while, as for TokenReviews.
    server_silent: bool,
    /// When to ask again: soon when the review could not be made (no turn, no answer), later
    /// when the API server refused it (Sextant may not create SubjectAccessReviews there:
    /// asking again at once would only repeat the refusal and its log line).
    retry_in: Duration,
}

impl SecretAccess {
    /// Reviews by `client` (the config cluster's; `None`: directory mode, every identity
    /// allowed), verdicts and callers bounded by `limits` (`cache_size`, `max_waiting`);
    /// `wake` wakes every stream when a gateway must take a new verdict. Made within the tokio
    /// runtime that runs the reviews.
    pub fn new(
        client: Option<kube::Client>,
        limits: ReviewLimits,
        metrics: Arc<Metrics>,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        SecretAccess {
            inner: Arc::new(Inner {
                local: client,
                local_cluster: DEFAULT_CLUSTER_ID.to_owned(),
                clusters: Clusters::default(),
                queues: queues::Queues::new(limits.max_waiting),
                verdicts: Mutex::new(Verdicts::new(limits.cache_size)),
                wake: Box::new(wake),
                next_wake: Mutex::new(None),
                metrics,
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// Nodes naming no cluster (or `local`) are the config cluster's; those naming one of
    /// `clusters` are answered for by its API server.
    pub fn with_clusters(mut self, local: &str, clusters: Clusters) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("not shared before it is built");
        inner.local_cluster = local.to_owned();
        inner.clusters = clusters;
        self
    }
}

impl Authorize for SecretAccess {
    fn access(&self, proxy: &Proxy, identity: &Identity) -> Access {
        let inner = &self.inner;
        let Some(local) = &inner.local else {
            return Access::Allowed;
        };
        let (cluster, remote) = match inner.cluster(&proxy.cluster_id) {
            Ok(c) => c,
            Err(why) => return Access::Denied(why),
        };
        let queue = inner.queues.of(&cluster, remote.as_ref());
        let key = Key {
            cluster,
            registration: queue.registration,
            namespace: identity.namespace.clone(),
            service_account: identity.service_account.clone(),
        };
        let now = Instant::now();
        let kept = inner.verdicts().get(&key);
        if let Some(kept) = &kept
            && kept.fresh_until > now
        {
            // Another verdict's wake may have replaced this one's: asked again when it ends.
            inner.wake_at(kept.fresh_until);
            return kept.access.clone();
        }
        let client = match &remote {
            Some(cluster) => cluster.client(),
            None => Some(local.clone()),
        };
        inner.ask(key, client, queue, remote.as_deref(), now);
        kept.map_or(Access::Pending, |k| k.access)
    }
}

impl Inner {
    fn verdicts(&self) -> MutexGuard<'_, Verdicts> {
        // Maps and sets only: consistent whatever a panicking holder did.
        self.verdicts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cluster whose API server answers for a node of cluster `id`, and the registered
    /// remote cluster it is (`None`: the config cluster); refused when nobody registered it.
    fn cluster(&self, id: &str) -> Result<(String, Option<Arc<Cluster>>), String> {
        if id.is_empty() || id == self.local_cluster {
            return Ok((self.local_cluster.clone(), None));
        }
        match self.clusters.get(id) {
            Some(cluster) => Ok((id.to_owned(), Some(cluster))),
            None => Err(format!(
                "its node names cluster {} (CLUSTER_ID), which is neither the config cluster {:?} \
                 nor a registered remote cluster, so no API server can say whether it may read Secrets",
                truncated(id, MAX_SHOWN_CLUSTER_CHARS),
                self.local_cluster
            )),
        }
    }

    /// Starts a review of `key` by `client` unless one is under way; when none can start now,
    /// asks again a review timeout later.
    fn ask(
        self: &Arc<Self>,
        key: Key,
        client: Option<kube::Client>,
        queue: Arc<Queue>,
        remote: Option<&Cluster>,
        now: Instant,
    ) {
        let retry = now + REVIEW_TIMEOUT;
        // A remote cluster not connected, unreachable, not listed yet or just silent: asking
        // would only wait for the timeout.
        let silent = remote.is_some_and(|c| {
            c.unreachable_since().is_some()
                || c.status().state == State::Syncing
                || queue.is_quiet(now)
        });
        let Some(client) = client.filter(|_| !silent) else {
            self.wake_at(retry);
            return;
        };
        if !self.verdicts().start(&key) {
            return;
        }
        let waiting = match self.queues.wait(&queue) {
            Ok(w) => w,
            Err(_) => {
                self.verdicts().abandon(&key);
                self.metrics.bounded("secret_access_reviews");
                self.wake_at(retry);
                return;
            }
        };
        let inner = self.clone();
        self.runtime.spawn(async move {
            let deadline = tokio::time::Instant::now() + REVIEW_TIMEOUT;
            let queue = waiting.queue().clone();
            let answer = match tokio::time::timeout_at(deadline, queue.reviews.acquire()).await {
                Err(_) | Ok(Err(_)) => Err(Failed {
                    why: format!(
                        "no SubjectAccessReview could start within {REVIEW_TIMEOUT:?} ({MAX_REVIEWS} run at once per cluster)"
                    ),
                    server_silent: false,
                    retry_in: REVIEW_TIMEOUT,
                }),
                Ok(Ok(_permit)) => tokio::time::timeout_at(deadline, review(client, &key))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Failed {
                            why: format!(
                                "the API server did not answer the SubjectAccessReview within {REVIEW_TIMEOUT:?}"
                            ),
                            server_silent: true,
                            retry_in: REVIEW_TIMEOUT,
                        })
                    }),
            };
            drop(waiting);
            inner.settle(&key, &queue, answer);
        });
    }

    /// Keeps what the review of `key` found, and wakes the streams when it is the first
    /// verdict or changes what the gateway gets.
    fn settle(
        self: &Arc<Self>,
        key: &Key,
        queue: &Queue,
        answer: Result<Result<(), String>, Failed>,
    ) {
        let now = Instant::now();
        match answer {
            Ok(allowed) => {
                queue.answered();
                if allowed.is_err() {
                    self.metrics.refused("gateway_secrets");
                }
                let (now_allowed, ttl) = match &allowed {
                    Ok(()) => (true, ALLOWED_TTL),
                    Err(_) => (false, DENIED_TTL),
                };
                let before = self.verdicts().answer(key, allowed, now);
                // A first verdict (so that a refusal is explained: the gateway's stream reads
                // it and logs why), or one that changes what the gateway gets.
                let was_allowed = before.map(|k| k.access == Access::Allowed);
                if was_allowed != Some(now_allowed) {
                    (self.wake)();
                }
                self.wake_at(now + ttl);
            }
            Err(Failed {
                why,
                server_silent,
                retry_in,
            }) => {
                if server_silent {
                    queue.unanswered(now, REVIEW_TIMEOUT);
                }
                self.verdicts().abandon(key);
                tracing::warn!(
                    cluster = %key.cluster, namespace = %key.namespace,
                    service_account = %key.service_account, %why,
                    "cannot tell yet whether this gateway identity may read its namespace's \
                     Secrets (it gets only their CA bundles until then); asking again in {retry_in:?}"
                );
                self.wake_at(now + retry_in);
            }
        }
    }

    /// Wakes every stream at `at`, unless a wake is due by then anyway (each stream asks
    /// again then, and a verdict still fresh sets its own wake).
    fn wake_at(self: &Arc<Self>, at: Instant) {
        {
            let mut next = self.next_wake.lock().unwrap_or_else(|p| p.into_inner());
            if next.is_some_and(|due| due <= at) {
                return;
            }
            *next = Some(at);
        }
        let inner = Arc::downgrade(self);
        self.runtime.spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            {
                let mut next = inner.next_wake.lock().unwrap_or_else(|p| p.into_inner());
                if *next != Some(at) {
                    return;
                }
                *next = None;
            }
            (inner.wake)();
        });
    }
}

/// Asks the API server whether the identity of `key` may list the Secrets of its namespace:
/// allowed, or why not (the outer error: no answer at all).
async fn review(client: kube::Client, key: &Key) -> Result<Result<(), String>, Failed> {
    let user = format!(
        "system:serviceaccount:{}:{}",
        key.namespace, key.service_account
    );
    let request = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.clone()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(key.namespace.clone()),
                verb: Some("list".into()),
                resource: Some("secrets".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: kube::Api<SubjectAccessReview> = kube::Api::all(client);
    let answered = api
        .create(&kube::api::PostParams::default(), &request)
        .await
        .map_err(|e| Failed {
            why: format!(
                "the SubjectAccessReview failed: {}",
                truncated(&e.to_string(), MAX_REASON_CHARS)
            ),
            server_silent: matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_)),
            retry_in: if matches!(e, kube::Error::Api(_)) {
                DENIED_TTL
            } else {
                REVIEW_TIMEOUT
            },
        })?;
    let status = answered.status.unwrap_or_default();
    if status.allowed {
        return Ok(Ok(()));
    }
    let reasons: Vec<String> = [status.reason, status.evaluation_error]
        .into_iter()
        .flatten()
        .filter(|r| !r.is_empty())
        .collect();
    Ok(Err(if reasons.is_empty() {
        format!(
            "no RBAC rule lets {user} list secrets in namespace {}",
            key.namespace
        )
    } else {
        format!(
            "{user} may not list secrets in namespace {}: {}",
            key.namespace,
            truncated(&reasons.join("; "), MAX_REASON_CHARS)
        )
    }))
}

#[cfg(test)]
mod tests;
