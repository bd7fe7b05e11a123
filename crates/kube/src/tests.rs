use super::*;
use serde_json::{Value, json};

fn service(spec: Value) -> DynamicObject {
    let resource = api_resource(Kind::Service);
    let mut o = DynamicObject::new("reviews", &resource).within("default");
    o.data = json!({ "spec": spec });
    o
}

#[test]
fn watched_objects_past_the_input_bounds_are_refused_naming_the_bound() {
    let key = "k".repeat(3000);
    let mut spec = json!({"a": 1});
    for _ in 0..100 {
        let mut level: serde_json::Map<String, Value> =
            (0..100).map(|i| (format!("s{i}"), json!(i))).collect();
        level.insert(key.clone(), spec);
        spec = Value::Object(level);
    }
    let resource = api_resource(Kind::Service);
    let err = to_object(&resource, service(spec)).expect_err("refused");
    assert!(err.contains("Service default/reviews"), "{err}");
    assert!(err.contains("--max-input-expanded-bytes"), "{err}");
}

#[test]
fn watched_secrets_keep_only_what_a_credential_is_read_from() {
    let resource = api_resource(Kind::Secret);
    let mut o = DynamicObject::new("cert", &resource).within("edge");
    o.data = json!({"type": "kubernetes.io/tls",
        "data": {"tls.crt": "Q0VSVA==", "tls.key": "S0VZ", "unrelated": "x".repeat(100_000)}});
    let Ok(Object::Secret(secret)) = to_object(&resource, o) else {
        panic!("a Secret");
    };
    let shown = format!("{secret:?}");
    assert!(
        shown.contains("tls.crt") && !shown.contains("unrelated"),
        "{shown}"
    );
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(
        watch_config(Kind::Secret).field_selector.as_deref(),
        Some(SECRET_FIELD_SELECTOR)
    );
}

#[test]
fn watched_nodes_keep_only_their_name_and_labels() {
    let resource = api_resource(Kind::Node);
    let mut o = DynamicObject::new("node-a", &resource);
    o.metadata.labels = Some(
        [(
            "topology.kubernetes.io/zone".to_owned(),
            "us-east-1a".to_owned(),
        )]
        .into(),
    );
    o.metadata.annotations = Some([("big".to_owned(), "x".repeat(10_000))].into());
    o.data = json!({"status": {"images": [{"names": ["a"], "sizeBytes": 1}]}});
    let Ok(Object::Node(node)) = to_object(&resource, o) else {
        panic!("a Node");
    };
    assert_eq!(node.metadata.name.as_deref(), Some("node-a"));
    assert!(node.metadata.labels.is_some_and(|l| l.len() == 1));
    assert!(node.metadata.annotations.is_none() && node.status.is_none());
}

#[test]
fn a_remote_watch_cannot_bring_back_a_cluster_once_its_registration_ended() {
    let resource = api_resource(Kind::Service);
    let spec = json!({"ports": [{"port": 9080, "name": "http"}]});
    let object = || to_object(&resource, service(spec.clone())).expect("a Service");
    let mut index = Index::new("cluster.local", "Kubernetes");
    let registered = Registered::new();
    let target = Target::Remote("B".into(), registered.clone());
    target.apply(&mut index, object());
    assert_eq!(index.publish().0.services.len(), 1);
    // As stop() does, under the index's lock.
    registered.end(&mut index);
    index.remove_cluster("B");
    // A watch task that was finishing a change when it was aborted.
    target.apply(&mut index, object());
    target.reset(&mut index, Kind::Service, vec![object()]);
    assert_eq!(index.publish().0.services.len(), 0);
}

#[test]
fn watch_errors_name_the_api_server_and_say_it_was_unreachable() {
    let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
    let error = watcher::Error::InitialListFailed(kube::Error::Service(Box::new(refused)));
    let shown = describe(&error, Kind::Service, Some("https://10.0.0.1:6443/"));
    assert_eq!(
        shown,
        "API server https://10.0.0.1:6443/ unreachable: listing services failed: Connection refused"
    );
    let cut = client::TooLarge {
        watch: false,
        bound: 10,
    };
    let error = watcher::Error::InitialListFailed(kube::Error::Service(Box::new(cut)));
    let shown = describe(&error, Kind::Pod, Some("https://b/"));
    assert!(
        shown.starts_with("API server https://b/: listing pods: a response")
            && shown.contains("--max-list-bytes (10 bytes)"),
        "{shown}"
    );
}

#[test]
fn ordinary_watched_objects_are_read() {
    let resource = api_resource(Kind::Service);
    let spec = json!({"ports": [{"port": 9080, "name": "http"}]});
    assert!(to_object(&resource, service(spec)).is_ok());
}
