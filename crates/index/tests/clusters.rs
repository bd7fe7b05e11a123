//! Several clusters in one index: namespace sameness, endpoints keeping their cluster, network
//! and locality, relists and removal of one cluster only, east-west gateways, and
//! `clusterLocal` hosts.

use std::net::IpAddr;

use serde_json::{Value, json};
use sextant_index::{Index, Object};
use sextant_model::{Kind, Locality, MeshConfig, ServiceSettings};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP address")
}

const HOST: &str = "reviews.default.svc.cluster.local";

fn object(value: Value) -> Object {
    Object::from_json(value, "default").expect("object")
}

fn service(name: &str, ip: &str) -> Object {
    object(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ip, "selector": {"app": name},
                 "ports": [{"name": "http", "port": 9080}]}}))
}

fn slice(name: &str, service: &str, pods: &[(&str, &str)]) -> Object {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|(pod, ip)| {
            json!({"addresses": [ip], "conditions": {"ready": true},
            "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"}})
        })
        .collect();
    object(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 9080}],
        "endpoints": endpoints}),
    )
}

fn pod(name: &str, ip: &str, node: &str, labels: Value) -> Object {
    object(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "app"}]},
        "status": {"podIP": ip}}))
}

fn node(name: &str, region: &str, zone: &str) -> Object {
    object(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "topology.kubernetes.io/region": region, "topology.kubernetes.io/zone": zone}}}))
}

fn namespace(name: &str, network: Option<&str>) -> Object {
    let labels = network.map_or(json!({}), |n| json!({"topology.istio.io/network": n}));
    object(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": labels}}))
}

/// `(address, cluster, network, locality)` of the published endpoints of `host`.
fn endpoints(index: &mut Index, host: &str) -> Vec<(String, String, String, String)> {
    let (snapshot, _) = index.publish();
    snapshot
        .endpoints(host)
        .iter()
        .map(|e| {
            (
                e.address.to_string(),
                e.cluster_id.clone(),
                e.network.clone(),
                e.locality.label(),
            )
        })
        .collect()
}

/// Cluster A (the config cluster) with reviews on one node in us-east/a, cluster B with
/// reviews on a node in us-west/b.
fn two_clusters() -> Index {
    let mut index = Index::new("cluster.local", "A");
    index.apply(node("a1", "us-east", "us-east-a"));
    index.apply(pod(
        "reviews-a",
        "10.0.0.1",
        "a1",
        json!({"app": "reviews"}),
    ));
    index.apply(service("reviews", "10.96.0.10"));
    index.apply(slice("reviews-a", "reviews", &[("reviews-a", "10.0.0.1")]));
    index.apply_in("B", node("b1", "us-west", "us-west-b"));
    index.apply_in(
        "B",
        pod("reviews-b", "10.1.0.1", "b1", json!({"app": "reviews"})),
    );
    index.apply_in("B", service("reviews", "10.200.0.10"));
    index.apply_in(
        "B",
        slice("reviews-b", "reviews", &[("reviews-b", "10.1.0.1")]),
    );
    index
}

#[test]
fn services_of_the_same_name_and_namespace_are_one_service_with_every_clusters_endpoints() {
    let mut index = two_clusters();
    assert_eq!(
        endpoints(&mut index, HOST),
        vec![
            (
                "10.0.0.1".into(),
                "A".into(),
                String::new(),
                "us-east/us-east-a/".into()
            ),
            (
                "10.1.0.1".into(),
                "B".into(),
                String::new(),
                "us-west/us-west-b/".into()
            ),
        ]
    );
    let (snapshot, _) = index.publish();
    // The config cluster's definition wins.
    let svc = &snapshot.services[HOST];
    assert_eq!(svc.cluster_ip, Some(ip("10.96.0.10")));
    assert!(snapshot.multi_cluster);
    // A service only B has is still a service, with B's definition and endpoints.
    index.apply_in("B", service("ratings", "10.200.0.11"));
    index.apply_in(
        "B",
        pod("ratings-b", "10.1.0.2", "b1", json!({"app": "ratings"})),
    );
    index.apply_in(
        "B",
        slice("ratings-b", "ratings", &[("ratings-b", "10.1.0.2")]),
    );
    let (snapshot, changes) = index.publish();
    let ratings = "ratings.default.svc.cluster.local";
    assert_eq!(
        snapshot.services[ratings].cluster_ip,
        Some(ip("10.200.0.11"))
    );
    assert!(changes.services.contains(ratings) && changes.endpoints.contains(ratings));
    assert_eq!(snapshot.endpoints(ratings)[0].cluster_id, "B");
}

#[test]
fn configuration_comes_from_the_config_cluster_only() {
    let mut index = two_clusters();
    let vs = object(
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}}),
    );
    index.apply_in("B", vs.clone());
    let (snapshot, _) = index.publish();
    assert!(snapshot.virtual_services.is_empty());
    index.apply_in("A", vs);
    let (snapshot, _) = index.publish();
    assert_eq!(snapshot.virtual_services.len(), 1);
}

