//! DestinationRule traffic policy applied to clusters (Istio's `cluster_traffic_policy.go`,
//! `cluster_tls.go`): port-level settings replace the top level for their port, subset
//! policies override component by component.

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{
            CircuitBreakers, Cluster, OutlierDetection, UpstreamConnectionOptions,
            circuit_breakers::{Thresholds, thresholds::RetryBudget},
            cluster::{
                self, CommonLbConfig, LbConfig, LbPolicy, LeastRequestLbConfig, MaglevLbConfig,
                RingHashLbConfig, RoundRobinLbConfig, SlowStartConfig, TransportSocketMatch,
                common_lb_config,
            },
        },
        core::v3::{
            Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonHttpOptions,
            KeepaliveSettings, RuntimeDouble, TcpKeepalive, TransportSocket,
        },
    },
    extensions::{
        transport_sockets::{
            raw_buffer::v3::RawBuffer,
            tls::v3::{
                CertificateValidationContext, CommonTlsContext, SdsSecretConfig,
                SubjectAltNameMatcher, TlsCertificate, TlsParameters, UpstreamTlsContext,
                common_tls_context, subject_alt_name_matcher, tls_parameters,
            },
        },
        upstreams::http::v3::{
            HttpProtocolOptions,
            http_protocol_options::{self, ExplicitHttpConfig, explicit_http_config},
        },
    },
    r#type::{
        matcher::v3::{StringMatcher, string_matcher},
        v3::Percent,
    },
};
use envoy_types::pb::google::protobuf::{Struct, UInt32Value, UInt64Value};
use sextant_model::{
    ClientTls, ConnectionPool, ConsistentHash, DestinationRule, HashAlgorithm, HashKey,
    LbPolicy as ModelLb, LoadBalancer, OutlierDetection as ModelOd, TlsMode, TrafficPolicy,
};
use sextant_resources::secret;

use crate::proto::{any, duration, map_of, seconds, transport_socket, u32v};

/// Istio's default connect timeout (meshConfig `connectTimeout`).
pub const CONNECT_TIMEOUT_SECS: i64 = 10;

/// The policy that applies to `port` of a service, optionally for a subset.
pub fn effective(dr: Option<&DestinationRule>, subset: Option<&str>, port: u16) -> TrafficPolicy {
    let Some(dr) = dr else {
        return TrafficPolicy::default();
    };
    let top = dr.traffic_policy.clone().unwrap_or_default();
    let mut policy = at_port(&top, port);
    if let Some(sub) = subset
        .and_then(|name| dr.subsets.iter().find(|s| s.name == name))
        .and_then(|s| s.traffic_policy.as_ref())
    {
        let sub = at_port(sub, port);
        policy.load_balancer = sub.load_balancer.or(policy.load_balancer);
        policy.connection_pool = sub.connection_pool.or(policy.connection_pool);
        policy.outlier_detection = sub.outlier_detection.or(policy.outlier_detection);
        policy.tls = sub.tls.or(policy.tls);
        policy.tunnel = sub.tunnel.or(policy.tunnel);
        policy.proxy_protocol = sub.proxy_protocol.or(policy.proxy_protocol);
        policy.retry_budget = sub.retry_budget.or(policy.retry_budget);
    }
    policy
}

/// One of the port-level components (load balancer, connection pool, outlier detection,
/// TLS) of the policy [`effective`] resolves, read in place: the subset's (its port-level
/// settings replacing it for `port`) when it has one, else the rule's.
pub fn component<'a, T>(
    dr: Option<&'a DestinationRule>,
    subset: Option<&str>,
    port: u16,
    get: impl Fn(&'a TrafficPolicy) -> Option<&'a T>,
) -> Option<&'a T> {
    let dr = dr?;
    let at_port = |tp: &'a TrafficPolicy| match tp.port_level.iter().find(|(p, _)| *p == port) {
        Some((_, pl)) => get(pl),
        None => get(tp),
    };
    subset
        .and_then(|name| dr.subsets.iter().find(|s| s.name == name))
        .and_then(|s| s.traffic_policy.as_ref())
        .and_then(at_port)
        .or_else(|| dr.traffic_policy.as_ref().and_then(at_port))
}

