//! TokenReview answers kept for a while, keyed by a SHA-256 of the cluster id, its
//! registration and the token (the token itself is not kept): a proxy reconnecting is not
//! reviewed again, and a token the API server refused is refused again at once for a short
//! while. The cluster is part of the key because each cluster's API server vouches only for
//! its own tokens, and its registration because a cluster registered again may name another
//! API server, which has vouched for nothing yet.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use base64::Engine;

/// How long a refusal is kept: long enough to absorb a retry loop, short enough that a token
/// refused by a passing API server fault is accepted soon after.
pub const REFUSAL_TTL: Duration = Duration::from_secs(10);

/// A token's key: the SHA-256 of its cluster, the cluster's registration and itself.
pub type Key = [u8; 32];

/// The key of `token` presented as one of cluster `cluster`'s, registration `registration`
/// of it (see `queues::Queue::registration`).
pub fn key(cluster: &str, registration: u64, token: &str) -> Key {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    // A cluster id is a Secret's data key: it holds no NUL, so the split is unambiguous.
    context.update(cluster.as_bytes());
    context.update(&[0]);
    context.update(&registration.to_be_bytes());
    context.update(token.as_bytes());
    let digest = context.finish();
    let mut key = [0; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// A reviewed token's service account (namespace, name), or why it was refused.
pub type Answer = Result<(String, String), String>;

/// Accepted and refused tokens, each map bounded by `capacity`: refusals (which anyone can
/// make by sending made-up tokens) never push out accepted tokens.
pub struct ReviewCache {
    capacity: usize,
    ttl: Duration,
    maps: Mutex<Maps>,
}

#[derive(Default)]
struct Maps {
    accepted: HashMap<Key, (Instant, (String, String))>,
    refused: HashMap<Key, (Instant, String)>,
}

impl ReviewCache {
    /// At most `capacity` accepted and `capacity` refused tokens; accepted ones kept at most
    /// `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        ReviewCache {
            capacity,
            ttl,
            maps: Mutex::new(Maps::default()),
        }
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        // The maps stay consistent whatever a panicking holder did; keep serving.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept answer for `key`, if it has not expired.
    pub fn get(&self, key: &Key, now: Instant) -> Option<Answer> {
        let maps = self.maps();
        if let Some((until, who)) = maps.accepted.get(key)
            && *until > now
        {
            return Some(Ok(who.clone()));
        }
        match maps.refused.get(key) {
            Some((until, why)) if *until > now => Some(Err(why.clone())),
            _ => None,
        }
    }

    /// Keeps an acceptance of `token` (by `key`) until `ttl` has passed or the token expires.
    pub fn accept(&self, key: Key, token: &str, who: (String, String), now: Instant) {
        let mut lifetime = self.ttl;
        if let Some(left) = expires_in(token, SystemTime::now()) {
            lifetime = lifetime.min(left);
        }
        if self.capacity == 0 || lifetime.is_zero() {
            return;
        }
        let mut maps = self.maps();
        maps.refused.remove(&key);
        if maps.accepted.len() >= self.capacity {
            maps.accepted.retain(|_, (until, _)| *until > now);
        }
        if maps.accepted.len() >= self.capacity
            && let Some(any) = maps.accepted.keys().next().copied()
        {
            maps.accepted.remove(&any);
        }
        maps.accepted.insert(key, (now + lifetime, who));
    }

    /// Keeps a refusal of `key` for [`REFUSAL_TTL`].
    pub fn refuse(&self, key: Key, why: String, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        let mut maps = self.maps();
        if maps.refused.len() >= self.capacity {
            // A flood of made-up tokens: forgetting refusals costs only a review each.
            maps.refused.clear();
        }
        maps.refused.insert(key, (now + REFUSAL_TTL, why));
    }
}

/// How long until a JWT's `exp`, if it is a JWT with one; zero when it has passed.
fn expires_in(token: &str, now: SystemTime) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    let exp = SystemTime::UNIX_EPOCH + Duration::from_secs(exp);
    Some(exp.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(exp: u64) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(&format!(r#"{{"exp":{exp}}}"#))
        )
    }

    fn local(token: &str) -> Key {
        key("Kubernetes", 0, token)
    }

    fn who() -> (String, String) {
        ("default".into(), "productpage".into())
    }

    #[test]
    fn accepted_tokens_are_kept_until_the_ttl_or_their_expiry() {
        let cache = ReviewCache::new(10, Duration::from_secs(300));
        let now = Instant::now();
        cache.accept(local("opaque"), "opaque", who(), now);
        assert_eq!(cache.get(&local("opaque"), now), Some(Ok(who())));
        assert_eq!(
            cache.get(&local("opaque"), now + Duration::from_secs(301)),
            None
        );
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let soon = jwt(unix + 60);
        cache.accept(local(&soon), &soon, who(), now);
        assert!(
            cache
                .get(&local(&soon), now + Duration::from_secs(30))
                .is_some()
        );
        assert_eq!(
            cache.get(&local(&soon), now + Duration::from_secs(61)),
            None
        );
        let expired = jwt(unix - 1);
        cache.accept(local(&expired), &expired, who(), now);
        assert_eq!(cache.get(&local(&expired), now), None);
    }

    #[test]
    fn the_same_token_of_two_clusters_or_registrations_has_two_keys() {
        assert_ne!(key("Kubernetes", 0, "t"), key("B", 0, "t"));
        assert_ne!(key("B", 0, "at"), key("Ba", 0, "t"));
        let cache = ReviewCache::new(10, Duration::from_secs(300));
        let now = Instant::now();
        cache.accept(key("B", 1, "t"), "t", who(), now);
        assert_eq!(cache.get(&local("t"), now), None);
        // Registered again (perhaps with another API server): reviewed again.
        assert_eq!(cache.get(&key("B", 2, "t"), now), None);
    }

    #[test]
    fn refusals_are_short_and_never_push_out_accepted_tokens() {
        let cache = ReviewCache::new(2, Duration::from_secs(300));
        let now = Instant::now();
        cache.accept(local("good"), "good", who(), now);
        for i in 0..100 {
            cache.refuse(local(&format!("bogus-{i}")), "invalid".into(), now);
        }
        assert_eq!(cache.get(&local("good"), now), Some(Ok(who())));
        assert_eq!(
            cache.get(&local("bogus-99"), now),
            Some(Err("invalid".into()))
        );
        assert_eq!(cache.get(&local("bogus-99"), now + REFUSAL_TTL), None);
        for i in 0..5 {
            cache.accept(
                local(&format!("good-{i}")),
                &format!("good-{i}"),
                who(),
                now,
            );
        }
        assert_eq!(cache.maps().accepted.len(), 2);
    }
}
