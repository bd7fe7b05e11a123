//! LDS. With iptables interception: `virtualOutbound` (15001), `virtualInbound` (15006),
//! `0.0.0.0_PORT` for HTTP ports (RDS `PORT`) and `VIP_PORT` for TCP ports. Without
//! interception (`INTERCEPTION_MODE: NONE`): real listeners `BIND_PORT` per service port and
//! inbound listeners on the workload's address.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::{
    config::{
        core::v3::TrafficDirection,
        listener::v3::{
            Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter,
            listener_filter,
        },
    },
    extensions::filters::{
        listener::{
            http_inspector::v3::HttpInspector, original_dst::v3::OriginalDst,
            tls_inspector::v3::TlsInspector,
        },
        network::{
            http_connection_manager::v3::{HttpFilter, http_filter},
            tcp_proxy::v3::{TcpProxy, tcp_proxy},
        },
    },
    r#type::v3::{HashPolicy, hash_policy},
};
use sextant_model::{
    Interception, L4Match, Protocol, Service, ServicePort, TcpRoute, WeightedDestination,
};

use crate::{
    context::{Context, inbound_cluster, outbound_cluster},
    egress,
    hcm::{access_log::AccessLogs, inbound_hcm, outbound_hcm},
    inbound::{self, Accept},
    policy,
    proto::{any, boolv, ip_socket, socket, u32v},
};

/// Istio's outbound capture port.
pub const VIRTUAL_OUTBOUND_PORT: u32 = 15001;
/// Istio's inbound capture port.
pub const VIRTUAL_INBOUND_PORT: u32 = 15006;

/// Every listener of the proxy, sorted by name.
pub fn listeners(ctx: &Context<'_>) -> Vec<Listener> {
    if ctx.is_router() {
        return if ctx.outbound() {
            crate::gateway::listeners(ctx, &crate::gateway::merge(ctx))
        } else {
            Vec::new()
        };
    }
    let mut out = if ctx.bound_listeners() {
        bound(ctx)
    } else {
        intercepted(ctx)
    };
    out.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(logs) = AccessLogs::of(&ctx.snapshot.mesh_config) {
        logs.add_to(&mut out);
    }
    out
}

pub(crate) fn network_filter<M: prost::Message + prost::Name>(name: &str, config: &M) -> Filter {
    Filter {
        name: name.to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(any(config))),
    }
}

pub(crate) fn listener_filter<M: prost::Message + prost::Name>(
    name: &str,
    config: &M,
) -> ListenerFilter {
    ListenerFilter {
        name: name.to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(config))),
        ..Default::default()
    }
}

pub(crate) fn http_filter<M: prost::Message + prost::Name>(name: &str, config: &M) -> HttpFilter {
    HttpFilter {
        name: name.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(config))),
        ..Default::default()
    }
}

/// A TCP proxy to one cluster or several weighted ones; with `source_ip`, connections are
/// hashed by their source address (for a consistent-hash cluster).
fn tcp_proxy_to(stat_prefix: &str, dests: Vec<(String, u32)>, source_ip: bool) -> Filter {
    let specifier = if let [(cluster, _)] = dests.as_slice() {
        tcp_proxy::ClusterSpecifier::Cluster(cluster.clone())
    } else {
        tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: dests
                .into_iter()
                .map(
                    |(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                        name,
                        weight,
                        ..Default::default()
                    },
                )
                .collect(),
        })
    };
    let hash_policy = if source_ip {
        vec![HashPolicy {
            policy_specifier: Some(hash_policy::PolicySpecifier::SourceIp(
                hash_policy::SourceIp {},
            )),
        }]
    } else {
        Vec::new()
    };
    let config = TcpProxy {
        stat_prefix: stat_prefix.to_owned(),
        cluster_specifier: Some(specifier),
        hash_policy,
        ..Default::default()
    };
    network_filter("envoy.filters.network.tcp_proxy", &config)
}

