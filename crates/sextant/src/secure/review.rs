//! One TokenReview and what its answer may hold. The answer comes from an API server, a
//! remote cluster's among them (whoever holds a registered kubeconfig's server), and what it
//! says is kept in the review cache and echoed to callers: the service account must be a
//! valid Kubernetes name and every text is cut to [`MAX_REASON_CHARS`], so one answer holds
//! at most a few hundred bytes.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};

/// Longest text taken from an API server's answer (or error) into a refusal.
pub const MAX_REASON_CHARS: usize = 256;

/// No answer to keep: the API server was not reached, was too slow, or answered with an
/// error.
pub struct Unanswered {
    /// Why, for the caller.
    pub why: String,
    /// The API server could not be reached or did not answer in time (rather than answering
    /// with an error): it is left alone for a while.
    pub server_silent: bool,
}

/// Asks the API server who `token` belongs to: the namespace and name of its service
/// account, or why the token is refused (the outer error: no answer at all).
pub async fn review(
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
        .map_err(|e| Unanswered {
            why: format!(
                "the token could not be reviewed: {}",
                truncated(&e.to_string(), MAX_REASON_CHARS)
            ),
            server_silent: matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_)),
        })?;
    let status = reviewed.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Ok(Err(format!(
            "the token was not accepted: {}",
            truncated(
                status.error.as_deref().unwrap_or("not authenticated"),
                MAX_REASON_CHARS
            )
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
        _ => Err(format!(
            "{} is not a service account with a valid namespace and name",
            truncated(&name, MAX_REASON_CHARS)
        )),
    })
}

/// `system:serviceaccount:NAMESPACE:NAME` → (NAMESPACE, NAME), when NAMESPACE is a DNS label
/// and NAME a DNS subdomain, as the API server validates them.
pub fn service_account(user: &str) -> Option<(String, String)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (dns_label(namespace) && dns_subdomain(name)).then(|| (namespace.to_owned(), name.to_owned()))
}

/// 1 to 63 lowercase letters, digits or `-`, starting and ending with a letter or digit.
fn dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// At most 253 characters: DNS labels joined by `.`.
fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}

/// `text` as it may be shown: at most `max` characters, quoted and escaped (control
/// characters, quotes), with `…` when cut.
pub fn truncated(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_service_account_users_with_valid_names_have_an_identity() {
        assert_eq!(
            service_account("system:serviceaccount:bookinfo:reviews"),
            Some(("bookinfo".into(), "reviews".into()))
        );
        assert_eq!(
            service_account("system:serviceaccount:a:b.c-d"),
            Some(("a".into(), "b.c-d".into()))
        );
        let long_namespace = format!("system:serviceaccount:{}:sa", "a".repeat(64));
        let long_name = format!("system:serviceaccount:ns:{}", "a".repeat(254));
        for user in [
            "alice",
            "system:serviceaccount:bookinfo",
            "system:serviceaccount::reviews",
            "system:serviceaccount:a:b:c",
            "system:serviceaccount:Bad_NS:sa",
            "system:serviceaccount:a.b:sa",
            "system:serviceaccount:ns:-sa",
            "system:serviceaccount:ns:a..b",
            "system:serviceaccount:ns:a\nb",
            &long_namespace,
            &long_name,
        ] {
            assert_eq!(service_account(user), None, "{user}");
        }
    }

    #[test]
    fn shown_text_is_cut_and_escaped() {
        assert_eq!(truncated("B", 64), "\"B\"");
        assert_eq!(truncated("a\"b\n", 64), r#""a\"b\n""#);
        let cut = truncated(&"é".repeat(100), 64);
        assert_eq!(cut, format!("{:?}…", "é".repeat(64)));
    }

    proptest::proptest! {
        /// The user a TokenReview names, whatever it is, yields a namespace and name only for
        /// `system:serviceaccount:NS:NAME`.
        #[test]
        fn fuzz_bearer_reviewed_users_map_to_service_accounts(user in "(system:serviceaccount:)?[a-z:.-]{0,12}") {
            if let Some((ns, name)) = service_account(&user) {
                proptest::prop_assert_eq!(format!("system:serviceaccount:{ns}:{name}"), user);
                proptest::prop_assert!(ns.len() <= 63 && name.len() <= 253);
            }
        }
    }
}
