//! Load assignments across clusters and networks: every cluster's endpoints, `clusterLocal`
//! hosts kept in their cluster, other networks' endpoints behind their east-west gateway, and
//! locality priorities and weights from a DestinationRule.

use envoy_types::pb::envoy::config::{
    core::v3::address,
    endpoint::v3::{ClusterLoadAssignment, lb_endpoint},
};
use serde_json::{Value, json};
use sextant_compiler::compile;
use sextant_index::{Index, Object};
use sextant_model::{Locality, Proxy, Snapshot};

const CLUSTER: &str = "outbound|9080||reviews.default.svc.cluster.local";

fn object(value: Value) -> Object {
    Object::from_json(value, "default").expect("object")
}

fn reviews_in(index: &mut Index, cluster: &str, pods: &[(&str, &str, &str)]) {
    index.apply_in(
        cluster,
        object(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "reviews"},
                     "ports": [{"name": "http", "port": 9080}]}})),
    );
    let mut endpoints = Vec::new();
    for (pod, ip, locality) in pods {
        index.apply_in(
            cluster,
            object(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": "default",
                             "labels": {"app": "reviews", "istio-locality": locality,
                                        "security.istio.io/tlsMode": "istio"}},
                "spec": {"containers": [{"name": "app"}]},
                "status": {"podIP": ip}})),
        );
        endpoints.push(json!({"addresses": [ip], "conditions": {"ready": true},
            "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"}}));
    }
    index.apply_in(
        cluster,
        object(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("reviews-{}", cluster.to_lowercase()), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "reviews"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 9080}],
            "endpoints": endpoints})),
    );
}

fn two_clusters() -> Index {
    let mut index = Index::new("cluster.local", "A");
    reviews_in(
        &mut index,
        "A",
        &[
            ("r-a1", "10.0.0.1", "east.a.1"),
            ("r-a2", "10.0.0.2", "east.b.1"),
        ],
    );
    reviews_in(&mut index, "B", &[("r-b1", "10.1.0.1", "west.c.1")]);
    index
}

fn proxy(cluster: &str, network: &str, locality: &str, mtls: bool) -> Proxy {
    let mut p = Proxy::from_node_id("sidecar~10.0.0.100~client.default~default.svc.cluster.local")
        .expect("node id");
    p.cluster_id = cluster.to_owned();
    p.network = network.to_owned();
    p.locality = Locality::parse(locality);
    p.holds_certificate = mtls;
    p
}

/// `(priority, locality, weight, [address:port/weight])` of each group of the reviews CLA.
fn groups(snapshot: &Snapshot, proxy: &Proxy) -> Vec<(u32, String, u32, Vec<String>)> {
    let scope = sextant_compiler::scope(snapshot, proxy);
    let cla: ClusterLoadAssignment = compile(snapshot, &scope)
        .endpoints
        .into_iter()
        .find(|c| c.cluster_name == CLUSTER)
        .expect("reviews CLA");
    cla.endpoints
        .iter()
        .map(|g| {
            let l = g.locality.clone().unwrap_or_default();
            let eps = g
                .lb_endpoints
                .iter()
                .map(|e| {
                    let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier
                    else {
                        panic!("an endpoint");
                    };
                    let Some(address::Address::SocketAddress(sa)) =
                        ep.address.as_ref().and_then(|a| a.address.as_ref())
                    else {
                        panic!("a socket address");
                    };
                    let port = match sa.port_specifier {
                        Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p)) => p,
                        _ => 0,
                    };
                    let weight = e.load_balancing_weight.map_or(0, |w| w.value);
                    format!("{}:{port}/{weight}", sa.address)
                })
                .collect();
            (
                g.priority,
                format!("{}/{}/{}", l.region, l.zone, l.sub_zone),
                g.load_balancing_weight.map_or(0, |w| w.value),
                eps,
            )
        })
        .collect()
}

#[test]
fn a_service_spanning_clusters_has_both_clusters_endpoints() {
    let mut index = two_clusters();
    let (snapshot, _) = index.publish();
    let got = groups(&snapshot, &proxy("A", "", "east/a/1", false));
    let addresses: Vec<&String> = got.iter().flat_map(|g| &g.3).collect();
    assert_eq!(
        addresses,
        ["10.0.0.1:9080/1", "10.0.0.2:9080/1", "10.1.0.1:9080/1"]
    );
    // No outlier detection: one priority.
    assert!(got.iter().all(|g| g.0 == 0), "{got:?}");
    // Nothing depends on the proxy's cluster: proxies of both clusters share one scope.
    assert!(!snapshot.cluster_aware);
    assert_eq!(
        sextant_compiler::scope(&snapshot, &proxy("A", "", "east/a/1", false)),
        sextant_compiler::scope(&snapshot, &proxy("B", "", "east/a/1", false))
    );
}

