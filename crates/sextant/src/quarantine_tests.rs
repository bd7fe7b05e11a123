use serde_json::json;
use sextant_index::{Index, Object};

use super::*;

fn vs(index: &mut Index, name: &str, prefix: &str) {
    let object = Object::from_json(
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "default"},
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
