//! Random valid meshes: compiling never panics, and the same input always yields byte-identical
//! output (resource versions are content hashes), whatever order the objects arrived in.

use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use serde_json::{Value, json};
use sextant_compiler::{
    Part, Rebuild, ScopeCache, compile_encoded, compile_part, compile_scope, json as render,
    recompile_part,
};
use sextant_index::{Index, Object};
use sextant_model::{Kind, Proxy};

const PORT_NAMES: &[&str] = &[
    "http", "http2", "grpc", "tcp", "tls", "mongo", "unnamed", "https",
];

fn string_match() -> impl Strategy<Value = Value> {
    prop_oneof![
        "/[a-z]{0,5}".prop_map(|s| json!({"exact": s})),
        "/[a-z]{0,5}".prop_map(|s| json!({"prefix": s})),
        Just(json!({"regex": "/v[0-9]+/.*"})),
    ]
}

fn destination(services: usize) -> impl Strategy<Value = Value> {
    (
        0..services,
        prop::option::of(prop::sample::select(vec!["v1", "v2"])),
        prop::option::of(prop::sample::select(vec![80u32, 9080, 5000])),
    )
        .prop_map(|(s, subset, port)| {
            let mut d = json!({"host": format!("svc-{s}")});
            if let Some(subset) = subset {
                d["subset"] = json!(subset);
            }
            if let Some(p) = port {
                d["port"] = json!({"number": p});
            }
            d
        })
}

fn http_route(services: usize) -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(string_match(), 0..3),
        prop::collection::vec((destination(services), 1u32..100), 1..4),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0u32..4),
    )
        .prop_map(|(uris, dests, fault, mirror, headers, retries)| {
            let mut r = json!({
                "match": uris.into_iter().map(|u| json!({"uri": u, "headers": {"x-user": {"exact": "a"}}})).collect::<Vec<_>>(),
                "route": dests.into_iter().map(|(d, w)| json!({"destination": d, "weight": w})).collect::<Vec<_>>(),
                "timeout": "3s",
            });
            if fault {
                r["fault"] = json!({"abort": {"httpStatus": 503, "percentage": {"value": 10.5}}, "delay": {"fixedDelay": "1s", "percentage": {"value": 1}}});
            }
            if mirror {
                r["mirror"] = json!({"host": "svc-0"});
                r["mirrorPercentage"] = json!({"value": 50});
            }
            if headers {
                r["headers"] = json!({"request": {"set": {"x-a": "1"}, "remove": ["x-b"]}, "response": {"add": {"x-c": "2"}}});
                r["corsPolicy"] = json!({"allowOrigins": [{"exact": "https://a"}], "allowMethods": ["GET"], "maxAge": "10s"});
            }
            if let Some(a) = retries {
                r["retries"] = json!({"attempts": a, "retryOn": if a > 0 { "5xx,503" } else { "" }});
                if a == 0 {
                    r["retries"] = json!({"attempts": 0});
                }
            }
            r
        })
}