#[test]
fn cluster_local_hosts_keep_the_proxys_own_clusters_endpoints() {
    let mut index = two_clusters();
    let mut mesh = (**index.mesh_config()).clone();
    mesh.service_settings = vec![sextant_model::ServiceSettings {
        hosts: vec!["reviews.default.svc.cluster.local".into()],
        cluster_local: true,
    }];
    index.set_mesh_config(mesh);
    let (snapshot, _) = index.publish();
    assert!(snapshot.cluster_aware);
    let from_b = groups(&snapshot, &proxy("B", "", "west/c/1", false));
    let addresses: Vec<&String> = from_b.iter().flat_map(|g| &g.3).collect();
    assert_eq!(addresses, ["10.1.0.1:9080/1"]);
    let from_a = groups(&snapshot, &proxy("A", "", "east/a/1", false));
    assert_eq!(from_a.iter().map(|g| g.3.len()).sum::<usize>(), 2);
}

#[test]
fn another_networks_endpoints_are_reached_through_its_gateway_with_mutual_tls_only() {
    let mut index = two_clusters();
    index.set_network("A", "net-a");
    index.set_network("B", "net-b");
    index.apply_in(
        "B",
        object(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "eastwest", "namespace": "istio-system",
                         "labels": {"topology.istio.io/network": "net-b"}},
            "spec": {"type": "LoadBalancer", "ports": [{"name": "tls", "port": 15443}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.9"}]}}})),
    );
    let (snapshot, _) = index.publish();
    let got = groups(&snapshot, &proxy("A", "net-a", "east/a/1", true));
    let addresses: Vec<&String> = got.iter().flat_map(|g| &g.3).collect();
    assert_eq!(
        addresses,
        ["10.0.0.1:9080/1", "10.0.0.2:9080/1", "127.0.0.9:15443/1"]
    );
    // The gateway keeps the locality of the endpoints it stands for.
    assert_eq!(got[2].1, "west/c/1");
    // Without a certificate the gateway cannot route by SNI: B's endpoint is not sent.
    let got = groups(&snapshot, &proxy("A", "net-a", "east/a/1", false));
    assert_eq!(got.iter().map(|g| g.3.len()).sum::<usize>(), 2);
    // A proxy on B's network reaches B's endpoint directly.
    let got = groups(&snapshot, &proxy("B", "net-b", "west/c/1", true));
    let addresses: Vec<&String> = got.iter().flat_map(|g| &g.3).collect();
    assert!(
        addresses.contains(&&"10.1.0.1:9080/1".to_owned()),
        "{got:?}"
    );
}

fn rule(lb: Value) -> Object {
    object(
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"host": "reviews", "trafficPolicy": {
            "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "30s"},
            "loadBalancer": lb}}}),
    )
}

#[test]
fn outlier_detection_turns_on_locality_failover_by_the_proxys_locality() {
    let mut index = two_clusters();
    index.apply(rule(json!({"simple": "ROUND_ROBIN"})));
    let (snapshot, _) = index.publish();
    assert!(snapshot.locality_aware);
    let got = groups(&snapshot, &proxy("A", "", "east/a/1", false));
    let priorities: Vec<(u32, &str)> = got.iter().map(|g| (g.0, g.1.as_str())).collect();
    // Same zone first, then the same region, then the other region.
    assert_eq!(
        priorities,
        [(0, "east/a/1"), (1, "east/b/1"), (2, "west/c/1")]
    );
    // From the west, the other way round.
    let got = groups(&snapshot, &proxy("B", "", "west/c/1", false));
    let priorities: Vec<(u32, &str)> = got.iter().map(|g| (g.0, g.1.as_str())).collect();
    assert_eq!(
        priorities,
        [(1, "east/a/1"), (1, "east/b/1"), (0, "west/c/1")]
    );
}

