//! A self-contained Envoy bootstrap holding a proxy's compiled resources as
//! `static_resources`: EDS clusters carry their load assignment inline and listeners carry their
//! route configurations inline, so `envoy --mode validate` checks every resource, routes
//! included. An ADS config source is declared (never contacted in validate mode) because SDS
//! secrets in TLS contexts refer to it.

use envoy_types::pb::envoy::{
    config::{
        bootstrap::v3::{Admin, Bootstrap, LayeredRuntime, RuntimeLayer, bootstrap, runtime_layer},
        cluster::v3::{Cluster, cluster},
        core::v3::{
            ApiConfigSource, ApiVersion, ConfigSource, GrpcService, Node, TransportSocket,
            api_config_source, config_source, grpc_service, transport_socket,
        },
        endpoint::v3::{ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints, lb_endpoint},
        listener::v3::{Filter, Listener, filter},
        route::v3::RouteConfiguration,
    },
    extensions::{
        filters::network::http_connection_manager::v3::{
            HttpConnectionManager, http_connection_manager,
        },
        transport_sockets::tls::v3::{UpstreamTlsContext, common_tls_context},
        upstreams::http::v3::{HttpProtocolOptions, http_protocol_options},
    },
};
use prost::Message;

use crate::{
    Resources,
    proto::{any, map_of, seconds, socket},
};

mod stats;
pub use stats::{StatsIdentity, add_stats_config, stats_config};

/// The name of the static cluster that points at the control plane.
pub const XDS_CLUSTER: &str = "xds-grpc";

/// The RE2 program size above which Envoy rejects a regex: Istio's bootstrap raises Envoy's
/// runtime `re2.max_program_size.error_level` from 100 to this (`pkg/bootstrap/config.go`), so
/// that the regexes its validation accepts are accepted by Envoy too. Istio leaves the warn
/// level at Envoy's default (never).
pub const RE2_MAX_PROGRAM_SIZE: u32 = 32768;

/// Istio's runtime layers: a static layer with its runtime flags, then the admin layer (so
/// `/runtime_modify` works as on an Istio sidecar).
fn layered_runtime() -> LayeredRuntime {
    use envoy_types::pb::google::protobuf::Struct;
    LayeredRuntime {
        layers: vec![
            RuntimeLayer {
                name: "global config".to_owned(),
                layer_specifier: Some(runtime_layer::LayerSpecifier::StaticLayer(Struct {
                    fields: map_of([(
                        "re2.max_program_size.error_level".to_owned(),
                        crate::proto::string_value(&RE2_MAX_PROGRAM_SIZE.to_string()),
                    )]),
                })),
            },
            RuntimeLayer {
                name: "admin".to_owned(),
                layer_specifier: Some(runtime_layer::LayerSpecifier::AdminLayer(
                    runtime_layer::AdminLayer {},
                )),
            },
        ],
    }
}

/// Builds the static bootstrap for `node_id` from its resources.
pub fn static_bootstrap(node_id: &str, resources: &Resources, admin_port: u32) -> Bootstrap {
    let mut clusters: Vec<Cluster> = resources
        .clusters
        .iter()
        .map(|c| inline_endpoints(c, &resources.endpoints))
        .collect();
    clusters.push(xds_cluster("127.0.0.1", 15010));
    let listeners = resources
        .listeners
        .iter()
        .map(|l| inline_routes(l, &resources.routes))
        .collect();
    Bootstrap {
        node: Some(Node {
            id: node_id.to_owned(),
            cluster: "sextant".to_owned(),
            ..Default::default()
        }),
        admin: Some(Admin {
            address: Some(socket("127.0.0.1", admin_port)),
            ..Default::default()
        }),
        static_resources: Some(bootstrap::StaticResources {
            listeners,
            clusters,
            ..Default::default()
        }),
        dynamic_resources: Some(bootstrap::DynamicResources {
            ads_config: Some(ads_config()),
            ..Default::default()
        }),
        layered_runtime: Some(layered_runtime()),
        ..Default::default()
    }
}

