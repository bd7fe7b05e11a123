//! Unit tests of the matcher: hand-made resources for Envoy's matching rules, and Istio's
//! bookinfo compiled for a sidecar for the provenance of routes and clusters.

use std::path::Path;

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{Address, SocketAddress, address, socket_address},
            listener::v3::{Filter, FilterChain, FilterChainMatch, Listener, filter},
            route::v3::{
                HeaderMatcher, QueryParameterMatcher, Route, RouteAction, RouteConfiguration,
                RouteMatch, VirtualHost, WeightedCluster, header_matcher, query_parameter_matcher,
                route, route_action, route_match, weighted_cluster::ClusterWeight,
            },
        },
        extensions::filters::network::{
            http_connection_manager::v3::{
                HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
            },
            tcp_proxy::v3::{TcpProxy, tcp_proxy},
        },
        r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher},
    },
    google::protobuf::{Any, BoolValue, UInt32Value},
};
use prost::Name;
use sextant_compiler::Resources;

use super::{Request, explain, routing};

fn any<M: prost::Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn socket(ip: &str, port: u32) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

fn hcm(route: &str) -> Filter {
    Filter {
        name: "envoy.filters.network.http_connection_manager".to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(any(
            &HttpConnectionManager {
                route_specifier: Some(RouteSpecifier::Rds(Rds {
                    route_config_name: route.to_owned(),
                    ..Default::default()
                })),
                ..Default::default()
            },
        ))),
    }
}

fn tcp(cluster: &str) -> Filter {
    Filter {
        name: "envoy.filters.network.tcp_proxy".to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&TcpProxy {
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_owned())),
            ..Default::default()
        }))),
    }
}

fn chain(name: &str, m: Option<FilterChainMatch>, f: Filter) -> FilterChain {
    FilterChain {
        name: name.to_owned(),
        filter_chain_match: m,
        filters: vec![f],
        ..Default::default()
    }
}

fn to(cluster: &str) -> Option<route::Action> {
    Some(route::Action::Route(RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_owned())),
        ..Default::default()
    }))
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.to_owned())),
        ..Default::default()
    }
}

fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.to_owned(),
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        routes,
        ..Default::default()
    }
}

fn route(name: &str, m: RouteMatch, cluster: &str) -> Route {
    Route {
        name: name.to_owned(),
        r#match: Some(m),
        action: to(cluster),
        ..Default::default()
    }
}

fn get(host: &str, port: u16, path: &str) -> Request {
    Request {
        host: host.to_owned(),
        port,
        path: path.to_owned(),
        method: "GET".to_owned(),
        ..Default::default()
    }
}

/// An iptables-captured sidecar: virtualOutbound, an HTTP listener for 9080 and a TCP one
/// for 10.0.0.5:3306; one virtual host per domain style.
fn captured() -> Resources {
    let http = Listener {
        name: "0.0.0.0_9080".to_owned(),
        address: socket("0.0.0.0", 9080),
        bind_to_port: Some(BoolValue { value: false }),
        filter_chains: vec![chain(
            "",
            Some(FilterChainMatch {
                transport_protocol: "raw_buffer".to_owned(),
                application_protocols: vec!["http/1.1".to_owned(), "h2c".to_owned()],
                ..Default::default()
            }),
            hcm("9080"),
        )],
        default_filter_chain: Some(chain(
            "PassthroughFilterChain",
            None,
            tcp("PassthroughCluster"),
        )),
        ..Default::default()
    };
    let db = Listener {
        name: "10.0.0.5_3306".to_owned(),
        address: socket("10.0.0.5", 3306),
        bind_to_port: Some(BoolValue { value: false }),
        filter_chains: vec![chain("", None, tcp("outbound|3306||db"))],
        ..Default::default()
    };
    let capture = Listener {
        name: "virtualOutbound".to_owned(),
        address: socket("0.0.0.0", 15001),
        use_original_dst: Some(BoolValue { value: true }),
        filter_chains: vec![chain(
            "virtualOutbound-blackhole",
            Some(FilterChainMatch {
                destination_port: Some(UInt32Value { value: 15001 }),
                ..Default::default()
            }),
            tcp("BlackHoleCluster"),
        )],
        default_filter_chain: Some(chain(
            "virtualOutbound-catchall-tcp",
            None,
            tcp("PassthroughCluster"),
        )),
        ..Default::default()
    };
    let routes = RouteConfiguration {
        name: "9080".to_owned(),
        virtual_hosts: vec![
            vhost(
                "catch-all",
                &["*"],
                vec![route("all", prefix("/"), "default")],
            ),
            vhost(
                "prefix",
                &["api.*"],
                vec![route("p", prefix("/"), "prefix")],
            ),
            vhost(
                "short-suffix",
                &["*.com"],
                vec![route("s", prefix("/"), "short")],
            ),
            vhost(
                "long-suffix",
                &["*.example.com"],
                vec![route("l", prefix("/"), "long")],
            ),
            vhost(
                "exact",
                &["www.example.com", "www.example.com:9080"],
                vec![route("e", prefix("/"), "exact")],
            ),
        ],
        ..Default::default()
    };
    Resources {
        listeners: vec![capture, http, db],
        routes: vec![routes],
        ..Default::default()
    }
}

