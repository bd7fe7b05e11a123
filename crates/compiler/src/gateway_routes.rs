//! A gateway's route configurations (istiod's `buildGatewayHTTPRouteConfig`) and its
//! AUTO_PASSTHROUGH chains and clusters.
//!
//! Each server's hosts meet the hosts of the VirtualServices bound to its Gateway: for every
//! overlapping pair the more specific name becomes a virtual host `HOST:SERVER_PORT`, and
//! VirtualServices for the same host append their routes (catch-all routes last).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::{
    cluster::v3::{Cluster, cluster},
    listener::v3::{FilterChain, FilterChainMatch},
    route::v3::{Route, RouteConfiguration, VirtualHost, route_match, virtual_host},
};
use sextant_model::{Gateway, Protocol, Server, ServerTlsMode};
use sextant_resources::Encoded;

use crate::{
    context::{Context, outbound_cluster},
    gateway::{self, Slot},
    lds,
    proto::{ads, boolv, seconds, u32v},
    routes,
};

/// Route configurations of the router's HTTP and HTTPS servers, sorted by name.
pub(crate) fn route_configurations(ctx: &Context<'_>, slots: &[Slot<'_>]) -> Vec<Encoded> {
    let mut out = Vec::new();
    for slot in slots {
        if slot.plain {
            if slot.servers[0].1.protocol.is_http() {
                out.push(route_configuration(
                    ctx,
                    gateway::http_route_name(slot),
                    &slot.servers,
                ));
            }
            continue;
        }
        for (g, s) in slot.servers.iter().filter(|(_, s)| gateway::serves_http(s)) {
            out.push(route_configuration(
                ctx,
                gateway::https_route_name(g, s, slot.bind),
                &[(*g, *s)],
            ));
        }
    }
    let mut encoded: Vec<Encoded> = out.iter().map(|r| Encoded::new(&r.name, r)).collect();
    encoded.sort_by(|a, b| a.name.cmp(&b.name));
    encoded
}

/// Whether `pattern` covers `name`: equal, or a wildcard whose suffix `name` ends with
/// (`*.example.com` covers `a.example.com` and `*.a.example.com`; `*` covers everything).
fn covers(pattern: &str, name: &str) -> bool {
    if pattern == "*" || pattern.eq_ignore_ascii_case(name) {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
        None => false,
    }
}

/// Istio's host intersection: the more specific of two overlapping names.
fn intersect<'a>(server: &'a str, routed: &'a str) -> Option<&'a str> {
    if covers(server, routed) {
        Some(routed)
    } else if covers(routed, server) {
        Some(server)
    } else {
        None
    }
}

fn route_configuration(
    ctx: &Context<'_>,
    name: String,
    servers: &[(&Gateway, &Server)],
) -> RouteConfiguration {
    let mut vhosts: BTreeMap<String, VirtualHost> = BTreeMap::new();
    for (gateway, server) in servers {
        let port = server.port;
        let redirect = server.tls.as_ref().is_some_and(|t| t.https_redirect);
        let mut hosts_routed: std::collections::HashSet<&str> = Default::default();
        ctx.bind(Some(gateway.key()));
        for vs in gateway::bound_virtual_services(ctx, gateway) {
            let server_hosts: Vec<&str> = server
                .hosts
                .iter()
                .filter(|h| h.namespace.as_ref().is_none_or(|ns| *ns == vs.id.namespace))
                .map(|h| h.host.as_str())
                .collect();
            let mut hosts: Vec<String> = Vec::new();
            let mut seen: std::collections::HashSet<String> = Default::default();
            for written in &vs.hosts {
                let routed = ctx.resolve(written, &vs.id.namespace).to_ascii_lowercase();
                for sh in &server_hosts {
                    if let Some(h) = intersect(sh, &routed) {
                        hosts_routed.insert(sh);
                        if seen.insert(h.to_owned()) {
                            hosts.push(h.to_owned());
                        }
                    }
                }
            }
            if hosts.is_empty() {
                continue;
            }
            let routes = routes::virtual_service_routes(ctx, vs, port);
            if routes.is_empty() {
                continue;
            }
            for host in hosts {
                let vh = vhosts
                    .entry(format!("{host}:{port}"))
                    .or_insert_with(|| virtual_host(&host, port, redirect));
                vh.routes.extend(routes.iter().cloned());
            }
        }
        ctx.bind(None);
        if redirect {
            // Hosts no VirtualService routes still redirect every request.
            for h in server.dns_names() {
                if !hosts_routed.contains(&h) {
                    vhosts
                        .entry(format!("{h}:{port}"))
                        .or_insert_with(|| virtual_host(h, port, true));
                }
            }
        }
    }
    for vh in vhosts.values_mut() {
        // A catch-all of one VirtualService must not hide the routes of the next.
        let (catch_all, specific): (Vec<Route>, Vec<Route>) = std::mem::take(&mut vh.routes)
            .into_iter()
            .partition(is_catch_all);
        vh.routes = specific;
        vh.routes.extend(catch_all);
    }
    let port = servers.first().map_or(0, |(_, s)| s.port);
    let mut virtual_hosts: Vec<VirtualHost> = vhosts.into_values().collect();
    if virtual_hosts.is_empty() {
        virtual_hosts.push(VirtualHost {
            name: format!("blackhole:{port}"),
            domains: vec!["*".to_owned()],
            ..Default::default()
        });
    }
    RouteConfiguration {
        name,
        virtual_hosts,
        validate_clusters: Some(boolv(false)),
        ignore_port_in_host_matching: true,
        max_direct_response_body_size_bytes: Some(u32v(1024 * 1024)),
        ..Default::default()
    }
}