/// TLS to the secure xDS port: files the proxy reads at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XdsTls {
    /// The root that signed the control plane's certificate (`root-cert.pem`).
    pub root_cert: String,
    /// The proxy's certificate chain and key, when it authenticates with a certificate.
    pub client: Option<(String, String)>,
    /// A service-account token file sent as `authorization: Bearer TOKEN` on every stream.
    /// Envoy's own gRPC client cannot send a file's content as metadata, so the ADS stream
    /// then goes through its Google gRPC client, which re-reads the file for each new stream
    /// (a projected token is rotated in place).
    pub token: Option<String>,
    /// The name the control plane's certificate must carry when it is not the host dialled
    /// (an IP address).
    pub server_name: Option<String>,
}

/// The bootstrap of a proxy that gets everything over ADS from `xds_host:xds_port`, over TLS
/// when `tls` is given.
pub fn dynamic_bootstrap(
    node_id: &str,
    metadata: &[(String, String)],
    xds_host: &str,
    xds_port: u32,
    delta: bool,
    admin_port: u32,
    tls: Option<&XdsTls>,
) -> Bootstrap {
    use envoy_types::pb::google::protobuf::Struct;
    let mut ads = ads_config();
    if delta {
        ads.api_type = api_config_source::ApiType::DeltaGrpc as i32;
    }
    let mut static_clusters = Vec::new();
    match tls {
        Some(tls) if tls.token.is_some() => {
            ads.grpc_services = vec![google_grpc(xds_host, xds_port, tls)];
        }
        _ => {
            let mut xds = xds_cluster(xds_host, xds_port);
            let is_ip = xds_host.parse::<std::net::IpAddr>().is_ok();
            if is_ip {
                xds.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                    cluster::DiscoveryType::Static as i32,
                ));
            }
            if let Some(tls) = tls {
                xds.transport_socket = Some(xds_tls_socket(xds_host, is_ip, tls));
            }
            static_clusters.push(xds);
        }
    }
    let ads_source = || ConfigSource {
        config_source_specifier: Some(
            config_source::ConfigSourceSpecifier::Ads(Default::default()),
        ),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    };
    Bootstrap {
        node: Some(Node {
            id: node_id.to_owned(),
            cluster: "sextant".to_owned(),
            metadata: Some(Struct {
                fields: crate::proto::map_of(
                    metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), crate::proto::string_value(v))),
                ),
            }),
            ..Default::default()
        }),
        admin: Some(Admin {
            address: Some(socket("127.0.0.1", admin_port)),
            ..Default::default()
        }),
        static_resources: Some(bootstrap::StaticResources {
            clusters: static_clusters,
            ..Default::default()
        }),
        dynamic_resources: Some(bootstrap::DynamicResources {
            ads_config: Some(ads),
            cds_config: Some(ads_source()),
            lds_config: Some(ads_source()),
            ..Default::default()
        }),
        layered_runtime: Some(layered_runtime()),
        ..Default::default()
    }
}

