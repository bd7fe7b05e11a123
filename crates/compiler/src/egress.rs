//! Traffic the proxy's services do not cover: the outbound traffic policy's catch-all
//! cluster, and the whole-port listeners of ServiceEntries with resolution NONE.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::{
    core::v3::TrafficDirection,
    listener::v3::{FilterChain, Listener},
};
use sextant_model::{Origin, OutboundTrafficPolicy, Protocol, Resolution};

use crate::{
    context::{Context, outbound_cluster},
    lds::tcp_proxy,
    proto::{boolv, socket},
};

/// Where connections and requests for unknown destinations go: `PassthroughCluster` under
/// ALLOW_ANY, `BlackHoleCluster` under REGISTRY_ONLY.
pub(crate) fn catch_all_cluster(ctx: &Context<'_>) -> &'static str {
    match ctx.outbound_traffic_policy() {
        OutboundTrafficPolicy::AllowAny => "PassthroughCluster",
        OutboundTrafficPolicy::RegistryOnly => "BlackHoleCluster",
    }
}

/// Istio's `0.0.0.0_PORT` listeners (with interception) for the TCP ports of ServiceEntries
/// with resolution NONE and no address: every connection to such a port goes to the service's
/// original-destination cluster, so the port stays reachable under REGISTRY_ONLY. Ports that
/// already have a `0.0.0.0_PORT` listener (`taken`, the HTTP ports) keep theirs; the first
/// service by host name takes a port.
pub(crate) fn port_listeners(ctx: &Context<'_>, taken: &BTreeSet<u16>) -> Vec<Listener> {
    let mut ports = BTreeSet::new();
    let mut out = Vec::new();
    for svc in ctx.services().filter(|s| {
        s.resolution == Resolution::Passthrough
            && s.cluster_ip.is_none()
            && matches!(s.origin, Origin::ServiceEntry { .. })
    }) {
        for port in ctx
            .ports_of(svc)
            .filter(|p| !p.protocol.is_http() && p.protocol != Protocol::Udp)
        {
            if taken.contains(&port.port) || !ports.insert(port.port) {
                continue;
            }
            let cluster = outbound_cluster(port.port, "", &svc.hostname);
            out.push(Listener {
                name: format!("0.0.0.0_{}", port.port),
                address: Some(socket("0.0.0.0", u32::from(port.port))),
                bind_to_port: Some(boolv(false)),
                traffic_direction: TrafficDirection::Outbound as i32,
                filter_chains: vec![FilterChain {
                    filters: vec![tcp_proxy(&cluster, vec![(cluster.clone(), 1)])],
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
    }
    out
}
