use std::time::{Duration, Instant};

use prometheus_client::{metrics::family::Family, registry::Registry};
use serde_json::Value;
use sextant_resources::type_url::{CLUSTER, ENDPOINT, ROUTE, SECRET};

use super::*;

fn status() -> (PushStatus, Registry) {
    let family: Family<StageLabels, Histogram, fn() -> Histogram> =
        Family::new_with_constructor(stage_buckets);
    let mut registry = Registry::with_prefix("sextant");
    registry.register("push_stage_seconds", "stages", family.clone());
    (PushStatus::new(&family), registry)
}

/// A source change whose stages ended 30, 20 and 10 ms ago.
fn source() -> SourceTiming {
    let ago = |ms| {
        Instant::now()
            .checked_sub(Duration::from_millis(ms))
            .expect("the clock runs longer than that")
    };
    SourceTiming {
        first_change: ago(30),
        settled: ago(20),
        snapshot: ago(10),
    }
}

/// Version `n` of the view.
fn version(s: &PushStatus, n: u64) -> Value {
    s.view()["versions"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|v| v["version"] == n)
        .cloned()
        .unwrap_or_else(|| panic!("version {n} kept"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is a number"))
}

/// Proxies `ids` connected on version 1, then version 2 published by a source change.
fn connected(ids: &[&str]) -> (PushStatus, Registry) {
    let (s, registry) = status();
    s.published(1, None);
    for id in ids {
        s.sent(id, CLUSTER, 1);
        s.acked(id, CLUSTER);
    }
    s.published(2, Some(source()));
    (s, registry)
}

#[test]
fn a_push_is_timed_by_stage_from_the_first_change_to_each_ack() {
    let (s, registry) = connected(&["a", "b"]);
    for id in ["a", "b"] {
        s.sent(id, ROUTE, 2);
    }
    s.acked("a", ROUTE);
    s.acked("b", ROUTE);
    let v = version(&s, 2);
    assert_eq!(v["proxies"]["sent"], 2);
    assert_eq!(v["proxies"]["acked"], 2);
    assert_eq!(v["proxies"]["pending"], 0);
    let stages = &v["stages"];
    let before_send =
        f(&stages["debounce_seconds"]) + f(&stages["read_seconds"]) + f(&stages["publish_seconds"]);
    assert!(f(&stages["debounce_seconds"]) >= 0.009, "{stages}");
    let routes = &v["types"][ROUTE];
    assert_eq!(routes["sent"], 2);
    assert_eq!(routes["acked"], 2);
    for stage in ["send_seconds", "ack_seconds", "total_seconds"] {
        let q = &routes[stage];
        assert!(
            f(&q["p50"]) <= f(&q["p99"]) && f(&q["p99"]) <= f(&q["max"]),
            "{q}"
        );
    }
    assert!(f(&routes["total_seconds"]["max"]) >= before_send, "{v}");
    // Both named, slowest first; each total is the stages before the send, the send and the
    // ACK (the view's rounding aside).
    let slowest = v["slowest"].as_array().expect("a list");
    let names: Vec<&str> = slowest.iter().filter_map(|p| p["proxy"].as_str()).collect();
    assert_eq!(names.len(), 2);
    assert!(f(&slowest[0]["total_seconds"]) >= f(&slowest[1]["total_seconds"]));
    for p in slowest {
        let parts = before_send + f(&p["send_seconds"]) + f(&p["ack_seconds"]);
        assert!((f(&p["total_seconds"]) - parts).abs() < 1e-3, "{p}");
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
    for line in [
        "sextant_push_stage_seconds_count{stage=\"debounce\",type_url=\"\"} 1".to_owned(),
        format!("sextant_push_stage_seconds_count{{stage=\"send\",type_url=\"{ROUTE}\"}} 2"),
        format!("sextant_push_stage_seconds_count{{stage=\"ack\",type_url=\"{ROUTE}\"}} 2"),
        format!("sextant_push_stage_seconds_count{{stage=\"total\",type_url=\"{ROUTE}\"}} 2"),
        "sextant_push_stage_seconds_bucket{le=\"0.0001\",stage=\"read\",type_url=\"\"} 0"
            .to_owned(),
    ] {
        assert!(text.contains(&line), "{line} in\n{text}");
    }
}

#[test]
fn a_connection_is_counted_but_not_timed() {
    let (s, _) = connected(&["a"]);
    let v1 = version(&s, 1);
    assert_eq!(v1["proxies"]["connected"], 1);
    assert_eq!(v1["proxies"]["sent"], 0);
    assert_eq!(v1["types"], serde_json::json!({}));
    // A proxy whose stream opens on version 2 is its connection too.
    s.sent("c", CLUSTER, 2);
    s.acked("c", CLUSTER);
    let v2 = version(&s, 2);
    assert_eq!(v2["proxies"]["connected"], 1);
    assert_eq!(v2["proxies"]["sent"], 0);
}

#[test]
fn a_proxy_that_has_not_acked_is_named_pending_until_superseded() {
    let (s, _) = connected(&["fast", "slow"]);
    s.sent("fast", ROUTE, 2);
    s.sent("slow", ROUTE, 2);
    s.acked("fast", ROUTE);
    let v = version(&s, 2);
    assert_eq!(v["proxies"]["pending"], 1);
    assert_eq!(v["pending"][0]["proxy"], "slow");
    assert_eq!(v["pending"][0]["types"], serde_json::json!([ROUTE]));
    assert!(f(&v["pending"][0]["waiting_seconds"]) >= 0.0);
    assert_eq!(v["slowest"][0]["proxy"], "fast");
    s.published(3, Some(source()));
    s.sent("slow", ROUTE, 3);
    let v = version(&s, 2);
    assert_eq!(v["proxies"]["superseded"], 1);
    assert_eq!(v["proxies"]["pending"], 0);
    assert_eq!(v["pending"], serde_json::json!([]));
    assert_eq!(version(&s, 3)["pending"][0]["proxy"], "slow");
}

#[test]
fn a_nack_names_the_proxy_and_an_ended_stream_is_counted() {
    let (s, _) = connected(&["rejects", "leaves"]);
    s.sent("rejects", ROUTE, 2);
    s.sent("leaves", ROUTE, 2);
    s.nacked("rejects", ROUTE);
    s.disconnected("leaves");
    let v = version(&s, 2);
    assert_eq!(v["proxies"]["nacked"], 1);
    assert_eq!(v["proxies"]["disconnected"], 1);
    assert_eq!(v["proxies"]["pending"], 0);
    assert_eq!(v["nacked_by"], serde_json::json!(["rejects"]));
    assert_eq!(v["types"][ROUTE]["nacked"], 1);
    // Its stream gone, the proxy's next stream is a connection.
    s.sent("leaves", CLUSTER, 2);
    assert_eq!(version(&s, 2)["proxies"]["connected"], 1);
}

#[test]
fn endpoints_asked_for_after_the_clusters_belong_to_the_push() {
    let (s, _) = connected(&["a"]);
    s.sent("a", CLUSTER, 2);
    s.acked("a", CLUSTER);
    assert_eq!(version(&s, 2)["proxies"]["acked"], 1);
    s.sent("a", ENDPOINT, 2);
    let v = version(&s, 2);
    assert_eq!(v["proxies"]["acked"], 0);
    assert_eq!(v["proxies"]["pending"], 1);
    s.acked("a", ENDPOINT);
    let v = version(&s, 2);
    assert_eq!(v["proxies"]["acked"], 1);
    assert_eq!(v["slowest"].as_array().map(Vec::len), Some(1));
    // A secret renewed later, on the same version, is no part of its push.
    s.sent("a", SECRET, 2);
    let v = version(&s, 2);
    assert_eq!(v["proxies"]["acked"], 1);
    assert!(v["types"].get(SECRET).is_none(), "{v}");
}

#[test]
fn versions_and_named_proxies_are_bounded() {
    let (s, _) = status();
    s.published(1, None);
    let ids: Vec<String> = (0..3 * NAMED).map(|i| format!("p{i}")).collect();
    for id in &ids {
        s.sent(id, CLUSTER, 1);
    }
    for n in 2..=20 {
        s.published(n, None);
        for id in &ids {
            s.sent(id, ROUTE, n);
            if n % 2 == 0 {
                s.acked(id, ROUTE);
            } else {
                s.nacked(id, ROUTE);
            }
        }
    }
    let view = s.view();
    let kept: Vec<u64> = view["versions"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|v| v["version"].as_u64())
        .collect();
    assert_eq!(kept, (13..=20).rev().collect::<Vec<_>>());
    for v in view["versions"].as_array().expect("a list") {
        assert_eq!(v["proxies"]["sent"], ids.len());
        assert!(v["slowest"].as_array().expect("a list").len() <= NAMED);
        assert!(v["nacked_by"].as_array().expect("a list").len() <= NAMED);
    }
    // A publish of a version kept already (nothing new) changes nothing.
    s.published(20, None);
    assert_eq!(version(&s, 20)["proxies"]["acked"], ids.len());
}

#[test]
fn a_version_published_without_a_source_change_is_followed_from_its_first_send() {
    let (s, _) = connected(&["a"]);
    // Published after an object was held back: not through `published`.
    s.sent("a", ROUTE, 3);
    s.acked("a", ROUTE);
    let v = version(&s, 3);
    assert_eq!(v["stages"], Value::Null);
    assert_eq!(v["proxies"]["acked"], 1);
}

#[test]
fn a_huge_node_id_is_shown_cut_so_the_view_stays_small() {
    // A peer picks its node id, up to the request size bound.
    let huge = format!(
        "sidecar~127.0.0.1~{}~default.svc.cluster.local",
        "é".repeat(500_000)
    );
    let (s, _) = connected(&[huge.as_str()]);
    s.sent(&huge, ROUTE, 2);
    s.nacked(&huge, ROUTE);
    let rendered = s.view().to_string();
    assert!(rendered.len() < 16 * 1024, "{} bytes", rendered.len());
    let named = version(&s, 2)["nacked_by"][0]
        .as_str()
        .expect("named")
        .to_owned();
    assert!(named.len() <= view::SHOWN_ID_BYTES && huge.starts_with(&named));
}

#[test]
fn a_type_sent_twice_in_one_version_is_counted_once_per_proxy() {
    let (s, _) = connected(&["a"]);
    s.sent("a", ENDPOINT, 2);
    s.acked("a", ENDPOINT);
    s.sent("a", ENDPOINT, 2);
    s.acked("a", ENDPOINT);
    let t = &version(&s, 2)["types"][ENDPOINT];
    assert_eq!(t["sent"], 1, "{t}");
    assert_eq!(t["acked"], 1, "{t}");
}

#[test]
fn snapshot_versions_follow_each_types_last_send_and_ack() {
    let (s, _registry) = connected(&["a"]);
    assert_eq!(
        s.snapshot_versions("a"),
        vec![(
            CLUSTER,
            SnapshotVersions {
                sent: Some(1),
                acked: Some(1)
            }
        )],
        "the connection's responses count, though they are not timed"
    );
    s.sent("a", ROUTE, 2);
    s.nacked("a", ROUTE);
    let versions: std::collections::BTreeMap<_, _> = s.snapshot_versions("a").into_iter().collect();
    assert_eq!(
        versions[ROUTE],
        SnapshotVersions {
            sent: Some(2),
            acked: None
        },
        "a NACK is not an ACK"
    );
    assert_eq!(versions[CLUSTER].acked, Some(1), "clusters untouched by 2");
    s.published(3, None);
    s.sent("a", ROUTE, 3);
    s.acked("a", ROUTE);
    let versions: std::collections::BTreeMap<_, _> = s.snapshot_versions("a").into_iter().collect();
    assert_eq!(versions[ROUTE].acked, Some(3));
    s.disconnected("a");
    assert!(s.snapshot_versions("a").is_empty());
}
