//! A gateway's (`router~` proxy's) listeners, as istiod builds them (`gateway.go`,
//! `model/gateway.go`): the Gateways selecting the router are merged into one slot per
//! resolved port and bind, and each slot becomes a listener `BIND_PORT` with a filter chain
//! per server (HTTP: one chain and RDS `http.PORT`; HTTPS: a chain per server by SNI and RDS
//! `https.PORT.NAME.GATEWAY.NAMESPACE`; TLS and TCP: chains to the bound VirtualServices'
//! `tls` and `tcp` routes). Route configurations are in `gateway_routes`.

use envoy_types::pb::envoy::{
    config::{
        core::v3::{DataSource, TrafficDirection, TransportSocket, data_source},
        listener::v3::{FilterChain, FilterChainMatch, Listener},
    },
    extensions::{
        filters::listener::tls_inspector::v3::TlsInspector,
        transport_sockets::tls::v3::{
            CertificateValidationContext, CommonTlsContext, DownstreamTlsContext,
            SubjectAltNameMatcher, TlsCertificate, TlsParameters, certificate_validation_context,
            common_tls_context, subject_alt_name_matcher, tls_parameters,
        },
    },
    r#type::matcher::v3::{StringMatcher, string_matcher},
};
use sextant_model::{
    CA_CREDENTIAL_SUFFIX, CREDENTIAL_PREFIX, Gateway, Protocol, Server, ServerTls, ServerTlsMode,
    TlsVersion, VirtualService, WeightedDestination,
};
use sextant_resources::secret;

use crate::{
    context::Context,
    lds,
    policy::sds,
    proto::{boolv, seconds, socket, transport_socket},
};

/// Servers of the router's Gateways sharing one listener.
pub(crate) struct Slot<'a> {
    /// The port the listener binds: the server port translated to the gateway Service's
    /// target port.
    pub port: u16,
    /// `bind`, if the servers set one.
    pub bind: Option<&'a str>,
    /// Plain-text servers (HTTP ones merge; one TCP server), or TLS servers sharing by SNI.
    pub plain: bool,
    /// The servers, in merge order.
    pub servers: Vec<(&'a Gateway, &'a Server)>,
}

impl Slot<'_> {
    /// The listener's name, `BIND_PORT`.
    pub fn listener_name(&self, ctx: &Context<'_>) -> String {
        format!("{}_{}", self.address(ctx), self.port)
    }

    fn address(&self, ctx: &Context<'_>) -> String {
        match self.bind {
            Some(b) => b.strip_prefix("unix://").unwrap_or(b).to_owned(),
            // A gateway without interception on a shared machine binds its own address.
            None => ctx
                .proxy
                .bind_address
                .map_or_else(|| "0.0.0.0".to_owned(), |a| a.to_string()),
        }
    }
}

/// RDS name of the plain-text HTTP servers on a slot.
pub(crate) fn http_route_name(slot: &Slot<'_>) -> String {
    with_bind(format!("http.{}", slot.port), slot.bind)
}

/// RDS name of one HTTPS server: the Gateway's port, not the target port.
pub(crate) fn https_route_name(gateway: &Gateway, server: &Server, bind: Option<&str>) -> String {
    with_bind(
        format!(
            "https.{}.{}.{}.{}",
            server.port, server.port_name, gateway.id.name, gateway.id.namespace
        ),
        bind,
    )
}

fn with_bind(name: String, bind: Option<&str>) -> String {
    match bind {
        Some(b) => format!("{name}.{b}"),
        None => name,
    }
}

/// Whether a server's HTTP is served by the gateway (HTTP, or HTTPS it terminates).
pub(crate) fn serves_http(server: &Server) -> bool {
    server.protocol.is_http()
        || (server.protocol == Protocol::Https
            && server.tls.as_ref().is_none_or(|t| t.mode.terminates()))
}