#[test]
fn removing_a_cluster_removes_its_endpoints_and_services_only() {
    let mut index = two_clusters();
    index.apply_in("B", service("ratings", "10.200.0.11"));
    index.publish();
    index.remove_cluster("B");
    let (snapshot, changes) = index.publish();
    assert!(changes.endpoints.contains(HOST));
    assert!(
        changes
            .services
            .contains("ratings.default.svc.cluster.local")
    );
    assert!(
        !snapshot
            .services
            .contains_key("ratings.default.svc.cluster.local")
    );
    assert_eq!(snapshot.endpoints(HOST).len(), 1);
    assert_eq!(snapshot.endpoints(HOST)[0].cluster_id, "A");
    assert!(!snapshot.multi_cluster);
    // The config cluster cannot be removed.
    index.remove_cluster("A");
    assert_eq!(endpoints(&mut index, HOST).len(), 1);
}

#[test]
fn a_relist_replaces_that_clusters_objects_of_that_kind_only() {
    let mut index = two_clusters();
    index.publish();
    // B relists its slices: reviews-b is gone, a new one appears.
    index.reset_in(
        "B",
        Kind::EndpointSlice,
        vec![slice("reviews-b2", "reviews", &[("reviews-b", "10.1.0.9")])],
    );
    let got: Vec<String> = endpoints(&mut index, HOST)
        .into_iter()
        .map(|e| format!("{}@{}", e.0, e.1))
        .collect();
    assert_eq!(got, ["10.0.0.1@A", "10.1.0.9@B"]);
    // An empty relist of B's Services leaves A's reviews in place.
    index.reset_in("B", Kind::Service, Vec::new());
    let (snapshot, _) = index.publish();
    assert_eq!(snapshot.services[HOST].cluster_ip, Some(ip("10.96.0.10")));
    // A's relist of slices does not touch B's.
    index.reset(Kind::EndpointSlice, Vec::new());
    let got: Vec<String> = endpoints(&mut index, HOST)
        .into_iter()
        .map(|e| format!("{}@{}", e.0, e.1))
        .collect();
    assert_eq!(got, ["10.1.0.9@B"]);
}

#[test]
fn the_same_address_in_two_clusters_is_two_endpoints() {
    let mut index = two_clusters();
    index.apply_in(
        "B",
        pod("reviews-b", "10.0.0.1", "b1", json!({"app": "reviews"})),
    );
    index.apply_in(
        "B",
        slice("reviews-b", "reviews", &[("reviews-b", "10.0.0.1")]),
    );
    let got = endpoints(&mut index, HOST);
    assert_eq!(got.len(), 2, "{got:?}");
}