/// The consistent hash an HTTP route to this destination hashes by, as Istio's
/// `HashForHTTPDestination` picks it: the subset's port-level settings, the subset's, the
/// rule's port-level settings, then the rule's; the first that asks for consistent hashing
/// wins (a subset with a plain load balancer falls back to the rule's hash). Port-level
/// settings count only when `port` is given: the route's destination names its port, or, for
/// a service's default route (Istio's `hashForService`), its service port.
pub fn http_hash<'a>(
    dr: Option<&'a DestinationRule>,
    subset: Option<&str>,
    port: Option<u16>,
) -> Option<&'a ConsistentHash> {
    let dr = dr?;
    let at_port = |tp: Option<&'a TrafficPolicy>| {
        let port = port?;
        let (_, pl) = tp?.port_level.iter().find(|(p, _)| *p == port)?;
        consistent_hash(Some(pl))
    };
    let sub = subset
        .and_then(|name| dr.subsets.iter().find(|s| s.name == name))
        .and_then(|s| s.traffic_policy.as_ref());
    let top = dr.traffic_policy.as_ref();
    at_port(sub)
        .or_else(|| consistent_hash(sub))
        .or_else(|| at_port(top))
        .or_else(|| consistent_hash(top))
}

/// Whether a TCP proxy to this destination hashes by source IP, as Istio's
/// `maybeSetHashPolicy` decides: the rule's `consistentHash.useSourceIp`, unless the subset has
/// a load balancer of its own, whose choice then counts. Port-level settings and every other
/// hash key are ignored for TCP.
pub fn tcp_hashes_source_ip(dr: Option<&DestinationRule>, subset: &str) -> bool {
    let Some(dr) = dr else {
        return false;
    };
    let source_ip = |c: Option<&ConsistentHash>| c.is_some_and(|c| c.key == HashKey::SourceIp);
    let subset_lb = dr
        .subsets
        .iter()
        .find(|s| s.name == subset)
        .and_then(|s| s.traffic_policy.as_ref())
        .filter(|tp| tp.load_balancer.is_some());
    match subset_lb {
        Some(tp) => source_ip(consistent_hash(Some(tp))),
        None => source_ip(consistent_hash(dr.traffic_policy.as_ref())),
    }
}

fn consistent_hash(tp: Option<&TrafficPolicy>) -> Option<&ConsistentHash> {
    match tp?.load_balancer.as_ref()?.policy.as_ref()? {
        ModelLb::ConsistentHash(c) => Some(c),
        _ => None,
    }
}

/// Port-level settings replace the four components for their port.
fn at_port(policy: &TrafficPolicy, port: u16) -> TrafficPolicy {
    let mut out = policy.clone();
    out.port_level.clear();
    if let Some((_, pl)) = policy.port_level.iter().find(|(p, _)| *p == port) {
        out.load_balancer = pl.load_balancer.clone();
        out.connection_pool = pl.connection_pool.clone();
        out.outlier_detection = pl.outlier_detection.clone();
        out.tls = pl.tls.clone();
    }
    out
}