fn traffic_policy() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"loadBalancer": {"simple": "ROUND_ROBIN"}})),
        Just(json!({"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}})),
        Just(
            json!({"loadBalancer": {"consistentHash": {"useSourceIp": true, "maglev": {"tableSize": 1009}}}})
        ),
        Just(
            json!({"connectionPool": {"tcp": {"maxConnections": 10}, "http": {"http2MaxRequests": 5, "idleTimeout": "5s"}}})
        ),
        Just(json!({"outlierDetection": {"consecutive5xxErrors": 3, "interval": "5s"}})),
        Just(json!({"tls": {"mode": "ISTIO_MUTUAL"}})),
        Just(json!({"tls": {"mode": "SIMPLE", "sni": "x.example.com"}})),
        Just(
            json!({"portLevelSettings": [{"port": {"number": 9080}, "loadBalancer": {"simple": "RANDOM"}}]})
        ),
    ]
}

#[derive(Debug, Clone)]
struct Mesh {
    manifests: Vec<Value>,
    proxy: String,
    meta: Vec<(String, String)>,
}

fn mesh() -> impl Strategy<Value = Mesh> {
    (1usize..6).prop_flat_map(|services| {
        (
            prop::collection::vec((prop::sample::select(PORT_NAMES), prop::sample::select(vec![80u16, 9080, 5000, 3306])), services),
            prop::collection::vec(0usize..4, services),
            prop::collection::vec(prop::collection::vec(http_route(services), 1..4), 0..3),
            prop::collection::vec(prop::option::of(traffic_policy()), services),
            0..services,
            prop::sample::select(vec!["REDIRECT", "NONE"]),
            any::<bool>(),
            (prop::collection::vec(any::<bool>(), 3), prop::option::of(prop::sample::select(vec![80u16, 9080]))),
        )
            .prop_map(move |(ports, endpoint_counts, vss, policies, me, interception, istio, (literal, alias_port))| {
                let mut manifests = Vec::new();
                for s in 0..services {
                    let (name, port) = ports[s];
                    let port_name = if name == "unnamed" { String::new() } else { format!("{name}-p") };
                    manifests.push(json!({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": format!("svc-{s}"), "namespace": "default"},
                        "spec": {"clusterIP": format!("10.96.0.{}", s + 1), "selector": {"app": format!("svc-{s}")},
                                 "ports": [{"name": port_name, "port": port}]}}));
                    let mut eps = Vec::new();
                    for e in 0..endpoint_counts[s] {
                        let pod = format!("svc-{s}-{e}");
                        manifests.push(json!({"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": pod, "namespace": "default",
                                         "labels": {"app": format!("svc-{s}"), "version": if e % 2 == 0 { "v1" } else { "v2" }}},
                            "spec": {"containers": [{"name": "c", "image": "i"}], "serviceAccountName": "sa"},
                            "status": {"podIP": format!("10.1.{s}.{e}")}}));
                        eps.push(json!({"addresses": [format!("10.1.{s}.{e}")], "zone": format!("z{}", e % 2),
                                        "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"}}));
                    }
                    manifests.push(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": format!("svc-{s}-x"), "namespace": "default",
                                     "labels": {"kubernetes.io/service-name": format!("svc-{s}")}},
                        "addressType": "IPv4", "ports": [{"name": port_name, "port": port}], "endpoints": eps}));
                    if let Some(policy) = &policies[s] {
                        manifests.push(json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                            "metadata": {"name": format!("svc-{s}"), "namespace": "default"},
                            "spec": {"host": format!("svc-{s}"), "trafficPolicy": policy,
                                     "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}}));
                    }
                }
                // An ExternalName alias of svc-0, with or without a port.
                let alias_ports: Vec<Value> = alias_port.iter().map(|p| json!({"name": "http", "port": p})).collect();
                manifests.push(json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "alias-0", "namespace": "default"},
                    "spec": {"type": "ExternalName", "externalName": "svc-0.default.svc.cluster.local", "ports": alias_ports}}));
                for (i, http) in vss.into_iter().enumerate() {
                    // Some VirtualServices also name a literal host (`svc-N.default` is no
                    // short name) or the alias, which claim their domains first.
                    let mut hosts = vec![format!("svc-{}", i % services)];
                    if literal[i] {
                        hosts.push(format!("svc-{}.default", (i + 1) % services));
                        hosts.push("alias-0".to_owned());
                    }
                    manifests.push(json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                        "metadata": {"name": format!("vs-{i}"), "namespace": "default"},
                        "spec": {"hosts": hosts, "http": http}}));
                }
                let mut meta = vec![("INTERCEPTION_MODE".to_owned(), interception.to_owned())];
                if istio {
                    meta.push(("ISTIO_VERSION".to_owned(), "1.28".to_owned()));
                }
                Mesh {
                    manifests,
                    proxy: format!("sidecar~10.1.{me}.0~svc-{me}-0.default~default.svc.cluster.local"),
                    meta,
                }
            })
    })
}

fn build(manifests: impl Iterator<Item = Value>) -> Index {
    let mut index = Index::default();
    for m in manifests {
        index.apply(Object::from_json(m, "default").expect("generated objects have known kinds"));
    }
    index
}

fn proxy_of(mesh: &Mesh) -> Proxy {
    let mut proxy = Proxy::from_node_id(&mesh.proxy).expect("valid node id");
    for (k, v) in &mesh.meta {
        proxy.apply_metadata(k, v);
    }
    proxy
}

