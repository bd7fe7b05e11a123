use prost::Message;

use super::*;

fn field(n: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![((n << 3) | 2) as u8, payload.len() as u8];
    out.extend_from_slice(payload);
    out
}

/// The body a client sends for `object`, given in protobuf's own JSON mapping of the message
/// `message` (so the test builds real encodings from the vendored descriptors).
fn body(api_version: &str, kind: &str, message: &str, object: Value) -> Vec<u8> {
    let desc = message_named(message);
    let raw = from_json(desc, object).encode_to_vec();
    envelope(api_version, kind, &raw)
}

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let type_meta = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
    let mut unknown = field(1, &type_meta);
    // `raw` may be longer than one length byte holds.
    unknown.push(2 << 3 | 2);
    prost::encoding::encode_varint(raw.len() as u64, &mut unknown);
    unknown.extend_from_slice(raw);
    [b"k8s\0".to_vec(), unknown].concat()
}

#[test]
fn a_secret_decodes_to_its_json() {
    let meta = [
        field(1, b"sh.helm.release.v1.r.v1"),
        field(3, b"istio-system"),
        field(11, &[field(1, b"owner"), field(2, b"helm")].concat()),
    ]
    .concat();
    let secret = [
        field(1, &meta),
        field(2, &[field(1, b"release"), field(2, b"\x00\x01")].concat()),
        field(3, b"helm.sh/release.v1"),
    ]
    .concat();
    let v = decode(&envelope("v1", "Secret", &secret)).expect("decodes");
    assert_eq!(v["kind"], "Secret");
    assert_eq!(v["metadata"]["name"], "sh.helm.release.v1.r.v1");
    assert_eq!(v["metadata"]["labels"]["owner"], "helm");
    assert_eq!(v["data"]["release"], "AAE=");
    assert_eq!(v["type"], "helm.sh/release.v1");
}

#[test]
fn a_deployment_decodes_with_int_or_string_quantity_and_time() {
    let object = json!({
        "metadata": {"name": "web", "namespace": "", "labels": {"app": "web"},
                     "creationTimestamp": {"seconds": "1764547200"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": {"type": "1", "strVal": "25%"},
                                           "maxUnavailable": {"type": "0", "intVal": 1}}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "web", "image": "nginx",
                    "ports": [{"containerPort": 80}],
                    "resources": {"limits": {"cpu": {"string": "500m"}}},
                    "args": ["", "-v"],
                }]},
            },
        },
    });
    let v = decode(&body(
        "apps/v1",
        "Deployment",
        "k8s.io.api.apps.v1.Deployment",
        object,
    ))
    .expect("decodes");
    assert_eq!(v["apiVersion"], "apps/v1");
    assert_eq!(v["metadata"]["creationTimestamp"], "2025-12-01T00:00:00Z");
    assert!(v["metadata"].get("namespace").is_none(), "{v}");
    assert_eq!(v["spec"]["replicas"], 0, "an explicit zero is kept");
    let rolling = &v["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(
        (&rolling["maxSurge"], &rolling["maxUnavailable"]),
        (&json!("25%"), &json!(1))
    );
    let container = &v["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"]["limits"]["cpu"], "500m");
    assert_eq!(container["ports"][0]["containerPort"], 80);
    assert_eq!(
        container["args"],
        json!(["", "-v"]),
        "list elements keep empty strings"
    );
}