fn virtual_host(host: &str, port: u16, redirect: bool) -> VirtualHost {
    VirtualHost {
        name: format!("{host}:{port}"),
        domains: vec![host.to_owned()],
        require_tls: if redirect {
            virtual_host::TlsRequirementType::All as i32
        } else {
            0
        },
        include_request_attempt_count: true,
        ..Default::default()
    }
}

/// A route matching every request: prefix `/` or regex `.*`, nothing else.
fn is_catch_all(r: &Route) -> bool {
    let Some(m) = &r.r#match else { return false };
    let all = match &m.path_specifier {
        Some(route_match::PathSpecifier::Prefix(p)) => p == "/" || p.is_empty(),
        Some(route_match::PathSpecifier::SafeRegex(re)) => re.regex == ".*",
        _ => false,
    };
    all && m.headers.is_empty() && m.query_parameters.is_empty()
}

/// The SNI an AUTO_PASSTHROUGH chain matches, which also names its cluster.
fn sni_cluster(port: u16, subset: &str, host: &str) -> String {
    format!("outbound_.{port}_.{subset}_.{host}")
}

/// Services an AUTO_PASSTHROUGH server forwards to, as `(port, subset, host)`.
fn auto_passthrough_targets(ctx: &Context<'_>, server: &Server) -> Vec<(u16, String, String)> {
    let mut out = Vec::new();
    for svc in ctx.services() {
        if !server.hosts.iter().any(|h| {
            covers(&h.host, &svc.hostname)
                && h.namespace.as_ref().is_none_or(|ns| *ns == svc.namespace)
        }) {
            continue;
        }
        let subsets: Vec<String> = ctx
            .rule(&svc.hostname)
            .map(|dr| dr.subsets.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default();
        for port in svc.ports.iter().filter(|p| p.protocol != Protocol::Udp) {
            for subset in std::iter::once(String::new()).chain(subsets.iter().cloned()) {
                out.push((port.port, subset, svc.hostname.clone()));
            }
        }
    }
    out
}

/// AUTO_PASSTHROUGH: a chain per service port and subset, by the SNI a mesh client sends.
pub(crate) fn auto_passthrough_chains(ctx: &Context<'_>, server: &Server) -> Vec<FilterChain> {
    auto_passthrough_targets(ctx, server)
        .into_iter()
        .map(|(port, subset, host)| {
            let name = sni_cluster(port, &subset, &host);
            FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    server_names: vec![name.clone()],
                    application_protocols: [
                        "istio",
                        "istio-peer-exchange",
                        "istio-http/1.0",
                        "istio-http/1.1",
                        "istio-h2",
                    ]
                    .iter()
                    .map(|p| (*p).to_owned())
                    .collect(),
                    ..Default::default()
                }),
                filters: vec![lds::tcp_proxy(&name, vec![(name.clone(), 1)])],
                ..Default::default()
            }
        })
        .collect()
}

/// The SNI-DNAT clusters of the router's AUTO_PASSTHROUGH servers: plain TCP to the
/// service's endpoints (the client's TLS passes through), sharing its load assignment.
pub(crate) fn sni_dnat_clusters(ctx: &Context<'_>, slots: &[Slot<'_>]) -> Vec<Encoded> {
    let mut out: Vec<Encoded> = Vec::new();
    for (_, server) in slots.iter().flat_map(|s| s.servers.iter()) {
        if server.tls.as_ref().map(|t| t.mode) != Some(ServerTlsMode::AutoPassthrough) {
            continue;
        }
        for (port, subset, host) in auto_passthrough_targets(ctx, server) {
            let c = Cluster {
                name: sni_cluster(port, &subset, &host),
                cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                    cluster::DiscoveryType::Eds as i32,
                )),
                eds_cluster_config: Some(cluster::EdsClusterConfig {
                    eds_config: Some(ads()),
                    service_name: outbound_cluster(port, &subset, &host),
                }),
                connect_timeout: Some(seconds(10)),
                ..Default::default()
            };
            out.push(Encoded::new(&c.name, &c));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}