/// The slice with its last endpoint dropped.
fn trimmed(slice: &Value) -> Value {
    let mut s = slice.clone();
    if let Some(eps) = s["endpoints"].as_array_mut() {
        eps.pop();
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn rebuilding_only_what_changed_equals_compiling_anew(mesh in mesh()) {
        let is_vs = |m: &Value| m["kind"] == "VirtualService";
        let is_slice = |m: &Value| m["kind"] == "EndpointSlice";
        let mut index = build(
            mesh.manifests
                .iter()
                .filter(|m| !is_vs(m))
                .map(|m| if is_slice(m) { trimmed(m) } else { m.clone() }),
        );
        let (before, _) = index.publish();
        let proxy = proxy_of(&mesh);
        let scope = sextant_compiler::scope(&before, &proxy);
        let old = compile_part(&before, &scope, Part::Outbound);
        for m in mesh.manifests.iter().filter(|m| is_vs(m) || is_slice(m)) {
            index.apply(Object::from_json(m.clone(), "default").expect("known kind"));
        }
        let (after, changes) = index.publish();
        // Scopes are keyed by the labels configuration reads; a new key is compiled anew.
        prop_assume!(sextant_compiler::scope(&after, &proxy) == scope);
        prop_assert!(changes.services.is_empty());
        let rebuild = Rebuild {
            endpoints: changes.endpoints.clone(),
            routing: !changes.configs.is_empty(),
            virtual_service_hosts: changes.virtual_service_hosts.clone(),
        };
        let rebuilt = recompile_part(&after, &scope, Part::Outbound, &old, &rebuild);
        prop_assert_eq!(&rebuilt, &compile_part(&after, &scope, Part::Outbound));
        // Then every other VirtualService removed, and put back: rebuilt from the rebuilt
        // part each time (its memo says where each virtual host came from).
        let mut previous = rebuilt;
        let removed: Vec<&Value> = mesh.manifests.iter().filter(|m| is_vs(m)).step_by(2).collect();
        for restore in [false, true] {
            for m in &removed {
                let (ns, name) = (m["metadata"]["namespace"].as_str(), m["metadata"]["name"].as_str());
                if restore {
                    index.apply(Object::from_json((*m).clone(), "default").expect("known kind"));
                } else {
                    index.delete(Kind::VirtualService, ns.unwrap_or("default"), name.expect("named"));
                }
            }
            let (next, changes) = index.publish();
            prop_assume!(sextant_compiler::scope(&next, &proxy) == scope);
            let rebuild = Rebuild {
                routing: !changes.configs.is_empty(),
                virtual_service_hosts: changes.virtual_service_hosts.clone(),
                ..Rebuild::default()
            };
            let cache = Mutex::new(ScopeCache::default());
            let rebuilt = compile_scope(&next, &scope, Some((&previous, &rebuild)), &cache);
            prop_assert_eq!(&rebuilt, &compile_part(&next, &scope, Part::Outbound));
            previous = rebuilt;
        }
    }

    #[test]
    fn scopes_share_clusters_only_when_they_depend_on_the_same_rules(mesh in mesh()) {
        let mut index = build(mesh.manifests.iter().cloned());
        // A rule local to one namespace: its proxies must not share the others' clusters.
        let local = json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "local", "namespace": "elsewhere"},
            "spec": {"host": "svc-0.default.svc.cluster.local",
                     "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}});
        index.apply(Object::from_json(local, "default").expect("known kind"));
        let (snapshot, _) = index.publish();
        let here = sextant_compiler::scope(&snapshot, &proxy_of(&mesh));
        let in_namespace = |ns: &str| Proxy { namespace: ns.to_owned(), ..here.clone() };
        let cache = Mutex::new(ScopeCache::default());
        for p in [&here, &in_namespace("elsewhere"), &in_namespace("third"), &here] {
            prop_assert_eq!(
                compile_scope(&snapshot, p, None, &cache),
                compile_part(&snapshot, p, Part::Outbound)
            );
        }
    }

    #[test]
    fn compiling_is_total_and_deterministic(mesh in mesh()) {
        let proxy = proxy_of(&mesh);
        let (forward, _) = build(mesh.manifests.iter().cloned()).publish();
        let (reverse, _) = build(mesh.manifests.iter().rev().cloned()).publish();
        let a = compile_encoded(&forward, &proxy);
        let b = compile_encoded(&forward, &proxy);
        let c = compile_encoded(&reverse, &proxy);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(&a, &c);
        // The shared outbound part of the proxy's scope plus its own inbound part is the whole.
        let scope = sextant_compiler::scope(&forward, &proxy);
        let outbound = compile_part(&forward, &scope, Part::Outbound);
        let inbound = compile_part(&forward, &proxy, Part::Inbound);
        prop_assert_eq!(&outbound.merge(&inbound), &a);
        // Streams chain the two parts: no resource may be in both.
        let names = |r: &sextant_resources::EncodedResources| -> Vec<String> {
            [&r.clusters, &r.endpoints, &r.listeners, &r.routes]
                .iter()
                .flat_map(|l| l.iter().map(|e| e.name.clone()))
                .collect()
        };
        let shared: std::collections::BTreeSet<String> = names(&outbound).into_iter().collect();
        for own in names(&inbound) {
            prop_assert!(!shared.contains(&own), "{} is in both parts", own);
        }
        // Every resource decodes and renders.
        let resources = sextant_compiler::compile(&forward, &proxy);
        let rendered = render::resources(&resources);
        prop_assert!(rendered["clusters"].as_array().is_some_and(|c| !c.is_empty()));
    }
}

#[test]
fn scopes_share_lists_and_identical_parts_and_keep_content() {
    let mut index = build(
        [
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "a", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "http", "port": 80}]}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}),
        ]
        .into_iter(),
    );
    let (snapshot, _) = index.publish();
    let here = Proxy::from_node_id("sidecar~10.0.0.1~p.default~default.svc.cluster.local")
        .expect("node id");
    let there =
        Proxy::from_node_id("sidecar~10.0.0.2~q.other~other.svc.cluster.local").expect("node id");
    let cache = Mutex::new(ScopeCache::default());
    let a = compile_scope(&snapshot, &here, None, &cache);
    let b = compile_scope(&snapshot, &there, None, &cache);
    assert_eq!(a, compile_part(&snapshot, &here, Part::Outbound));
    assert_eq!(b, compile_part(&snapshot, &there, Part::Outbound));
    assert!(
        Arc::ptr_eq(&a.clusters, &b.clusters),
        "one list for both scopes"
    );
    // Route configurations differ (short names in the service's own namespace), but the parts
    // they have in common (everything after the virtual host of `a`) are one copy.
    assert_ne!(a.routes[0].body, b.routes[0].body);
    let tail = |r: &sextant_resources::EncodedResources| {
        r.routes[0].body.chunks().last().expect("parts").as_ptr()
    };
    assert_eq!(tail(&a), tail(&b));
}

