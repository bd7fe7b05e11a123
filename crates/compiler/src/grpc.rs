//! Proxyless gRPC (node metadata `GENERATOR: grpc`): the shapes gRPC's xDS client accepts,
//! as istiod's `grpcgen` builds them.
//!
//! - LDS: an API listener per service port, named as the client dials it (`host:port`; the
//!   service's short names from the client's namespace too), whose HTTP connection manager
//!   has only the fault and router filters and takes routes from RDS `outbound|PORT||HOST`.
//! - RDS: one route configuration per service port, with the service's virtual host only;
//!   its domains carry the `:port` forms, since gRPC matches the authority it dialled. Route
//!   features gRPC refuses are left out (CORS, a retry policy without retries), and the
//!   VirtualService timeout becomes `max_stream_duration`.
//! - CDS: EDS clusters round robin, or ring hash for a consistent hash, with only
//!   `http2MaxRequests` as a circuit breaker; nothing else of a DestinationRule's policy.
//! - EDS: the load assignments sidecars get (each locality group carries a locality).

use std::collections::HashSet;

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{CircuitBreakers, Cluster, circuit_breakers, cluster},
        core::v3::{ApiVersion, ConfigSource, config_source},
        listener::v3::{ApiListener, Listener},
        route::v3::{Route, RouteConfiguration, VirtualHost, route, route_action},
    },
    extensions::filters::{
        http::{fault::v3::HttpFault, router::v3::Router},
        network::http_connection_manager::v3::{
            HttpConnectionManager, Rds, http_connection_manager,
        },
    },
};
use sextant_model::{HashAlgorithm, LbPolicy, Protocol, Service};
use sextant_resources::{Encoded, EncodedResources, Memo};

use crate::{
    context::{Context, outbound_cluster},
    eds, lds, policy,
    proto::{any, ip_socket, socket, u32v},
    routes,
};

/// The outbound part of a proxyless gRPC client. It has no inbound part.
pub(crate) fn part(ctx: &Context<'_>) -> EncodedResources {
    if !ctx.outbound() {
        return EncodedResources::default();
    }
    let mut listeners = Vec::new();
    let mut routes = Vec::new();
    let mut clusters = Vec::new();
    let mut eds_names = HashSet::new();
    for svc in ctx.services() {
        for port in svc.ports.iter().filter(|p| p.protocol != Protocol::Udp) {
            let route_name = outbound_cluster(port.port, "", &svc.hostname);
            for name in dial_names(ctx, svc) {
                let l = listener(svc, port.port, format!("{name}:{}", port.port), &route_name);
                listeners.push(Encoded::new(&l.name, &l));
            }
            let r = route_configuration(ctx, svc, port.port, route_name);
            routes.push(Encoded::new(&r.name, &r));
            let subsets = ctx
                .rule(&svc.hostname)
                .map(|dr| {
                    dr.subsets
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            for subset in std::iter::once("").chain(subsets) {
                let c = cluster(ctx, svc, port.port, subset);
                eds_names.insert(c.name.clone());
                clusters.push(Encoded::new(&c.name, &c));
            }
        }
    }
    let endpoints = eds::load_assignments(ctx, &eds_names);
    for list in [&mut listeners, &mut routes, &mut clusters] {
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list.dedup_by(|a, b| a.name == b.name);
    }
    EncodedResources {
        clusters: clusters.into(),
        endpoints: endpoints.into(),
        listeners: listeners.into(),
        routes: routes.into(),
        memo: Memo::default(),
    }
}

/// The names a client in the proxy's namespace may dial a service by (istiod expands short
/// names with the node's domain): the host name, and for a Kubernetes host name
/// `name.ns.svc.SUFFIX` also `name.ns.svc`, `name.ns` and, from the same namespace, `name`.
fn dial_names(ctx: &Context<'_>, svc: &Service) -> Vec<String> {
    let mut names = vec![svc.hostname.clone()];
    let suffix = format!(".{}.svc.{}", svc.namespace, ctx.snapshot.domain_suffix);
    if let Some(name) = svc.hostname.strip_suffix(&suffix)
        && !name.contains('.')
    {
        names.push(format!("{name}.{}.svc", svc.namespace));
        names.push(format!("{name}.{}", svc.namespace));
        if svc.namespace == ctx.proxy.namespace {
            names.push(name.to_owned());
        }
    }
    names
}

/// ADS without Sextant's usual `initial_fetch_timeout`, as istiod's grpcgen writes it.
fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(
            config_source::ConfigSourceSpecifier::Ads(Default::default()),
        ),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn listener(svc: &Service, port: u16, name: String, route_name: &str) -> Listener {
    let hcm = HttpConnectionManager {
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_name.to_owned(),
        })),
        http_filters: vec![
            lds::http_filter("envoy.filters.http.fault", &HttpFault::default()),
            lds::http_filter("envoy.filters.http.router", &Router::default()),
        ],
        ..Default::default()
    };
    Listener {
        name,
        address: Some(match svc.cluster_ip {
            Some(ip) => ip_socket(ip, u32::from(port)),
            None => socket("0.0.0.0", u32::from(port)),
        }),
        api_listener: Some(ApiListener {
            api_listener: Some(any(&hcm)),
        }),
        ..Default::default()
    }
}