/// A TCP proxy to `dests` (cluster, weight).
pub(crate) fn tcp_proxy(stat_prefix: &str, dests: Vec<(String, u32)>) -> Filter {
    tcp_proxy_to(stat_prefix, dests, false)
}

fn passthrough_chain(name: &str, cluster: &str) -> FilterChain {
    FilterChain {
        name: name.to_owned(),
        filters: vec![tcp_proxy_to(cluster, vec![(cluster.to_owned(), 1)], false)],
        ..Default::default()
    }
}

fn intercepted(ctx: &Context<'_>) -> Vec<Listener> {
    let mut out = Vec::new();
    if ctx.inbound() {
        out.push(virtual_inbound(ctx));
    }
    if !ctx.outbound() {
        return out;
    }
    out.push(virtual_outbound(ctx));
    if ctx.proxy.interception == Interception::Tproxy {
        // TPROXY keeps the original addresses on the socket: the capture listeners must be
        // transparent (Istio's `buildVirtualOutboundListener`, `buildVirtualInboundListener`).
        for l in &mut out {
            l.transparent = Some(boolv(true));
        }
    }
    let mut http_ports = BTreeSet::new();
    // TCP listeners by VIP and port, with the service that claims each: services of several
    // clusters (or ServiceEntries) can share a VIP, and the oldest service wins, as in
    // istiod's listener conflict resolution.
    let mut tcp: Vec<((Option<&str>, &str), Listener)> = Vec::new();
    for svc in ctx.services() {
        for port in ctx.ports_of(svc) {
            if port.protocol.is_http() {
                if http_ports.insert(port.port) {
                    out.push(Listener {
                        name: format!("0.0.0.0_{}", port.port),
                        address: Some(socket("0.0.0.0", u32::from(port.port))),
                        bind_to_port: Some(boolv(false)),
                        traffic_direction: TrafficDirection::Outbound as i32,
                        listener_filters: vec![
                            listener_filter(
                                "envoy.filters.listener.tls_inspector",
                                &TlsInspector::default(),
                            ),
                            listener_filter(
                                "envoy.filters.listener.http_inspector",
                                &HttpInspector {},
                            ),
                        ],
                        filter_chains: vec![FilterChain {
                            filter_chain_match: Some(FilterChainMatch {
                                transport_protocol: "raw_buffer".to_owned(),
                                application_protocols: vec![
                                    "http/1.1".to_owned(),
                                    "h2c".to_owned(),
                                ],
                                ..Default::default()
                            }),
                            filters: vec![outbound_hcm(port.port)],
                            ..Default::default()
                        }],
                        default_filter_chain: Some(passthrough_chain(
                            "PassthroughFilterChain",
                            egress::catch_all_cluster(ctx),
                        )),
                        ..Default::default()
                    });
                }
            } else if port.protocol != Protocol::Udp
                && let Some(vip) = svc.cluster_ip
            {
                let chains = tcp_chains(ctx, svc, port);
                let needs_sni = chains.iter().any(|c| {
                    c.filter_chain_match
                        .as_ref()
                        .is_some_and(|m| !m.server_names.is_empty())
                });
                let claim = (svc.creation_timestamp.as_deref(), svc.hostname.as_str());
                tcp.push((
                    claim,
                    Listener {
                        name: format!("{vip}_{}", port.port),
                        address: Some(ip_socket(vip, u32::from(port.port))),
                        bind_to_port: Some(boolv(false)),
                        traffic_direction: TrafficDirection::Outbound as i32,
                        listener_filters: if needs_sni {
                            vec![listener_filter(
                                "envoy.filters.listener.tls_inspector",
                                &TlsInspector::default(),
                            )]
                        } else {
                            Vec::new()
                        },
                        filter_chains: chains,
                        default_filter_chain: Some(passthrough_chain(
                            "PassthroughFilterChain",
                            egress::catch_all_cluster(ctx),
                        )),
                        ..Default::default()
                    },
                ));
            }
        }
    }
    tcp.sort_by(|(a, la), (b, lb)| la.name.cmp(&lb.name).then_with(|| a.cmp(b)));
    tcp.dedup_by(|(_, later), (_, first)| later.name == first.name);
    out.extend(tcp.into_iter().map(|(_, l)| l));
    out.extend(egress::port_listeners(ctx, &http_ports));
    out
}

