//! EDS: one ClusterLoadAssignment per EDS cluster, endpoints grouped by locality, subsets
//! selected by workload labels, with Istio's endpoint metadata.

use std::collections::{BTreeMap, HashSet};

use envoy_types::pb::envoy::config::{
    core::v3::HealthStatus,
    endpoint::v3::{Endpoint, LbEndpoint, lb_endpoint},
};
use prost::Message;
use sextant_model::{
    Endpoint as ModelEndpoint, Health, MtlsMode, Protocol, ProxyFlavor, Resolution, Service,
};
use sextant_resources::{Encoded, wire};

use crate::{
    context::{Context, outbound_cluster},
    proto::{ip_socket, ip_text, metadata, string_value, u32v},
};

/// The load assignments of the EDS clusters named in `wanted`, sorted by name. Each endpoint is
/// encoded once per service port and shared by the service's cluster and its subsets.
pub fn load_assignments(ctx: &Context<'_>, wanted: &HashSet<String>) -> Vec<Encoded> {
    let istio = ctx.proxy.flavor == ProxyFlavor::Istio;
    let mtls = ctx.proxy.holds_certificate;
    let mut out = Vec::new();
    for svc in ctx
        .services()
        .filter(|s| s.resolution == Resolution::ClientSideLb)
    {
        let endpoints = ctx.snapshot.endpoints(&svc.hostname);
        for port in ctx.ports_of(svc).filter(|p| p.protocol != Protocol::Udp) {
            // Every endpoint of this port encoded once, into one buffer.
            let mut all = Vec::with_capacity(endpoints.len() * 40);
            let mut text = String::new();
            let ranges: Vec<Option<(usize, usize)>> = endpoints
                .iter()
                .map(|ep| {
                    let number = ep.port_for(port).or(port.target_port)?;
                    let start = all.len();
                    let tls = mtls && accepts_mtls(ctx.snapshot, ep, number);
                    if istio {
                        lb_endpoint(ep, svc, number, Some(tls)).encode_raw(&mut all);
                    } else {
                        encode_lb_endpoint(&mut all, &mut text, ep, number, tls);
                    }
                    Some((start, all.len()))
                })
                .collect();
            let encoded: Vec<Option<&[u8]>> =
                ranges.iter().map(|r| r.map(|(a, b)| &all[a..b])).collect();
            let name = outbound_cluster(port.port, "", &svc.hostname);
            if wanted.contains(&name) {
                out.push(assemble(name, endpoints, &encoded, None));
            }
            if let Some(dr) = ctx.rule(&svc.hostname) {
                for subset in &dr.subsets {
                    let name = outbound_cluster(port.port, &subset.name, &svc.hostname);
                    if wanted.contains(&name) {
                        out.push(assemble(name, endpoints, &encoded, Some(&subset.labels)));
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A ClusterLoadAssignment from encoded endpoints, grouped by locality.
fn assemble(
    name: String,
    endpoints: &[ModelEndpoint],
    encoded: &[Option<&[u8]>],
    subset: Option<&BTreeMap<String, String>>,
) -> Encoded {
    // Few localities per service: a small vector beats a map.
    let mut by_locality: Vec<(&sextant_model::Locality, Vec<&[u8]>)> = Vec::new();
    let mut size = name.len() + 8;
    for (ep, bytes) in endpoints.iter().zip(encoded) {
        let Some(bytes) = bytes else { continue };
        if subset.is_some_and(|labels| !ep.matches(labels)) {
            continue;
        }
        size += bytes.len() + 2;
        match by_locality.iter_mut().find(|(l, _)| *l == &ep.locality) {
            Some((_, list)) => list.push(bytes),
            None => by_locality.push((&ep.locality, vec![bytes])),
        }
    }
    by_locality.sort_by(|a, b| a.0.cmp(b.0));
    let mut buf = Vec::with_capacity(size + by_locality.len() * 48);
    wire::string_field(&mut buf, 1, &name);
    let mut group = Vec::new();
    for (locality, lb_endpoints) in by_locality {
        group.clear();
        wire::open_field(&mut group, 1, locality_len(locality));
        wire::string_field(&mut group, 1, &locality.region);
        wire::string_field(&mut group, 2, &locality.zone);
        wire::string_field(&mut group, 3, &locality.subzone);
        for e in &lb_endpoints {
            wire::bytes_field(&mut group, 2, e);
        }
        wire::u32_value_field(
            &mut group,
            3,
            u32::try_from(lb_endpoints.len()).unwrap_or(u32::MAX),
        );
        wire::bytes_field(&mut buf, 2, &group);
    }
    Encoded::from_bytes(&name, buf)
}

fn locality_len(l: &sextant_model::Locality) -> usize {
    [&l.region, &l.zone, &l.subzone]
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| wire::field_len(s.len()))
        .sum()
}

/// Whether auto mTLS may use TLS toward `ep` on workload port `port` (Istio's
/// `checkMtlsEnabled` without a DestinationRule TLS mode): the endpoint carries a sidecar and
/// its workload's PeerAuthentication does not DISABLE mutual TLS on that port.
fn accepts_mtls(snapshot: &sextant_model::Snapshot, ep: &ModelEndpoint, port: u16) -> bool {
    ep.istio_mtls
        && (snapshot.peer_authentications.is_empty()
            || snapshot.workload_mtls(&ep.namespace, &ep.labels).port(port) != MtlsMode::Disable)
}

/// `envoy.transport_socket_match: {tlsMode: istio}`, the metadata auto mTLS matches on.
fn tls_mode_metadata() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        metadata(vec![(
            "envoy.transport_socket_match",
            vec![("tlsMode", string_value("istio"))],
        )])
        .encode_to_vec()
    })
}

/// A plain Envoy `LbEndpoint` written directly: address, health, weight, and the `tlsMode`
/// metadata when `tls`. Equivalent to `lb_endpoint(.., None)` (or, with `tls`, that endpoint
/// with the metadata) encoded by prost (the golden tests decode it).
fn encode_lb_endpoint(
    buf: &mut Vec<u8>,
    text: &mut String,
    ep: &ModelEndpoint,
    port: u16,
    tls: bool,
) {
    ip_text(ep.address, text);
    // endpoint (1) { address (1) { socket_address (1) { address (2), port_value (3) } } }
    let socket =
        wire::field_len(text.len()) + 1 + prost::encoding::encoded_len_varint(u64::from(port));
    let address = wire::field_len(socket);
    let endpoint = wire::field_len(address);
    wire::open_field(buf, 1, endpoint);
    wire::open_field(buf, 1, address);
    wire::open_field(buf, 1, socket);
    wire::string_field(buf, 2, text);
    wire::varint_field(buf, 3, u64::from(port));
    let health = match ep.health {
        Health::Healthy => HealthStatus::Healthy,
        Health::Unhealthy => HealthStatus::Unhealthy,
        Health::Draining => HealthStatus::Draining,
    };
    wire::varint_field(buf, 2, health as u64);
    if tls {
        wire::bytes_field(buf, 3, tls_mode_metadata());
    }
    wire::u32_value_field(buf, 4, ep.weight.max(1));
}

/// Istio's endpoint metadata (`istio.workload`, read by istio-proxy's telemetry, and the
/// `tlsMode` that auto-mTLS matches on, when `tls` is true) is only sent to Istio proxies
/// (`tls` is `Some`); stock Envoy gets the `tlsMode` alone, from `encode_lb_endpoint`.
fn lb_endpoint(ep: &ModelEndpoint, svc: &Service, port: u16, tls: Option<bool>) -> LbEndpoint {
    let health = match ep.health {
        Health::Healthy => HealthStatus::Healthy,
        Health::Unhealthy => HealthStatus::Unhealthy,
        Health::Draining => HealthStatus::Draining,
    };
    let metadata = tls.map(|tls| endpoint_metadata(ep, svc, tls));
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(ip_socket(ep.address, u32::from(port))),
            ..Default::default()
        })),
        health_status: health as i32,
        metadata,
        load_balancing_weight: Some(u32v(ep.weight.max(1))),
    }
}

fn endpoint_metadata(
    ep: &ModelEndpoint,
    svc: &Service,
    tls: bool,
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
    if tls {
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
