//! RDS: one route configuration per HTTP port, a virtual host `host:port` per service with all
//! its alternative names, and the catch-all virtual host last.

use std::collections::{BTreeMap, HashSet};

use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, VirtualHost, route, route_action,
};
use sextant_model::{Service, host_matches};

use prost::Message;

use crate::{
    Encoded,
    context::Context,
    proto::{boolv, seconds, u32v},
    routes, wire,
};

/// Route configurations the proxy's HTTP listeners ask for, sorted by name.
pub fn route_configurations(ctx: &Context<'_>) -> Vec<Encoded> {
    let mut by_port: BTreeMap<u16, Vec<&Service>> = BTreeMap::new();
    for svc in ctx.services() {
        for port in svc.ports.iter().filter(|p| p.protocol.is_http()) {
            by_port.entry(port.port).or_default().push(svc);
        }
    }
    let mut out: Vec<Encoded> = by_port
        .into_iter()
        .map(|(port, services)| route_configuration(ctx, port, &services))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A route configuration for a name the proxy asked for that we do not know: empty, as Istio
/// answers, so the listener still warms.
pub fn empty(name: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_owned(),
        validate_clusters: Some(boolv(false)),
        ..Default::default()
    }
}

fn route_configuration(ctx: &Context<'_>, port: u16, services: &[&Service]) -> Encoded {
    let name = port.to_string();
    let mut buf = Vec::new();
    wire::string_field(&mut buf, 1, &name);
    // Domains already used by an earlier virtual host (Envoy rejects duplicates), by hash.
    let mut used_domains: HashSet<u64> = HashSet::with_capacity(services.len() * 5);
    let mut vhost = Vec::new();
    let mut route = Vec::new();
    let mut text = String::new();
    for svc in services {
        let vhost_name = format!("{}:{port}", svc.hostname);
        match ctx.virtual_service(&svc.hostname) {
            Some(vs) => {
                let mut domains = Vec::new();
                for_each_domain(ctx, svc, &mut text, |d| {
                    if used_domains.insert(xxhash_rust::xxh3::xxh3_64(d.as_bytes())) {
                        domains.push(d.to_owned());
                    }
                });
                if domains.is_empty() {
                    continue;
                }
                let v = VirtualHost {
                    name: vhost_name,
                    domains,
                    routes: routes::virtual_service_routes(ctx, vs, port),
                    include_request_attempt_count: true,
                    ..Default::default()
                };
                wire::message_field(&mut buf, 2, &v);
            }
            None => {
                // The common case, assembled from shared parts: see `wire`.
                vhost.clear();
                wire::string_field(&mut vhost, 1, &vhost_name);
                let mut any = false;
                for_each_domain(ctx, svc, &mut text, |d| {
                    if used_domains.insert(xxhash_rust::xxh3::xxh3_64(d.as_bytes())) {
                        wire::string_field(&mut vhost, 2, d);
                        any = true;
                    }
                });
                if !any {
                    continue;
                }
                route.clear();
                routes::default_route_bytes(ctx, &svc.hostname, port, &mut route);
                wire::bytes_field(&mut vhost, 3, &route);
                wire::varint_field(&mut vhost, 14, 1);
                wire::bytes_field(&mut buf, 2, &vhost);
            }
        }
    }
    if port == 80 {
        for v in non_registry_hosts(ctx, port, &mut used_domains) {
            wire::message_field(&mut buf, 2, &v);
        }
    }
    wire::message_field(&mut buf, 2, &catch_all(ctx));
    RouteConfiguration {
        validate_clusters: Some(boolv(false)),
        ignore_port_in_host_matching: true,
        max_direct_response_body_size_bytes: Some(u32v(1024 * 1024)),
        ..Default::default()
    }
    .encode_raw(&mut buf);
    Encoded::from_bytes(&name, buf)
}

/// Istio's alternative names: the FQDN, the short name (same namespace), `name.ns.svc`,
/// `name.ns`, and the cluster IP; `text` is scratch space.
fn for_each_domain(ctx: &Context<'_>, svc: &Service, text: &mut String, mut f: impl FnMut(&str)) {
    f(&svc.hostname);
    if svc.namespace == ctx.proxy.namespace {
        f(&svc.name);
    }
    text.clear();
    text.push_str(&svc.name);
    text.push('.');
    text.push_str(&svc.namespace);
    let short = text.len();
    text.push_str(".svc");
    f(text);
    f(&text[..short]);
    if let Some(ip) = svc.cluster_ip {
        wire::ip_text(ip, text);
        f(text);
    }
}

/// VirtualService hosts that name no service (`bookinfo.com`) get a virtual host with just that
/// domain on port 80.
fn non_registry_hosts(ctx: &Context<'_>, port: u16, used: &mut HashSet<u64>) -> Vec<VirtualHost> {
    let mut out = Vec::new();
    for vs in ctx.snapshot.mesh_virtual_services(&ctx.proxy.namespace) {
        for host in &vs.hosts {
            let resolved = ctx.resolve(host, &vs.id.namespace);
            let is_service = ctx.services().any(|s| host_matches(&resolved, &s.hostname));
            if is_service || !used.insert(xxhash_rust::xxh3::xxh3_64(resolved.as_bytes())) {
                continue;
            }
            out.push(VirtualHost {
                name: format!("{resolved}:{port}"),
                domains: vec![resolved],
                routes: routes::virtual_service_routes(ctx, vs, port),
                include_request_attempt_count: true,
                ..Default::default()
            });
        }
    }
    out
}

/// `allow_any` (to PassthroughCluster) with interception; without it there is no original
/// destination to pass through to, so unknown hosts get Istio's REGISTRY_ONLY answer.
fn catch_all(ctx: &Context<'_>) -> VirtualHost {
    let (name, action) = if ctx.bound_listeners() {
        (
            "block_all",
            route::Action::DirectResponse(DirectResponseAction {
                status: 502,
                ..Default::default()
            }),
        )
    } else {
        (
            "allow_any",
            route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                    "PassthroughCluster".to_owned(),
                )),
                timeout: Some(seconds(0)),
                ..Default::default()
            }),
        )
    };
    VirtualHost {
        name: name.to_owned(),
        domains: vec!["*".to_owned()],
        routes: vec![Route {
            name: name.to_owned(),
            r#match: Some(envoy_types::pb::envoy::config::route::v3::RouteMatch {
                path_specifier: Some(
                    envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier::Prefix(
                        "/".to_owned(),
                    ),
                ),
                ..Default::default()
            }),
            action: Some(action),
            ..Default::default()
        }],
        include_request_attempt_count: true,
        ..Default::default()
    }
}
