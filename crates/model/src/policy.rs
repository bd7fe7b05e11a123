//! Validated DestinationRule traffic policies.

use std::collections::BTreeMap;

use crate::{Duration, ObjectRef, Visibility};

/// A validated DestinationRule.
#[derive(Clone, Debug, PartialEq)]
pub struct DestinationRule {
    /// Which object this came from.
    pub id: ObjectRef,
    /// Creation time (RFC 3339), to order rules for one host.
    pub creation_timestamp: Option<String>,
    /// Host as written.
    pub host: String,
    /// Policy for every port and subset unless overridden.
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named subsets.
    pub subsets: Vec<Subset>,
    /// Namespaces that may use this rule.
    pub export_to: Visibility,
    /// Only workloads with these labels use the rule (`None`: all).
    pub workload_selector: Option<BTreeMap<String, String>>,
}

impl DestinationRule {
    /// Every traffic policy of the rule: its own, its subsets', and their port-level ones.
    pub fn policies(&self) -> impl Iterator<Item = &TrafficPolicy> {
        self.traffic_policy
            .iter()
            .chain(
                self.subsets
                    .iter()
                    .filter_map(|s| s.traffic_policy.as_ref()),
            )
            .flat_map(|p| std::iter::once(p).chain(p.port_level.iter().map(|(_, p)| p)))
    }
}

/// A named subset of a service's endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct Subset {
    /// Subset name (a DNS-1123 label).
    pub name: String,
    /// Endpoint labels that select the subset.
    pub labels: BTreeMap<String, String>,
    /// Overrides of the rule's policy, field by field.
    pub traffic_policy: Option<TrafficPolicy>,
}

/// A traffic policy, at rule, subset or port level.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrafficPolicy {
    /// Load balancing.
    pub load_balancer: Option<LoadBalancer>,
    /// Connection pool limits.
    pub connection_pool: Option<ConnectionPool>,
    /// Outlier detection.
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS.
    pub tls: Option<ClientTls>,
    /// Per-port policies; each replaces the top-level components for its port.
    pub port_level: Vec<(u16, TrafficPolicy)>,
    /// Tunnel settings.
    pub tunnel: Option<Tunnel>,
    /// Upstream PROXY protocol version (1 or 2).
    pub proxy_protocol: Option<u8>,
    /// Retry budget.
    pub retry_budget: Option<RetryBudget>,
}

/// Load balancing settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadBalancer {
    /// The algorithm.
    pub policy: Option<LbPolicy>,
    /// Locality-aware routing.
    pub locality: Option<LocalityLb>,
    /// Slow start for new endpoints.
    pub warmup: Option<Warmup>,
    /// Fields accepted but not implemented (reported as unsupported).
    pub unsupported: Vec<&'static str>,
}

/// A load balancing algorithm.
#[derive(Clone, Debug, PartialEq)]
pub enum LbPolicy {
    /// Istio's default.
    LeastRequest,
    /// Round robin.
    RoundRobin,
    /// Random.
    Random,
    /// Use the original destination.
    Passthrough,
    /// Consistent hashing.
    ConsistentHash(ConsistentHash),
}

/// Consistent hash settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsistentHash {
    /// What to hash on.
    pub key: HashKey,
    /// Ring hash or Maglev.
    pub algorithm: HashAlgorithm,
}

/// The hash key of a consistent hash load balancer.
#[derive(Clone, Debug, PartialEq)]
pub enum HashKey {
    /// A request header.
    Header(String),
    /// A cookie, generated if missing.
    Cookie {
        /// Cookie name.
        name: String,
        /// Cookie path.
        path: Option<String>,
        /// Cookie lifetime.
        ttl: Option<Duration>,
        /// Extra attributes.
        attributes: Vec<(String, Option<String>)>,
    },
    /// The source IP.
    SourceIp,
    /// A query parameter.
    QueryParameter(String),
    /// None given: Envoy hashes nothing (random host).
    None,
}

/// The consistent hash algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// Ring hash with this minimum ring size.
    RingHash {
        /// Minimum ring size (1024 by default).
        minimum_ring_size: u64,
    },
    /// Maglev with this table size.
    Maglev {
        /// Table size (a prime), Envoy's default when `None`.
        table_size: Option<u64>,
    },
}