/// Filter chains of a TCP or TLS service port: one per applicable TLS/TCP rule of its
/// VirtualService, else a tcp_proxy to the service. A destination whose DestinationRule hashes
/// by source IP gets the TCP proxy's source-IP hash policy; with several destinations, Istio
/// asks only the first destination's rule, at its top level.
fn tcp_chains(ctx: &Context<'_>, svc: &Service, port: &ServicePort) -> Vec<FilterChain> {
    let default = outbound_cluster(port.port, "", &svc.hostname);
    let mut chains = Vec::new();
    if let Some(vs) = ctx.virtual_service(&svc.hostname) {
        // The host and port a destination reaches.
        let target = |d: &WeightedDestination| {
            let p = d.destination.port.unwrap_or(port.port);
            let host = ctx.resolve(&d.destination.host, &vs.id.namespace);
            (ctx.destination_host(host, p), p)
        };
        let resolve = |d: &WeightedDestination| {
            let (host, p) = target(d);
            (
                outbound_cluster(
                    p,
                    d.destination.subset.as_deref().unwrap_or_default(),
                    &host,
                ),
                d.weight.max(1),
            )
        };
        let proxy = |route: &[WeightedDestination]| {
            let source_ip = route.first().is_some_and(|first| {
                let (host, _) = target(first);
                let subset = match route {
                    [_] => first.destination.subset.as_deref().unwrap_or_default(),
                    _ => "",
                };
                policy::tcp_hashes_source_ip(ctx.rule(&host), subset)
            });
            tcp_proxy_to(&default, route.iter().map(resolve).collect(), source_ip)
        };
        if port.protocol == Protocol::Tls || port.protocol == Protocol::Https {
            for (i, rule) in vs.tls.iter().enumerate() {
                for m in rule
                    .matches
                    .iter()
                    .filter(|m| l4_applies(ctx, m, port.port))
                {
                    chains.push(FilterChain {
                        name: format!("tls-{i}"),
                        filter_chain_match: Some(FilterChainMatch {
                            server_names: m.sni_hosts.clone(),
                            prefix_ranges: crate::proto::cidrs(&m.destination_subnets),
                            ..Default::default()
                        }),
                        filters: vec![proxy(&rule.route)],
                        ..Default::default()
                    });
                }
            }
        }
        if let Some(rule) = first_tcp_rule(ctx, &vs.tcp, port.port) {
            chains.push(FilterChain {
                filters: vec![proxy(&rule.route)],
                ..Default::default()
            });
        }
    }
    if !chains.iter().any(|c| c.filter_chain_match.is_none()) {
        let source_ip = policy::tcp_hashes_source_ip(ctx.rule(&svc.hostname), "");
        chains.push(FilterChain {
            filters: vec![tcp_proxy_to(
                &default,
                vec![(default.clone(), 1)],
                source_ip,
            )],
            ..Default::default()
        });
    }
    chains
}

pub(crate) fn first_tcp_rule<'a>(
    ctx: &Context<'_>,
    rules: &'a [TcpRoute],
    port: u16,
) -> Option<&'a TcpRoute> {
    rules
        .iter()
        .find(|r| r.matches.is_empty() || r.matches.iter().any(|m| l4_applies(ctx, m, port)))
}

pub(crate) fn l4_applies(ctx: &Context<'_>, m: &L4Match, port: u16) -> bool {
    ctx.source_matches(
        m.port,
        &m.source_labels,
        m.source_namespace.as_ref(),
        &m.gateways,
        port,
    )
}

