//! Clusters of DNS ServiceEntries, as istiod builds them: `STRICT_DNS` (resolution DNS, every
//! address of every endpoint) or `LOGICAL_DNS` (DNS_ROUND_ROBIN, the first endpoint), with the
//! endpoints inline and IPv4 lookups refreshed every 60s or at the record's TTL.

use envoy_types::pb::envoy::config::{
    cluster::v3::{
        Cluster,
        cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily},
    },
    core::v3::{HealthStatus, Locality as EnvoyLocality},
    endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint},
};
use sextant_model::{Endpoint as ModelEndpoint, Health, Resolution, Service, ServicePort};

use crate::{
    context::{Context, outbound_cluster},
    proto::{ip_socket, metadata, seconds, socket, string_value, u32v},
};

/// Istio's `dnsRefreshRate` default.
const DNS_REFRESH_SECS: i64 = 60;

/// Makes `cluster` the DNS cluster of `svc` on `port` (its `subset`): `None` when no endpoint
/// is left, and then there is no cluster at all. `tls` (auto mutual TLS) marks endpoints that
/// carry a sidecar.
pub(crate) fn cluster(
    ctx: &Context<'_>,
    svc: &Service,
    port: &ServicePort,
    subset: &str,
    tls: bool,
    cluster: &mut Cluster,
) -> Option<()> {
    let labels = (!subset.is_empty())
        .then(|| ctx.rule(&svc.hostname))
        .flatten()
        .and_then(|dr| dr.subsets.iter().find(|s| s.name == subset))
        .map(|s| &s.labels);
    let mut endpoints: Vec<&ModelEndpoint> = ctx
        .snapshot
        .endpoints(&svc.hostname)
        .iter()
        .filter(|ep| labels.is_none_or(|l| ep.matches(l)))
        .collect();
    let logical = svc.resolution == Resolution::DnsRoundRobin;
    if logical {
        // Envoy takes one endpoint in a LOGICAL_DNS cluster.
        endpoints.truncate(1);
    }
    if endpoints.is_empty() {
        return None;
    }
    let kind = if logical {
        DiscoveryType::LogicalDns
    } else {
        DiscoveryType::StrictDns
    };
    cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(kind as i32));
    cluster.dns_lookup_family = DnsLookupFamily::V4Only as i32;
    set_dns_timing(cluster);
    let mut groups: Vec<LocalityLbEndpoints> = Vec::new();
    for ep in endpoints {
        let number = ep.port_for(port).or(port.target_port).unwrap_or(port.port);
        let address = match &ep.hostname {
            Some(name) => socket(name, u32::from(number)),
            None => ip_socket(ep.address, u32::from(number)),
        };
        let lb = LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(address),
                ..Default::default()
            })),
            health_status: match ep.health {
                Health::Healthy => HealthStatus::Healthy,
                Health::Unhealthy => HealthStatus::Unhealthy,
                Health::Draining => HealthStatus::Draining,
            } as i32,
            metadata: (tls && ep.istio_mtls).then(|| {
                metadata(vec![(
                    "envoy.transport_socket_match",
                    vec![("tlsMode", string_value("istio"))],
                )])
            }),
            load_balancing_weight: Some(u32v(ep.weight.max(1))),
        };
        let locality = EnvoyLocality {
            region: ep.locality.region.clone(),
            zone: ep.locality.zone.clone(),
            sub_zone: ep.locality.subzone.clone(),
            ..Default::default()
        };
        match groups
            .iter_mut()
            .find(|g| g.locality.as_ref() == Some(&locality))
        {
            Some(g) => g.lb_endpoints.push(lb),
            None => groups.push(LocalityLbEndpoints {
                locality: Some(locality),
                lb_endpoints: vec![lb],
                ..Default::default()
            }),
        }
    }
    for g in &mut groups {
        g.load_balancing_weight = Some(u32v(
            g.lb_endpoints
                .iter()
                .filter_map(|e| e.load_balancing_weight.as_ref())
                .map(|w| w.value)
                .sum(),
        ));
    }
    cluster.load_assignment = Some(ClusterLoadAssignment {
        cluster_name: outbound_cluster(port.port, subset, &svc.hostname),
        endpoints: groups,
        ..Default::default()
    });
    Some(())
}

/// Istio's refresh settings, on the cluster fields it still uses (Envoy has deprecated them in
/// favour of a DNS cluster extension that istiod does not send).
#[allow(deprecated)]
fn set_dns_timing(cluster: &mut Cluster) {
    cluster.respect_dns_ttl = true;
    cluster.dns_refresh_rate = Some(seconds(DNS_REFRESH_SECS));
    cluster.dns_jitter = Some(envoy_types::pb::google::protobuf::Duration {
        seconds: 0,
        nanos: 100_000_000,
    });
}
