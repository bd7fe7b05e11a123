//! Traffic through Envoy and what Sextant's admin port says about it.

use std::{collections::BTreeMap, net::SocketAddr};

use crate::{http_get, request};

/// A metric's value from Sextant's admin endpoint.
pub fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    http_get(admin, "/metrics")?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The `/debug/syncz` entry of `node`.
pub fn syncz(admin: SocketAddr, node: &str) -> Option<serde_json::Value> {
    let all: serde_json::Value = serde_json::from_str(&http_get(admin, "/debug/syncz")?).ok()?;
    all.as_array()?.iter().find(|c| c["proxy"] == node).cloned()
}

/// How `n` requests for `reviews` through `addr` were answered: by body, or `status N`.
pub fn split(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let (status, body, _) = request(addr, "reviews", "/", &[]).expect("request through Envoy");
        let key = if status == 200 {
            body
        } else {
            format!("status {status}")
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// Sends 200 requests and checks they split evenly between `a` and `b`: Binomial(200, 0.5)
/// within 4.5 standard deviations either side.
pub fn assert_even_split(listener: SocketAddr, a: &str, b: &str) {
    let counts = split(listener, 200);
    let (na, nb) = (
        counts.get(a).copied().unwrap_or(0),
        counts.get(b).copied().unwrap_or(0),
    );
    assert_eq!(na + nb, 200, "{counts:?}");
    assert!(
        (68..=132).contains(&nb),
        "50/50 split outside tolerance: {counts:?}"
    );
}