#[test]
fn delete_options_of_any_group_and_rbac_rules_decode() {
    let v = decode(&body(
        "v1",
        "DeleteOptions",
        "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        json!({"propagationPolicy": "Background", "gracePeriodSeconds": "0"}),
    ))
    .expect("decodes");
    assert_eq!(v["propagationPolicy"], "Background");
    assert_eq!(v["gracePeriodSeconds"], 0);
    let role = decode(&body(
        "rbac.authorization.k8s.io/v1",
        "Role",
        "k8s.io.api.rbac.v1.Role",
        json!({"metadata": {"name": "r"},
               "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
    ))
    .expect("decodes");
    assert_eq!(role["rules"][0]["apiGroups"], json!([""]));
}

#[test]
fn leases_autoscalers_and_network_policies_decode() {
    let lease = decode(&body(
        "coordination.k8s.io/v1",
        "Lease",
        "k8s.io.api.coordination.v1.Lease",
        json!({"metadata": {"name": "sextant"},
               "spec": {"holderIdentity": "sextant-0", "leaseDurationSeconds": 15,
                        "renewTime": {"seconds": "1764547200", "nanos": 123456789}}}),
    ))
    .expect("decodes");
    assert_eq!(lease["spec"]["renewTime"], "2025-12-01T00:00:00.123456Z");
    let hpa = decode(&body(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "k8s.io.api.autoscaling.v2.HorizontalPodAutoscaler",
        json!({"metadata": {"name": "sextant"},
               "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sextant"},
                        "minReplicas": 2, "maxReplicas": 5,
                        "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 80}}}]}}),
    ))
    .expect("decodes");
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"],
        json!({"type": "Utilization", "averageUtilization": 80})
    );
    let policy = decode(&body(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "k8s.io.api.networking.v1.NetworkPolicy",
        json!({"metadata": {"name": "sextant"},
               "spec": {"podSelector": {"matchLabels": {"app": "sextant"}},
                        "ingress": [{"ports": [{"protocol": "TCP", "port": {"type": "1", "strVal": "https-webhook"}}]}]}}),
    ))
    .expect("decodes");
    assert_eq!(
        policy["spec"]["ingress"][0]["ports"][0],
        json!({"protocol": "TCP", "port": "https-webhook"})
    );
}

#[test]
fn a_crd_schema_keeps_its_json_names_and_unions() {
    let object = json!({
        "metadata": {"name": "things.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "things", "kind": "Thing"},
                 "versions": [{"name": "v1", "served": true, "storage": true, "schema": {
                     "openAPIV3Schema": {"type": "object", "properties": {
                         "spec": {"type": "object", "xKubernetesPreserveUnknownFields": true,
                                  "additionalProperties": {"allows": true},
                                  "default": {"raw": "eyJhIjoxfQ=="}},
                         "list": {"type": "array", "items": {"schema": {"type": "string"}},
                                  "xKubernetesListType": "set"}}}}}]},
    });
    let v = decode(&body(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
        object,
    ))
    .expect("decodes");
    let schema = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
    assert_eq!(
        schema["spec"],
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true,
               "additionalProperties": true, "default": {"a": 1}})
    );
    assert_eq!(
        schema["list"],
        json!({"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"})
    );
    assert_eq!(v["spec"]["versions"][0]["served"], true);
}

#[test]
fn malformed_bodies_are_refused_naming_the_problem() {
    let cases: [(&[u8], &str); 3] = [
        (b"not protobuf", "k8s envelope"),
        (b"k8s\0\x0a\x05ab", "runtime.Unknown"),
        (b"k8s\0\x0a\x02\x0a\xff", "runtime.Unknown"),
    ];
    for (input, expected) in cases {
        match decode(input) {
            Err(Error::Malformed(m)) => assert!(m.contains(expected), "{m}"),
            other => panic!("{input:?}: {other:?}"),
        }
    }
    // A name that is not UTF-8, inside a Namespace.
    let bad_meta = field(1, &field(1, b"\xff\xfe"));
    match decode(&envelope("v1", "Namespace", &bad_meta)) {
        Err(Error::Malformed(m)) => assert!(m.starts_with("v1 Namespace: "), "{m}"),
        other => panic!("{other:?}"),
    }
    match decode(&envelope("example.com/v1", "Thing", b"")) {
        Err(Error::Unsupported(m)) => assert!(m.contains("\"Thing\""), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn deep_nesting_is_bounded() {
    // `not` of `not` of ... 1,000 deep (type 5, not 28): past prost's recursion limit.
    let nested = |payload: Vec<u8>, n: u64| {
        let mut out = Vec::new();
        prost::encoding::encode_varint(n << 3 | 2, &mut out);
        prost::encoding::encode_varint(payload.len() as u64, &mut out);
        out.extend_from_slice(&payload);
        out
    };
    let mut raw = nested(b"string".to_vec(), 5);
    for _ in 0..1000 {
        raw = nested(raw, 28);
    }
    // Wrapped as a CRD's validation schema: spec 2, versions 7, schema 4, openAPIV3Schema 1.
    for n in [1, 4, 7, 2] {
        raw = nested(raw, n);
    }
    match decode(&envelope(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        &raw,
    )) {
        Err(Error::Malformed(m)) => assert!(m.contains("recursion limit"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn durations_are_written_as_go_writes_them() {
    for (nanos, text) in [
        (0, "0s"),
        (999, "999ns"),
        (1_500, "1.5µs"),
        (1_500_000, "1.5ms"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (3_661_500_000_000, "1h1m1.5s"),
        (-2_000_000_000, "-2s"),
    ] {
        assert_eq!(go_duration(nanos), text);
    }
}

/// A message from protobuf's JSON mapping of it, for building test inputs.
fn from_json(desc: MessageDescriptor, v: Value) -> DynamicMessage {
    DynamicMessage::deserialize(desc, v).unwrap_or_else(|e| panic!("from JSON: {e}"))
}