fn route_configuration(
    ctx: &Context<'_>,
    svc: &Service,
    port: u16,
    name: String,
) -> RouteConfiguration {
    let mut routes = match ctx.virtual_service(&svc.hostname) {
        Some(vs) => routes::virtual_service_routes(ctx, vs, port),
        None => Vec::new(),
    };
    if routes.is_empty() {
        routes.push(routes::default_route(ctx, &svc.hostname, port));
    }
    for r in &mut routes {
        for_grpc(r);
    }
    let mut domains = Vec::new();
    for n in dial_names(ctx, svc) {
        domains.push(format!("{n}:{port}"));
        domains.push(n);
    }
    if let Some(ip) = svc.cluster_ip {
        domains.push(format!("{ip}:{port}"));
        domains.push(ip.to_string());
    }
    RouteConfiguration {
        name,
        virtual_hosts: vec![VirtualHost {
            name: format!("{}:{port}", svc.hostname),
            domains,
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Leaves out what gRPC refuses in a route (a CORS filter config NACKs the whole RDS; a
/// retry policy with no retries too) and carries the timeout as `max_stream_duration`.
fn for_grpc(r: &mut Route) {
    r.typed_per_filter_config
        .retain(|name, _| name == "envoy.filters.http.fault");
    if let Some(route::Action::Route(action)) = &mut r.action {
        if action
            .retry_policy
            .as_ref()
            .is_some_and(|p| p.num_retries.as_ref().is_none_or(|n| n.value == 0))
        {
            action.retry_policy = None;
        }
        if let Some(timeout) = action.timeout.take()
            && (timeout.seconds != 0 || timeout.nanos != 0)
        {
            action.max_stream_duration = Some(route_action::MaxStreamDuration {
                max_stream_duration: Some(timeout),
                ..Default::default()
            });
        }
    }
}

fn cluster(ctx: &Context<'_>, svc: &Service, port: u16, subset: &str) -> Cluster {
    let name = outbound_cluster(port, subset, &svc.hostname);
    let tp = policy::effective(
        ctx.rule(&svc.hostname),
        (!subset.is_empty()).then_some(subset),
        port,
    );
    let mut c = Cluster {
        name: name.clone(),
        alt_stat_name: name.clone(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: name,
        }),
        ..Default::default()
    };
    // Round robin unless the rule hashes: gRPC refuses least request and Maglev.
    if let Some(LbPolicy::ConsistentHash(hash)) =
        tp.load_balancer.as_ref().and_then(|lb| lb.policy.as_ref())
        && let HashAlgorithm::RingHash { minimum_ring_size } = hash.algorithm
    {
        c.lb_policy = cluster::LbPolicy::RingHash as i32;
        c.lb_config = Some(cluster::LbConfig::RingHashLbConfig(
            cluster::RingHashLbConfig {
                minimum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value {
                    value: minimum_ring_size,
                }),
                ..Default::default()
            },
        ));
    }
    if let Some(max) = tp
        .connection_pool
        .as_ref()
        .and_then(|p| p.http2_max_requests)
    {
        c.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![circuit_breakers::Thresholds {
                max_requests: Some(u32v(max)),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    c
}
