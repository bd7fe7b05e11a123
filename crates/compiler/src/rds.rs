//! RDS: one route configuration per HTTP port, a virtual host `host:port` per service with all
//! its alternative names, and the catch-all virtual host last.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, VirtualHost, route, route_action,
};
use sextant_model::{Service, host_matches};

use crate::{
    context::Context,
    proto::{boolv, seconds, u32v},
    routes,
};

/// Route configurations the proxy's HTTP listeners ask for, sorted by name.
pub fn route_configurations(ctx: &Context<'_>) -> Vec<RouteConfiguration> {
    let mut by_port: BTreeMap<u16, Vec<&Service>> = BTreeMap::new();
    for svc in ctx.services() {
        for port in svc.ports.iter().filter(|p| p.protocol.is_http()) {
            by_port.entry(port.port).or_default().push(svc);
        }
    }
    let mut out: Vec<RouteConfiguration> = by_port
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

fn route_configuration(ctx: &Context<'_>, port: u16, services: &[&Service]) -> RouteConfiguration {
    let mut virtual_hosts = Vec::new();
    let mut used_domains = BTreeSet::new();
    for svc in services {
        let routes = match ctx.virtual_service(&svc.hostname) {
            Some(vs) => routes::virtual_service_routes(ctx, vs, port),
            None => vec![routes::default_route(ctx, &svc.hostname, port)],
        };
        let domains: Vec<String> = domains(ctx, svc)
            .into_iter()
            .filter(|d| used_domains.insert(d.clone()))
            .collect();
        if domains.is_empty() {
            continue;
        }
        virtual_hosts.push(VirtualHost {
            name: format!("{}:{port}", svc.hostname),
            domains,
            routes,
            include_request_attempt_count: true,
            ..Default::default()
        });
    }
    if port == 80 {
        virtual_hosts.extend(non_registry_hosts(ctx, port, &mut used_domains));
    }
    virtual_hosts.push(catch_all(ctx));
    RouteConfiguration {
        name: port.to_string(),
        virtual_hosts,
        validate_clusters: Some(boolv(false)),
        ignore_port_in_host_matching: true,
        max_direct_response_body_size_bytes: Some(u32v(1024 * 1024)),
        ..Default::default()
    }
}

/// Istio's alternative names: the FQDN, the short name (same namespace), `name.ns.svc`,
/// `name.ns`, and the cluster IP.
fn domains(ctx: &Context<'_>, svc: &Service) -> Vec<String> {
    let mut out = vec![svc.hostname.clone()];
    if svc.namespace == ctx.proxy.namespace {
        out.push(svc.name.clone());
    }
    out.push(format!("{}.{}.svc", svc.name, svc.namespace));
    out.push(format!("{}.{}", svc.name, svc.namespace));
    if let Some(ip) = svc.cluster_ip {
        out.push(ip.to_string());
    }
    out
}

/// VirtualService hosts that name no service (`bookinfo.com`) get a virtual host with just that
/// domain on port 80.
fn non_registry_hosts(
    ctx: &Context<'_>,
    port: u16,
    used: &mut BTreeSet<String>,
) -> Vec<VirtualHost> {
    let mut out = Vec::new();
    for vs in ctx.snapshot.mesh_virtual_services(&ctx.proxy.namespace) {
        for host in &vs.hosts {
            let resolved = ctx.resolve(host, &vs.id.namespace);
            let is_service = ctx.services().any(|s| host_matches(&resolved, &s.hostname));
            if is_service || !used.insert(resolved.clone()) {
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
