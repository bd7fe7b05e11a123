//! Synthetic meshes shaped like Istio's load tests, scaled as DESIGN.md's reference workloads:
//! W-M (1,000 services in 100 namespaces, 10 endpoints each, 100 VirtualServices, 100
//! DestinationRules) and W-L (10,000 services), and W-M-S: W-M with a Sidecar per namespace that
//! imports its own namespace, `istio-system` and the next two namespaces. Every service has an
//! HTTP and a gRPC port; each endpoint is a Pod labelled with one of two versions, so subsets
//! select real endpoints.

use serde_json::{Value, json};
use sextant_index::{Index, Object};
use sextant_model::Proxy;

/// The size of a generated mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Services.
    pub services: usize,
    /// Namespaces the services are spread over.
    pub namespaces: usize,
    /// Endpoints (Pods) per service.
    pub endpoints_per_service: usize,
    /// VirtualServices, one per service from the first.
    pub virtual_services: usize,
    /// DestinationRules, one per service from the first.
    pub destination_rules: usize,
    /// With `Some(n)`, a Sidecar per namespace importing its own namespace, `istio-system`
    /// and the `n` namespaces after it (`ns-(i+1)` ... `ns-(i+n)`, wrapping around).
    pub sidecar_imports: Option<usize>,
}

/// DESIGN.md's medium workload.
pub const W_M: Shape = Shape {
    services: 1_000,
    namespaces: 100,
    endpoints_per_service: 10,
    virtual_services: 100,
    destination_rules: 100,
    sidecar_imports: None,
};

/// DESIGN.md's W-M-S: W-M with a Sidecar per namespace (own, `istio-system`, two others).
pub const W_M_S: Shape = Shape {
    sidecar_imports: Some(2),
    ..W_M
};

/// DESIGN.md's large workload.
pub const W_L: Shape = Shape {
    services: 10_000,
    namespaces: 100,
    endpoints_per_service: 10,
    virtual_services: 1_000,
    destination_rules: 1_000,
    sidecar_imports: None,
};

fn namespace(shape: &Shape, i: usize) -> String {
    format!("ns-{}", i % shape.namespaces)
}

/// The address of endpoint `e` of service `s`: unique, in 10.0.0.0/8.
pub fn endpoint_ip(shape: &Shape, s: usize, e: usize) -> String {
    let n = s * shape.endpoints_per_service + e + 1;
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// Every object of the mesh as JSON manifests.
pub fn manifests(shape: &Shape) -> Vec<Value> {
    let mut out = Vec::new();
    for s in 0..shape.services {
        let ns = namespace(shape, s);
        let name = format!("svc-{s}");
        out.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "clusterIP": format!("172.16.{}.{}", (s >> 8) & 0xff, s & 0xff),
                "selector": {"app": name},
                "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}],
            },
        }));
        let mut endpoints = Vec::new();
        for e in 0..shape.endpoints_per_service {
            let pod = format!("{name}-{e}");
            let ip = endpoint_ip(shape, s, e);
            out.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns,
                             "labels": {"app": name, "version": if e % 2 == 0 { "v1" } else { "v2" }}},
                "spec": {"serviceAccountName": name, "containers": [{"name": "app", "image": "app"}]},
                "status": {"podIP": ip},
            }));
            endpoints.push(json!({
                "addresses": [ip],
                "conditions": {"ready": true},
                "zone": format!("zone-{}", e % 3),
                "targetRef": {"kind": "Pod", "name": pod, "namespace": ns},
            }));
        }
        out.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-slice"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}],
            "endpoints": endpoints,
        }));
    }
    for s in 0..shape.destination_rules.min(shape.services) {
        out.push(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": format!("svc-{s}"), "namespace": namespace(shape, s)},
            "spec": {
                "host": format!("svc-{s}"),
                "trafficPolicy": {
                    "connectionPool": {"http": {"http1MaxPendingRequests": 100}},
                    "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s"},
                },
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
            },
        }));
    }
    for s in 0..shape.virtual_services.min(shape.services) {
        out.push(virtual_service(shape, s, 90));
    }
    if let Some(n) = shape.sidecar_imports {
        for i in 0..shape.namespaces {
            let mut hosts = vec!["./*".to_owned(), "istio-system/*".to_owned()];
            hosts.extend((1..=n).map(|k| format!("ns-{}/*", (i + k) % shape.namespaces)));
            out.push(json!({
                "apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
                "metadata": {"name": "default", "namespace": format!("ns-{i}")},
                "spec": {"egress": [{"hosts": hosts}]},
            }));
        }
    }
    out
}

/// Whether a proxy in namespace `ns-proxy` imports what namespace `ns-target` defines.
pub fn imports(shape: &Shape, proxy_namespace: usize, target_namespace: usize) -> bool {
    match shape.sidecar_imports {
        None => true,
        Some(n) => (0..=n).any(|k| (proxy_namespace + k) % shape.namespaces == target_namespace),
    }
}

/// The namespace index of service `s`.
pub fn namespace_of(shape: &Shape, s: usize) -> usize {
    s % shape.namespaces
}

/// The VirtualService of service `s`, splitting `weight_v1` percent to v1.
pub fn virtual_service(shape: &Shape, s: usize, weight_v1: u32) -> Value {
    let host = format!("svc-{s}");
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": host, "namespace": namespace(shape, s)},
        "spec": {
            "hosts": [host],
            "http": [
                {
                    "name": "canary",
                    "match": [{"headers": {"x-canary": {"exact": "true"}}}],
                    "route": [{"destination": {"host": host, "subset": "v2"}}],
                },
                {
                    "name": "split",
                    "retries": {"attempts": 3, "perTryTimeout": "2s"},
                    "timeout": "10s",
                    "route": [
                        {"destination": {"host": host, "subset": "v1"}, "weight": weight_v1},
                        {"destination": {"host": host, "subset": "v2"}, "weight": 100 - weight_v1},
                    ],
                },
            ],
        },
    })
}

/// The mesh as index objects.
pub fn objects(shape: &Shape) -> Vec<Object> {
    manifests(shape)
        .into_iter()
        .map(|v| Object::from_json(v, "default").expect("generated manifests are valid"))
        .collect()
}

/// An index holding the whole mesh.
pub fn index(shape: &Shape) -> Index {
    let mut index = Index::default();
    for o in objects(shape) {
        index.apply(o);
    }
    index
}

/// The sidecar of endpoint `e` of service `s`.
pub fn sidecar(shape: &Shape, s: usize, e: usize) -> Proxy {
    let ns = namespace(shape, s);
    let id = format!(
        "sidecar~{}~svc-{s}-{e}.{ns}~{ns}.svc.cluster.local",
        endpoint_ip(shape, s, e)
    );
    Proxy::from_node_id(&id).expect("generated node ids are valid")
}
