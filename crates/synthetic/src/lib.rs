//! Synthetic meshes shaped like Istio's load tests, scaled as DESIGN.md's reference workloads:
//! W-M (1,000 services in 100 namespaces, 10 endpoints each, 100 VirtualServices, 100
//! DestinationRules) and W-L (10,000 services), and W-M-S and W-L-S: W-M and W-L with a Sidecar
//! per namespace that imports its own namespace, `istio-system` and the next two namespaces.
//! Every service has an HTTP and a gRPC port; each endpoint is a Pod labelled with one of two
//! versions, so subsets select real endpoints. Several clusters of a mesh (issue 16) share its
//! services: cluster `k` has the same Services with its own Pods and endpoint addresses
//! ([`cluster_workloads`]).

use serde_json::{Value, json};
use sextant_index::{Index, Object};
use sextant_model::{Kind, Proxy};

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

/// W-L with a Sidecar per namespace, as W-M-S is W-M with one: a proxy sees 400 of the 10,000
/// services, so 5,000 proxies can connect on one machine (full-mesh W-L sends each about 29 MB).
pub const W_L_S: Shape = Shape {
    sidecar_imports: Some(2),
    ..W_L
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
    let mut out = cluster_workloads(shape, 0);
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

/// The id of cluster `k` of a multi-cluster mesh: cluster 0 is the config cluster
/// (`Kubernetes`, the index's default), cluster `k > 0` is `cluster-k`.
pub fn cluster_id(k: usize) -> String {
    if k == 0 {
        "Kubernetes".to_owned()
    } else {
        format!("cluster-{k}")
    }
}

/// The address of endpoint `e` of service `s` in cluster `k`: cluster 0's is [`endpoint_ip`],
/// cluster `k`'s is offset by `k << 20` (unique for up to 16 clusters of up to a million
/// endpoints each).
pub fn cluster_endpoint_ip(shape: &Shape, k: usize, s: usize, e: usize) -> String {
    let n = s * shape.endpoints_per_service + e + 1 + (k << 20);
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// The name of the Pod behind endpoint `e` of service `s` in cluster `k`.
fn pod_name(k: usize, s: usize, e: usize) -> String {
    if k == 0 {
        format!("svc-{s}-{e}")
    } else {
        format!("svc-{s}-{e}-c{k}")
    }
}

/// Cluster `k`'s Services, Pods and EndpointSlices: every cluster has the same services (same
/// names and namespaces, so each service spans every cluster), each with its own Pods and
/// endpoint addresses. Cluster 0's are W-M's own.
pub fn cluster_workloads(shape: &Shape, k: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for s in 0..shape.services {
        let ns = namespace(shape, s);
        let name = format!("svc-{s}");
        out.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "clusterIP": format!("172.{}.{}.{}", 16 + k, (s >> 8) & 0xff, s & 0xff),
                "selector": {"app": name},
                "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}],
            },
        }));
        for e in 0..shape.endpoints_per_service {
            out.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name(k, s, e), "namespace": ns,
                             "labels": {"app": name, "version": if e % 2 == 0 { "v1" } else { "v2" }}},
                "spec": {"serviceAccountName": name, "containers": [{"name": "app", "image": "app"}]},
                "status": {"podIP": cluster_endpoint_ip(shape, k, s, e)},
            }));
        }
        out.push(endpoint_slice(shape, k, s, shape.endpoints_per_service));
    }
    out
}

/// The EndpointSlice of service `s` in cluster `k` with its first `endpoints` endpoints.
pub fn endpoint_slice(shape: &Shape, k: usize, s: usize, endpoints: usize) -> Value {
    let ns = namespace(shape, s);
    let name = format!("svc-{s}");
    let endpoints: Vec<Value> = (0..endpoints)
        .map(|e| {
            json!({
                "addresses": [cluster_endpoint_ip(shape, k, s, e)],
                "conditions": {"ready": true},
                "zone": format!("zone-{}", e % 3),
                "targetRef": {"kind": "Pod", "name": pod_name(k, s, e), "namespace": ns},
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-slice"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}],
        "endpoints": endpoints,
    })
}

/// Cluster `k`'s share of a multi-cluster mesh as index objects: all of the mesh for the config
/// cluster (`k == 0`), [`cluster_workloads`] for the others.
pub fn cluster_objects(shape: &Shape, k: usize) -> Vec<Object> {
    let manifests = if k == 0 {
        manifests(shape)
    } else {
        cluster_workloads(shape, k)
    };
    manifests
        .into_iter()
        .map(|v| Object::from_json(v, "default").expect("generated manifests are valid"))
        .collect()
}

/// An index holding `clusters` clusters of the mesh: the config cluster's objects applied, each
/// remote cluster's listed in (`reset_in` per kind, as its watches do).
pub fn multicluster_index(shape: &Shape, clusters: usize) -> Index {
    let mut index = index(shape);
    for k in 1..clusters {
        join(&mut index, shape, k);
    }
    index
}

/// Lists remote cluster `k`'s Services, Pods and EndpointSlices into `index`.
pub fn join(index: &mut Index, shape: &Shape, k: usize) {
    let id = cluster_id(k);
    let mut objects = cluster_objects(shape, k);
    for kind in [Kind::Service, Kind::Pod, Kind::EndpointSlice] {
        let (these, rest) = objects.into_iter().partition(|o| o.kind() == kind);
        objects = rest;
        index.reset_in(&id, kind, these);
    }
}

/// The sidecar of endpoint `e` of service `s` in cluster `k` (its node's `CLUSTER_ID`).
pub fn sidecar_in(shape: &Shape, k: usize, s: usize, e: usize) -> Proxy {
    let ns = namespace(shape, s);
    let id = format!(
        "sidecar~{}~{}.{ns}~{ns}.svc.cluster.local",
        cluster_endpoint_ip(shape, k, s, e),
        pod_name(k, s, e)
    );
    let mut proxy = Proxy::from_node_id(&id).expect("generated node ids are valid");
    proxy.cluster_id = cluster_id(k);
    proxy
}