/// TLS to the control plane: its certificate must chain to `tls.root_cert` and name the host
/// the proxy dials (a DNS or IP SAN); the proxy presents its own certificate if it has one.
fn xds_tls_socket(host: &str, is_ip: bool, tls: &XdsTls) -> TransportSocket {
    use envoy_types::pb::envoy::{
        config::core::v3::{DataSource, data_source},
        extensions::transport_sockets::tls::v3::{
            CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, TlsCertificate,
            subject_alt_name_matcher::SanType,
        },
        r#type::matcher::v3::{StringMatcher, string_matcher},
    };
    let file = |path: &str| DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_owned())),
        ..Default::default()
    };
    // A server name given stands for the host in both the SNI and the name checked.
    let (host, is_ip) = match &tls.server_name {
        Some(name) => (name.as_str(), false),
        None => (host, is_ip),
    };
    let san = SubjectAltNameMatcher {
        san_type: if is_ip {
            SanType::IpAddress
        } else {
            SanType::Dns
        } as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(host.to_owned())),
            ..Default::default()
        }),
        ..Default::default()
    };
    let context = UpstreamTlsContext {
        sni: if is_ip {
            String::new()
        } else {
            host.to_owned()
        },
        common_tls_context: Some(CommonTlsContext {
            alpn_protocols: vec!["h2".to_owned()],
            tls_certificates: tls
                .client
                .iter()
                .map(|(chain, key)| TlsCertificate {
                    certificate_chain: Some(file(chain)),
                    private_key: Some(file(key)),
                    ..Default::default()
                })
                .collect(),
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: Some(file(&tls.root_cert)),
                        match_typed_subject_alt_names: vec![san],
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    crate::proto::transport_socket("envoy.transport_sockets.tls", &context)
}

/// The name of Envoy's credentials plugin that sends a file's content as gRPC metadata.
const FILE_BASED_METADATA: &str = "envoy.grpc_credentials.file_based_metadata";

/// The control plane through Envoy's Google gRPC client: TLS trusting `tls.root_cert`, the
/// token file's content as `authorization: Bearer` on every stream (read anew for each), and,
/// when the host is not the name the certificate carries, gRPC's target name override.
fn google_grpc(host: &str, port: u32, tls: &XdsTls) -> GrpcService {
    use envoy_types::pb::envoy::config::{
        core::v3::{
            DataSource, data_source,
            grpc_service::google_grpc::{
                CallCredentials, ChannelArgs, ChannelCredentials, SslCredentials,
                call_credentials::{self, MetadataCredentialsFromPlugin},
                channel_args, channel_credentials,
            },
        },
        grpc_credential::v3::FileBasedMetadataConfig,
    };
    let file = |path: &str| DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_owned())),
        ..Default::default()
    };
    let target_uri = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let call_credentials = tls
        .token
        .iter()
        .map(|token| CallCredentials {
            credential_specifier: Some(call_credentials::CredentialSpecifier::FromPlugin(
                MetadataCredentialsFromPlugin {
                    name: FILE_BASED_METADATA.to_owned(),
                    config_type: Some(
                        call_credentials::metadata_credentials_from_plugin::ConfigType::TypedConfig(
                            any(&FileBasedMetadataConfig {
                                secret_data: Some(file(token)),
                                header_key: "authorization".to_owned(),
                                header_prefix: "Bearer ".to_owned(),
                            }),
                        ),
                    ),
                },
            )),
        })
        .collect();
    let channel_args = tls.server_name.as_ref().map(|name| ChannelArgs {
        args: map_of([(
            "grpc.ssl_target_name_override".to_owned(),
            channel_args::Value {
                value_specifier: Some(channel_args::value::ValueSpecifier::StringValue(
                    name.clone(),
                )),
            },
        )]),
    });
    GrpcService {
        target_specifier: Some(grpc_service::TargetSpecifier::GoogleGrpc(
            grpc_service::GoogleGrpc {
                target_uri,
                stat_prefix: "xds".to_owned(),
                channel_credentials: Some(ChannelCredentials {
                    credential_specifier: Some(
                        channel_credentials::CredentialSpecifier::SslCredentials(SslCredentials {
                            root_certs: Some(file(&tls.root_cert)),
                            cert_chain: tls.client.as_ref().map(|(chain, _)| file(chain)),
                            private_key: tls.client.as_ref().map(|(_, key)| file(key)),
                        }),
                    ),
                }),
                call_credentials,
                credentials_factory_name: FILE_BASED_METADATA.to_owned(),
                channel_args,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// ADS over gRPC to [`XDS_CLUSTER`].
pub fn ads_config() -> ApiConfigSource {
    ApiConfigSource {
        api_type: api_config_source::ApiType::Grpc as i32,
        transport_api_version: ApiVersion::V3 as i32,
        grpc_services: vec![GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: XDS_CLUSTER.to_owned(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
        set_node_on_first_message_only: true,
        ..Default::default()
    }
}

/// The static cluster that reaches the control plane over HTTP/2.
pub fn xds_cluster(host: &str, port: u32) -> Cluster {
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
    Cluster {
        name: XDS_CLUSTER.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        )),
        connect_timeout: Some(seconds(1)),
        // `localhost` resolves to ::1 first on most machines, where Sextant, listening on
        // IPv4 by default, is not: prefer IPv4, fall back to IPv6.
        dns_lookup_family: cluster::DnsLookupFamily::V4Preferred as i32,
        typed_extension_protocol_options: map_of([(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            any(&options),
        )]),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: XDS_CLUSTER.to_owned(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(
                        envoy_types::pb::envoy::config::endpoint::v3::Endpoint {
                            address: Some(socket(host, port)),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn inline_endpoints(c: &Cluster, assignments: &[ClusterLoadAssignment]) -> Cluster {
    let mut c = c.clone();
    let sockets = c.transport_socket.iter_mut().chain(
        c.transport_socket_matches
            .iter_mut()
            .filter_map(|m| m.transport_socket.as_mut()),
    );
    for socket in sockets {
        sds_over_grpc(socket);
    }
    if let Some(eds) = c.eds_cluster_config.take() {
        c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        ));
        c.load_assignment = Some(
            assignments
                .iter()
                .find(|a| a.cluster_name == eds.service_name)
                .cloned()
                .unwrap_or_else(|| ClusterLoadAssignment {
                    cluster_name: eds.service_name.clone(),
                    ..Default::default()
                }),
        );
    }
    c
}

/// Envoy's validate mode has no ADS connection and crashes on SDS configs that use ADS, so the
/// static form fetches secrets over a plain gRPC SDS source on the same control-plane cluster.
fn sds_over_grpc(socket: &mut TransportSocket) {
    let Some(transport_socket::ConfigType::TypedConfig(config)) = &mut socket.config_type else {
        return;
    };
    let Ok(mut tls) = UpstreamTlsContext::decode(config.value.as_slice()) else {
        return;
    };
    let source = ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(
            ads_config(),
        )),
        initial_fetch_timeout: Some(seconds(0)),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    };
    if let Some(common) = tls.common_tls_context.as_mut() {
        for sds in &mut common.tls_certificate_sds_secret_configs {
            sds.sds_config = Some(source.clone());
        }
        if let Some(common_tls_context::ValidationContextType::CombinedValidationContext(combined)) =
            common.validation_context_type.as_mut()
            && let Some(sds) = combined.validation_context_sds_secret_config.as_mut()
        {
            sds.sds_config = Some(source.clone());
        }
    }
    *config = any(&tls);
}

fn inline_routes(l: &Listener, routes: &[RouteConfiguration]) -> Listener {
    let mut l = l.clone();
    let chains = l
        .filter_chains
        .iter_mut()
        .chain(l.default_filter_chain.as_mut());
    for chain in chains {
        for f in &mut chain.filters {
            inline_hcm_routes(f, routes);
        }
    }
    l
}

fn inline_hcm_routes(f: &mut Filter, routes: &[RouteConfiguration]) {
    let Some(filter::ConfigType::TypedConfig(config)) = &mut f.config_type else {
        return;
    };
    let Ok(mut hcm) = HttpConnectionManager::decode(config.value.as_slice()) else {
        return;
    };
    if let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
        let route = routes
            .iter()
            .find(|r| r.name == rds.route_config_name)
            .cloned()
            .unwrap_or_else(|| crate::rds::empty(&rds.route_config_name));
        hcm.route_specifier = Some(http_connection_manager::RouteSpecifier::RouteConfig(route));
        *config = any(&hcm);
    }
}

/// Envoy's Prometheus port on a sidecar, as Istio's (`http-envoy-prom`).
pub const PROMETHEUS_PORT: u32 = 15090;
/// The port kubelet probes a sidecar's readiness on, as Istio's (`/healthz/ready`).
pub const READINESS_PORT: u32 = 15021;

/// Adds a sidecar's two static listeners, as Istio's bootstrap has them: `0.0.0.0:15090`
/// serving `/stats/prometheus` and `0.0.0.0:15021` answering `/healthz/ready` with Envoy's
/// own readiness (the admin interface's `/ready`: 200 once the first configuration is in).
/// The admin interface itself stays on `127.0.0.1:admin_port`; only these two paths reach it.
/// The stats get Istio's labels from the node's identity ([`add_stats_config`]), so call this
/// once the node is set. A proxy without interception whose node names its bind address
/// (`SEXTANT_BIND_ADDRESS`) binds both there rather than on `0.0.0.0`, as its other listeners:
/// several such proxies then share one machine.
pub fn add_sidecar_listeners(b: &mut Bootstrap, admin_port: u32) {
    use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
    add_stats_config(b);
    let address = node_bind_address(b).unwrap_or_else(|| "0.0.0.0".to_owned());
    let statics = b.static_resources.get_or_insert_with(Default::default);
    statics
        .clusters
        .push(admin_cluster("prometheus_stats", admin_port));
    statics
        .clusters
        .push(admin_cluster("readiness", admin_port));
    statics.listeners.push(admin_listener(
        &address,
        PROMETHEUS_PORT,
        "stats",
        PathSpecifier::Prefix("/stats/prometheus".to_owned()),
        "prometheus_stats",
        "",
    ));
    statics.listeners.push(admin_listener(
        &address,
        READINESS_PORT,
        "readiness",
        PathSpecifier::Path("/healthz/ready".to_owned()),
        "readiness",
        "/ready",
    ));
}

/// The node metadata `SEXTANT_BIND_ADDRESS`, when it is an IP address.
fn node_bind_address(b: &Bootstrap) -> Option<String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let fields = &b.node.as_ref()?.metadata.as_ref()?.fields;
    match fields.get(sextant_model::BIND_ADDRESS_KEY)?.kind.as_ref()? {
        Kind::StringValue(s) => s.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_string()),
        _ => None,
    }
}

/// A static cluster reaching Envoy's admin interface.
fn admin_cluster(name: &str, admin_port: u32) -> Cluster {
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(crate::proto::duration(std::time::Duration::from_millis(
            250,
        ))),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_owned(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(
                        envoy_types::pb::envoy::config::endpoint::v3::Endpoint {
                            address: Some(socket("127.0.0.1", admin_port)),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A listener on `address:port` forwarding requests whose path matches `path` to `cluster`
/// (the path replaced by `rewrite` when not empty), and nothing else.
fn admin_listener(
    address: &str,
    port: u32,
    stat_prefix: &str,
    path: envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier,
    cluster: &str,
    rewrite: &str,
) -> Listener {
    use envoy_types::pb::envoy::{
        config::{
            listener::v3::FilterChain,
            route::v3::{Route, RouteAction, RouteMatch, VirtualHost, route, route_action},
        },
        extensions::filters::{
            http::router::v3::Router,
            network::http_connection_manager::v3::{HttpFilter, http_filter},
        },
    };
    let route = Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(path),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_owned())),
            prefix_rewrite: rewrite.to_owned(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.to_owned(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            RouteConfiguration {
                virtual_hosts: vec![VirtualHost {
                    name: "backend".to_owned(),
                    domains: vec!["*".to_owned()],
                    routes: vec![route],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".to_owned(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                any(&Router::default()),
            )),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: format!("{address}_{port}"),
        address: Some(socket(address, port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}