#[test]
fn istio_mutual_peers_are_named_in_the_configured_trust_domain() {
    let manifests = [
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "a", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.1", "selector": {"app": "a"},
                     "ports": [{"name": "http", "port": 80}]}}),
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a-0", "namespace": "default", "labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": "i"}], "serviceAccountName": "reader"},
            "status": {"podIP": "10.1.0.1"}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "a-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "a"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 80}],
            "endpoints": [{"addresses": ["10.1.0.1"],
                           "targetRef": {"kind": "Pod", "name": "a-0", "namespace": "default"}}]}),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "a", "namespace": "default"},
            "spec": {"host": "a", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}}),
    ];
    let mut index = Index::new("cluster.local", "Kubernetes").with_trust_domain("example.org");
    for m in manifests {
        index.apply(Object::from_json(m, "default").expect("known kind"));
    }
    let (snapshot, _) = index.publish();
    let proxy = Proxy::from_node_id("sidecar~10.0.0.1~p.default~default.svc.cluster.local")
        .expect("node id");
    let rendered = render::resources(&sextant_compiler::compile(&snapshot, &proxy)).to_string();
    assert!(
        rendered.contains("spiffe://example.org/ns/default/sa/reader"),
        "{rendered}"
    );
    assert!(!rendered.contains("spiffe://cluster.local/"));
}
