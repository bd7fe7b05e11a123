//! On-demand virtual hosts over delta: names asked for are answered by the virtual host that
//! serves them (with the name among its aliases) or without a body, and updates reach only
//! the streams holding what changed.

use super::*;
use envoy_types::pb::envoy::config::route::v3::VirtualHost;
use sextant_xds::{
    ProxyResources,
    protocol::vhds::{VIRTUAL_HOST, VirtualHosts},
};

fn host(name: &str, domains: &[&str], timeout: u32) -> Encoded {
    Encoded::new(
        name,
        &VirtualHost {
            name: name.to_owned(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            request_headers_to_remove: vec![format!("version-{timeout}")],
            ..Default::default()
        },
    )
}

/// A proxy's resources served on demand: route configuration `9080`'s virtual hosts.
fn served(reviews_version: u32) -> ProxyResources {
    let mut hosts = vec![
        host(
            "9080/reviews:9080",
            &["reviews", "reviews.ns"],
            reviews_version,
        ),
        host("9080/ratings:9080", &["ratings", "*.ratings.ns"], 1),
    ];
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    ProxyResources {
        virtual_hosts: Some(Arc::new(VirtualHosts::new(hosts.into()))),
        ..Default::default()
    }
}

fn ack(d: &mut Delta, nonce: &str, all: &ProxyResources) {
    assert!(
        d.on_request(dreq(VIRTUAL_HOST, &[], &[], nonce), all)
            .is_none(),
        "an ACK is not answered"
    );
}

#[test]
fn a_route_configurations_own_subscription_is_answered_without_virtual_hosts() {
    let all = served(1);
    let mut d = delta();
    let r = d
        .on_request(dreq(VIRTUAL_HOST, &["9080"], &[], ""), &all)
        .expect("answered: Envoy's listener waits for it");
    assert!(r.resources.is_empty(), "no virtual host is pushed unasked");
    assert_eq!(r.unresolved, ["9080"]);
}

#[test]
fn an_asked_name_is_answered_by_its_virtual_host_with_the_name_as_alias() {
    let all = served(1);
    let mut d = delta();
    let r = d
        .on_request(dreq(VIRTUAL_HOST, &["9080"], &[], ""), &all)
        .expect("first");
    ack(&mut d, &r.nonce, &all);
    let r = d
        .on_request(
            dreq(VIRTUAL_HOST, &["9080/reviews:9080"], &[], &r.nonce),
            &all,
        )
        .expect("answered");
    let names: Vec<&str> = r.resources.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["9080/reviews:9080"]);
    assert_eq!(r.aliases, [vec!["9080/reviews:9080".to_owned()]]);
    assert!(r.unresolved.is_empty());
    ack(&mut d, &r.nonce, &all);

    // Another name of a virtual host the proxy holds: sent again, for the alias.
    let r = d
        .on_request(
            dreq(VIRTUAL_HOST, &["9080/reviews.ns"], &[], &r.nonce),
            &all,
        )
        .expect("answered again");
    assert_eq!(r.resources.len(), 1);
    assert_eq!(r.aliases, [vec!["9080/reviews.ns".to_owned()]]);
    ack(&mut d, &r.nonce, &all);

    // A wildcard domain, and a name nothing serves.
    let r = d
        .on_request(
            dreq(
                VIRTUAL_HOST,
                &["9080/v1.ratings.ns:9080", "9080/nowhere"],
                &[],
                &r.nonce,
            ),
            &all,
        )
        .expect("answered");
    let names: Vec<&str> = r.resources.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["9080/ratings:9080"]);
    assert_eq!(r.aliases, [vec!["9080/v1.ratings.ns:9080".to_owned()]]);
    assert_eq!(r.unresolved, ["9080/nowhere"]);
}

#[test]
fn an_update_sends_only_the_changed_virtual_hosts_a_stream_holds() {
    let all = served(1);
    let (mut holder, mut other) = (delta(), delta());
    for (d, asked) in [(&mut holder, "9080/reviews"), (&mut other, "9080/ratings")] {
        let r = d
            .on_request(dreq(VIRTUAL_HOST, &["9080"], &[], ""), &all)
            .expect("first");
        ack(d, &r.nonce, &all);
        let r = d
            .on_request(dreq(VIRTUAL_HOST, &[asked], &[], &r.nonce), &all)
            .expect("answered");
        ack(d, &r.nonce, &all);
    }
    assert!(holder.on_update(&all).is_empty(), "nothing changed");

    let changed = served(2);
    let pushed = holder.on_update(&changed);
    assert_eq!(pushed.len(), 1);
    let names: Vec<&str> = pushed[0]
        .resources
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["9080/reviews:9080"]);
    assert!(pushed[0].aliases.is_empty(), "no name waits on an update");
    assert!(pushed[0].unresolved.is_empty() && pushed[0].removed_resources.is_empty());
    assert!(
        other.on_update(&changed).is_empty(),
        "a stream that holds no virtual host of reviews gets nothing"
    );
}