/// Istio's defaults: every limit at its maximum, tracked.
pub fn default_circuit_breakers() -> CircuitBreakers {
    CircuitBreakers {
        thresholds: vec![Thresholds {
            max_connections: Some(u32v(u32::MAX)),
            max_pending_requests: Some(u32v(u32::MAX)),
            max_requests: Some(u32v(u32::MAX)),
            max_retries: Some(u32v(u32::MAX)),
            track_remaining: true,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// What [`apply`] needs to know about the cluster beyond the policy.
pub struct Target<'a> {
    /// Service host name.
    pub host: &'a str,
    /// Service port.
    pub port: u16,
    /// Subset name ("" for none).
    pub subset: &'a str,
    /// Upstream speaks HTTP/2.
    pub http2: bool,
    /// Port is HTTP-family.
    pub http: bool,
    /// SPIFFE identities of the service's workloads (for ISTIO_MUTUAL SAN checks).
    pub identities: Vec<String>,
    /// Without a DestinationRule TLS setting, Istio's auto mTLS: TLS to endpoints that carry
    /// a sidecar (`tlsMode: istio` metadata), plaintext to the rest.
    pub auto_mtls: bool,
    /// Certificate files a DestinationRule names are given to Envoy by path: a stock Envoy has
    /// no istio-agent to serve them over SDS (`file-root:`, `file-cert:`).
    pub inline_files: bool,
}

/// Applies a traffic policy (and Istio's defaults) to an outbound cluster.
pub fn apply(cluster: &mut Cluster, policy: &TrafficPolicy, target: &Target<'_>) {
    cluster.connect_timeout = Some(seconds(CONNECT_TIMEOUT_SECS));
    cluster.lb_policy = LbPolicy::LeastRequest as i32;
    cluster.circuit_breakers = Some(default_circuit_breakers());
    let mut http_options = HttpOptions {
        http2: target.http2,
        ..Default::default()
    };
    if let Some(cp) = &policy.connection_pool {
        connection_pool(cluster, cp, &mut http_options);
    }
    if let Some(rb) = &policy.retry_budget
        && let Some(t) = cluster
            .circuit_breakers
            .as_mut()
            .and_then(|c| c.thresholds.first_mut())
    {
        t.retry_budget = Some(RetryBudget {
            budget_percent: Some(Percent {
                value: rb.percent.unwrap_or(20.0),
            }),
            min_retry_concurrency: Some(u32v(rb.min_retry_concurrency.unwrap_or(3))),
            ..Default::default()
        });
    }
    if let Some(lb) = &policy.load_balancer {
        load_balancer(cluster, lb, policy.outlier_detection.is_some());
    }
    if let Some(od) = &policy.outlier_detection {
        outlier_detection(cluster, od, &mut http_options);
    }
    match &policy.tls {
        Some(tls) => {
            if let Some(socket) = tls_socket(tls, target, &mut http_options) {
                cluster.transport_socket = Some(socket);
            }
        }
        None if target.auto_mtls => {
            cluster.transport_socket_matches = auto_mtls(target, &mut http_options);
        }
        None => {}
    }
    if let Some(version) = policy.proxy_protocol {
        let inner = cluster.transport_socket.take().unwrap_or_else(|| {
            transport_socket("envoy.transport_sockets.raw_buffer", &RawBuffer {})
        });
        let config = envoy_types::pb::envoy::extensions::transport_sockets::proxy_protocol::v3::ProxyProtocolUpstreamTransport {
            config: Some(envoy_types::pb::envoy::config::core::v3::ProxyProtocolConfig {
                version: if version == 2 { 1 } else { 0 },
                ..Default::default()
            }),
            transport_socket: Some(inner),
            ..Default::default()
        };
        cluster.transport_socket = Some(transport_socket(
            "envoy.transport_sockets.upstream_proxy_protocol",
            &config,
        ));
    }
    http_options.write(cluster, target.http);
}

/// Upstream HTTP protocol options, collected from several policy components.
#[derive(Default)]
struct HttpOptions {
    http2: bool,
    use_downstream: bool,
    common: CommonHttpOptions,
    h2: Http2ProtocolOptions,
    error_codes: Vec<u32>,
    auto_sni: bool,
}

impl HttpOptions {
    fn write(self, cluster: &mut Cluster, http: bool) {
        let common_set = self.common != CommonHttpOptions::default();
        if !(self.http2 || self.use_downstream || common_set || self.auto_sni) {
            return;
        }
        let upstream = if self.use_downstream && http {
            http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                http_protocol_options::UseDownstreamHttpConfig {
                    http_protocol_options: Some(Http1ProtocolOptions::default()),
                    http2_protocol_options: Some(self.h2),
                    ..Default::default()
                },
            )
        } else if self.http2 {
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                    self.h2,
                )),
            })
        } else {
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                    Http1ProtocolOptions::default(),
                )),
            })
        };
        let options = HttpProtocolOptions {
            common_http_protocol_options: common_set.then_some(self.common),
            upstream_protocol_options: Some(upstream),
            upstream_http_protocol_options: self.auto_sni.then(|| {
                envoy_types::pb::envoy::config::core::v3::UpstreamHttpProtocolOptions {
                    auto_sni: true,
                    auto_san_validation: true,
                    ..Default::default()
                }
            }),
            ..Default::default()
        };
        let _ = self.error_codes;
        cluster.typed_extension_protocol_options = map_of([(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            any(&options),
        )]);
    }
}