#[test]
fn networks_come_from_the_pod_the_system_namespace_or_the_flag() {
    let mut index = two_clusters();
    index.set_network("B", "net-flag");
    let got = endpoints(&mut index, HOST);
    assert_eq!((got[0].2.as_str(), got[1].2.as_str()), ("", "net-flag"));
    let (snapshot, _) = index.publish();
    assert!(snapshot.multi_network);
    // The system namespace's label wins over the flag.
    index.apply_in("B", namespace("istio-system", Some("net-b")));
    index.apply(namespace("istio-system", Some("net-a")));
    let got = endpoints(&mut index, HOST);
    assert_eq!((got[0].2.as_str(), got[1].2.as_str()), ("net-a", "net-b"));
    // A Pod's label wins over both.
    index.apply_in(
        "B",
        pod(
            "reviews-b",
            "10.1.0.1",
            "b1",
            json!({"app": "reviews", "topology.istio.io/network": "net-pod"}),
        ),
    );
    let got = endpoints(&mut index, HOST);
    assert_eq!(got[1].2, "net-pod");
    // Removing the namespace label falls back to the flag.
    index.delete_in("B", Kind::Namespace, "", "istio-system");
    index.apply_in(
        "B",
        pod("reviews-b", "10.1.0.1", "b1", json!({"app": "reviews"})),
    );
    let got = endpoints(&mut index, HOST);
    assert_eq!(got[1].2, "net-flag");
}

#[test]
fn localities_come_from_the_pod_then_the_node_then_the_slice() {
    let mut index = two_clusters();
    // A node relabelled moves its pods' endpoints.
    index.apply_in("B", node("b1", "eu-central", "eu-central-1"));
    let got = endpoints(&mut index, HOST);
    assert_eq!(got[1].3, "eu-central/eu-central-1/");
    // The Pod's istio-locality label wins.
    index.apply_in(
        "B",
        pod(
            "reviews-b",
            "10.1.0.1",
            "b1",
            json!({"app": "reviews", "istio-locality": "r.z.s"}),
        ),
    );
    assert_eq!(endpoints(&mut index, HOST)[1].3, "r/z/s");
    assert_eq!(Locality::parse("r/z/s").label(), "r/z/s");
}

#[test]
fn east_west_gateways_come_from_services_labelled_with_a_network() {
    let mut index = two_clusters();
    index.apply_in(
        "B",
        object(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "eastwest", "namespace": "istio-system",
                         "labels": {"topology.istio.io/network": "net-b"}},
            "spec": {"type": "LoadBalancer", "externalIPs": ["127.0.0.9"],
                     "ports": [{"name": "tls", "port": 15443}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"hostname": "x.example"}]}}})),
    );
    let (snapshot, changes) = index.publish();
    let gateways: Vec<String> = snapshot
        .network_gateways
        .iter()
        .map(|g| format!("{}/{}/{}:{}", g.network, g.cluster_id, g.address, g.port))
        .collect();
    assert_eq!(
        gateways,
        ["net-b/B/127.0.0.9:15443", "net-b/B/192.0.2.1:15443"]
    );
    assert!(snapshot.multi_network);
    // Every endpoint list may look different from another network now.
    assert!(changes.endpoints.contains(HOST));
    index.delete_in("B", Kind::Service, "istio-system", "eastwest");
    let (snapshot, _) = index.publish();
    assert!(snapshot.network_gateways.is_empty());
}

#[test]
fn a_remote_clusters_invalid_objects_are_its_own() {
    let mut index = two_clusters();
    index.apply_in(
        "B",
        object(
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "orphan", "namespace": "default"},
            "addressType": "IPv4", "endpoints": []}),
        ),
    );
    let (snapshot, _) = index.publish();
    assert!(snapshot.invalid.is_empty());
    let errors = index.cluster_errors("B");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].1[0].contains("kubernetes.io/service-name"),
        "{errors:?}"
    );
}

#[test]
fn cluster_local_hosts_follow_service_settings_and_istios_defaults() {
    let mut mesh = MeshConfig::default();
    assert!(mesh.is_cluster_local("kubernetes.default.svc.cluster.local", "cluster.local"));
    assert!(mesh.is_cluster_local("kube-dns.kube-system.svc.cluster.local", "cluster.local"));
    assert!(!mesh.is_cluster_local(HOST, "cluster.local"));
    mesh.service_settings = vec![
        ServiceSettings {
            hosts: vec!["*.default.svc.cluster.local".into()],
            cluster_local: true,
        },
        ServiceSettings {
            hosts: vec!["ratings.default.svc.cluster.local".into()],
            cluster_local: false,
        },
    ];
    assert!(mesh.is_cluster_local(HOST, "cluster.local"));
    assert!(!mesh.is_cluster_local("ratings.default.svc.cluster.local", "cluster.local"));
}