fn cluster_of(r: &Resources, req: &Request) -> Vec<String> {
    explain(r, "test", req)
        .clusters
        .into_iter()
        .map(|c| c.name)
        .collect()
}

#[test]
fn virtual_hosts_are_chosen_exact_then_suffix_then_prefix_then_catch_all() {
    let r = captured();
    let at = |host: &str| cluster_of(&r, &get(host, 9080, "/"));
    assert_eq!(at("www.example.com"), ["exact"]);
    assert_eq!(at("WWW.Example.com:9080"), ["exact"]);
    assert_eq!(at("shop.example.com"), ["long"]);
    assert_eq!(
        at("example.com"),
        ["short"],
        "*.example.com needs one more label"
    );
    assert_eq!(at("api.internal"), ["prefix"]);
    assert_eq!(
        at("api.example.com"),
        ["long"],
        "suffix wildcards win over prefix ones"
    );
    assert_eq!(at("other"), ["default"]);
    // With the port, the exact domain is only the one listed with it.
    assert_eq!(at("shop.example.com:9080"), ["default"]);
}

#[test]
fn a_captured_connection_is_handed_to_the_listener_of_its_original_destination() {
    let r = captured();
    let e = explain(&r, "test", &get("www.example.com", 9080, "/"));
    assert_eq!(e.listener.map(|l| l.name).as_deref(), Some("0.0.0.0_9080"));
    let mut db = get("db", 3306, "/");
    db.address = "10.0.0.5".parse().ok();
    let e = explain(&r, "test", &db);
    assert_eq!(e.listener.map(|l| l.name).as_deref(), Some("10.0.0.5_3306"));
    assert_eq!(e.clusters[0].name, "outbound|3306||db");
    assert!(e.outcome.starts_with("TCP proxy"), "{}", e.outcome);
    // A port no listener has stays on virtualOutbound and passes through.
    let mut elsewhere = get("example.org", 8443, "/");
    elsewhere.address = "192.0.2.1".parse().ok();
    let e = explain(&r, "test", &elsewhere);
    assert_eq!(
        e.listener.map(|l| l.name).as_deref(),
        Some("virtualOutbound")
    );
    assert_eq!(
        e.filter_chain.map(|c| c.name).as_deref(),
        Some("virtualOutbound-catchall-tcp")
    );
    assert_eq!(e.clusters[0].name, "PassthroughCluster");
    // TLS on the HTTP port misses the raw_buffer chain and takes the default chain.
    let mut tls = get("www.example.com", 9080, "/");
    tls.sni = Some("www.example.com".to_owned());
    let e = explain(&r, "test", &tls);
    assert_eq!(
        e.filter_chain.map(|c| c.name).as_deref(),
        Some("PassthroughFilterChain")
    );
}

#[test]
fn a_bound_proxy_is_reached_on_its_bind_address_and_nothing_else_matches() {
    let l = |ip: &str| Listener {
        name: format!("{ip}_9080"),
        address: socket(ip, 9080),
        filter_chains: vec![chain("", None, hcm("9080"))],
        ..Default::default()
    };
    let mut r = captured();
    r.listeners = vec![l("127.0.0.2"), l("127.0.0.3")];
    let mut req = get("www.example.com", 9080, "/");
    req.address = "127.0.0.3".parse().ok();
    let e = explain(&r, "test", &req);
    assert_eq!(
        e.listener.map(|l| l.name).as_deref(),
        Some("127.0.0.3_9080")
    );
    req.address = "127.0.0.9".parse().ok();
    let e = explain(&r, "test", &req);
    assert!(e.listener.is_none());
    assert!(
        e.outcome.starts_with("no listener for 127.0.0.9:9080"),
        "{}",
        e.outcome
    );
}

fn header(name: &str, spec: header_matcher::HeaderMatchSpecifier, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(spec),
        invert_match: invert,
        ..Default::default()
    }
}

fn exact(v: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(v.to_owned())),
        ..Default::default()
    }
}

