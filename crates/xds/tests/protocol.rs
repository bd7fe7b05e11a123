//! The ADS protocol state machines, without sockets.

use std::{collections::HashMap, sync::Arc};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
        },
        service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest},
    },
    google::rpc::Status,
};
use sextant_resources::{Encoded, EncodedResources, type_url};
use sextant_xds::protocol::{Delta, Event, Interner, Sotw, SystemClock};

/// A state-of-the-world stream with a pool of names of its own.
/// What the state machines are given rather than reading themselves: limits and a clock.
#[path = "protocol/given.rs"]
mod given;
/// On-demand virtual hosts (VHDS).
#[path = "protocol/vhds.rs"]
mod vhds;

fn sotw() -> Sotw {
    Sotw::new(Interner::default(), Arc::new(SystemClock))
}

/// A delta stream.
fn delta() -> Delta {
    Delta::new(Arc::new(SystemClock))
}

fn cluster(name: &str, timeout: i64) -> Encoded {
    Encoded::new(
        name,
        &Cluster {
            name: name.into(),
            connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: timeout,
                nanos: 0,
            }),
            ..Default::default()
        },
    )
}

fn cla(name: &str) -> Encoded {
    Encoded::new(
        name,
        &ClusterLoadAssignment {
            cluster_name: name.into(),
            ..Default::default()
        },
    )
}

