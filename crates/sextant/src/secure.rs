//! Who may use the secure xDS port (15012), as istiod decides it: a client certificate
//! signed by Sextant's CA carrying a SPIFFE identity, or else a Kubernetes service-account
//! token (`authorization: Bearer ...`, audience `istio-ca`) that the API server's TokenReview
//! accepts. The stream's node must then agree with the identity (see
//! [`sextant_model::Identity::admits`]); the plaintext port does no authentication.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use sextant_model::Identity;
use sextant_xds::grpc::{Authenticate, Authentication};
use tonic::{Status, codegen::http};

use crate::tls::Peer;

/// Longest bearer token accepted (service-account tokens are about 1 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// TokenReviews in flight at once: callers need not be authenticated to make one, so they
/// must not be able to flood the API server.
const MAX_REVIEWS: usize = 16;

/// How long a TokenReview may take.
const REVIEW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Authenticates callers of the secure xDS port.
pub struct Authenticator {
    trust_domain: String,
    /// Reviews tokens; without a cluster only client certificates are accepted.
    client: Option<kube::Client>,
    audiences: Vec<String>,
    reviews: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Authenticator {
    /// Identities in `trust_domain`; tokens reviewed by `client` for `audiences`.
    pub fn new(trust_domain: &str, client: Option<kube::Client>, audiences: Vec<String>) -> Self {
        Authenticator {
            trust_domain: trust_domain.to_owned(),
            client,
            audiences,
            reviews: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_REVIEWS)),
        }
    }
}

impl Authenticate for Authenticator {
    fn authenticate(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Authentication {
        if let Some(peer) = extensions.get::<Peer>()
            && !peer.identities.is_empty()
        {
            return ready(Ok(peer.identities.to_vec()));
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
        let Some(client) = self.client.clone() else {
            return ready(Err(Status::unauthenticated(
                "authentication failed: bearer tokens are reviewed by the Kubernetes API server \
                 and this server has none (--config-dir); present a client certificate",
            )));
        };
        let (trust_domain, audiences) = (self.trust_domain.clone(), self.audiences.clone());
        let reviews = self.reviews.clone();
        Box::pin(async move {
            let reviewed = async {
                let _permit = reviews
                    .acquire()
                    .await
                    .map_err(|_| "token reviews are shut down".to_owned())?;
                review(client, token, audiences).await
            };
            tokio::time::timeout(REVIEW_TIMEOUT, reviewed)
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "the token review took longer than {REVIEW_TIMEOUT:?}"
                    ))
                })
                .map(|(namespace, service_account)| {
                    vec![Identity {
                        trust_domain,
                        namespace,
                        service_account,
                    }]
                })
                .map_err(|e| Status::unauthenticated(format!("authentication failed: {e}")))
        })
    }
}

fn ready(result: Result<Vec<Identity>, Status>) -> Authentication {
    Box::pin(std::future::ready(result))
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

/// Asks the API server who `token` belongs to: the namespace and name of its service account.
async fn review(
    client: kube::Client,
    token: String,
    audiences: Vec<String>,
) -> Result<(String, String), String> {
    let api: kube::Api<TokenReview> = kube::Api::all(client);
    let request = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token),
            audiences: Some(audiences.clone()),
        },
        ..Default::default()
    };
    let reviewed = api
        .create(&kube::api::PostParams::default(), &request)
        .await
        .map_err(|e| format!("the token could not be reviewed: {e}"))?;
    let status = reviewed.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(format!(
            "the token was not accepted: {}",
            status.error.as_deref().unwrap_or("not authenticated")
        ));
    }
    // An audience-aware API server names the audiences the token is valid for among those
    // asked; none named means it is only valid for the API server itself.
    let granted = status.audiences.unwrap_or_default();
    if !audiences.iter().any(|a| granted.contains(a)) {
        return Err(format!(
            "the token is not for audience {}",
            audiences.join(" or ")
        ));
    }
    let user = status.user.unwrap_or_default();
    let name = user.username.unwrap_or_default();
    let in_group = user
        .groups
        .unwrap_or_default()
        .iter()
        .any(|g| g == "system:serviceaccounts");
    match service_account(&name) {
        Some(account) if in_group => Ok(account),
        _ => Err(format!("{name:?} is not a service account")),
    }
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
    use std::sync::Arc;

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
            let auth = Authenticator::new("cluster.local", None, vec!["istio-ca".into()]);
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
    async fn without_a_certificate_or_token_the_caller_is_refused() {
        let auth = Authenticator::new("cluster.local", None, vec!["istio-ca".into()]);
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
        let mut extensions = http::Extensions::new();
        let id = Identity::parse("spiffe://cluster.local/ns/a/sa/b").expect("id");
        extensions.insert(Peer {
            addr: "127.0.0.1:1".parse().expect("addr"),
            identities: Arc::from([id.clone()]),
        });
        assert_eq!(
            auth.authenticate(&http::HeaderMap::new(), &extensions)
                .await
                .expect("certificate"),
            vec![id]
        );
    }
}