#[test]
#[allow(deprecated)] // Envoy still honours the deprecated specifiers; so does the matcher.
fn header_matchers_follow_envoys_rules_for_missing_inverted_and_present_headers() {
    use header_matcher::HeaderMatchSpecifier as S;
    let headers = |pairs: &[(&str, &str)]| {
        let mut req = get("h", 80, "/");
        req.headers = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        routing::header_map(&req)
    };
    let jason = header("end-user", S::StringMatch(exact("jason")), false);
    assert!(routing::header_matches(
        &jason,
        &headers(&[("End-User", "jason")])
    ));
    assert!(!routing::header_matches(
        &jason,
        &headers(&[("end-user", "Jason")])
    ));
    assert!(!routing::header_matches(&jason, &headers(&[])));
    let not_jason = header("end-user", S::StringMatch(exact("jason")), true);
    assert!(routing::header_matches(
        &not_jason,
        &headers(&[("end-user", "bob")])
    ));
    assert!(
        !routing::header_matches(&not_jason, &headers(&[])),
        "missing: no match"
    );
    let mut as_empty = not_jason.clone();
    as_empty.treat_missing_header_as_empty = true;
    assert!(routing::header_matches(&as_empty, &headers(&[])));
    let present = header("x-debug", S::PresentMatch(true), false);
    assert!(routing::header_matches(
        &present,
        &headers(&[("x-debug", "")])
    ));
    assert!(!routing::header_matches(&present, &headers(&[])));
    let absent = header("x-debug", S::PresentMatch(true), true);
    assert!(routing::header_matches(&absent, &headers(&[])));
    let pre = header("x-v", S::PrefixMatch("v1".to_owned()), false);
    assert!(routing::header_matches(&pre, &headers(&[("x-v", "v1.2")])));
    let regex = header(
        "x-v",
        S::SafeRegexMatch(RegexMatcher {
            regex: "v[0-9]".to_owned(),
            ..Default::default()
        }),
        false,
    );
    assert!(routing::header_matches(&regex, &headers(&[("x-v", "v7")])));
    assert!(
        !routing::header_matches(&regex, &headers(&[("x-v", "v77")])),
        "regexes are anchored"
    );
    let method = header(":method", S::ExactMatch("POST".to_owned()), false);
    assert!(!routing::header_matches(&method, &headers(&[])));
}

#[test]
fn routes_match_in_order_by_path_case_and_query() {
    let regex = RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::SafeRegex(RegexMatcher {
            regex: "/items/[0-9]+".to_owned(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let insensitive = RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Path("/Login".to_owned())),
        case_sensitive: Some(BoolValue { value: false }),
        ..Default::default()
    };
    let query = RouteMatch {
        query_parameters: vec![QueryParameterMatcher {
            name: "v".to_owned(),
            query_parameter_match_specifier: Some(
                query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(exact("2")),
            ),
        }],
        ..prefix("/q")
    };
    let separated = RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::PathSeparatedPrefix(
            "/api".to_owned(),
        )),
        ..Default::default()
    };
    let mut r = captured();
    r.routes[0].virtual_hosts = vec![vhost(
        "v",
        &["*"],
        vec![
            route("regex", regex, "items"),
            route("login", insensitive, "login"),
            route("query", query, "v2"),
            route("api", separated, "api"),
        ],
    )];
    let at = |path: &str| {
        explain(&r, "test", &get("h", 9080, path))
            .route
            .map(|r| r.name)
            .unwrap_or_default()
    };
    assert_eq!(at("/items/42?x=1"), "regex");
    assert_eq!(at("/items/x"), "");
    assert_eq!(at("/LOGIN"), "login");
    assert_eq!(at("/q?v=2"), "query");
    assert_eq!(at("/q?v=3"), "");
    assert_eq!(at("/api/x"), "api");
    assert_eq!(at("/apix"), "");
    let e = explain(&r, "test", &get("h", 9080, "/none"));
    assert!(e.route.is_none());
    assert!(
        e.outcome.starts_with("404: none of the 4 routes"),
        "{}",
        e.outcome
    );
}

