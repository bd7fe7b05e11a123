//! Validated VirtualService routing rules.

use std::collections::BTreeMap;

use crate::{Duration, ObjectRef, Visibility};

/// A validated VirtualService.
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualService {
    /// Which object this came from.
    pub id: ObjectRef,
    /// Creation time (RFC 3339) used to order duplicate VirtualServices for one host.
    pub creation_timestamp: Option<String>,
    /// Hosts as written (short names are resolved against the namespace by the index).
    pub hosts: Vec<String>,
    /// Gateways the routes apply to, as `namespace/name` or `mesh`; empty means the mesh
    /// (sidecars).
    pub gateways: Vec<String>,
    /// HTTP rules in order; the first match wins.
    pub http: Vec<HttpRoute>,
    /// TLS (SNI) rules in order.
    pub tls: Vec<TlsRoute>,
    /// TCP rules in order.
    pub tcp: Vec<TcpRoute>,
    /// Namespaces that may use this VirtualService.
    pub export_to: Visibility,
}

impl VirtualService {
    /// A delegate VirtualService has no hosts; it is only used through a root's `delegate`.
    pub fn is_delegate(&self) -> bool {
        self.hosts.is_empty()
    }
}

/// One HTTP rule.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpRoute {
    /// The rule's name, used in route names and stats.
    pub name: Option<String>,
    /// Any of these matches activates the rule; empty matches everything.
    pub matches: Vec<HttpMatch>,
    /// What the rule does.
    pub action: HttpAction,
    /// Path and authority rewrites.
    pub rewrite: Option<Rewrite>,
    /// Request timeout; `None` means disabled.
    pub timeout: Option<Duration>,
    /// Retry policy; `None` means Istio's default policy.
    pub retries: Option<RetryPolicy>,
    /// Fault injection.
    pub fault: Option<Fault>,
    /// Traffic mirroring (`mirror` and `mirrors` normalised).
    pub mirrors: Vec<Mirror>,
    /// CORS policy.
    pub cors: Option<CorsPolicy>,
    /// Header manipulation for the whole rule.
    pub headers: Headers,
}

/// What an HTTP rule does with a matched request.
#[derive(Clone, Debug, PartialEq)]
pub enum HttpAction {
    /// Forward to one or more weighted destinations.
    Route(Vec<WeightedDestination>),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with a fixed response.
    DirectResponse(DirectResponse),
    /// Continue with the rules of another VirtualService.
    Delegate {
        /// Name of the delegate VirtualService.
        name: String,
        /// Its namespace (defaults to the root's).
        namespace: String,
    },
}

/// A destination with its share of traffic.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedDestination {
    /// Where traffic goes.
    pub destination: Destination,
    /// Relative weight; with a single destination Istio ignores it.
    pub weight: u32,
    /// Header manipulation for this destination.
    pub headers: Headers,
}

/// A service (and optionally subset and port) to send traffic to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    /// Host as written.
    pub host: String,
    /// DestinationRule subset.
    pub subset: Option<String>,
    /// Service port.
    pub port: Option<u16>,
}

/// Conditions on an HTTP request; all given conditions must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HttpMatch {
    /// Match name (route names are `rule.match`).
    pub name: Option<String>,
    /// URI path match.
    pub uri: Option<StringMatch>,
    /// `:scheme` match.
    pub scheme: Option<StringMatch>,
    /// `:method` match.
    pub method: Option<StringMatch>,
    /// `:authority` match.
    pub authority: Option<StringMatch>,
    /// Header matches, sorted by name.
    pub headers: BTreeMap<String, HeaderMatch>,
    /// Headers that must not match, sorted by name.
    pub without_headers: BTreeMap<String, HeaderMatch>,
    /// Query parameter matches.
    pub query_params: BTreeMap<String, HeaderMatch>,
    /// Only for this listener port.
    pub port: Option<u16>,
    /// Only for source workloads with these labels.
    pub source_labels: BTreeMap<String, String>,
    /// Only for source workloads in this namespace.
    pub source_namespace: Option<String>,
    /// Only on these gateways.
    pub gateways: Vec<String>,
    /// Case-insensitive URI matching.
    pub ignore_uri_case: bool,
    /// Stats prefix for the generated route.
    pub stat_prefix: Option<String>,
}

/// How a string is matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatch {
    /// Equal to.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Fully matches this RE2 regex.
    Regex(String),
}

/// A header or query parameter match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderMatch {
    /// The header is present, whatever its value.
    Present,
    /// The value matches.
    Value(StringMatch),
}

/// A redirect response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// Replace the path.
    pub uri: Option<String>,
    /// Replace the matched prefix of the path.
    pub prefix_rewrite: Option<String>,
    /// Replace the authority.
    pub authority: Option<String>,
    /// Replace the scheme (`http` or `https`).
    pub scheme: Option<String>,
    /// Replace the port.
    pub port: Option<RedirectPort>,
    /// The 3xx status to answer with (301 by default).
    pub code: u16,
}

