use serde_json::json;
use sextant_index::{Index, Object};

use super::*;

fn vs(index: &mut Index, name: &str, prefix: &str) {
    vs_in(index, "default", name, prefix);
}

/// A VirtualService in `ns`, exported to every namespace.
fn vs_in(index: &mut Index, ns: &str, name: &str, prefix: &str) {
    let object = Object::from_json(
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"hosts": [name], "http": [{"match": [{"uri": {"prefix": prefix}}],
                     "route": [{"destination": {"host": name}}]}]}
        }),
        "default",
    )
    .expect("a VirtualService");
    index.apply(object);
}

/// A VirtualService in `ns`, seen only there, matching `regex`.
fn private_vs(index: &mut Index, ns: &str, name: &str, regex: &str) {
    let object = Object::from_json(
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"hosts": [name], "exportTo": ["."],
                     "http": [{"match": [{"uri": {"regex": regex}}],
                     "route": [{"destination": {"host": name}}]}]}
        }),
        "default",
    )
    .expect("a VirtualService");
    index.apply(object);
}

fn id(name: &str) -> ObjectRef {
    ObjectRef {
        kind: Kind::VirtualService,
        namespace: "default".into(),
        name: name.into(),
    }
}

fn proxy() -> Proxy {
    Proxy::from_node_id("sidecar~10.0.0.1~p.default~default.svc.cluster.local").expect("node id")
}

fn prefix_of(s: &Snapshot, name: &str) -> Option<String> {
    let v = s.virtual_services.iter().find(|v| v.id == id(name))?;
    Some(format!("{:?}", v.http[0].matches[0].uri))
}

/// Sends the proxy `version` of routes and has it answer.
fn answer(q: &mut Quarantine, p: &Proxy, version: u64, nack: bool) -> Option<Publish> {
    answer_with(q, p, version, nack.then_some("regex too big"))
}

/// Sends the proxy `version` of routes; it rejects them with `error`, or ACKs.
fn answer_with(
    q: &mut Quarantine,
    p: &Proxy,
    version: u64,
    error: Option<&str>,
) -> Option<Publish> {
    q.resources(p, version);
    let url = type_url::ROUTE.to_owned();
    q.observe(
        p,
        &Event::Sent {
            type_url: url.clone(),
            resources: 1,
        },
    )
    .expect("sent");
    let event = match error {
        Some(e) => Event::Nack {
            type_url: url,
            error: e.into(),
            truncated: false,
        },
        None => Event::Ack { type_url: url },
    };
    q.observe(p, &event).expect("within the bound")
}

#[test]
fn a_rejected_edit_is_held_at_the_accepted_content_while_others_flow() {
    let mut index = Index::new("cluster.local", "Kubernetes");
    let mut q = Quarantine::new(10);
    let p = proxy();
    vs(&mut index, "a", "/a1");
    vs(&mut index, "b", "/b1");
    let (s, c) = index.publish();
    let (v1, _) = q.publish(s, c);
    assert!(answer(&mut q, &p, v1.version, false).is_none());
    // b's edit is rejected: b is held at /b1.
    vs(&mut index, "b", "/b2");
    let (s, c) = index.publish();
    let (v2, _) = q.publish(s, c);
    let (v3, changes) = answer(&mut q, &p, v2.version, true).expect("b held");
    assert!(v3.version > v2.version);
    assert!(changes.configs.contains(&id("b")));
    assert!(prefix_of(&v3, "b").expect("b").contains("/b1"));
    assert_eq!(q.held()[&id("b")].served_version, Some(v1.version));
    assert!(answer(&mut q, &p, v3.version, false).is_none());
    // a's edit flows; b stays held.
    vs(&mut index, "a", "/a2");
    let (s, c) = index.publish();
    let (v4, _) = q.publish(s, c);
    assert!(prefix_of(&v4, "a").expect("a").contains("/a2"));
    assert!(prefix_of(&v4, "b").expect("b").contains("/b1"));
    // b's next edit releases it.
    vs(&mut index, "b", "/b3");
    let (s, c) = index.publish();
    let (v5, _) = q.publish(s, c);
    assert!(q.held().is_empty());
    assert!(prefix_of(&v5, "b").expect("b").contains("/b3"));
}

