//! CDS: `outbound|PORT|SUBSET|HOST` for every visible service port and subset, the proxy's
//! `inbound|PORT||` clusters, and Istio's `BlackHoleCluster`, `PassthroughCluster` and
//! `InboundPassthroughCluster`.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{
            Cluster,
            cluster::{self, ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
        },
        core::v3::{BindConfig, SocketAddress, socket_address},
        endpoint::v3::{
            ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
        },
    },
    extensions::upstreams::http::v3::{HttpProtocolOptions, http_protocol_options},
};
use sextant_model::{
    MtlsMode, Origin, Protocol, ProxyFlavor, Resolution, Service, ServicePort, TlsMode,
};

use prost::Message;
use sextant_resources::{Encoded, wire};

use crate::{
    context::{Context, inbound_cluster, outbound_cluster},
    dns,
    policy::{self, CONNECT_TIMEOUT_SECS, Target},
    proto::{
        ads, any, bool_value, ip_socket, list_value, map_of, metadata, seconds, string_value,
        struct_value, u32v,
    },
};

/// Every cluster of the proxy, sorted by name, and the names of those that use EDS.
pub fn clusters(ctx: &Context<'_>) -> (Vec<Encoded>, HashSet<String>) {
    let mut out = Vec::new();
    let mut eds = HashSet::new();
    let mut templates = HashMap::new();
    for svc in ctx.services() {
        for port in ctx.ports_of(svc).filter(|p| p.protocol != Protocol::Udp) {
            let subsets = ctx
                .rule(&svc.hostname)
                .map(|dr| dr.subsets.as_slice())
                .unwrap_or_default();
            let names = std::iter::once("").chain(subsets.iter().map(|s| s.name.as_str()));
            for subset in names {
                let Some((cluster, uses_eds)) = outbound(ctx, svc, port, subset, &mut templates)
                else {
                    continue;
                };
                if uses_eds {
                    eds.insert(cluster.name.clone());
                }
                out.push(cluster);
            }
        }
    }
    if ctx.inbound() {
        for (port, target) in ctx.inbound_ports() {
            let c = inbound(ctx, &port, target);
            out.push(Encoded::new(&c.name, &c));
        }
    }
    if ctx.outbound() {
        for c in [black_hole(), passthrough(), inbound_passthrough()] {
            out.push(Encoded::new(&c.name, &c));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    (out, eds)
}

fn discovery(kind: DiscoveryType) -> Option<ClusterDiscoveryType> {
    Some(ClusterDiscoveryType::Type(kind as i32))
}

/// Whether clusters of `svc` without a DestinationRule TLS setting get auto mTLS: the proxy
/// holds a certificate and the service's namespace (or the mesh) does not DISABLE mutual TLS
/// (Istio's `BestEffortInferServiceMTLSMode`; workload and port-level policies act per
/// endpoint, in EDS).
fn auto_mtls(ctx: &Context<'_>, svc: &Service) -> bool {
    ctx.proxy.holds_certificate
        && !svc.is_external()
        && ctx.snapshot.service_mtls(&svc.namespace) != MtlsMode::Disable
}

/// SPIFFE identities of a service's workloads, for ISTIO_MUTUAL SAN checks, and the
/// `subjectAltNames` of the ServiceEntry declaring it.
fn identities(ctx: &Context<'_>, svc: &Service) -> Vec<String> {
    let mut ids: Vec<String> = ctx
        .snapshot
        .endpoints(&svc.hostname)
        .iter()
        .filter_map(|e| {
            e.service_account.as_ref().map(|sa| {
                format!(
                    "spiffe://{}/ns/{}/sa/{sa}",
                    ctx.snapshot.trust_domain, e.namespace
                )
            })
        })
        .collect();
    if let Origin::ServiceEntry {
        subject_alt_names, ..
    } = &svc.origin
    {
        ids.extend(subject_alt_names.iter().cloned());
    }
    ids.sort();
    ids.dedup();
    ids
}

/// Everything a cluster's shared policy bytes depend on.
#[derive(Clone, PartialEq, Eq, Hash)]
struct TemplateKey {
    rule: usize,
    subset: String,
    port: u16,
    host: String,
    http2: bool,
    http: bool,
    auto_mtls: bool,
    files: bool,
}

/// A cluster's policy fields, encoded once and shared by every cluster with the same key.
struct Template {
    bytes: Vec<u8>,
    /// The policy turned the cluster into an ORIGINAL_DST cluster (`simple: PASSTHROUGH`).
    original_dst: bool,
}

fn outbound(
    ctx: &Context<'_>,
    svc: &Service,
    port: &ServicePort,
    subset: &str,
    templates: &mut HashMap<TemplateKey, Template>,
) -> Option<(Encoded, bool)> {
    let name = outbound_cluster(port.port, subset, &svc.hostname);
    let dr = ctx.rule(&svc.hostname);
    let effective = policy::effective(dr, (!subset.is_empty()).then_some(subset), port.port);
    let istio = ctx.proxy.flavor == ProxyFlavor::Istio;
    let auto_mtls = auto_mtls(ctx, svc);
    let needs_identities = auto_mtls
        || effective
            .tls
            .as_ref()
            .is_some_and(|t| t.mode == TlsMode::IstioMutual);
    let key = TemplateKey {
        rule: dr.map_or(0, |d| d as *const _ as usize),
        subset: if dr.is_some() {
            subset.to_owned()
        } else {
            String::new()
        },
        port: if dr.is_some() || needs_identities {
            port.port
        } else {
            0
        },
        host: if needs_identities {
            svc.hostname.clone()
        } else {
            String::new()
        },
        http2: port.protocol.is_http2(),
        http: port.protocol.is_http(),
        auto_mtls,
        files: !istio,
    };
    let template = templates.entry(key).or_insert_with(|| {
        let mut c = Cluster::default();
        policy::apply(
            &mut c,
            &effective,
            &Target {
                host: &svc.hostname,
                port: port.port,
                subset,
                http2: port.protocol.is_http2(),
                http: port.protocol.is_http(),
                identities: if needs_identities {
                    identities(ctx, svc)
                } else {
                    Vec::new()
                },
                auto_mtls,
                inline_files: !istio,
            },
        );
        let original_dst = c.cluster_discovery_type.take().is_some();
        Template {
            bytes: c.encode_to_vec(),
            original_dst,
        }
    });
    let mut cluster = Cluster {
        name: name.clone(),
        alt_stat_name: {
            let mut alt = String::with_capacity(name.len() + 1);
            alt.push_str(&name);
            alt.push(';');
            alt
        },
        ..Default::default()
    };
    let mut eds = false;
    match &svc.resolution {
        Resolution::ClientSideLb if template.original_dst => {
            cluster.cluster_discovery_type = discovery(DiscoveryType::OriginalDst);
        }
        Resolution::ClientSideLb => {
            eds = true;
            cluster.cluster_discovery_type = discovery(DiscoveryType::Eds);
            cluster.eds_cluster_config = Some(EdsClusterConfig {
                service_name: name.clone(),
                eds_config: Some(ads()),
            });
        }
        Resolution::Dns | Resolution::DnsRoundRobin if template.original_dst => {
            cluster.cluster_discovery_type = discovery(DiscoveryType::OriginalDst);
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            // No endpoint (a selector that picks nothing, an empty subset): no cluster, and
            // routes to it answer 503 NC, as with Istio.
            dns::cluster(ctx, svc, port, subset, auto_mtls, &mut cluster)?;
        }
        // Aliases never get here: `Context` keeps them out of its services.
        Resolution::Passthrough | Resolution::Alias(_) => {
            cluster.cluster_discovery_type = discovery(DiscoveryType::OriginalDst);
            cluster.lb_policy = LbPolicy::ClusterProvided as i32;
            // A ServiceEntry's targetPort replaces the original destination's port.
            if let (Origin::ServiceEntry { .. }, Some(target)) = (&svc.origin, port.target_port) {
                cluster.lb_config = Some(cluster::LbConfig::OriginalDstLbConfig(
                    cluster::OriginalDstLbConfig {
                        upstream_port_override: Some(u32v(u32::from(target))),
                        ..Default::default()
                    },
                ));
            }
        }
    }
    // `istio.config` names the DestinationRule (for humans and tools); `istio.services` feeds
    // istio-proxy's telemetry and is only sent to Istio proxies.
    let mut fields = Vec::new();
    if istio {
        fields.push((
            "services",
            list_value(vec![struct_value(vec![
                ("host", string_value(&svc.hostname)),
                ("name", string_value(&svc.name)),
                ("namespace", string_value(&svc.namespace)),
            ])]),
        ));
    }
    if svc.is_external() {
        fields.push(("external", bool_value(true)));
    }
    if let Some(dr) = dr {
        fields.insert(
            0,
            (
                "config",
                string_value(&format!(
                    "/apis/networking.istio.io/v1/namespaces/{}/destination-rule/{}",
                    dr.id.namespace, dr.id.name
                )),
            ),
        );
        if !subset.is_empty() {
            fields.push(("subset", string_value(subset)));
        }
    }
    if !fields.is_empty() {
        cluster.metadata = Some(metadata(vec![("istio", fields)]));
    }
    // Shared policy first, then this cluster's own fields (which win where both set one).
    let mut bytes = Vec::with_capacity(template.bytes.len() + 3 * name.len() + 64);
    bytes.extend_from_slice(&template.bytes);
    if eds {
        // name (1), type (2) = EDS, eds_cluster_config (3) { eds_config (1), service_name (2) },
        // alt_stat_name (28): the fields of every EDS cluster, written directly.
        static ADS: std::sync::LazyLock<Vec<u8>> =
            std::sync::LazyLock::new(|| ads().encode_to_vec());
        wire::string_field(&mut bytes, 1, &name);
        wire::varint_field(&mut bytes, 2, DiscoveryType::Eds as u64);
        wire::open_field(
            &mut bytes,
            3,
            wire::field_len(ADS.len()) + wire::field_len(name.len()),
        );
        wire::bytes_field(&mut bytes, 1, &ADS);
        wire::string_field(&mut bytes, 2, &name);
        wire::string_field(&mut bytes, 28, &cluster.alt_stat_name);
        if let Some(m) = &cluster.metadata {
            wire::message_field(&mut bytes, 25, m);
        }
    } else {
        cluster.encode_raw(&mut bytes);
    }
    Some((Encoded::from_bytes(&name, bytes), eds))
}

fn inbound(ctx: &Context<'_>, port: &ServicePort, target: u16) -> Cluster {
    let name = inbound_cluster(target);
    let mut cluster = Cluster {
        name: name.clone(),
        connect_timeout: Some(seconds(CONNECT_TIMEOUT_SECS)),
        circuit_breakers: Some(policy::default_circuit_breakers()),
        ..Default::default()
    };
    // A Sidecar's `defaultEndpoint`, else without iptables the application's address.
    let endpoint = ctx.inbound_endpoint(target).or_else(|| {
        ctx.bound_listeners().then(|| {
            let app = ctx
                .proxy
                .app_address
                .unwrap_or(IpAddr::from([127, 0, 0, 1]));
            crate::context::InboundEndpoint::Ip(app, target)
        })
    });
    if let Some(endpoint) = endpoint {
        let address = match endpoint {
            crate::context::InboundEndpoint::Ip(ip, port) => ip_socket(ip, u32::from(port)),
            crate::context::InboundEndpoint::Unix(path) => crate::proto::pipe(&path),
        };
        cluster.cluster_discovery_type = discovery(DiscoveryType::Static);
        cluster.load_assignment = Some(ClusterLoadAssignment {
            cluster_name: name.clone(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(address),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
    } else {
        cluster.cluster_discovery_type = discovery(DiscoveryType::OriginalDst);
        cluster.lb_policy = LbPolicy::ClusterProvided as i32;
        cluster.cleanup_interval = Some(seconds(60));
        cluster.upstream_bind_config = Some(bind_127_0_0_6());
    }
    if port.protocol.is_http2() {
        cluster.typed_extension_protocol_options = http2_options();
    }
    cluster
}

fn http2_options() -> std::collections::HashMap<String, envoy_types::pb::google::protobuf::Any> {
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(
                    http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                        Default::default(),
                    ),
                ),
            },
        )),
        ..Default::default()
    };
    map_of([(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
        any(&options),
    )])
}