/// Istio's `mergeGateways` for this router: Gateways oldest first, each server into the slot
/// of its resolved port and bind; servers that cannot share a slot are dropped. Linear in the
/// servers and hosts: each slot keeps the SNI names and route names it holds in sets.
pub(crate) fn merge<'a>(ctx: &Context<'a>) -> Vec<Slot<'a>> {
    use std::collections::{HashMap, HashSet};
    let mut slots: Vec<Slot<'a>> = Vec::new();
    // By (port, bind): the slot, its SNI names and its HTTPS route names.
    let mut index: HashMap<(u16, Option<&'a str>), usize> = HashMap::new();
    let mut names: Vec<(HashSet<&'a str>, HashSet<String>)> = Vec::new();
    for gateway in ctx.snapshot.gateways_for(&ctx.proxy.labels) {
        for server in &gateway.servers {
            let port = resolve_port(ctx, server.port);
            let bind = server.bind.as_deref();
            let i = *index.entry((port, bind)).or_insert_with(|| {
                slots.push(Slot {
                    port,
                    bind,
                    plain: !server.is_tls(),
                    servers: Vec::new(),
                });
                names.push(Default::default());
                slots.len() - 1
            });
            let slot = &mut slots[i];
            let (sni, routes) = &mut names[i];
            let hosts = server.dns_names();
            let route = (server.is_tls() && serves_http(server))
                .then(|| https_route_name(gateway, server, bind));
            let fits = if slot.servers.is_empty() {
                true
            } else if server.is_tls() {
                !slot.plain
                    && !hosts.iter().any(|h| sni.contains(h))
                    && route.as_ref().is_none_or(|r| !routes.contains(r))
            } else {
                slot.plain
                    && server.protocol.is_http()
                    && slot.servers.iter().all(|(_, s)| s.protocol.is_http())
            };
            // A server that cannot share the slot is dropped, as in Istio.
            if fits {
                if server.is_tls() {
                    sni.extend(hosts);
                    routes.extend(route);
                }
                slot.servers.push((gateway, server));
            }
        }
    }
    slots.retain(|s| !s.servers.is_empty());
    slots
}

/// The target port of the first port numbered `port` of a Service selecting the router, else
/// `port` itself.
fn resolve_port(ctx: &Context<'_>, port: u16) -> u16 {
    ctx.snapshot
        .services_selecting(&ctx.proxy.namespace, &ctx.proxy.labels)
        .flat_map(|s| s.ports.iter())
        .find(|p| p.port == port)
        .map_or(port, |p| p.target_port.unwrap_or(p.port))
}

/// The router's listeners, sorted by name; a slot without any chain has none.
pub(crate) fn listeners(ctx: &Context<'_>, slots: &[Slot<'_>]) -> Vec<Listener> {
    let mut out: Vec<Listener> = slots
        .iter()
        .filter_map(|slot| listener(ctx, slot))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(logs) = crate::hcm::access_log::AccessLogs::of(&ctx.snapshot.mesh_config) {
        logs.add_to(&mut out);
    }
    out
}

fn listener(ctx: &Context<'_>, slot: &Slot<'_>) -> Option<Listener> {
    let name = slot.listener_name(ctx);
    let mut chains = Vec::new();
    if slot.plain {
        let (gateway, server) = slot.servers[0];
        if server.protocol.is_http() {
            chains.push(FilterChain {
                filters: vec![crate::hcm::gateway_hcm(
                    format!("outbound_{name}"),
                    http_route_name(slot),
                )],
                ..Default::default()
            });
        } else {
            chains.extend(tcp_chain(ctx, gateway, server, None));
        }
    } else {
        let mut used_sni: std::collections::HashSet<String> = Default::default();
        for (gateway, server) in &slot.servers {
            let tls = server.tls.clone().unwrap_or_default();
            if serves_http(server) {
                let stat = server
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("outbound_{name}"));
                chains.push(FilterChain {
                    filter_chain_match: Some(sni_match(server)),
                    transport_socket: Some(downstream_tls(&tls, true)),
                    filters: vec![crate::hcm::gateway_hcm(
                        stat,
                        https_route_name(gateway, server, slot.bind),
                    )],
                    ..Default::default()
                });
            } else if tls.mode.terminates() {
                let socket = downstream_tls(&tls, false);
                chains.extend(tcp_chain(ctx, gateway, server, Some(socket)));
            } else if tls.mode == ServerTlsMode::Passthrough {
                chains.extend(passthrough_chains(ctx, gateway, server, &mut used_sni));
            } else {
                chains.extend(crate::gateway_routes::auto_passthrough_chains(ctx, server));
            }
        }
    }
    if chains.is_empty() {
        return None;
    }
    for c in &mut chains {
        c.transport_socket_connect_timeout = Some(seconds(15));
    }
    let inspects = chains.iter().any(|c| {
        c.transport_socket.is_some()
            || c.filter_chain_match
                .as_ref()
                .is_some_and(|m| !m.server_names.is_empty() || !m.application_protocols.is_empty())
    });
    let address = match slot.bind {
        // `unix:///path` or `unix://@abstract`: a pipe, port 0.
        Some(b) if b.starts_with("unix://") => crate::proto::pipe(&slot.address(ctx)),
        _ => socket(&slot.address(ctx), u32::from(slot.port)),
    };
    Some(Listener {
        name,
        address: Some(address),
        traffic_direction: TrafficDirection::Outbound as i32,
        listener_filters: if inspects {
            vec![lds::listener_filter(
                "envoy.filters.listener.tls_inspector",
                &TlsInspector::default(),
            )]
        } else {
            Vec::new()
        },
        filter_chains: chains,
        ..Default::default()
    })
}