/// Istio's capture listener: connections to itself go to the black hole, the rest to the
/// outbound traffic policy's catch-all.
fn virtual_outbound(ctx: &Context<'_>) -> Listener {
    Listener {
        name: "virtualOutbound".to_owned(),
        address: Some(socket("0.0.0.0", VIRTUAL_OUTBOUND_PORT)),
        use_original_dst: Some(boolv(true)),
        traffic_direction: TrafficDirection::Outbound as i32,
        filter_chains: vec![FilterChain {
            name: "virtualOutbound-blackhole".to_owned(),
            filter_chain_match: Some(FilterChainMatch {
                destination_port: Some(u32v(VIRTUAL_OUTBOUND_PORT)),
                ..Default::default()
            }),
            filters: vec![tcp_proxy_to(
                "BlackHoleCluster",
                vec![("BlackHoleCluster".to_owned(), 1)],
                false,
            )],
            ..Default::default()
        }],
        default_filter_chain: Some(passthrough_chain(
            "virtualOutbound-catchall-tcp",
            egress::catch_all_cluster(ctx),
        )),
        ..Default::default()
    }
}

fn virtual_inbound(ctx: &Context<'_>) -> Listener {
    let mut chains = vec![FilterChain {
        name: "virtualInbound-blackhole".to_owned(),
        filter_chain_match: Some(FilterChainMatch {
            destination_port: Some(u32v(VIRTUAL_INBOUND_PORT)),
            ..Default::default()
        }),
        filters: vec![black_hole()],
        ..Default::default()
    }];
    let mtls = ctx.workload_mtls();
    let trust_domain = &ctx.snapshot.trust_domain;
    let (mut tls_ports, mut plain_ports) = (Vec::new(), vec![VIRTUAL_INBOUND_PORT as u16]);
    let mut sort = |port: u16, accept: Accept| {
        if accept.inspects_tls() {
            tls_ports.push(port);
        } else {
            plain_ports.push(port);
        }
    };
    // Port-less passthrough chains for the workload's mode, then one set per port-level
    // override that no service declares, then each service port's.
    let passthrough = tcp_proxy_to(
        "InboundPassthroughCluster",
        vec![("InboundPassthroughCluster".to_owned(), 1)],
        false,
    );
    let base = Accept::new(mtls.mode, ctx.proxy.holds_certificate);
    chains.extend(inbound::chains(
        "virtualInbound",
        None,
        false,
        base,
        &passthrough,
        black_hole,
        trust_domain,
    ));
    let ports = ctx.inbound_ports();
    for (&port, &mode) in &mtls.ports {
        // 15006 stays the blackhole's: traffic to it would loop through this listener.
        if u32::from(port) != VIRTUAL_INBOUND_PORT && !ports.iter().any(|(_, t)| *t == port) {
            let accept = Accept::new(mode, ctx.proxy.holds_certificate);
            sort(port, accept);
            chains.extend(inbound::chains(
                "virtualInbound",
                Some(port),
                false,
                accept,
                &passthrough,
                black_hole,
                trust_domain,
            ));
        }
    }
    for (port, target) in &ports {
        let (port, target) = (port, *target);
        let accept = Accept::new(mtls.port(target), ctx.proxy.holds_certificate);
        sort(target, accept);
        chains.extend(inbound::chains(
            &format!("0.0.0.0_{target}"),
            Some(target),
            port.protocol.is_http(),
            accept,
            &inbound_filter(port, target),
            black_hole,
            trust_domain,
        ));
    }
    let mut listener_filters = vec![listener_filter(
        "envoy.filters.listener.original_dst",
        &OriginalDst {},
    )];
    if ctx.proxy.interception == Interception::Tproxy {
        // The application sees the caller's address; packets marked 1337 route back through
        // the capture rules' policy routing (Istio's `original_src` with mark 1337).
        use envoy_types::pb::envoy::extensions::filters::listener::original_src::v3::OriginalSrc;
        let mark = OriginalSrc {
            mark: 1337,
            ..Default::default()
        };
        listener_filters.push(listener_filter(
            "envoy.filters.listener.original_src",
            &mark,
        ));
    }
    listener_filters.extend(inbound::tls_inspector(
        &tls_ports,
        &plain_ports,
        base.inspects_tls(),
    ));
    Listener {
        name: "virtualInbound".to_owned(),
        address: Some(socket("0.0.0.0", VIRTUAL_INBOUND_PORT)),
        traffic_direction: TrafficDirection::Inbound as i32,
        listener_filters,
        filter_chains: chains,
        ..Default::default()
    }
}