fn connection_pool(cluster: &mut Cluster, cp: &ConnectionPool, http: &mut HttpOptions) {
    if let Some(t) = cp.connect_timeout {
        cluster.connect_timeout = Some(duration(t));
    }
    if let Some(th) = cluster
        .circuit_breakers
        .as_mut()
        .and_then(|c| c.thresholds.first_mut())
    {
        let set = |slot: &mut Option<UInt32Value>, v: Option<u32>| {
            if let Some(v) = v.filter(|v| *v > 0) {
                *slot = Some(u32v(v));
            }
        };
        set(&mut th.max_connections, cp.max_connections);
        set(&mut th.max_pending_requests, cp.http1_max_pending_requests);
        set(&mut th.max_requests, cp.http2_max_requests);
        set(&mut th.max_retries, cp.max_retries);
    }
    if let Some((probes, time, interval)) = cp.tcp_keepalive {
        cluster.upstream_connection_options = Some(UpstreamConnectionOptions {
            tcp_keepalive: Some(TcpKeepalive {
                keepalive_probes: probes.map(u32v),
                keepalive_time: time.map(|d| u32v(d.as_secs().try_into().unwrap_or(u32::MAX))),
                keepalive_interval: interval
                    .map(|d| u32v(d.as_secs().try_into().unwrap_or(u32::MAX))),
            }),
            ..Default::default()
        });
    }
    if let Some(d) = cp.http_idle_timeout.or(cp.tcp_idle_timeout) {
        http.common.idle_timeout = Some(duration(d));
    }
    if let Some(d) = cp.max_connection_duration {
        http.common.max_connection_duration = Some(duration(d));
    }
    if let Some(n) = cp.max_requests_per_connection.filter(|n| *n > 0) {
        http.common.max_requests_per_connection = Some(u32v(n));
    }
    match cp.h2_upgrade {
        Some(true) => http.http2 = true,
        Some(false) => http.http2 = false,
        None => {}
    }
    if cp.use_client_protocol {
        http.use_downstream = true;
    }
    if let Some(n) = cp.max_concurrent_streams.filter(|n| *n > 0) {
        http.h2.max_concurrent_streams = Some(u32v(n));
    }
    if let Some((interval, timeout)) = cp.http2_keepalive {
        http.h2.connection_keepalive = Some(KeepaliveSettings {
            interval: Some(duration(interval)),
            timeout: Some(duration(timeout)),
            ..Default::default()
        });
    }
}

fn load_balancer(cluster: &mut Cluster, lb: &LoadBalancer, outlier: bool) {
    let slow_start = lb.warmup.as_ref().map(|w| SlowStartConfig {
        slow_start_window: Some(duration(w.duration)),
        aggression: Some(RuntimeDouble {
            default_value: w.aggression.unwrap_or(1.0),
            runtime_key: String::new(),
        }),
        min_weight_percent: Some(Percent {
            value: w.minimum_percent.unwrap_or(10.0),
        }),
    });
    match &lb.policy {
        Some(ModelLb::RoundRobin) => {
            cluster.lb_policy = LbPolicy::RoundRobin as i32;
            if slow_start.is_some() {
                cluster.lb_config = Some(LbConfig::RoundRobinLbConfig(RoundRobinLbConfig {
                    slow_start_config: slow_start,
                    ..Default::default()
                }));
            }
        }
        Some(ModelLb::Random) => cluster.lb_policy = LbPolicy::Random as i32,
        Some(ModelLb::Passthrough) => {
            cluster.lb_policy = LbPolicy::ClusterProvided as i32;
            cluster.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::OriginalDst as i32,
            ));
            cluster.eds_cluster_config = None;
            cluster.load_assignment = None;
        }
        Some(ModelLb::ConsistentHash(ch)) => match ch.algorithm {
            HashAlgorithm::RingHash { minimum_ring_size } => {
                cluster.lb_policy = LbPolicy::RingHash as i32;
                cluster.lb_config = Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
                    minimum_ring_size: Some(UInt64Value {
                        value: minimum_ring_size,
                    }),
                    ..Default::default()
                }));
            }
            HashAlgorithm::Maglev { table_size } => {
                cluster.lb_policy = LbPolicy::Maglev as i32;
                cluster.lb_config = Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
                    table_size: table_size.map(|value| UInt64Value { value }),
                }));
            }
        },
        Some(ModelLb::LeastRequest) | None => {
            cluster.lb_policy = LbPolicy::LeastRequest as i32;
            if slow_start.is_some() {
                cluster.lb_config = Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
                    slow_start_config: slow_start,
                    ..Default::default()
                }));
            }
        }
    }
    if let Some(locality) = &lb.locality
        && locality.enabled != Some(false)
        && (!locality.distribute.is_empty() || (outlier && !locality.failover.is_empty()))
    {
        let common = cluster
            .common_lb_config
            .get_or_insert_with(CommonLbConfig::default);
        common.locality_config_specifier = Some(
            common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                common_lb_config::LocalityWeightedLbConfig {},
            ),
        );
    }
}