/// Locality load balancing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocalityLb {
    /// Weighted distribution: `(from, [(to, weight)])`.
    pub distribute: Vec<(String, Vec<(String, u32)>)>,
    /// Region failover: `(from, to)`.
    pub failover: Vec<(String, String)>,
    /// Labels for priority-based failover.
    pub failover_priority: Vec<String>,
    /// Explicitly enabled or disabled.
    pub enabled: Option<bool>,
}

/// Slow start.
#[derive(Clone, Debug, PartialEq)]
pub struct Warmup {
    /// Window.
    pub duration: Duration,
    /// Minimum weight percent (default 10).
    pub minimum_percent: Option<f64>,
    /// Aggression (default 1.0).
    pub aggression: Option<f64>,
}

/// Connection pool settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionPool {
    /// Max connections.
    pub max_connections: Option<u32>,
    /// Connect timeout.
    pub connect_timeout: Option<Duration>,
    /// TCP keepalive: `(probes, time, interval)`.
    pub tcp_keepalive: Option<(Option<u32>, Option<Duration>, Option<Duration>)>,
    /// Max connection duration.
    pub max_connection_duration: Option<Duration>,
    /// TCP idle timeout (0 disables).
    pub tcp_idle_timeout: Option<Duration>,
    /// Max pending HTTP/1 requests.
    pub http1_max_pending_requests: Option<u32>,
    /// Max concurrent requests.
    pub http2_max_requests: Option<u32>,
    /// Max requests per connection.
    pub max_requests_per_connection: Option<u32>,
    /// Max concurrent retries.
    pub max_retries: Option<u32>,
    /// HTTP idle timeout.
    pub http_idle_timeout: Option<Duration>,
    /// Upgrade to HTTP/2: `Some(true)` upgrade, `Some(false)` never.
    pub h2_upgrade: Option<bool>,
    /// Keep the downstream protocol.
    pub use_client_protocol: bool,
    /// Max concurrent HTTP/2 streams.
    pub max_concurrent_streams: Option<u32>,
    /// HTTP/2 keepalive: `(interval, timeout)`.
    pub http2_keepalive: Option<(Duration, Duration)>,
}

/// Outlier detection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Consecutive 5xx before ejection.
    pub consecutive_5xx_errors: Option<u32>,
    /// Consecutive gateway errors before ejection.
    pub consecutive_gateway_errors: Option<u32>,
    /// Split local-origin errors.
    pub split_external_local_origin_errors: bool,
    /// Consecutive local-origin failures before ejection.
    pub consecutive_local_origin_failures: Option<u32>,
    /// Sweep interval.
    pub interval: Option<Duration>,
    /// Base ejection time.
    pub base_ejection_time: Option<Duration>,
    /// Max ejection percent.
    pub max_ejection_percent: Option<u32>,
    /// Panic threshold.
    pub min_health_percent: Option<u32>,
    /// Status codes counted as errors.
    pub http_error_codes: Vec<u32>,
}

/// Upstream TLS settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// The mode.
    pub mode: TlsMode,
    /// Client certificate file.
    pub client_certificate: Option<String>,
    /// Private key file.
    pub private_key: Option<String>,
    /// CA certificates file.
    pub ca_certificates: Option<String>,
    /// Kubernetes secret with the credentials.
    pub credential_name: Option<String>,
    /// SANs to verify.
    pub subject_alt_names: Vec<String>,
    /// SNI.
    pub sni: Option<String>,
    /// Skip server verification.
    pub insecure_skip_verify: bool,
    /// CRL file.
    pub ca_crl: Option<String>,
}

/// Upstream TLS mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext.
    Disable,
    /// TLS, server verified.
    Simple,
    /// Mutual TLS with given certificates.
    Mutual,
    /// Mutual TLS with Istio's workload certificates.
    IstioMutual,
}

/// Tunnel settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tunnel {
    /// `CONNECT` or `POST`.
    pub protocol: String,
    /// Target host.
    pub target_host: String,
    /// Target port.
    pub target_port: u16,
}

/// Retry budget.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryBudget {
    /// Percent of active requests.
    pub percent: Option<f64>,
    /// Minimum concurrent retries.
    pub min_retry_concurrency: Option<u32>,
}