#[test]
fn a_remote_proxys_workload_is_its_own_clusters_pod() {
    let mut index = two_clusters();
    // The same Pod name in both clusters (a StatefulSet in each), different accounts.
    index.apply(pod(
        "db-0",
        "10.0.0.7",
        "a1",
        json!({"app": "db", "cluster": "a"}),
    ));
    index.apply_in(
        "B",
        pod(
            "db-0",
            "10.1.0.7",
            "b1",
            json!({"app": "db", "cluster": "b"}),
        ),
    );
    let (snapshot, _) = index.publish();
    let label = |w: Option<&std::sync::Arc<sextant_model::Workload>>| {
        w.and_then(|w| w.labels.get("cluster").cloned())
    };
    assert_eq!(
        label(snapshot.workload("default", "db-0")),
        Some("a".into())
    );
    assert_eq!(
        label(snapshot.workload_in("B", "default", "db-0")),
        Some("b".into())
    );
    assert_eq!(
        label(snapshot.workload_in("A", "default", "db-0")),
        Some("a".into())
    );
    // A Pod only B has is found for any cluster's proxy.
    assert!(snapshot.workload_in("A", "default", "reviews-b").is_some());
}

#[test]
fn locality_settings_are_applied_so_not_reported_unsupported_and_failover_wants_outlier_detection()
{
    let rule = |policy: Value| {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"host": "reviews", "trafficPolicy": policy}})
    };
    let warnings = |policy: Value| -> Vec<String> {
        let checked =
            sextant_index::check::check_istio_object(Kind::DestinationRule, &rule(policy));
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);
        checked.warnings.iter().map(ToString::to_string).collect()
    };
    let outlier = json!({"consecutive5xxErrors": 1});
    for lb in [
        json!({"distribute": [{"from": "r/*", "to": {"r/*": 100}}]}),
        json!({"failover": [{"from": "r", "to": "s"}]}),
        json!({"failoverPriority": ["topology.istio.io/network"]}),
    ] {
        let with = warnings(json!({"outlierDetection": outlier,
            "loadBalancer": {"localityLbSetting": lb}}));
        assert!(with.is_empty(), "{lb}: {with:?}");
    }
    let without = warnings(json!({"loadBalancer": {"localityLbSetting":
        {"failoverPriority": ["topology.istio.io/network"]}}}));
    assert_eq!(without.len(), 1, "{without:?}");
    assert!(
        without[0].contains("spec.trafficPolicy.loadBalancer.localityLbSetting")
            && without[0].contains("outlier detection policy must be provided for failover"),
        "{without:?}"
    );
}

#[test]
fn east_west_gateways_are_bounded_per_service_and_per_network() {
    let mut index = two_clusters();
    let gateway = |name: &str, ips: Vec<String>| {
        object(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "istio-system",
                         "labels": {"topology.istio.io/network": "net-b"}},
            "spec": {"type": "LoadBalancer", "externalIPs": ips,
                     "ports": [{"name": "tls", "port": 15443}]}}))
    };
    // One Service with 100 addresses keeps 8; ten such Services keep 32 for the network.
    for s in 0..10 {
        let ips = (0..100).map(|i| format!("10.{s}.0.{i}")).collect();
        index.apply_in("B", gateway(&format!("eastwest-{s}"), ips));
    }
    let (snapshot, _) = index.publish();
    assert_eq!(
        snapshot.network_gateways.len(),
        sextant_index::MAX_GATEWAYS_PER_NETWORK
    );
    index.reset_in("B", Kind::Service, Vec::new());
    index.apply_in(
        "B",
        gateway(
            "eastwest-0",
            (0..100).map(|i| format!("10.0.0.{i}")).collect(),
        ),
    );
    let (snapshot, _) = index.publish();
    assert_eq!(
        snapshot.network_gateways.len(),
        sextant_index::MAX_GATEWAY_ADDRESSES
    );
}