fn outlier_detection(cluster: &mut Cluster, od: &ModelOd, http: &mut HttpOptions) {
    let enforce = |n: Option<u32>| n.map(|v| u32v(if v > 0 { 100 } else { 0 }));
    let mut out = OutlierDetection {
        consecutive_5xx: od.consecutive_5xx_errors.map(u32v),
        enforcing_consecutive_5xx: enforce(od.consecutive_5xx_errors).or(Some(u32v(0))),
        consecutive_gateway_failure: od.consecutive_gateway_errors.map(u32v),
        enforcing_consecutive_gateway_failure: enforce(od.consecutive_gateway_errors),
        interval: od.interval.map(duration),
        base_ejection_time: od.base_ejection_time.map(duration),
        max_ejection_percent: od.max_ejection_percent.map(u32v),
        enforcing_success_rate: Some(u32v(0)),
        ..Default::default()
    };
    if od.split_external_local_origin_errors {
        out.split_external_local_origin_errors = true;
        out.consecutive_local_origin_failure = od.consecutive_local_origin_failures.map(u32v);
        out.enforcing_consecutive_local_origin_failure =
            enforce(od.consecutive_local_origin_failures);
        out.enforcing_local_origin_success_rate = Some(u32v(0));
    }
    cluster.outlier_detection = Some(out);
    let common = cluster
        .common_lb_config
        .get_or_insert_with(CommonLbConfig::default);
    common.healthy_panic_threshold = Some(Percent {
        value: f64::from(od.min_health_percent.unwrap_or(0)),
    });
    http.error_codes = od.http_error_codes.clone();
}

/// A secret fetched over ADS. Unlike other ADS resources it waits at most 5 s on first fetch:
/// Sextant serves `default` only to proxies that proved their identity on the secure port,
/// and a cluster of any other proxy must not warm forever waiting for it.
/// A data source read from a file.
fn file(path: &str) -> envoy_types::pb::envoy::config::core::v3::DataSource {
    envoy_types::pb::envoy::config::core::v3::DataSource {
        specifier: Some(
            envoy_types::pb::envoy::config::core::v3::data_source::Specifier::Filename(
                path.to_owned(),
            ),
        ),
        ..Default::default()
    }
}

pub(crate) fn sds(name: &str) -> SdsSecretConfig {
    let mut source = crate::proto::ads();
    source.initial_fetch_timeout = Some(seconds(5));
    SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(source),
    }
}

fn exact(s: &str) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: subject_alt_name_matcher::SanType::Uri as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(s.to_owned())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// SNI of an ISTIO_MUTUAL connection: `outbound_.PORT_.SUBSET_.HOST`.
fn istio_sni(target: &Target<'_>) -> String {
    format!(
        "outbound_.{}_.{}_.{}",
        target.port, target.subset, target.host
    )
}