fn black_hole() -> Filter {
    tcp_proxy_to(
        "BlackHoleCluster",
        vec![("BlackHoleCluster".to_owned(), 1)],
        false,
    )
}

fn inbound_filter(port: &ServicePort, target: u16) -> Filter {
    if port.protocol.is_http() {
        inbound_hcm(target)
    } else {
        let cluster = inbound_cluster(target);
        tcp_proxy_to(&cluster, vec![(cluster.clone(), 1)], false)
    }
}

/// Listeners that bind real addresses: outbound on the bind address, one per port (HTTP
/// wins over TCP when both use a port), inbound on the workload's own address.
fn bound(ctx: &Context<'_>) -> Vec<Listener> {
    let bind = ctx.bind_address();
    let mut out = Vec::new();
    let mut http_ports = BTreeSet::new();
    for svc in ctx.services() {
        for port in ctx.ports_of(svc).filter(|p| p.protocol.is_http()) {
            if http_ports.insert(port.port) {
                out.push(Listener {
                    name: format!("{bind}_{}", port.port),
                    address: Some(ip_socket(bind, u32::from(port.port))),
                    traffic_direction: TrafficDirection::Outbound as i32,
                    filter_chains: vec![FilterChain {
                        filters: vec![outbound_hcm(port.port)],
                        ..Default::default()
                    }],
                    ..Default::default()
                });
            }
        }
    }
    let mut tcp_ports = BTreeSet::new();
    for svc in ctx.services() {
        for port in ctx
            .ports_of(svc)
            .filter(|p| !p.protocol.is_http() && p.protocol != Protocol::Udp)
        {
            if http_ports.contains(&port.port) || !tcp_ports.insert(port.port) {
                continue;
            }
            out.push(Listener {
                name: format!("{bind}_{}", port.port),
                address: Some(ip_socket(bind, u32::from(port.port))),
                traffic_direction: TrafficDirection::Outbound as i32,
                filter_chains: tcp_chains(ctx, svc, port)
                    .into_iter()
                    .filter(|c| c.filter_chain_match.is_none())
                    .take(1)
                    .collect(),
                ..Default::default()
            });
        }
    }
    if let Some(ip) = ctx
        .proxy
        .ips
        .first()
        .copied()
        .filter(|ip| *ip != bind && ctx.inbound())
    {
        let mtls = ctx.workload_mtls();
        for (port, target) in ctx.inbound_ports() {
            let port = &port;
            let accept = Accept::new(mtls.port(target), ctx.proxy.holds_certificate);
            let name = format!("{ip}_{}", port.port);
            out.push(Listener {
                address: Some(ip_socket(ip, u32::from(port.port))),
                traffic_direction: TrafficDirection::Inbound as i32,
                listener_filters: inbound::tls_inspector(&[], &[], accept.inspects_tls())
                    .into_iter()
                    .collect(),
                filter_chains: inbound::chains(
                    &name,
                    None,
                    port.protocol.is_http(),
                    accept,
                    &inbound_filter(port, target),
                    black_hole,
                    &ctx.snapshot.trust_domain,
                ),
                name,
                ..Default::default()
            });
        }
    }
    out
}