#[test]
fn a_rejected_new_object_is_left_out_and_narrowing_holds_the_next_suspect() {
    let mut index = Index::new("cluster.local", "Kubernetes");
    let mut q = Quarantine::new(10);
    let p = proxy();
    vs(&mut index, "a", "/a1");
    let (s, c) = index.publish();
    let (v1, _) = q.publish(s, c);
    answer(&mut q, &p, v1.version, false);
    vs(&mut index, "bad", "/x");
    let (s, c) = index.publish();
    q.publish(s, c);
    vs(&mut index, "new", "/n");
    let (s, c) = index.publish();
    let (v3, _) = q.publish(s, c);
    // The newest change is blamed first; it was not the culprit, so the next is held.
    let (v4, _) = answer(&mut q, &p, v3.version, true).expect("new held");
    assert!(prefix_of(&v4, "new").is_none());
    let (v5, _) = answer(&mut q, &p, v4.version, true).expect("bad held");
    assert!(prefix_of(&v5, "bad").is_none());
    assert_eq!(q.held()[&id("bad")].served_version, None);
    // A NACK of a version from before the last hold blames nothing more.
    assert!(answer(&mut q, &p, v3.version, true).is_none());
}

#[test]
fn holding_stops_at_the_bound() {
    let mut index = Index::new("cluster.local", "Kubernetes");
    let mut q = Quarantine::new(1);
    let p = proxy();
    vs(&mut index, "x", "/x");
    let (s, c) = index.publish();
    let (v0, _) = q.publish(s, c);
    answer(&mut q, &p, v0.version, false);
    vs(&mut index, "a", "/a");
    vs(&mut index, "b", "/b");
    let (s, c) = index.publish();
    let (v1, _) = q.publish(s, c);
    let (v2, _) = answer(&mut q, &p, v1.version, true).expect("one held");
    q.resources(&p, v2.version);
    let url = type_url::ROUTE.to_owned();
    q.observe(
        &p,
        &Event::Sent {
            type_url: url.clone(),
            resources: 1,
        },
    )
    .expect("sent");
    let nack = Event::Nack {
        type_url: url,
        error: "x".into(),
        truncated: false,
    };
    assert_eq!(q.observe(&p, &nack).err(), Some(Refusal::TooManyHeld));
}

#[test]
fn the_object_envoys_error_quotes_is_blamed_and_invisible_ones_never_are() {
    let mut index = Index::new("cluster.local", "Kubernetes");
    let mut q = Quarantine::new(10);
    let p = proxy();
    vs(&mut index, "a", "/a");
    let (s, c) = index.publish();
    let (v1, _) = q.publish(s, c);
    answer(&mut q, &p, v1.version, false);
    private_vs(&mut index, "default", "bad", "/x{50}");
    let (s, c) = index.publish();
    q.publish(s, c);
    // Newer: an edit in a namespace the proxy does not see, and one it sees.
    private_vs(&mut index, "other", "hidden", "/h");
    vs(&mut index, "newer", "/n");
    let (s, c) = index.publish();
    let (v3, _) = q.publish(s, c);
    let error = "route: regex '/x{50}' RE2 program size of 55 > max program size of 50";
    let (_, changes) = answer_with(&mut q, &p, v3.version, Some(error)).expect("held");
    assert_eq!(changes.configs.iter().collect::<Vec<_>>(), vec![&id("bad")]);
    // Without a quote to go by, the newest the proxy can see (not the hidden one).
    assert_eq!(
        q.suspect(&p, type_url::ROUTE, "no quotes", v3.version, v1.version),
        Some(id("newer"))
    );
    assert!(!contributes(
        &q.source,
        &p,
        &ObjectRef {
            kind: Kind::VirtualService,
            namespace: "other".into(),
            name: "hidden".into(),
        }
    ));
}

/// Publishes the source's `s` again as a newer version with no configuration change (an
/// EndpointSlice edit, say).
fn unrelated_publish(q: &mut Quarantine, s: &Arc<Snapshot>, bump: u64) -> Arc<Snapshot> {
    let mut next = Snapshot::clone(s);
    next.version += bump;
    q.publish(Arc::new(next), Changes::default()).0
}