/// The port of a redirect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectPort {
    /// A fixed port.
    Port(u16),
    /// The port the request arrived on.
    FromRequest,
    /// The default port of the scheme.
    FromProtocolDefault,
}

/// A fixed response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectResponse {
    /// HTTP status.
    pub status: u16,
    /// Response body.
    pub body: Option<Body>,
}

/// The body of a direct response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Text.
    String(String),
    /// Raw bytes (given base64-encoded).
    Bytes(Vec<u8>),
}

/// Request rewrites before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// Replace the matched path prefix (or the full path).
    pub uri: Option<String>,
    /// Replace the authority.
    pub authority: Option<String>,
    /// Regex path rewrite: `(pattern, substitution)`.
    pub uri_regex: Option<(String, String)>,
}

/// A retry policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Number of retries; 0 disables retries.
    pub attempts: u32,
    /// Timeout per attempt.
    pub per_try_timeout: Option<Duration>,
    /// Envoy `retry_on` conditions (without status codes).
    pub retry_on: Vec<String>,
    /// HTTP status codes that trigger a retry.
    pub retriable_status_codes: Vec<u32>,
    /// Retry in other localities.
    pub retry_remote_localities: Option<bool>,
    /// Avoid previously tried hosts (default true).
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base interval between retries.
    pub backoff: Option<Duration>,
}

/// Fault injection.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// Inject a delay.
    pub delay: Option<FaultDelay>,
    /// Abort requests.
    pub abort: Option<FaultAbort>,
}

/// A fixed delay applied to a share of requests.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultDelay {
    /// The delay.
    pub fixed_delay: Duration,
    /// Share of requests delayed.
    pub percentage: Percentage,
}

/// An abort applied to a share of requests.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultAbort {
    /// How requests are aborted.
    pub error: AbortError,
    /// Share of requests aborted.
    pub percentage: Percentage,
}

/// The error an abort fault returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortError {
    /// An HTTP status code.
    Http(u16),
    /// A gRPC status code (numeric).
    Grpc(u32),
}

/// A share of requests, as Envoy's fractional percents need it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Percentage {
    /// Parts per hundred (from deprecated integer fields).
    Hundred(u32),
    /// Parts per million (from `Percent` values, 4 decimal places).
    Million(u32),
}

impl Percentage {
    /// From a `Percent.value` in [0, 100].
    pub fn from_percent(value: f64) -> Percentage {
        Percentage::Million((value * 10_000.0).round() as u32)
    }
}

/// A mirror target.
#[derive(Clone, Debug, PartialEq)]
pub struct Mirror {
    /// Where copies go.
    pub destination: Destination,
    /// Share of requests mirrored.
    pub percentage: Percentage,
}

/// CORS policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CorsPolicy {
    /// Allowed origins.
    pub allow_origins: Vec<StringMatch>,
    /// Allowed methods.
    pub allow_methods: Vec<String>,
    /// Allowed request headers.
    pub allow_headers: Vec<String>,
    /// Headers exposed to the browser.
    pub expose_headers: Vec<String>,
    /// Preflight cache lifetime.
    pub max_age: Option<Duration>,
    /// Whether credentials are allowed.
    pub allow_credentials: Option<bool>,
    /// Forward preflights that match no origin (default true).
    pub forward_not_matching_preflights: bool,
}

/// Header manipulation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    /// Applied to requests.
    pub request: HeaderOperations,
    /// Applied to responses.
    pub response: HeaderOperations,
}

/// Set, add and remove operations on headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderOperations {
    /// Overwrite or add.
    pub set: BTreeMap<String, String>,
    /// Append.
    pub add: BTreeMap<String, String>,
    /// Remove.
    pub remove: Vec<String>,
}

/// A TLS (SNI) rule.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsRoute {
    /// Any of these activates the rule.
    pub matches: Vec<L4Match>,
    /// Weighted destinations.
    pub route: Vec<WeightedDestination>,
}

/// A TCP rule.
#[derive(Clone, Debug, PartialEq)]
pub struct TcpRoute {
    /// Any of these activates the rule; empty matches everything.
    pub matches: Vec<L4Match>,
    /// Weighted destinations.
    pub route: Vec<WeightedDestination>,
}

/// Conditions on a TCP or TLS connection.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct L4Match {
    /// SNI hosts (TLS only).
    pub sni_hosts: Vec<String>,
    /// Destination CIDRs.
    pub destination_subnets: Vec<String>,
    /// Only for this port.
    pub port: Option<u16>,
    /// Source CIDR (TCP only).
    pub source_subnet: Option<String>,
    /// Only for source workloads with these labels.
    pub source_labels: BTreeMap<String, String>,
    /// Only for source workloads in this namespace.
    pub source_namespace: Option<String>,
    /// Only on these gateways.
    pub gateways: Vec<String>,
}
