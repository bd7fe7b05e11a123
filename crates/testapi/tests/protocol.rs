//! The API protocol over real HTTP: list and watch with resource versions, label selectors,
//! bookmarks and `410 Gone`; the status subresource; JSON merge patch and JSON patch;
//! TokenReview of configured tokens; Nodes; Secrets' `stringData`.

use std::{net::SocketAddr, time::Duration};

use http_body_util::BodyExt;
use serde_json::{Value, json};
use sextant_testapi::{Options, start, store::LOG_LENGTH};
use sextant_testing::http;

#[path = "support/call.rs"]
mod support;
use support::call;

/// A watch: the events it streams, read one JSON line at a time.
struct Watch {
    body: hyper::body::Incoming,
    buffered: Vec<u8>,
}

impl Watch {
    async fn open(addr: SocketAddr, path: &str) -> Watch {
        let response = http::open(addr, hyper::Method::GET, path, "", Vec::new())
            .await
            .expect("a response");
        Watch {
            body: response.into_body(),
            buffered: Vec::new(),
        }
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), self.line())
            .await
            .expect("an event within 10 s");
        serde_json::from_slice(&line).expect("a JSON event")
    }

    /// The next line of the body, however the server framed it.
    async fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(end) = self.buffered.iter().position(|&b| b == b'\n') {
                let rest = self.buffered.split_off(end + 1);
                let mut line = std::mem::replace(&mut self.buffered, rest);
                line.pop();
                return line;
            }
            let frame = self
                .body
                .frame()
                .await
                .expect("the watch is open")
                .expect("read");
            if let Ok(data) = frame.into_data() {
                self.buffered.extend_from_slice(&data);
            }
        }
    }
}

