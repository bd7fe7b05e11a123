//! `networking.istio.io` DestinationRule, field for field as Istio's
//! `istio.networking.v1alpha3.DestinationRule` (JSON names, integer widths, oneofs).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::{
    Duration, IstioStatus, PortSelector, WorkloadSelector,
    schema::{all_one_of, nullable, one_of},
};

/// Configuration affecting load balancing, outlier detection, etc.
#[skip_serializing_none]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "DestinationRule",
    plural = "destinationrules",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    shortname = "dr",
    category = "istio-io",
    category = "networking-istio-io"
)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    /// The name of a service from the service registry.
    pub host: String,
    /// Traffic policies to apply (load balancing policy, connection pool sizes, outlier
    /// detection).
    pub traffic_policy: Option<TrafficPolicy>,
    /// One or more named sets that represent individual versions of a service.
    pub subsets: Option<Vec<Subset>>,
    /// A list of namespaces to which this destination rule is exported.
    pub export_to: Option<Vec<String>>,
    /// Criteria used to select the specific set of pods/VMs on which this `DestinationRule`
    /// configuration should be applied.
    pub workload_selector: Option<WorkloadSelector>,
}

/// Traffic policies to apply for a specific destination, across all destination ports.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    /// Settings controlling the load balancer algorithms.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Settings controlling the volume of connections to an upstream service.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Settings controlling eviction of unhealthy hosts from the load balancing pool.
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS related settings for connections to the upstream service.
    pub tls: Option<ClientTlsSettings>,
    /// Traffic policies specific to individual ports.
    #[schemars(extend("maxItems" = 4096))]
    pub port_level_settings: Option<Vec<PortTrafficPolicy>>,
    /// Configuration of tunneling TCP over other transport or application layers for the host
    /// configured in the DestinationRule.
    pub tunnel: Option<TunnelSettings>,
    /// The upstream PROXY protocol settings.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Specifies a limit on concurrent retries in relation to the number of active requests.
    pub retry_budget: Option<RetryBudget>,
}

/// Traffic policies that apply to specific ports of the service.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    /// Specifies the number of a port on the destination service on which this policy is being
    /// applied.
    pub port: Option<PortSelector>,
    /// Settings controlling the load balancer algorithms.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Settings controlling the volume of connections to an upstream service.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Settings controlling eviction of unhealthy hosts from the load balancing pool.
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS related settings for connections to the upstream service.
    pub tls: Option<ClientTlsSettings>,
}

/// A subset of endpoints of a service.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    /// Name of the subset.
    pub name: String,
    /// Labels apply a filter over the endpoints of a service in the service registry.
    pub labels: Option<BTreeMap<String, String>>,
    /// Traffic policies that apply to this subset.
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Load balancing policies to apply for a specific destination.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = lb_policy_one_of)]
pub struct LoadBalancerSettings {
    /// A standard load balancing algorithm.
    pub simple: Option<SimpleLb>,
    /// Consistent hash-based load balancing.
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Weighted round robin using backend-reported utilization.
    pub backend_utilization: Option<BackendUtilizationLb>,
    /// Locality load balancer settings.
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Zone-aware load balancing settings.
    pub zone_aware_lb_setting: Option<ZoneAwareLbSetting>,
    /// Deprecated: use `warmup` instead.
    pub warmup_duration_secs: Option<Duration>,
    /// Slow start for newly added hosts.
    pub warmup: Option<WarmupConfiguration>,
}

fn lb_policy_one_of(schema: &mut Schema) {
    one_of(schema, &["simple", "consistentHash", "backendUtilization"]);
}

/// Standard load balancing algorithms that require no tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum SimpleLb {
    UNSPECIFIED,
    LEAST_CONN,
    RANDOM,
    PASSTHROUGH,
    ROUND_ROBIN,
    LEAST_REQUEST,
}

/// Consistent Hash-based load balancing.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = consistent_hash_one_of)]
pub struct ConsistentHashLb {
    /// Hash based on a specific HTTP header.
    pub http_header_name: Option<String>,
    /// Hash based on HTTP cookie.
    pub http_cookie: Option<HttpCookie>,
    /// Hash based on the source IP address.
    pub use_source_ip: Option<bool>,
    /// Hash based on a specific HTTP query parameter.
    pub http_query_parameter_name: Option<String>,
    /// The ring/modulo hash load balancer implements consistent hashing to backend hosts.
    pub ring_hash: Option<RingHash>,
    /// The Maglev load balancer implements consistent hashing to backend hosts.
    pub maglev: Option<MagLev>,
    /// Deprecated: use `ringHash` instead.
    pub minimum_ring_size: Option<u64>,
}

fn consistent_hash_one_of(schema: &mut Schema) {
    all_one_of(
        schema,
        &[
            &[
                "httpHeaderName",
                "httpCookie",
                "useSourceIp",
                "httpQueryParameterName",
            ],
            &["ringHash", "maglev"],
        ],
    );
}

/// Ring hash settings.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RingHash {
    /// The minimum number of virtual nodes to use for the hash ring.
    pub minimum_ring_size: Option<u64>,
}