#[test]
fn a_nack_from_a_proxy_that_never_acked_holds_nothing() {
    let mut index = Index::new("cluster.local", "Kubernetes");
    let mut q = Quarantine::new(10);
    let p = proxy();
    vs(&mut index, "reviews", "/r1");
    let (s, c) = index.publish();
    let (v1, _) = q.publish(s, c);
    assert!(answer(&mut q, &p, v1.version, true).is_none());
    assert!(q.held().is_empty());
    // Nor after more changes: still no ACK to go back to.
    vs(&mut index, "reviews", "/r2");
    let (s, c) = index.publish();
    let (v2, _) = q.publish(s, c);
    assert!(answer(&mut q, &p, v2.version, true).is_none());
    assert!(q.held().is_empty());
    assert!(
        prefix_of(&q.overlay(vec![]), "reviews")
            .expect("reviews served")
            .contains("/r2")
    );
}

#[test]
fn a_proxy_holds_only_objects_of_its_own_namespace() {
    let mut index = Index::new("cluster.local", "Kubernetes");
    let mut q = Quarantine::new(10);
    let evil =
        Proxy::from_node_id("sidecar~10.9.9.9~evil-0.evil~evil.svc.cluster.local").expect("node");
    vs(&mut index, "reviews", "/r1");
    let (s, c) = index.publish();
    let (v1, _) = q.publish(s, c);
    assert!(answer(&mut q, &evil, v1.version, false).is_none());
    // default/reviews is exported to every namespace, evil's proxy sees it, rejects its edit:
    // it is not evil's to hold back.
    vs(&mut index, "reviews", "/r2");
    let (s, c) = index.publish();
    let (v2, _) = q.publish(s, c);
    assert!(answer(&mut q, &evil, v2.version, true).is_none());
    assert!(q.held().is_empty());
    // evil's own object it can hold.
    vs_in(&mut index, "evil", "mine", "/m");
    let (s, c) = index.publish();
    let (v3, _) = q.publish(s, c);
    let (v4, changes) = answer(&mut q, &evil, v3.version, true).expect("evil/mine held");
    let mine = ObjectRef {
        kind: Kind::VirtualService,
        namespace: "evil".into(),
        name: "mine".into(),
    };
    assert_eq!(changes.configs.iter().collect::<Vec<_>>(), vec![&mine]);
    assert!(prefix_of(&v4, "reviews").expect("reviews").contains("/r2"));
}

#[test]
fn the_accepted_content_is_found_after_many_unrelated_publishes() {
    let mut index = Index::new("cluster.local", "Kubernetes");
    let mut q = Quarantine::new(10);
    let p = proxy();
    vs(&mut index, "reviews", "/v1");
    let (s, c) = index.publish();
    let (v1, _) = q.publish(s.clone(), c);
    answer(&mut q, &p, v1.version, false);
    let mut last = v1.clone();
    for bump in 1..=20 {
        last = unrelated_publish(&mut q, &s, bump);
    }
    vs(&mut index, "reviews", "/v2");
    let (s, c) = index.publish();
    let mut next = Snapshot::clone(&s);
    next.version = next.version.max(last.version + 1);
    let (v2, _) = q.publish(Arc::new(next), c);
    let (v3, _) = answer(&mut q, &p, v2.version, true).expect("reviews held");
    assert!(
        prefix_of(&v3, "reviews")
            .expect("reviews kept")
            .contains("/v1")
    );
    assert_eq!(q.held()[&id("reviews")].served_version, Some(v1.version));
}

#[test]
fn an_accepted_content_no_longer_known_holds_nothing_rather_than_leave_it_out() {
    let mut index = Index::new("cluster.local", "Kubernetes");
    let mut q = Quarantine::new(10);
    let p = proxy();
    vs(&mut index, "reviews", "/v0");
    let (s, c) = index.publish();
    let (v1, _) = q.publish(s, c);
    answer(&mut q, &p, v1.version, false);
    let mut last = v1;
    for n in 1..=(HISTORY_PER_OBJECT + 2) {
        vs(&mut index, "reviews", &format!("/v{n}"));
        let (s, c) = index.publish();
        last = q.publish(s, c).0;
    }
    assert!(answer(&mut q, &p, last.version, true).is_none());
    assert!(q.held().is_empty());
    assert!(prefix_of(&q.overlay(vec![]), "reviews").is_some());
}