#[test]
fn a_virtual_host_that_stops_serving_an_asked_name_is_removed() {
    let all = served(1);
    let mut d = delta();
    let r = d
        .on_request(dreq(VIRTUAL_HOST, &["9080", "9080/reviews"], &[], ""), &all)
        .expect("first");
    assert_eq!(r.resources.len(), 1);
    ack(&mut d, &r.nonce, &all);
    let gone = ProxyResources {
        virtual_hosts: Some(Arc::new(VirtualHosts::new(
            vec![host("9080/ratings:9080", &["ratings"], 1)].into(),
        ))),
        ..Default::default()
    };
    let pushed = d.on_update(&gone);
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].removed_resources, ["9080/reviews:9080"]);
}

#[test]
fn asked_names_count_against_the_subscription_limit() {
    use sextant_xds::protocol::Limits;
    let all = served(1);
    let mut d = delta().with_limits(Limits {
        subscription_names: 2,
        ..Limits::default()
    });
    let r = d
        .on_request(dreq(VIRTUAL_HOST, &["9080", "9080/a"], &[], ""), &all)
        .expect("first");
    assert!(
        d.admit(&dreq(VIRTUAL_HOST, &["9080/b"], &[], &r.nonce))
            .is_err()
    );
}

#[test]
fn each_route_configuration_gets_one_answer_in_its_namespace() {
    let route = |name: &str| {
        Encoded::new(
            name,
            &envoy_types::pb::envoy::config::route::v3::RouteConfiguration {
                name: name.to_owned(),
                ..Default::default()
            },
        )
    };
    let mut all = served(1);
    all.shared = Arc::new(EncodedResources {
        routes: vec![route("9080")].into(),
        ..Default::default()
    });
    let mut d = delta();
    // Envoy's first request names nothing: its subscriptions are by namespace.
    let r = d
        .on_request(dreq(VIRTUAL_HOST, &[], &[], ""), &all)
        .expect("answered");
    assert!(r.resources.is_empty());
    assert_eq!(r.unresolved, ["9080/"]);
    ack(&mut d, &r.nonce, &all);
    assert!(d.owed(&all).is_none(), "announced once");

    // A route configuration sent later is announced right after it.
    all.shared = Arc::new(EncodedResources {
        routes: vec![route("80"), route("9080")].into(),
        ..Default::default()
    });
    let owed = d.owed(&all).expect("the new route configuration's answer");
    assert_eq!(owed.unresolved, ["80/"]);
}

#[test]
fn a_wildcard_virtual_host_brings_the_more_specific_hosts_it_covers() {
    // Envoy matches `api.wild.example` against a held `*.wild.example` and never asks for
    // it: a stream holding the wildcard must hold the exact virtual host too, from the
    // moment it appears.
    let wild = |with_api: bool| {
        let mut hosts = vec![host("9080/*.wild.example:9080", &["*.wild.example"], 1)];
        if with_api {
            hosts.push(host("9080/api.wild.example:9080", &["api.wild.example"], 1));
        }
        hosts.push(host("9080/other:9080", &["other"], 1));
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        ProxyResources {
            virtual_hosts: Some(Arc::new(VirtualHosts::new(hosts.into()))),
            ..Default::default()
        }
    };
    let before = wild(false);
    let mut d = delta();
    let r = d
        .on_request(dreq(VIRTUAL_HOST, &["9080"], &[], ""), &before)
        .expect("first");
    ack(&mut d, &r.nonce, &before);
    let r = d
        .on_request(
            dreq(VIRTUAL_HOST, &["9080/x.wild.example:9080"], &[], &r.nonce),
            &before,
        )
        .expect("answered");
    let names: Vec<&str> = r.resources.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["9080/*.wild.example:9080"]);
    ack(&mut d, &r.nonce, &before);

    let pushed = d.on_update(&wild(true));
    assert_eq!(pushed.len(), 1);
    let names: Vec<&str> = pushed[0]
        .resources
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["9080/api.wild.example:9080"],
        "the covered host, not `other`"
    );
}