/// Maglev settings.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MagLev {
    /// The table size for Maglev hashing.
    pub table_size: Option<u64>,
}

/// Describes a HTTP cookie that will be used as the hash key for the Consistent Hash load
/// balancer.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HttpCookie {
    /// Name of the cookie.
    pub name: String,
    /// Path to set for the cookie.
    pub path: Option<String>,
    /// Lifetime of the cookie.
    pub ttl: Option<String>,
    /// Additional attributes for the cookie.
    pub attributes: Option<Vec<CookieAttribute>>,
}

/// An attribute of a generated cookie.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CookieAttribute {
    /// The name of the cookie attribute.
    pub name: String,
    /// The optional value of the cookie attribute.
    pub value: Option<String>,
}

/// Weighted round robin driven by backend-reported utilization (ORCA).
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendUtilizationLb {
    /// How long a backend's reported weight stays valid.
    pub weight_expiration_period: Option<String>,
    /// How long after a backend starts reporting before its weight is used.
    pub weight_stabilization_period: Option<String>,
    /// How often weights are recomputed.
    pub weight_update_period: Option<String>,
    /// Penalty applied to the error rate when computing weights.
    pub error_utilization_penalty_percent: Option<u32>,
    /// Named metrics used to compute utilization.
    pub metric_names_for_computing_utilization: Option<Vec<String>>,
}

/// Configuration of the slow start for new endpoints.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmupConfiguration {
    /// Duration of warmup mode.
    pub duration: Duration,
    /// Minimum percentage of the endpoint's weight during warmup.
    #[schemars(transform = nullable, range(min = 0, max = 100))]
    pub minimum_percent: Option<f64>,
    /// Controls the speed of traffic increase over the warmup duration.
    #[schemars(transform = nullable, range(min = 0))]
    pub aggression: Option<f64>,
}

/// Locality-weighted load balancing.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalityLbSetting {
    /// Explicitly specify loadbalancing weight across different zones and geographical
    /// locations.
    pub distribute: Option<Vec<LocalityDistribute>>,
    /// Explicitly specify the region traffic will land on when endpoints in local region becomes
    /// unhealthy.
    pub failover: Option<Vec<LocalityFailover>>,
    /// failoverPriority is an ordered list of labels used to sort endpoints to do priority based
    /// load balancing.
    pub failover_priority: Option<Vec<String>>,
    /// Enable locality load balancing.
    #[schemars(transform = nullable)]
    pub enabled: Option<bool>,
}

/// Zone-aware routing settings.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZoneAwareLbSetting {
    /// Enable zone-aware routing.
    #[schemars(transform = nullable)]
    pub enabled: Option<bool>,
    /// Failover from one region to another.
    pub failover: Option<Vec<LocalityFailover>>,
    /// An ordered list of labels used to sort endpoints for priority based load balancing.
    pub failover_priority: Option<Vec<String>>,
    /// Minimum cluster size for zone-aware routing.
    #[schemars(transform = nullable, range(min = 1))]
    pub min_cluster_size: Option<u32>,
}

/// Describes how traffic originating in the 'from' zone or sub-zone is distributed.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalityDistribute {
    /// Originating locality, '/' separated, e.g. 'region/zone/sub_zone'.
    pub from: Option<String>,
    /// Map of upstream localities to traffic distribution weights.
    pub to: Option<BTreeMap<String, u32>>,
}

/// Specify the traffic failover policy across regions.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalityFailover {
    /// Originating region.
    pub from: Option<String>,
    /// Destination region the traffic will fail over to when endpoints in the 'from' region
    /// becomes unhealthy.
    pub to: Option<String>,
}

/// Connection pool settings for an upstream host.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConnectionPoolSettings {
    /// Settings common to both HTTP and TCP upstream connections.
    pub tcp: Option<TcpSettings>,
    /// HTTP connection pool settings.
    pub http: Option<HttpSettings>,
}

/// Settings common to both HTTP and TCP upstream connections.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpSettings {
    /// Maximum number of HTTP1 /TCP connections to a destination host.
    pub max_connections: Option<i32>,
    /// TCP connection timeout.
    pub connect_timeout: Option<Duration>,
    /// If set then set SO_KEEPALIVE on the socket to enable TCP Keepalives.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// The maximum duration of a connection.
    pub max_connection_duration: Option<Duration>,
    /// The idle timeout for TCP connections.
    pub idle_timeout: Option<String>,
}

/// TCP keepalive.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TcpKeepalive {
    /// Maximum number of keepalive probes to send without response before deciding the
    /// connection is dead.
    pub probes: Option<u32>,
    /// The time duration a connection needs to be idle before keep-alive probes start being
    /// sent.
    pub time: Option<Duration>,
    /// The time duration between keep-alive probes.
    pub interval: Option<Duration>,
}

