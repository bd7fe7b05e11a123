//! EDS: one ClusterLoadAssignment per EDS cluster, endpoints grouped by locality, subsets
//! selected by workload labels, with Istio's endpoint metadata.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster,
    core::v3::{HealthStatus, Locality},
    endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint},
};
use sextant_model::{
    Endpoint as ModelEndpoint, Health, Protocol, ProxyFlavor, Resolution, Service, ServicePort,
};

use crate::{
    context::{Context, outbound_cluster},
    proto::{ip_socket, metadata, string_value, u32v},
};

/// The load assignments for every EDS cluster in `clusters`, sorted by name.
pub fn load_assignments(ctx: &Context<'_>, clusters: &[Cluster]) -> Vec<ClusterLoadAssignment> {
    let wanted: std::collections::BTreeSet<&str> = clusters
        .iter()
        .filter_map(|c| {
            c.eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.as_str())
        })
        .collect();
    let mut out = Vec::new();
    for svc in ctx
        .services()
        .filter(|s| s.resolution == Resolution::ClientSideLb)
    {
        for port in svc.ports.iter().filter(|p| p.protocol != Protocol::Udp) {
            let name = outbound_cluster(port.port, "", &svc.hostname);
            if wanted.contains(name.as_str()) {
                out.push(assignment(ctx, svc, port, None, name));
            }
            if let Some(dr) = ctx.rule(&svc.hostname) {
                for subset in &dr.subsets {
                    let name = outbound_cluster(port.port, &subset.name, &svc.hostname);
                    if wanted.contains(name.as_str()) {
                        out.push(assignment(ctx, svc, port, Some(&subset.labels), name));
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
    out
}

/// The load assignment of one cluster.
pub fn assignment(
    ctx: &Context<'_>,
    svc: &Service,
    port: &ServicePort,
    subset: Option<&BTreeMap<String, String>>,
    name: String,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&sextant_model::Locality, Vec<LbEndpoint>> = BTreeMap::new();
    for ep in ctx.snapshot.endpoints(&svc.hostname) {
        if subset.is_some_and(|labels| !ep.matches(labels)) {
            continue;
        }
        let Some(number) = ep.port_for(port).or(port.target_port) else {
            continue;
        };
        by_locality
            .entry(&ep.locality)
            .or_default()
            .push(lb_endpoint(
                ep,
                svc,
                number,
                ctx.proxy.flavor == ProxyFlavor::Istio,
            ));
    }
    ClusterLoadAssignment {
        cluster_name: name,
        endpoints: by_locality
            .into_iter()
            .map(|(locality, lb_endpoints)| LocalityLbEndpoints {
                locality: Some(Locality {
                    region: locality.region.clone(),
                    zone: locality.zone.clone(),
                    sub_zone: locality.subzone.clone(),
                    ..Default::default()
                }),
                load_balancing_weight: Some(u32v(
                    u32::try_from(lb_endpoints.len()).unwrap_or(u32::MAX),
                )),
                lb_endpoints,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Istio's endpoint metadata (`istio.workload`, read by istio-proxy's telemetry, and the
/// `tlsMode` that auto-mTLS matches on) is only sent to Istio proxies: stock Envoy uses neither.
fn lb_endpoint(ep: &ModelEndpoint, svc: &Service, port: u16, istio: bool) -> LbEndpoint {
    let health = match ep.health {
        Health::Healthy => HealthStatus::Healthy,
        Health::Unhealthy => HealthStatus::Unhealthy,
        Health::Draining => HealthStatus::Draining,
    };
    let metadata = istio.then(|| endpoint_metadata(ep, svc));
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(ip_socket(ep.address, u32::from(port))),
            ..Default::default()
        })),
        health_status: health as i32,
        metadata,
        load_balancing_weight: Some(u32v(1)),
    }
}

fn endpoint_metadata(
    ep: &ModelEndpoint,
    svc: &Service,
) -> envoy_types::pb::envoy::config::core::v3::Metadata {
    // `istio.workload` is "name;namespace;canonical service;revision;cluster".
    let canonical = ep
        .labels
        .get("service.istio.io/canonical-name")
        .or_else(|| ep.labels.get("app.kubernetes.io/name"))
        .or_else(|| ep.labels.get("app"))
        .cloned()
        .unwrap_or_else(|| svc.name.clone());
    let revision = ep
        .labels
        .get("service.istio.io/canonical-revision")
        .or_else(|| ep.labels.get("version"))
        .cloned()
        .unwrap_or_else(|| "latest".to_owned());
    let workload = format!(
        "{};{};{canonical};{revision};{}",
        ep.workload.as_deref().unwrap_or_default(),
        ep.namespace,
        ep.cluster_id
    );
    let mut entries = vec![("istio", vec![("workload", string_value(&workload))])];
    if ep.istio_mtls {
        entries.insert(
            0,
            (
                "envoy.transport_socket_match",
                vec![("tlsMode", string_value("istio"))],
            ),
        );
    }
    metadata(entries)
}