fn cm(name: &str, app: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "labels": {"app": app}}, "data": {"k": "v"}})
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn watch_resumes_from_a_version_filters_by_label_and_expires() {
    let api = start(Options::default()).await.expect("starts");
    let addr = api.addr;
    let (code, _) = call(addr, "POST", CMS, "application/json", &cm("a", "x")).await;
    assert_eq!(code, 201);
    let (_, list) = call(addr, "GET", CMS, "", &Value::Null).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));

    // Pages: `limit` and `continue`.
    call(addr, "POST", CMS, "application/json", &cm("a2", "x")).await;
    let (_, page) = call(addr, "GET", &format!("{CMS}?limit=1"), "", &Value::Null).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["metadata"]["remainingItemCount"], 1);
    let token = page["metadata"]["continue"]
        .as_str()
        .expect("continue")
        .to_owned();
    let (_, next) = call(
        addr,
        "GET",
        &format!("{CMS}?limit=1&continue={token}"),
        "",
        &Value::Null,
    )
    .await;
    assert_eq!(next["items"][0]["metadata"]["name"], "a2");
    assert!(next["metadata"].get("continue").is_none(), "{next}");
    call(addr, "DELETE", &format!("{CMS}/a2"), "", &Value::Null).await;
    // Pages across namespaces whose names sort differently as strings and as pairs.
    for ns in ["istio", "istio-system"] {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        call(
            addr,
            "POST",
            "/api/v1/namespaces",
            "application/json",
            &namespace,
        )
        .await;
        for name in ["p", "q"] {
            let path = format!("/api/v1/namespaces/{ns}/configmaps");
            call(addr, "POST", &path, "application/json", &cm(name, "z")).await;
        }
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let path = format!("/api/v1/configmaps?labelSelector=app%3Dz&limit=1&continue={token}");
        let (_, page) = call(addr, "GET", &path, "", &Value::Null).await;
        for item in page["items"].as_array().into_iter().flatten() {
            seen.push(format!(
                "{}/{}",
                item["metadata"]["namespace"].as_str().unwrap_or_default(),
                item["metadata"]["name"].as_str().unwrap_or_default()
            ));
        }
        match page["metadata"]["continue"].as_str() {
            Some(t) => token = t.to_owned(),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["istio/p", "istio/q", "istio-system/p", "istio-system/q"]
    );
    let (_, list) = call(addr, "GET", CMS, "", &Value::Null).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_owned();

    // From the list's version: only what happens after, and only label app=y.
    let mut w = Watch::open(
        addr,
        &format!("{CMS}?watch=true&resourceVersion={rv}&labelSelector=app%3Dy"),
    )
    .await;
    call(addr, "POST", CMS, "application/json", &cm("b", "x")).await;
    call(addr, "POST", CMS, "application/json", &cm("c", "y")).await;
    call(
        addr,
        "PATCH",
        &format!("{CMS}/c"),
        "application/merge-patch+json",
        &json!({"data": {"k": "w"}}),
    )
    .await;
    call(addr, "DELETE", &format!("{CMS}/c"), "", &Value::Null).await;
    let added = w.next().await;
    assert_eq!(
        (
            added["type"].as_str(),
            added["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("c"))
    );
    let modified = w.next().await;
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(modified["object"]["data"]["k"], "w");
    assert_eq!(w.next().await["type"], "DELETED");
    // Relabelled into and out of the selection: ADDED, then DELETED.
    let relabel = |app: &str| json!({"metadata": {"labels": {"app": app}}});
    call(
        addr,
        "PATCH",
        &format!("{CMS}/b"),
        "application/merge-patch+json",
        &relabel("y"),
    )
    .await;
    let into = w.next().await;
    assert_eq!(
        (
            into["type"].as_str(),
            into["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("b"))
    );
    call(
        addr,
        "PATCH",
        &format!("{CMS}/b"),
        "application/merge-patch+json",
        &relabel("x"),
    )
    .await;
    assert_eq!(w.next().await["type"], "DELETED");

    // From version 0: the current objects first.
    let mut w = Watch::open(addr, &format!("{CMS}?watch=1&resourceVersion=0")).await;
    let names: Vec<String> = [w.next().await, w.next().await]
        .iter()
        .map(|e| {
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(names, ["a", "b"]);

    // Streaming list: initial events, then a bookmark that marks their end.
    let mut w = Watch::open(addr, &format!("{CMS}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan")).await;
    w.next().await;
    w.next().await;
    let bookmark = w.next().await;
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(
        bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );

    // A version older than the event log reaches: 410 Gone, as an ERROR event.
    for i in 0..=LOG_LENGTH {
        let patch = json!({"data": {"k": i.to_string()}});
        call(
            addr,
            "PATCH",
            &format!("{CMS}/a"),
            "application/merge-patch+json",
            &patch,
        )
        .await;
    }
    let mut w = Watch::open(addr, &format!("{CMS}?watch=1&resourceVersion={rv}")).await;
    let gone = w.next().await;
    assert_eq!(gone["type"], "ERROR");
    assert_eq!(gone["object"]["code"], 410);
    api.stop();
}

#[tokio::test]
async fn status_is_written_only_through_its_subresource() {
    let api = start(Options::default()).await.expect("starts");
    let addr = api.addr;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crds/virtualservices.networking.istio.io.yaml"
    ))
    .expect("the VirtualService CRD");
    let crd = sextant_index::manifest::parse_documents(&text).expect("YAML")[0]
        .value
        .clone();
    let (code, body) = call(
        addr,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "application/json",
        &crd,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let vs = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "r"}, "spec": {"hosts": ["r"]}, "status": {"ignored": true}});
    let base = "/apis/networking.istio.io/v1/namespaces/default/virtualservices";
    let (code, created) = call(addr, "POST", base, "application/json", &vs).await;
    assert_eq!(code, 201, "{created}");
    assert!(
        created.get("status").is_none(),
        "status is not set on create"
    );
    assert_eq!(created["metadata"]["generation"], 1);
    // Server-side apply of the status subresource, as Sextant writes it.
    let status = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "r"},
        "status": {"conditions": [{"type": "Reconciled", "status": "True"}], "observedGeneration": 1}});
    let (code, applied) = call(
        addr,
        "PATCH",
        &format!("{base}/r/status?fieldManager=sextant&force=true"),
        "application/apply-patch+yaml",
        &status,
    )
    .await;
    assert_eq!(code, 200, "{applied}");
    assert_eq!(applied["status"]["conditions"][0]["type"], "Reconciled");
    assert_eq!(
        applied["metadata"]["generation"], 1,
        "status does not count as a change"
    );
    // A merge patch of the object leaves status alone and counts a generation.
    let (_, patched) = call(
        addr,
        "PATCH",
        &format!("{base}/r"),
        "application/merge-patch+json",
        &json!({"spec": {"hosts": ["r", "s"]}, "status": {"conditions": []}}),
    )
    .await;
    assert_eq!(patched["metadata"]["generation"], 2);
    assert_eq!(patched["status"]["conditions"][0]["type"], "Reconciled");
    // Served at every version of the CRD.
    let (code, old) = call(
        addr,
        "GET",
        "/apis/networking.istio.io/v1alpha3/namespaces/default/virtualservices/r",
        "",
        &Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(old["apiVersion"], "networking.istio.io/v1alpha3");
    api.stop();
}