#[test]
fn weighted_clusters_are_listed_with_their_weights() {
    let mut r = captured();
    let split = Route {
        name: "split".to_owned(),
        r#match: Some(prefix("/")),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
                WeightedCluster {
                    clusters: [("a", 80), ("b", 20)]
                        .iter()
                        .map(|(n, w)| ClusterWeight {
                            name: (*n).to_owned(),
                            weight: Some(UInt32Value { value: *w }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        })),
        ..Default::default()
    };
    r.routes[0].virtual_hosts = vec![vhost("v", &["*"], vec![split])];
    let e = explain(&r, "test", &get("h", 9080, "/"));
    let weights: Vec<(String, Option<u32>, String)> = e
        .clusters
        .into_iter()
        .map(|c| (c.name, c.weight, c.kind))
        .collect();
    assert_eq!(
        weights,
        [
            ("a".to_owned(), Some(80), "missing".to_owned()),
            ("b".to_owned(), Some(20), "missing".to_owned())
        ]
    );
}

#[test]
fn a_host_no_virtual_host_takes_is_a_404() {
    let mut r = captured();
    r.routes[0].virtual_hosts.retain(|v| v.name == "exact");
    let e = explain(&r, "test", &get("other.example.org", 9080, "/"));
    assert!(e.virtual_host.is_none());
    assert!(
        e.outcome.starts_with("404: no virtual host"),
        "{}",
        e.outcome
    );
}

/// Istio's bookinfo, its DestinationRules and the jason rule, compiled for productpage.
fn bookinfo() -> (Resources, std::sync::Arc<sextant_model::Snapshot>) {
    let samples =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/istio/samples/bookinfo");
    let mut index = sextant_index::Index::default();
    for file in [
        "platform/kube/bookinfo.yaml",
        "networking/destination-rule-all.yaml",
        "networking/virtual-service-reviews-jason-v2-v3.yaml",
        "networking/virtual-service-ratings-test-abort.yaml",
    ] {
        let text = std::fs::read_to_string(samples.join(file)).expect("bookinfo sample");
        for doc in sextant_index::manifest::parse_documents(&text).expect("yaml") {
            if let Ok(o) = sextant_index::Object::from_json(doc.value, "default") {
                index.apply(o);
            }
        }
    }
    let (snapshot, _) = index.publish();
    let proxy = sextant_model::Proxy::from_node_id(
        "sidecar~10.1.0.10~productpage-v1-1.default~default.svc.cluster.local",
    )
    .expect("node id");
    let resources = sextant_compiler::compile(&snapshot, &proxy);
    (resources, snapshot)
}

#[test]
fn routes_and_clusters_name_the_virtual_service_rule_and_destination_rule_subset() {
    let (r, _) = bookinfo();
    let mut jason = get("reviews:9080", 9080, "/reviews/0");
    jason.headers = vec![("end-user".to_owned(), "jason".to_owned())];
    let e = explain(&r, "productpage", &jason);
    let route = e.route.expect("a route");
    assert_eq!(route.virtual_service.as_deref(), Some("default/reviews"));
    assert_eq!((route.rule, route.rule_match), (Some(0), Some(0)));
    assert_eq!(
        e.clusters[0].name,
        "outbound|9080|v2|reviews.default.svc.cluster.local"
    );
    assert_eq!(
        e.clusters[0].destination_rule.as_deref(),
        Some("default/reviews")
    );
    assert_eq!(e.clusters[0].subset.as_deref(), Some("v2"));
    let e = explain(&r, "productpage", &get("reviews:9080", 9080, "/reviews/0"));
    let route = e.route.expect("a route");
    assert_eq!((route.rule, route.rule_match), (Some(1), None));
    assert_eq!(e.clusters[0].subset.as_deref(), Some("v3"));
    let mut abort = get("ratings:9080", 9080, "/ratings/0");
    abort.headers = vec![("end-user".to_owned(), "jason".to_owned())];
    let e = explain(&r, "productpage", &abort);
    let fault = e.route.and_then(|r| r.fault).expect("the abort");
    assert_eq!(
        fault.abort.as_deref(),
        Some("abort http 500 for 100% of requests")
    );
}

#[test]
fn offline_explanations_resolve_service_hosts_to_their_cluster_ip() {
    let (_, snapshot) = bookinfo();
    let vip = super::service_address(&snapshot, "reviews:9080", "default");
    assert_eq!(
        vip,
        snapshot.services["reviews.default.svc.cluster.local"].cluster_ip
    );
    assert_eq!(
        super::service_address(&snapshot, "10.0.0.1", "default"),
        "10.0.0.1".parse().ok()
    );
    assert_eq!(
        super::service_address(&snapshot, "nowhere", "default"),
        None
    );
}

#[test]
fn the_live_query_round_trips_and_is_bounded() {
    let mut req = get("reviews:9080", 9080, "/a b?x=1&y=2");
    req.headers = vec![("end-user".to_owned(), "jason".to_owned())];
    req.address = "10.0.0.5".parse().ok();
    let query = super::live::query("sidecar~1.2.3.4~a.b~b.svc.cluster.local", &req);
    let pairs: Vec<(String, String)> = query
        .split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').expect("k=v");
            (k.to_owned(), decode(v))
        })
        .collect();
    let (proxy, back) = super::live::from_query(&pairs).expect("parsed");
    assert_eq!(proxy, "sidecar~1.2.3.4~a.b~b.svc.cluster.local");
    assert_eq!(back, req);
    let mut many = pairs.clone();
    many.extend((0..=super::live::MAX_HEADERS).map(|i| ("header".to_owned(), format!("h{i}:v"))));
    assert!(super::live::from_query(&many).is_err());
    let mut long = pairs;
    long.push(("path".to_owned(), "x".repeat(super::live::MAX_QUERY_BYTES)));
    assert!(super::live::from_query(&long).is_err());
}

fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}