/// SNI match of a terminating server: its host names, none when one is `*`.
fn sni_match(server: &Server) -> FilterChainMatch {
    let names = server.dns_names();
    FilterChainMatch {
        server_names: if names.contains(&"*") {
            Vec::new()
        } else {
            names.iter().map(|h| (*h).to_owned()).collect()
        },
        ..Default::default()
    }
}

/// The VirtualServices bound to `gateway` and visible to the router's namespace, oldest first.
pub(crate) fn bound_virtual_services<'a>(
    ctx: &Context<'a>,
    gateway: &Gateway,
) -> Vec<&'a std::sync::Arc<VirtualService>> {
    let key = gateway.key();
    ctx.snapshot
        .virtual_services
        .iter()
        .filter(|vs| {
            !vs.is_delegate()
                && vs.gateways.contains(&key)
                && vs.export_to.allows(&ctx.proxy.namespace)
        })
        .collect()
}

/// The cluster and weight of a TCP or TLS route destination.
fn l4_destination(
    ctx: &Context<'_>,
    vs: &VirtualService,
    d: &WeightedDestination,
    port: u16,
) -> (String, u32) {
    let (cluster, _, _) = crate::routes::destination_cluster(ctx, vs, &d.destination, port);
    (cluster, d.weight.max(1))
}

/// A TCP server's (or terminated TLS server's) chain: the first `tcp` rule of a bound
/// VirtualService that applies on the server port; none without one.
fn tcp_chain(
    ctx: &Context<'_>,
    gateway: &Gateway,
    server: &Server,
    socket: Option<TransportSocket>,
) -> Option<FilterChain> {
    ctx.bind(Some(gateway.key()));
    let found = bound_virtual_services(ctx, gateway)
        .into_iter()
        .find_map(|vs| {
            lds::first_tcp_rule(ctx, &vs.tcp, server.port).map(|rule| {
                let dests = rule
                    .route
                    .iter()
                    .map(|d| l4_destination(ctx, vs, d, server.port))
                    .collect();
                lds::tcp_proxy(&format!("{}_{}", gateway.id.name, server.port), dests)
            })
        });
    ctx.bind(None);
    let filter = found?;
    Some(FilterChain {
        filter_chain_match: socket.is_some().then(|| sni_match(server)),
        transport_socket: socket,
        filters: vec![filter],
        ..Default::default()
    })
}

/// PASSTHROUGH: a chain per `tls` match of a bound VirtualService on the server port, by its
/// SNI hosts; SNI already taken on the listener is skipped.
fn passthrough_chains(
    ctx: &Context<'_>,
    gateway: &Gateway,
    server: &Server,
    used: &mut std::collections::HashSet<String>,
) -> Vec<FilterChain> {
    let mut out = Vec::new();
    ctx.bind(Some(gateway.key()));
    for vs in bound_virtual_services(ctx, gateway) {
        for rule in &vs.tls {
            for m in rule
                .matches
                .iter()
                .filter(|m| lds::l4_applies(ctx, m, server.port))
            {
                let sni: Vec<String> = m
                    .sni_hosts
                    .iter()
                    .filter(|h| !used.contains(*h))
                    .cloned()
                    .collect();
                if sni.is_empty() {
                    continue;
                }
                used.extend(sni.iter().cloned());
                let dests = rule
                    .route
                    .iter()
                    .map(|d| l4_destination(ctx, vs, d, server.port))
                    .collect();
                out.push(FilterChain {
                    filter_chain_match: Some(FilterChainMatch {
                        server_names: sni,
                        ..Default::default()
                    }),
                    filters: vec![lds::tcp_proxy(
                        &format!("{}_{}", gateway.id.name, server.port),
                        dests,
                    )],
                    ..Default::default()
                });
            }
        }
    }
    ctx.bind(None);
    out
}