#[tokio::test]
async fn token_reviews_authenticate_configured_tokens_only() {
    let api = start(Options {
        tokens: [(
            "t0k3n".to_owned(),
            "system:serviceaccount:default:reviews".to_owned(),
        )]
        .into(),
        ..Options::default()
    })
    .await
    .expect("starts");
    let review = |token: &str| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let path = "/apis/authentication.k8s.io/v1/tokenreviews";
    let (code, ok) = call(api.addr, "POST", path, "application/json", &review("t0k3n")).await;
    assert_eq!(code, 201);
    assert_eq!(ok["status"]["authenticated"], true);
    assert_eq!(
        ok["status"]["user"]["username"],
        "system:serviceaccount:default:reviews"
    );
    let (_, no) = call(api.addr, "POST", path, "application/json", &review("other")).await;
    assert_eq!(no["status"]["authenticated"], false);
    api.stop();
}

#[tokio::test]
async fn apply_refuses_to_take_fields_another_manager_owns() {
    let api = start(Options::default()).await.expect("starts");
    let addr = api.addr;
    let lease = "/apis/coordination.k8s.io/v1/namespaces/default/leases/sextant";
    let claim = |who: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "sextant"}, "spec": {"holderIdentity": who}})
    };
    let apply = "application/apply-patch+yaml";
    let (code, _) = call(
        addr,
        "PATCH",
        &format!("{lease}?fieldManager=a"),
        apply,
        &claim("a"),
    )
    .await;
    assert_eq!(code, 201);
    // Another manager may not take the holder; the same manager may re-apply.
    let (code, conflict) = call(
        addr,
        "PATCH",
        &format!("{lease}?fieldManager=b"),
        apply,
        &claim("b"),
    )
    .await;
    assert_eq!(code, 409, "{conflict}");
    assert!(
        conflict["message"]
            .as_str()
            .is_some_and(|m| m.contains(".spec.holderIdentity")),
        "{conflict}"
    );
    let (code, _) = call(
        addr,
        "PATCH",
        &format!("{lease}?fieldManager=a"),
        apply,
        &claim("a"),
    )
    .await;
    assert_eq!(code, 200);
    // Once the field is cleared by an update, it is nobody's.
    let clear = json!({"spec": {"holderIdentity": null}});
    let (code, _) = call(
        addr,
        "PATCH",
        &format!("{lease}?fieldManager=b"),
        "application/strategic-merge-patch+json",
        &clear,
    )
    .await;
    assert_eq!(code, 200);
    let (code, taken) = call(
        addr,
        "PATCH",
        &format!("{lease}?fieldManager=b"),
        apply,
        &claim("b"),
    )
    .await;
    assert_eq!(code, 200, "{taken}");
    assert_eq!(taken["spec"]["holderIdentity"], "b");
    // Forcing takes it anyway.
    let (code, forced) = call(
        addr,
        "PATCH",
        &format!("{lease}?fieldManager=a&force=true"),
        apply,
        &claim("a"),
    )
    .await;
    assert_eq!(code, 200, "{forced}");
    // A forced dry-run apply claims nothing: a keeps its field.
    let (code, _) = call(
        addr,
        "PATCH",
        &format!("{lease}?fieldManager=c&force=true&dryRun=All"),
        apply,
        &claim("c"),
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = call(
        addr,
        "PATCH",
        &format!("{lease}?fieldManager=a"),
        apply,
        &claim("a"),
    )
    .await;
    assert_eq!(code, 200, "a still owns the holder after c's dry run");
    api.stop();
}

