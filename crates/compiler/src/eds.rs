//! EDS: one ClusterLoadAssignment per EDS cluster, endpoints grouped by locality, subsets
//! selected by workload labels, with Istio's endpoint metadata.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
};

use envoy_types::pb::envoy::config::{
    core::v3::HealthStatus,
    endpoint::v3::{Endpoint, LbEndpoint, lb_endpoint},
};
use prost::Message;
use sextant_model::{
    Endpoint as ModelEndpoint, Health, MtlsMode, NetworkGateway, Protocol, Proxy, ProxyFlavor,
    Resolution, Service,
};
use sextant_resources::{Encoded, wire};

use crate::{
    context::{Context, outbound_cluster},
    locality::{self, Group, Spread},
    policy,
    proto::{ip_socket, ip_text, metadata, string_value, u32v},
};

/// Where one endpoint goes in a load assignment for this proxy.
enum Place<'s> {
    /// Not sent (another cluster's endpoint of a `clusterLocal` host, no port, or another
    /// network's endpoint that cannot be reached through its gateway without mutual TLS).
    Skip,
    /// Sent as encoded at this range.
    Direct(usize, usize),
    /// Reached through these east-west gateways.
    Gateway(&'s [&'s NetworkGateway]),
}

/// The load assignments of the EDS clusters named in `wanted`, sorted by name. Each endpoint is
/// encoded once per service port and shared by the service's cluster and its subsets.
pub fn load_assignments(ctx: &Context<'_>, wanted: &HashSet<String>) -> Vec<Encoded> {
    let istio = ctx.proxy.flavor == ProxyFlavor::Istio;
    let mtls = ctx.proxy.holds_certificate;
    let snapshot = ctx.snapshot;
    let gateways = locality::Gateways::of(snapshot);
    let mut out = Vec::new();
    for svc in ctx
        .services()
        .filter(|s| s.resolution == Resolution::ClientSideLb)
    {
        let endpoints = snapshot.endpoints(&svc.hostname);
        let local_only = snapshot.multi_cluster
            && snapshot
                .mesh_config
                .is_cluster_local(&svc.hostname, &snapshot.domain_suffix);
        let rule = ctx.rule(&svc.hostname);
        for port in ctx.ports_of(svc).filter(|p| p.protocol != Protocol::Udp) {
            // Every endpoint of this port encoded once, into one buffer.
            let mut all = Vec::with_capacity(endpoints.len() * 40);
            let mut text = String::new();
            let places: Vec<Place<'_>> = endpoints
                .iter()
                .map(|ep| {
                    if local_only && ep.cluster_id != ctx.proxy.cluster_id {
                        return Place::Skip;
                    }
                    let Some(number) = ep.port_for(port).or(port.target_port) else {
                        return Place::Skip;
                    };
                    let tls = mtls && accepts_mtls(snapshot, ep, number);
                    if let Some(gateways) = gateways.for_endpoint(ctx.proxy, ep) {
                        // The gateway routes by the SNI of the mutual TLS connection.
                        return if tls {
                            Place::Gateway(gateways)
                        } else {
                            Place::Skip
                        };
                    }
                    let start = all.len();
                    if istio {
                        lb_endpoint(ep, svc, number, Some(tls)).encode_raw(&mut all);
                    } else {
                        encode_lb_endpoint(&mut all, &mut text, ep.address, number, ep, tls);
                    }
                    Place::Direct(start, all.len())
                })
                .collect();
            let name = outbound_cluster(port.port, "", &svc.hostname);
            let assembly = Assembly {
                proxy: ctx.proxy,
                endpoints,
                places: &places,
                bytes: &all,
            };
            // Read in place, and only when some rule can spread a load assignment.
            let spread = |subset: Option<&str>| {
                if !snapshot.locality_aware {
                    return Spread::default();
                }
                let lb = policy::component(rule, subset, port.port, |p| p.load_balancer.as_ref());
                let outlier =
                    policy::component(rule, subset, port.port, |p| p.outlier_detection.as_ref());
                Spread::new(lb.and_then(|lb| lb.locality.as_ref()), outlier.is_some())
            };
            if wanted.contains(&name) {
                out.push(assembly.assemble(name, None, &spread(None)));
            }
            if let Some(dr) = rule {
                for subset in &dr.subsets {
                    let name = outbound_cluster(port.port, &subset.name, &svc.hostname);
                    if wanted.contains(&name) {
                        let spread = spread(Some(&subset.name));
                        out.push(assembly.assemble(name, Some(&subset.labels), &spread));
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The endpoints of one service port, placed for one proxy.
struct Assembly<'a, 's> {
    proxy: &'a Proxy,
    endpoints: &'a [ModelEndpoint],
    places: &'a [Place<'s>],
    bytes: &'a [u8],
}

impl Assembly<'_, '_> {
    /// A ClusterLoadAssignment grouped by locality (and `failoverPriority`), spread as the
    /// cluster's policy says.
    fn assemble(
        &self,
        name: String,
        subset: Option<&BTreeMap<String, String>>,
        spread: &Spread<'_>,
    ) -> Encoded {
        // Few localities per service: a small vector beats a map.
        let mut groups: Vec<Group<'_>> = Vec::new();
        let mut size = name.len() + 8;
        for (ep, place) in self.endpoints.iter().zip(self.places) {
            if matches!(place, Place::Skip) || subset.is_some_and(|labels| !ep.matches(labels)) {
                continue;
            }
            let label_priority = spread.label_priority(self.proxy, ep);
            let i = match groups
                .iter()
                .position(|g| g.locality == &ep.locality && g.label_priority == label_priority)
            {
                Some(i) => i,
                None => {
                    groups.push(Group::new(&ep.locality, label_priority));
                    groups.len() - 1
                }
            };
            let group = &mut groups[i];
            let weight = ep.weight.max(1);
            match place {
                Place::Direct(a, b) => {
                    size += b - a + 2;
                    group.direct.push(&self.bytes[*a..*b]);
                    group.weight = group.weight.saturating_add(weight);
                }
                Place::Gateway(gateways) => {
                    let n = u32::try_from(gateways.len()).unwrap_or(u32::MAX);
                    for gateway in *gateways {
                        group.via(gateway, weight.div_ceil(n));
                    }
                }
                Place::Skip => {}
            }
        }
        groups.sort_by(|a, b| (a.locality, a.label_priority).cmp(&(b.locality, b.label_priority)));
        if !spread.is_plain() {
            spread.apply(&self.proxy.locality, &mut groups);
        }
        let mut buf = Vec::with_capacity(size + groups.len() * 48);
        wire::string_field(&mut buf, 1, &name);
        let mut group = Vec::new();
        let mut text = String::new();
        let mut gateway = Vec::new();
        for g in groups.iter().filter(|g| g.weight > 0) {
            group.clear();
            wire::open_field(&mut group, 1, locality_len(g.locality));
            wire::string_field(&mut group, 1, &g.locality.region);
            wire::string_field(&mut group, 2, &g.locality.zone);
            wire::string_field(&mut group, 3, &g.locality.subzone);
            for e in &g.direct {
                wire::bytes_field(&mut group, 2, e);
            }
            for (gw, weight) in &g.gateways {
                gateway.clear();
                encode_address(&mut gateway, &mut text, gw.address, gw.port);
                wire::varint_field(&mut gateway, 2, HealthStatus::Healthy as u64);
                wire::bytes_field(&mut gateway, 3, tls_mode_metadata());
                wire::u32_value_field(&mut gateway, 4, *weight);
                wire::bytes_field(&mut group, 2, &gateway);
            }
            wire::u32_value_field(&mut group, 3, g.weight);
            if g.priority > 0 {
                wire::varint_field(&mut group, 5, u64::from(g.priority));
            }
            wire::bytes_field(&mut buf, 2, &group);
        }
        Encoded::from_bytes(&name, buf)
    }
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
    address: IpAddr,
    port: u16,
    ep: &ModelEndpoint,
    tls: bool,
) {
    encode_address(buf, text, address, port);
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

/// `LbEndpoint.endpoint` (1) { address (1) { socket_address (1) { address (2), port_value (3) } } }.
fn encode_address(buf: &mut Vec<u8>, text: &mut String, address: IpAddr, port: u16) {
    ip_text(address, text);
    let socket =
        wire::field_len(text.len()) + 1 + prost::encoding::encoded_len_varint(u64::from(port));
    let address = wire::field_len(socket);
    let endpoint = wire::field_len(address);
    wire::open_field(buf, 1, endpoint);
    wire::open_field(buf, 1, address);
    wire::open_field(buf, 1, socket);
    wire::string_field(buf, 2, text);
    wire::varint_field(buf, 3, u64::from(port));
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