/// A terminating server's DownstreamTlsContext (Istio's `BuildListenerTLSContext`).
fn downstream_tls(tls: &ServerTls, http: bool) -> TransportSocket {
    let mut common = CommonTlsContext {
        alpn_protocols: if tls.mode == ServerTlsMode::IstioMutual && !http {
            vec!["istio-peer-exchange".into(), "h2".into(), "http/1.1".into()]
        } else {
            vec!["h2".into(), "http/1.1".into()]
        },
        ..Default::default()
    };
    let mut validation = CertificateValidationContext {
        match_typed_subject_alt_names: tls.subject_alt_names.iter().map(|s| san(s)).collect(),
        verify_certificate_spki: tls.verify_certificate_spki.clone(),
        verify_certificate_hash: tls.verify_certificate_hash.clone(),
        ..Default::default()
    };
    if tls.insecure_skip_verify {
        validation.trust_chain_verification =
            certificate_validation_context::TrustChainVerification::AcceptUntrusted as i32;
    }
    let verifies_clients = matches!(
        tls.mode,
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual | ServerTlsMode::IstioMutual
    );
    if tls.mode == ServerTlsMode::IstioMutual {
        common.tls_certificate_sds_secret_configs = vec![sds(secret::WORKLOAD)];
        common.validation_context_type = Some(combined(validation, secret::ROOT.to_owned()));
    } else if !tls.credential_names.is_empty() {
        common.tls_certificate_sds_secret_configs = tls
            .credential_names
            .iter()
            .map(|n| credential_sds(&format!("{CREDENTIAL_PREFIX}{n}")))
            .collect();
        if verifies_clients {
            let ca = match &tls.ca_credential_name {
                Some(n) => format!("{CREDENTIAL_PREFIX}{n}"),
                None => format!(
                    "{CREDENTIAL_PREFIX}{}{CA_CREDENTIAL_SUFFIX}",
                    tls.credential_names[0]
                ),
            };
            common.validation_context_type = Some(combined(validation, ca));
        } else if !tls.subject_alt_names.is_empty() {
            common.validation_context_type =
                Some(common_tls_context::ValidationContextType::ValidationContext(validation));
        }
    } else {
        // Files in the gateway's own file system, read by Envoy itself.
        common.tls_certificates = tls
            .files
            .iter()
            .map(|f| TlsCertificate {
                certificate_chain: Some(file(&f.certificate)),
                private_key: Some(file(&f.private_key)),
                ..Default::default()
            })
            .collect();
        if verifies_clients && let Some(ca) = &tls.ca_certificates {
            validation.trusted_ca = Some(file(ca));
            validation.crl = tls.ca_crl.as_deref().map(file);
            common.validation_context_type =
                Some(common_tls_context::ValidationContextType::ValidationContext(validation));
        }
    }
    if tls.mode != ServerTlsMode::IstioMutual {
        common.tls_params = Some(TlsParameters {
            tls_minimum_protocol_version: protocol(tls.min_protocol_version),
            tls_maximum_protocol_version: protocol(tls.max_protocol_version),
            cipher_suites: tls.cipher_suites.clone(),
            ecdh_curves: tls.ecdh_curves.clone(),
            ..Default::default()
        });
    }
    let context = DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(boolv(matches!(
            tls.mode,
            ServerTlsMode::Mutual | ServerTlsMode::IstioMutual
        ))),
        ..Default::default()
    };
    transport_socket("envoy.transport_sockets.tls", &context)
}

/// A `kubernetes://` credential over ADS, without Sextant's usual initial fetch timeout: a
/// missing Secret must not hold the listener (Istio leaves Envoy's default).
fn credential_sds(
    name: &str,
) -> envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig {
    let mut config = sds(name);
    if let Some(source) = &mut config.sds_config {
        source.initial_fetch_timeout = None;
    }
    config
}

fn combined(
    default: CertificateValidationContext,
    sds_name: String,
) -> common_tls_context::ValidationContextType {
    common_tls_context::ValidationContextType::CombinedValidationContext(
        common_tls_context::CombinedCertificateValidationContext {
            default_validation_context: Some(default),
            validation_context_sds_secret_config: Some(if sds_name == secret::ROOT {
                sds(&sds_name)
            } else {
                credential_sds(&sds_name)
            }),
            ..Default::default()
        },
    )
}

fn san(s: &str) -> SubjectAltNameMatcher {
    // Istio matches each configured name exactly, as any SAN type it could be.
    SubjectAltNameMatcher {
        san_type: if s.contains("://") {
            subject_alt_name_matcher::SanType::Uri
        } else {
            subject_alt_name_matcher::SanType::Dns
        } as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(s.to_owned())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_owned())),
        ..Default::default()
    }
}

fn protocol(v: TlsVersion) -> i32 {
    use tls_parameters::TlsProtocol;
    (match v {
        TlsVersion::Auto => TlsProtocol::TlsAuto,
        TlsVersion::V1_0 => TlsProtocol::TlSv10,
        TlsVersion::V1_1 => TlsProtocol::TlSv11,
        TlsVersion::V1_2 => TlsProtocol::TlSv12,
        TlsVersion::V1_3 => TlsProtocol::TlSv13,
    }) as i32
}