#[tokio::test]
async fn field_validation_strict_refuses_unknown_fields_warn_and_ignore_drop_them() {
    let api = start(Options::default()).await.expect("starts");
    let odd = |name: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
               "data": {"k": "v"}, "bogus": {"deep": 1}})
    };
    let (code, body) = call(
        api.addr,
        "POST",
        &format!("{CMS}?fieldValidation=Strict"),
        "application/json",
        &odd("s"),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("bogus")),
        "{body}"
    );
    for (mode, name) in [("Warn", "w"), ("Ignore", "i"), ("", "d")] {
        let path = if mode.is_empty() {
            CMS.to_owned()
        } else {
            format!("{CMS}?fieldValidation={mode}")
        };
        let (code, body) = call(api.addr, "POST", &path, "application/json", &odd(name)).await;
        assert_eq!(code, 201, "{mode}: {body}");
        assert!(
            body.get("bogus").is_none(),
            "{mode}: the unknown field is dropped: {body}"
        );
        assert_eq!(body["data"]["k"], "v");
    }
    api.stop();
}

#[tokio::test]
async fn nodes_are_cluster_scoped_keep_their_status_on_create_and_are_watched() {
    let api = start(Options::default()).await.expect("starts");
    let mut watch = Watch::open(api.addr, "/api/v1/nodes?watch=true&resourceVersion=1").await;
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/region": "us-east1",
                                                   "topology.kubernetes.io/zone": "us-east1-b"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
    let (code, created) = call(api.addr, "POST", "/api/v1/nodes", "application/json", &node).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["status"]["addresses"][0]["address"], "10.0.0.1");
    let event = watch.next().await;
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["metadata"]["name"], "node-a");
    let (code, list) = call(
        api.addr,
        "GET",
        "/api/v1/nodes?labelSelector=topology.kubernetes.io%2Fzone%3Dus-east1-b",
        "",
        &Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    let (code, _) = call(
        api.addr,
        "GET",
        "/api/v1/namespaces/default/nodes/node-a",
        "",
        &Value::Null,
    )
    .await;
    assert_eq!(code, 404, "nodes are not namespaced");
    api.stop();
}

#[tokio::test]
async fn secret_string_data_is_stored_as_data() {
    let api = start(Options::default()).await.expect("starts");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                        "data": {"a": "eA==", "b": "eA=="}, "stringData": {"b": "yes", "c": "z"}});
    let path = "/api/v1/namespaces/default/secrets";
    let (code, created) = call(api.addr, "POST", path, "application/json", &secret).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        created["data"],
        json!({"a": "eA==", "b": "eWVz", "c": "eg=="})
    );
    assert!(created.get("stringData").is_none(), "{created}");
    let (_, merged) = call(
        api.addr,
        "PATCH",
        &format!("{path}/s"),
        "application/merge-patch+json",
        &json!({"stringData": {"a": "new"}}),
    )
    .await;
    assert_eq!(merged["data"]["a"], "bmV3", "{merged}");
    assert!(merged.get("stringData").is_none(), "{merged}");
    api.stop();
}

#[tokio::test]
async fn json_patch_requests_apply_every_operation_or_none() {
    let api = start(Options::default()).await.expect("starts");
    let (code, _) = call(api.addr, "POST", CMS, "application/json", &cm("j", "a")).await;
    assert_eq!(code, 201);
    let path = format!("{CMS}/j");
    let ops = json!([{"op": "test", "path": "/metadata/labels/app", "value": "a"},
                     {"op": "add", "path": "/data/k~1two", "value": "2"},
                     {"op": "move", "from": "/data/k", "path": "/data/one"}]);
    let (code, patched) = call(
        api.addr,
        "PATCH",
        &path,
        "application/json-patch+json",
        &ops,
    )
    .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["data"], json!({"k/two": "2", "one": "v"}));
    let failing = json!([{"op": "remove", "path": "/data/one"},
                         {"op": "test", "path": "/metadata/labels/app", "value": "b"}]);
    let (code, status) = call(
        api.addr,
        "PATCH",
        &path,
        "application/json-patch+json",
        &failing,
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("operation 1 (test /metadata/labels/app): test failed")),
        "{status}"
    );
    let (_, stored) = call(api.addr, "GET", &path, "", &Value::Null).await;
    assert_eq!(stored["data"], patched["data"]);
    api.stop();
}