#[test]
fn past_the_proxy_bound_only_the_oldest_proxy_is_forgotten() {
    let mut index = Index::new("cluster.local", "Kubernetes");
    let mut q = Quarantine::new(10);
    vs(&mut index, "a", "/a1");
    let (s, c) = index.publish();
    let (v1, _) = q.publish(s, c);
    let node = |n: usize| {
        Proxy::from_node_id(&format!(
            "sidecar~10.1.0.1~o{n}.default~default.svc.cluster.local"
        ))
        .expect("node")
    };
    for n in 0..TRACKED_PROXIES {
        q.resources(&node(n), v1.version);
    }
    // The second proxy ACKs; one more proxy makes only the first one forgotten.
    answer(&mut q, &node(1), v1.version, false);
    q.resources(&node(TRACKED_PROXIES), v1.version);
    assert_eq!(q.proxies.len(), TRACKED_PROXIES);
    assert!(!q.proxies.contains_key(&node(0).id));
    assert!(q.proxies[&node(1).id].acked.contains_key(type_url::ROUTE));
}

#[test]
fn an_object_deleted_and_recreated_since_the_ack_is_held_at_its_accepted_content() {
    let mut index = Index::new("cluster.local", "Kubernetes");
    let mut q = Quarantine::new(10);
    let p = proxy();
    vs(&mut index, "keep", "/k");
    vs(&mut index, "reviews", "/v1");
    let (s, c) = index.publish();
    let (v1, _) = q.publish(s.clone(), c);
    answer(&mut q, &p, v1.version, false);
    let mut gone = Snapshot::clone(&s);
    gone.virtual_services.retain(|v| v.id != id("reviews"));
    let mut changes = Changes::default();
    changes.configs.insert(id("reviews"));
    q.publish(Arc::new(gone), changes);
    vs(&mut index, "reviews", "/v2");
    let (s, c) = index.publish();
    let (v3, _) = q.publish(s, c);
    assert!(prefix_of(&v3, "reviews").expect("back").contains("/v2"));
    let (v4, _) = answer(&mut q, &p, v3.version, true).expect("reviews held");
    assert!(prefix_of(&v4, "reviews").expect("kept").contains("/v1"));
}

/// A Gateway in `ns` selecting `istio=ingressgateway`, its server on `port`.
fn gateway(index: &mut Index, ns: &str, name: &str, port: u16) {
    let object = Object::from_json(
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"istio": "ingressgateway"},
                     "servers": [{"port": {"number": port, "name": "http", "protocol": "HTTP"},
                                  "hosts": ["*"]}]}
        }),
        "default",
    )
    .expect("a Gateway");
    index.apply(object);
}

#[test]
fn a_gateway_holds_back_the_gateway_it_rejects_whatever_its_namespace() {
    let mut index = Index::new("cluster.local", "Kubernetes");
    let mut q = Quarantine::new(10);
    let mut router =
        Proxy::from_node_id("router~10.0.0.9~gw-0.istio-system~istio-system.svc.cluster.local")
            .expect("node id");
    router.apply_metadata("LABELS", "istio=ingressgateway");
    gateway(&mut index, "team-a", "web", 8080);
    vs_in(&mut index, "istio-system", "mine", "/m1");
    let (s, c) = index.publish();
    let (v1, _) = q.publish(s, c);
    assert!(answer(&mut q, &router, v1.version, false).is_none());
    // team-a's Gateway changes and the gateway rejects it: that Gateway is held at its
    // accepted port, not a VirtualService of the gateway's own namespace.
    vs_in(&mut index, "istio-system", "mine", "/m2");
    let (s, c) = index.publish();
    q.publish(s, c);
    gateway(&mut index, "team-a", "web", 9090);
    let (s, c) = index.publish();
    let (v3, _) = q.publish(s, c);
    let (v4, _) = answer_with(&mut q, &router, v3.version, Some("bad port 9090")).expect("held");
    let held = ObjectRef {
        kind: Kind::Gateway,
        namespace: "team-a".into(),
        name: "web".into(),
    };
    assert!(q.held().contains_key(&held), "{:?}", q.held().keys());
    assert_eq!(v4.gateways[0].servers[0].port, 8080);
    // A sidecar never holds a Gateway.
    let sidecar = proxy();
    assert!(!contributes(&v4, &sidecar, &held));
}