fn state(clusters: &[(&str, i64)]) -> EncodedResources {
    EncodedResources {
        clusters: clusters.iter().map(|(n, t)| cluster(n, *t)).collect(),
        endpoints: clusters.iter().map(|(n, _)| cla(n)).collect(),
        listeners: [Encoded::new(
            "l",
            &Listener {
                name: "l".into(),
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    }
}

fn req(url: &str, names: &[&str], nonce: &str, version: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: url.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        version_info: version.into(),
        ..Default::default()
    }
}

fn nack(mut r: DiscoveryRequest) -> DiscoveryRequest {
    r.error_detail = Some(Status {
        code: 3,
        message: "bad cluster".into(),
        ..Default::default()
    });
    r
}

#[test]
fn sotw_initial_request_gets_everything_and_an_ack_gets_nothing() {
    let all = state(&[("a", 1), ("b", 1)]);
    let mut s = sotw();
    let r = s
        .on_request(req(type_url::CLUSTER, &[], "", ""), &all)
        .expect("response");
    assert_eq!(r.resources.len(), 2);
    assert!(
        s.on_request(req(type_url::CLUSTER, &[], &r.nonce, &r.version_info), &all)
            .is_none()
    );
    assert!(s.on_update(&all).is_empty(), "nothing changed");
    assert!(matches!(s.events.last(), Some(Event::Ack { .. })));
}

#[test]
fn sotw_update_sends_only_changed_types_in_push_order() {
    let mut s = sotw();
    let all = state(&[("a", 1)]);
    for url in [type_url::LISTENER, type_url::CLUSTER] {
        s.on_request(req(url, &[], "", ""), &all).expect("initial");
    }
    s.on_request(req(type_url::ENDPOINT, &["a"], "", ""), &all)
        .expect("eds");
    let mut changed = all.clone();
    changed.clusters = [cluster("a", 2)].into();
    let pushed = s.on_update(&changed);
    let types: Vec<&str> = pushed.iter().map(|r| r.type_url).collect();
    assert_eq!(types, [type_url::CLUSTER], "only CDS changed");
}

#[test]
fn sotw_nacked_version_is_not_resent_but_a_newer_one_is() {
    let mut s = sotw();
    let bad = state(&[("a", 1)]);
    let r = s
        .on_request(req(type_url::CLUSTER, &[], "", ""), &bad)
        .expect("initial");
    assert!(
        s.on_request(nack(req(type_url::CLUSTER, &[], &r.nonce, "")), &bad)
            .is_none()
    );
    assert!(matches!(s.events.last(), Some(Event::Nack { error, .. }) if error == "bad cluster"));
    assert!(
        s.on_update(&state(&[("a", 1)])).is_empty(),
        "the rejected version is not resent, even from new lists"
    );
    let status = s.status();
    assert_eq!(
        status[type_url::CLUSTER]
            .nack
            .as_ref()
            .map(|n| n.1.as_str()),
        Some("bad cluster")
    );
    let good = state(&[("a", 2)]);
    assert_eq!(s.on_update(&good).len(), 1);
}

#[test]
fn sotw_stale_nonces_are_ignored() {
    let mut s = sotw();
    let all = state(&[("a", 1)]);
    let first = s
        .on_request(req(type_url::CLUSTER, &[], "", ""), &all)
        .expect("initial");
    let second = s.on_update(&state(&[("a", 2)])).pop().expect("update");
    assert_ne!(first.nonce, second.nonce);
    assert!(
        s.on_request(nack(req(type_url::CLUSTER, &[], &first.nonce, "")), &all)
            .is_none()
    );
    assert!(matches!(s.events.last(), Some(Event::Stale { .. })));
    assert!(
        s.status()[type_url::CLUSTER].nack.is_none(),
        "a stale NACK is not recorded"
    );
}

#[test]
fn sotw_named_types_send_what_was_asked_and_answer_name_changes() {
    let mut s = sotw();
    let all = state(&[("a", 1), ("b", 1)]);
    let r = s
        .on_request(req(type_url::ENDPOINT, &["a", "zzz"], "", ""), &all)
        .expect("eds");
    assert_eq!(
        r.resources.len(),
        2,
        "a, and an empty assignment for the unknown name"
    );
    let r2 = s
        .on_request(
            req(type_url::ENDPOINT, &["a", "b"], &r.nonce, &r.version_info),
            &all,
        )
        .expect("names changed");
    assert_eq!(r2.resources.len(), 2);
}

/// A load assignment with `endpoints` locality entries (so its content changes with the count).
fn cla_with(name: &str, endpoints: usize) -> Encoded {
    Encoded::new(
        name,
        &ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![Default::default(); endpoints],
            ..Default::default()
        },
    )
}

#[test]
fn sotw_updates_of_named_types_carry_only_what_changed() {
    let mut s = sotw();
    let mut all = state(&[("a", 1), ("b", 1), ("c", 1)]);
    let first = s
        .on_request(
            req(type_url::ENDPOINT, &["a", "b", "c", "gone"], "", ""),
            &all,
        )
        .expect("eds");
    assert_eq!(
        first.resources.len(),
        4,
        "an explicit request gets everything"
    );
    s.on_request(
        req(
            type_url::ENDPOINT,
            &["a", "b", "c", "gone"],
            &first.nonce,
            &first.version_info,
        ),
        &all,
    );

    // One assignment changes: only it is sent, under a new version of the whole set.
    all.endpoints = [cla("a"), cla_with("b", 2), cla("c")].into();
    let update = s.on_update(&all).pop().expect("eds update");
    assert_eq!(update.resources.len(), 1);
    assert_ne!(update.version_info, first.version_info);
    let ack = |r: &sextant_xds::protocol::SotwResponse| {
        req(
            type_url::ENDPOINT,
            &["a", "b", "c", "gone"],
            &r.nonce,
            &r.version_info,
        )
    };
    assert!(s.on_request(ack(&update), &all).is_none());

    // A NACKed update is not resent (the same content in new lists included); Envoy may
    // have applied part of it, so the next change sends every subscribed resource.
    all.endpoints = [cla_with("a", 3), cla_with("b", 2), cla("c")].into();
    let bad = s.on_update(&all).pop().expect("eds update");
    assert_eq!(bad.resources.len(), 1);
    assert!(s.on_request(nack(ack(&bad)), &all).is_none());
    let mut same = state(&[("a", 1), ("b", 1), ("c", 1)]);
    same.endpoints = [cla_with("a", 3), cla_with("b", 2), cla("c")].into();
    assert!(
        s.on_update(&same).is_empty(),
        "the rejected version is not resent"
    );
    all.endpoints = [cla_with("a", 3), cla_with("b", 2), cla_with("c", 4)].into();
    let next = s.on_update(&all).pop().expect("eds update");
    assert_eq!(
        next.resources.len(),
        4,
        "everything, placeholder included, after a NACK"
    );
    assert!(s.on_request(ack(&next), &all).is_none());
    all.endpoints = [cla_with("a", 5), cla_with("b", 2), cla_with("c", 4)].into();
    let after = s.on_update(&all).pop().expect("eds update");
    assert_eq!(
        after.resources.len(),
        1,
        "an ACKed basis again: only what changed"
    );

    // Clusters (a wildcard type) are always sent whole.
    s.on_request(req(type_url::CLUSTER, &[], "", ""), &all)
        .expect("cds");
    all.clusters = [cluster("a", 1), cluster("b", 7), cluster("c", 1)].into();
    let cds = s.on_update(&all);
    assert_eq!(cds[0].type_url, type_url::CLUSTER);
    assert_eq!(cds[0].resources.len(), 3);
}

#[test]
fn sotw_requests_decode_from_envoys_message_and_reordered_names_are_no_change() {
    use prost::Message;
    let envoy = DiscoveryRequest {
        version_info: "v1".into(),
        node: Some(envoy_types::pb::envoy::config::core::v3::Node {
            id: "sidecar~10.0.0.1~a.default~default.svc.cluster.local".into(),
            ..Default::default()
        }),
        resource_names: vec!["b".into(), "a".into()],
        type_url: type_url::ENDPOINT.into(),
        response_nonce: "n".into(),
        error_detail: Some(Status {
            code: 3,
            message: "bad".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ours = sextant_xds::protocol::SotwRequest::decode(envoy.encode_to_vec().as_slice())
        .expect("same wire format");
    assert_eq!(ours, envoy.clone().into());

    let mut s = sotw();
    let all = state(&[("a", 1), ("b", 1)]);
    let r = s
        .on_request(req(type_url::ENDPOINT, &["a", "b"], "", ""), &all)
        .expect("eds");
    assert!(
        s.on_request(
            req(type_url::ENDPOINT, &["b", "a"], &r.nonce, &r.version_info),
            &all
        )
        .is_none(),
        "an ACK listing the same names in another order changes nothing"
    );
    let r2 = s
        .on_request(
            req(type_url::ENDPOINT, &["b"], &r.nonce, &r.version_info),
            &all,
        )
        .expect("one name dropped");
    assert_eq!(r2.resources.len(), 1);
    let r3 = s
        .on_request(
            req(type_url::ENDPOINT, &["c"], &r2.nonce, &r2.version_info),
            &all,
        )
        .expect("as many names, another one");
    assert_eq!(r3.resources.len(), 1);
    assert_ne!(r3.version_info, r2.version_info);
}

#[test]
fn sotw_updated_clusters_get_every_assignment_again_after_a_partial_eds_update() {
    let mut s = sotw();
    let mut all = state(&[("a", 1), ("b", 1)]);
    let cds = s
        .on_request(req(type_url::CLUSTER, &[], "", ""), &all)
        .expect("cds");
    s.on_request(
        req(type_url::CLUSTER, &[], &cds.nonce, &cds.version_info),
        &all,
    );
    let eds = s
        .on_request(req(type_url::ENDPOINT, &["a", "b"], "", ""), &all)
        .expect("eds");
    s.on_request(
        req(
            type_url::ENDPOINT,
            &["a", "b"],
            &eds.nonce,
            &eds.version_info,
        ),
        &all,
    );
    // Cluster b changes and a's endpoints change: CDS whole, EDS only a.
    all.clusters = [cluster("a", 1), cluster("b", 9)].into();
    all.endpoints = [cla_with("a", 2), cla("b")].into();
    let pushed = s.on_update(&all);
    let sizes: Vec<(&str, usize)> = pushed
        .iter()
        .map(|r| (r.type_url, r.resources.len()))
        .collect();
    assert_eq!(sizes, [(type_url::CLUSTER, 2), (type_url::ENDPOINT, 1)]);
    // Envoy re-requests the assignments of the clusters it is warming: all of them, b too.
    let partial = &pushed[1];
    let again = s
        .on_request(
            req(
                type_url::ENDPOINT,
                &["a", "b"],
                &partial.nonce,
                &partial.version_info,
            ),
            &all,
        )
        .expect("warming clusters get their assignments");
    assert_eq!(again.resources.len(), 2);
}

#[test]
fn sotw_eds_is_answered_after_clusters_are_sent() {
    let mut s = sotw();
    let all = state(&[("a", 1)]);
    let eds = s
        .on_request(req(type_url::ENDPOINT, &["a"], "", ""), &all)
        .expect("eds");
    s.on_request(req(type_url::CLUSTER, &[], "", ""), &all)
        .expect("cds");
    // Envoy re-requests the same assignments to warm the clusters it just received.
    assert!(
        s.on_request(
            req(type_url::ENDPOINT, &["a"], &eds.nonce, &eds.version_info),
            &all
        )
        .is_some()
    );
}

fn dreq(url: &str, sub: &[&str], unsub: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: url.into(),
        resource_names_subscribe: sub.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: unsub.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

#[test]
fn delta_sends_changes_and_removals_only() {
    let mut d = delta();
    let r = d
        .on_request(
            dreq(type_url::CLUSTER, &[], &[], ""),
            &state(&[("a", 1), ("b", 1)]),
        )
        .expect("initial");
    assert_eq!(r.resources.len(), 2);
    assert!(
        d.on_request(
            dreq(type_url::CLUSTER, &[], &[], &r.nonce),
            &state(&[("a", 1), ("b", 1)])
        )
        .is_none()
    );
    let r = d.on_update(&state(&[("a", 2)])).pop().expect("update");
    assert_eq!(
        r.resources
            .iter()
            .map(|x| x.name.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(r.removed_resources, ["b"]);
    assert!(d.on_update(&state(&[("a", 2)])).is_empty());
}

#[test]
fn delta_reconnect_with_initial_versions_skips_what_the_proxy_has() {
    let all = state(&[("a", 1), ("b", 1)]);
    let versions: HashMap<String, String> = all
        .clusters
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                if c.name == "a" {
                    c.version()
                } else {
                    "old".into()
                },
            )
        })
        .collect();
    let mut d = delta();
    let mut first = dreq(type_url::CLUSTER, &[], &[], "");
    first.initial_resource_versions = versions;
    let r = d.on_request(first, &all).expect("initial");
    assert_eq!(
        r.resources
            .iter()
            .map(|x| x.name.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
}

#[test]
fn delta_named_subscriptions_and_unsubscribe() {
    let all = state(&[("a", 1), ("b", 1)]);
    let mut d = delta();
    let r = d
        .on_request(dreq(type_url::ENDPOINT, &["a"], &[], ""), &all)
        .expect("sub a");
    assert_eq!(r.resources.len(), 1);
    let r = d
        .on_request(dreq(type_url::ENDPOINT, &["b"], &["a"], &r.nonce), &all)
        .expect("sub b");
    assert_eq!(
        r.resources
            .iter()
            .map(|x| x.name.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert!(
        r.removed_resources.is_empty(),
        "unsubscribed names are not reported as removed"
    );
    let mut changed = all.clone();
    changed.endpoints = vec![
        cla("a"),
        Encoded::new(
            "b",
            &ClusterLoadAssignment {
                cluster_name: "b".into(),
                endpoints: vec![Default::default()],
                ..Default::default()
            },
        ),
    ]
    .into();
    let r = d.on_update(&changed).pop().expect("b changed");
    assert_eq!(r.resources.len(), 1);
}

#[test]
fn delta_nacked_resources_are_not_resent() {
    let mut d = delta();
    let all = state(&[("a", 1)]);
    let r = d
        .on_request(dreq(type_url::CLUSTER, &[], &[], ""), &all)
        .expect("initial");
    let mut n = dreq(type_url::CLUSTER, &[], &[], &r.nonce);
    n.error_detail = Some(Status {
        code: 3,
        message: "no".into(),
        ..Default::default()
    });
    assert!(d.on_request(n, &all).is_none());
    assert!(d.on_update(&all).is_empty(), "same content is not resent");
    assert_eq!(d.on_update(&state(&[("a", 5)])).len(), 1);
}

#[test]
fn sotw_nack_carrying_new_names_is_answered() {
    let mut s = sotw();
    let all = state(&[("a", 1), ("b", 1)]);
    let r = s
        .on_request(req(type_url::ENDPOINT, &["a"], "", ""), &all)
        .expect("eds");
    let answer = s
        .on_request(
            nack(req(type_url::ENDPOINT, &["a", "b"], &r.nonce, "")),
            &all,
        )
        .expect("the new names are served");
    assert_eq!(answer.resources.len(), 2);
}

#[test]
fn delta_subscriptions_in_stale_or_nack_requests_are_applied() {
    let all = state(&[("a", 1), ("b", 1)]);
    let mut d = delta();
    let first = d
        .on_request(dreq(type_url::ENDPOINT, &["a"], &[], ""), &all)
        .expect("a");
    let second = d.on_update(&EncodedResources {
        endpoints: vec![
            Encoded::new(
                "a",
                &ClusterLoadAssignment {
                    cluster_name: "a".into(),
                    endpoints: vec![Default::default()],
                    ..Default::default()
                },
            ),
            cla("b"),
        ]
        .into(),
        ..all.clone()
    });
    assert_eq!(second.len(), 1);
    // An ACK of the older nonce that also subscribes to b: b must still be sent.
    let r = d
        .on_request(dreq(type_url::ENDPOINT, &["b"], &[], &first.nonce), &all)
        .expect("b sent");
    assert!(r.resources.iter().any(|x| x.name == "b"));
    // A NACK that subscribes to a new name: the name is served.
    let mut n = dreq(type_url::ENDPOINT, &["zzz"], &[], &r.nonce);
    n.error_detail = Some(Status {
        code: 3,
        message: "no".into(),
        ..Default::default()
    });
    let r = d.on_request(n, &all).expect("zzz served");
    assert!(r.resources.iter().any(|x| x.name == "zzz"));
}

#[test]
fn delta_reconnect_of_named_resources_resends_only_what_changed() {
    let all = state(&[("a", 1), ("b", 1)]);
    let mut d = delta();
    let mut first = dreq(type_url::ENDPOINT, &["a", "b"], &[], "");
    first.initial_resource_versions = all
        .endpoints
        .iter()
        .map(|e| {
            (
                e.name.clone(),
                if e.name == "a" {
                    e.version()
                } else {
                    "stale".into()
                },
            )
        })
        .collect();
    let r = d.on_request(first, &all).expect("response");
    assert_eq!(
        r.resources
            .iter()
            .map(|x| x.name.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
}

#[test]
fn delta_removes_resources_held_at_unknown_versions() {
    let mut d = delta();
    let mut first = dreq(type_url::CLUSTER, &[], &[], "");
    first.initial_resource_versions = [("gone".to_owned(), "not-hex".to_owned())].into();
    let r = d.on_request(first, &state(&[("a", 1)])).expect("initial");
    assert_eq!(r.removed_resources, ["gone"]);
}

#[test]
fn delta_resubscribe_gets_rejected_content_again() {
    let mut d = delta();
    let all = state(&[("a", 1)]);
    let r = d
        .on_request(dreq(type_url::ENDPOINT, &["a"], &[], ""), &all)
        .expect("a");
    let mut n = dreq(type_url::ENDPOINT, &[], &[], &r.nonce);
    n.error_detail = Some(Status {
        code: 3,
        message: "no".into(),
        ..Default::default()
    });
    assert!(d.on_request(n, &all).is_none());
    let again = d.on_request(dreq(type_url::ENDPOINT, &["a"], &[], ""), &all);
    assert!(
        again.is_some_and(|r| r.resources.len() == 1),
        "an explicit request is answered"
    );
}