#[test]
fn failover_priority_labels_and_distribute_apply() {
    let mut index = two_clusters();
    index.apply(rule(json!({"localityLbSetting": {
        "failoverPriority": ["topology.istio.io/cluster"]}})));
    let (snapshot, _) = index.publish();
    let got = groups(&snapshot, &proxy("B", "", "west/c/1", false));
    let priorities: Vec<(u32, &str)> = got.iter().map(|g| (g.0, g.1.as_str())).collect();
    // Only the cluster label decides: B's endpoint first, A's (both localities) next.
    assert_eq!(
        priorities,
        [(1, "east/a/1"), (1, "east/b/1"), (0, "west/c/1")]
    );
    index.apply(rule(json!({"localityLbSetting": {"distribute": [
        {"from": "east/*", "to": {"east/a/*": 70, "west/*": 30}}]}})));
    let (snapshot, _) = index.publish();
    let got = groups(&snapshot, &proxy("A", "", "east/a/1", false));
    let weights: Vec<(&str, u32)> = got.iter().map(|g| (g.1.as_str(), g.2)).collect();
    // east/b gets nothing, so it is not sent.
    assert_eq!(weights, [("east/a/1", 70), ("west/c/1", 30)]);
    assert!(got.iter().all(|g| g.0 == 0));
}

#[test]
fn proxies_differing_in_a_failover_priority_label_share_no_load_assignment() {
    let mut index = two_clusters();
    index.apply_in(
        "B",
        object(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "r-b1", "namespace": "default",
                         "labels": {"app": "reviews", "istio-locality": "west.c.1", "tier": "gold",
                                    "security.istio.io/tlsMode": "istio"}},
            "spec": {"containers": [{"name": "app"}]},
            "status": {"podIP": "10.1.0.1"}})),
    );
    index.apply(rule(
        json!({"localityLbSetting": {"failoverPriority": ["tier"]}}),
    ));
    let (snapshot, _) = index.publish();
    let cache = std::sync::Mutex::new(sextant_compiler::ScopeCache::default());
    let west_priority = |tier: Option<&str>| {
        let mut p = proxy("A", "", "east/a/1", false);
        if let Some(t) = tier {
            p.labels.insert("tier".into(), t.into());
        }
        let scope = sextant_compiler::scope(&snapshot, &p);
        let out = sextant_compiler::compile_scope(&snapshot, &scope, None, &cache);
        let cla: ClusterLoadAssignment = out
            .endpoints
            .iter()
            .find(|e| e.name == CLUSTER)
            .expect("reviews CLA")
            .decode();
        cla.endpoints
            .iter()
            .find(|g| g.locality.as_ref().is_some_and(|l| l.region == "west"))
            .map(|g| g.priority)
    };
    // Compiled one after the other through one cache: each gets its own priorities.
    assert_eq!(west_priority(None), Some(1));
    assert_eq!(west_priority(Some("gold")), Some(0));
    assert_eq!(west_priority(None), Some(1));
}

#[test]
fn services_of_two_clusters_on_one_vip_get_one_listener_the_oldest_services() {
    let mut index = two_clusters();
    let tcp = |name: &str, created: &str| {
        object(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "tcp", "port": 3306}]}}))
    };
    // Default Service ranges overlap: B's evil has the VIP of A's (older) mysql.
    index.apply(tcp("mysql", "2020-01-01T00:00:00Z"));
    index.apply_in("B", tcp("evil", "2024-01-01T00:00:00Z"));
    let (snapshot, _) = index.publish();
    let p = proxy("A", "", "", false);
    let mut resources = compile(&snapshot, &sextant_compiler::scope(&snapshot, &p));
    resources.listeners.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = resources
        .listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    let mut unique = names.clone();
    unique.dedup();
    assert_eq!(names, unique, "listener names are unique");
    let vip = resources
        .listeners
        .iter()
        .find(|l| l.name == "10.96.0.20_3306")
        .expect("the VIP's listener");
    let configs: String = vip
        .filter_chains
        .iter()
        .flat_map(|c| &c.filters)
        .filter_map(|f| match &f.config_type {
            Some(
                envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any),
            ) => Some(String::from_utf8_lossy(&any.value).into_owned()),
            _ => None,
        })
        .collect();
    assert!(
        configs.contains("outbound|3306||mysql.default.svc.cluster.local")
            && !configs.contains("evil.default"),
        "{configs}"
    );
}