/// Settings applicable to HTTP1.1/HTTP2/GRPC connections.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpSettings {
    /// Maximum number of requests that will be queued while waiting for a ready connection pool
    /// connection.
    pub http1_max_pending_requests: Option<i32>,
    /// Maximum number of active requests to a destination.
    pub http2_max_requests: Option<i32>,
    /// Maximum number of requests per connection to a backend.
    pub max_requests_per_connection: Option<i32>,
    /// Maximum number of retries that can be outstanding to all hosts in a cluster at a given
    /// time.
    pub max_retries: Option<i32>,
    /// The idle timeout for upstream connection pool connections.
    pub idle_timeout: Option<Duration>,
    /// Specify if http1.1 connection should be upgraded to http2 for the associated destination.
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// If set to true, client protocol will be preserved while initiating connection to backend.
    pub use_client_protocol: Option<bool>,
    /// The maximum number of concurrent streams allowed for a peer on one HTTP/2 connection.
    pub max_concurrent_streams: Option<i32>,
    /// HTTP/2 keepalive (PING) settings.
    pub http2_keep_alive: Option<Http2KeepAlive>,
}

/// HTTP/2 keepalive settings.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Http2KeepAlive {
    /// Interval between PING frames.
    pub interval: Option<Duration>,
    /// How long to wait for a PING acknowledgement.
    pub timeout: Option<Duration>,
}

/// Policy for upgrading http1.1 connections to http2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum H2UpgradePolicy {
    DEFAULT,
    DO_NOT_UPGRADE,
    UPGRADE,
}

/// A Circuit breaker implementation that tracks the status of each individual host in the
/// upstream service.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Number of errors before a host is ejected from the connection pool (deprecated).
    pub consecutive_errors: Option<i32>,
    /// Determines whether to distinguish local origin failures from external errors.
    pub split_external_local_origin_errors: Option<bool>,
    /// The number of consecutive locally originated failures before ejection occurs.
    #[schemars(transform = nullable)]
    pub consecutive_local_origin_failures: Option<u32>,
    /// Number of gateway errors before a host is ejected from the connection pool.
    #[schemars(transform = nullable)]
    pub consecutive_gateway_errors: Option<u32>,
    /// Number of 5xx errors before a host is ejected from the connection pool.
    #[serde(rename = "consecutive5xxErrors")]
    #[schemars(transform = nullable)]
    pub consecutive_5xx_errors: Option<u32>,
    /// Time interval between ejection sweep analysis.
    pub interval: Option<Duration>,
    /// Minimum ejection duration.
    pub base_ejection_time: Option<Duration>,
    /// Maximum % of hosts in the load balancing pool for the upstream service that can be
    /// ejected.
    pub max_ejection_percent: Option<i32>,
    /// Outlier detection will be enabled as long as the associated load balancing pool has at
    /// least `minHealthPercent` hosts in healthy mode.
    pub min_health_percent: Option<i32>,
    /// HTTP status codes treated as errors for outlier detection.
    #[schemars(inner(range(min = 100, max = 599)))]
    pub outlier_detection_http_error_codes: Option<Vec<u32>>,
}

/// SSL/TLS related settings for upstream connections.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientTlsSettings {
    /// Indicates whether connections to this port should be secured using TLS.
    pub mode: Option<TlsMode>,
    /// REQUIRED if mode is `MUTUAL`. The path to the file holding the client-side TLS
    /// certificate to use.
    pub client_certificate: Option<String>,
    /// REQUIRED if mode is `MUTUAL`. The path to the file holding the client's private key.
    pub private_key: Option<String>,
    /// OPTIONAL: The path to the file containing certificate authority certificates.
    pub ca_certificates: Option<String>,
    /// The name of the secret that holds the TLS certs for the client.
    pub credential_name: Option<String>,
    /// A list of alternate names to verify the subject identity in the certificate.
    pub subject_alt_names: Option<Vec<String>>,
    /// SNI string to present to the server during TLS handshake.
    pub sni: Option<String>,
    /// Whether the proxy should skip verifying the CA signature and SAN for the server's
    /// certificate corresponding to the host.
    #[schemars(transform = nullable)]
    pub insecure_skip_verify: Option<bool>,
    /// OPTIONAL: The path to the file containing the certificate revocation list (CRL).
    pub ca_crl: Option<String>,
}

/// TLS connection mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum TlsMode {
    DISABLE,
    SIMPLE,
    MUTUAL,
    ISTIO_MUTUAL,
}

/// Tunneling settings.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TunnelSettings {
    /// Specifies which protocol to use for tunneling the downstream connection.
    pub protocol: Option<String>,
    /// Specifies a host to which the downstream connection is tunneled.
    pub target_host: String,
    /// Specifies a port to which the downstream connection is tunneled.
    pub target_port: u32,
}

/// PROXY protocol settings.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProxyProtocol {
    /// The PROXY protocol version to use.
    pub version: Option<ProxyProtocolVersion>,
}

/// PROXY protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum ProxyProtocolVersion {
    V1,
    V2,
}

/// Limits concurrent retries in relation to active requests.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// The percentage of active requests that may be retries.
    #[schemars(transform = nullable, range(min = 0, max = 100))]
    pub percent: Option<f64>,
    /// The minimum number of concurrent retries allowed regardless of active requests.
    pub min_retry_concurrency: Option<u32>,
    /// The interval over which the budget is computed.
    pub budget_interval: Option<String>,
}