fn istio_mutual_context(
    target: &Target<'_>,
    sans: &[String],
    sni: Option<&str>,
) -> UpstreamTlsContext {
    let mut alpn = vec!["istio-peer-exchange".to_owned(), "istio".to_owned()];
    if target.http2 {
        alpn.push("h2".to_owned());
    }
    let sans: Vec<String> = if sans.is_empty() {
        target.identities.clone()
    } else {
        sans.to_vec()
    };
    UpstreamTlsContext {
        sni: sni.map(str::to_owned).unwrap_or_else(|| istio_sni(target)),
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(TlsParameters {
                tls_minimum_protocol_version: tls_parameters::TlsProtocol::TlSv12 as i32,
                tls_maximum_protocol_version: tls_parameters::TlsProtocol::TlSv13 as i32,
                ..Default::default()
            }),
            alpn_protocols: alpn,
            tls_certificate_sds_secret_configs: vec![sds(secret::WORKLOAD)],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_typed_subject_alt_names: sans.iter().map(|s| exact(s)).collect(),
                            ..Default::default()
                        }),
                        validation_context_sds_secret_config: Some(sds(secret::ROOT)),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn tls_socket(
    tls: &ClientTls,
    target: &Target<'_>,
    http: &mut HttpOptions,
) -> Option<TransportSocket> {
    let context = match tls.mode {
        TlsMode::Disable => return None,
        TlsMode::IstioMutual => {
            istio_mutual_context(target, &tls.subject_alt_names, tls.sni.as_deref())
        }
        TlsMode::Simple | TlsMode::Mutual => {
            let validation = if tls.insecure_skip_verify {
                None
            } else if let (true, None, Some(ca)) = (
                target.inline_files,
                &tls.credential_name,
                &tls.ca_certificates,
            ) {
                Some(
                    common_tls_context::ValidationContextType::ValidationContext(
                        CertificateValidationContext {
                            trusted_ca: Some(file(ca)),
                            match_typed_subject_alt_names: tls
                                .subject_alt_names
                                .iter()
                                .map(|s| exact(s))
                                .collect(),
                            ..Default::default()
                        },
                    ),
                )
            } else {
                let root = match (&tls.credential_name, &tls.ca_certificates) {
                    (Some(cred), _) => format!("kubernetes://{cred}-cacert"),
                    (None, Some(ca)) => format!("file-root:{ca}"),
                    (None, None) => "file-root:system".to_owned(),
                };
                Some(
                    common_tls_context::ValidationContextType::CombinedValidationContext(
                        common_tls_context::CombinedCertificateValidationContext {
                            default_validation_context: Some(CertificateValidationContext {
                                match_typed_subject_alt_names: tls
                                    .subject_alt_names
                                    .iter()
                                    .map(|s| exact(s))
                                    .collect(),
                                ..Default::default()
                            }),
                            validation_context_sds_secret_config: Some(sds(&root)),
                            ..Default::default()
                        },
                    ),
                )
            };
            let inline_cert = (target.inline_files
                && tls.mode == TlsMode::Mutual
                && tls.credential_name.is_none())
            .then(|| TlsCertificate {
                certificate_chain: Some(file(
                    tls.client_certificate.as_deref().unwrap_or_default(),
                )),
                private_key: Some(file(tls.private_key.as_deref().unwrap_or_default())),
                ..Default::default()
            });
            let certs = match (tls.mode, &tls.credential_name) {
                _ if inline_cert.is_some() => Vec::new(),
                (TlsMode::Mutual, Some(cred)) => vec![sds(&format!("kubernetes://{cred}"))],
                (TlsMode::Mutual, None) => vec![sds(&format!(
                    "file-cert:{}~{}",
                    tls.client_certificate.as_deref().unwrap_or_default(),
                    tls.private_key.as_deref().unwrap_or_default()
                ))],
                _ => Vec::new(),
            };
            if tls.sni.is_none() {
                http.auto_sni = true;
            }
            UpstreamTlsContext {
                sni: tls.sni.clone().unwrap_or_default(),
                common_tls_context: Some(CommonTlsContext {
                    tls_params: Some(TlsParameters {
                        tls_maximum_protocol_version: tls_parameters::TlsProtocol::TlSv13 as i32,
                        ..Default::default()
                    }),
                    alpn_protocols: if target.http2 {
                        vec!["h2".to_owned()]
                    } else {
                        Vec::new()
                    },
                    tls_certificate_sds_secret_configs: certs,
                    tls_certificates: inline_cert.into_iter().collect(),
                    validation_context_type: validation,
                    ..Default::default()
                }),
                ..Default::default()
            }
        }
    };
    Some(transport_socket("envoy.transport_sockets.tls", &context))
}

/// Auto mTLS: endpoints labelled `tlsMode: istio` get Istio mTLS, the rest plaintext.
fn auto_mtls(target: &Target<'_>, _http: &mut HttpOptions) -> Vec<TransportSocketMatch> {
    let ctx = istio_mutual_context(target, &[], None);
    vec![
        TransportSocketMatch {
            name: "tlsMode-istio".to_owned(),
            r#match: Some(Struct {
                fields: map_of([("tlsMode".to_owned(), crate::proto::string_value("istio"))]),
            }),
            transport_socket: Some(transport_socket("envoy.transport_sockets.tls", &ctx)),
        },
        TransportSocketMatch {
            name: "tlsMode-disabled".to_owned(),
            r#match: Some(Struct::default()),
            transport_socket: Some(transport_socket(
                "envoy.transport_sockets.raw_buffer",
                &RawBuffer {},
            )),
        },
    ]
}