fn bind_127_0_0_6() -> BindConfig {
    BindConfig {
        source_address: Some(SocketAddress {
            address: "127.0.0.6".to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn black_hole() -> Cluster {
    Cluster {
        name: "BlackHoleCluster".to_owned(),
        cluster_discovery_type: discovery(DiscoveryType::Static),
        connect_timeout: Some(seconds(CONNECT_TIMEOUT_SECS)),
        lb_policy: LbPolicy::RoundRobin as i32,
        ..Default::default()
    }
}

fn passthrough() -> Cluster {
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                http_protocol_options::UseDownstreamHttpConfig {
                    http_protocol_options: Some(Default::default()),
                    http2_protocol_options: Some(Default::default()),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    };
    Cluster {
        name: "PassthroughCluster".to_owned(),
        cluster_discovery_type: discovery(DiscoveryType::OriginalDst),
        connect_timeout: Some(seconds(CONNECT_TIMEOUT_SECS)),
        lb_policy: LbPolicy::ClusterProvided as i32,
        circuit_breakers: Some(policy::default_circuit_breakers()),
        typed_extension_protocol_options: map_of([(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            any(&options),
        )]),
        ..Default::default()
    }
}

fn inbound_passthrough() -> Cluster {
    Cluster {
        name: "InboundPassthroughCluster".to_owned(),
        cluster_discovery_type: discovery(DiscoveryType::OriginalDst),
        connect_timeout: Some(seconds(CONNECT_TIMEOUT_SECS)),
        lb_policy: LbPolicy::ClusterProvided as i32,
        circuit_breakers: Some(policy::default_circuit_breakers()),
        upstream_bind_config: Some(bind_127_0_0_6()),
        ..Default::default()
    }
}
