//! `networking.istio.io` VirtualService, field for field as Istio's
//! `istio.networking.v1alpha3.VirtualService` (JSON names, integer widths, oneofs).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::{
    Destination, Duration, IstioStatus, Percent, PortSelector, StringMatch,
    schema::{nullable, one_of},
};

/// Configuration affecting label/content routing, sni routing, etc.
#[skip_serializing_none]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "VirtualService",
    plural = "virtualservices",
    namespaced,
    status = "IstioStatus",
    schema = "disabled",
    shortname = "vs",
    category = "istio-io",
    category = "networking-istio-io"
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    /// The destination hosts to which traffic is being sent.
    pub hosts: Option<Vec<String>>,
    /// The names of gateways and sidecars that should apply these routes.
    pub gateways: Option<Vec<String>>,
    /// An ordered list of route rules for HTTP traffic.
    pub http: Option<Vec<HttpRoute>>,
    /// An ordered list of route rules for opaque TLS/HTTPS traffic.
    pub tls: Option<Vec<TlsRoute>>,
    /// An ordered list of route rules for opaque TCP traffic.
    pub tcp: Option<Vec<TcpRoute>>,
    /// A list of namespaces to which this virtual service is exported.
    pub export_to: Option<Vec<String>>,
}

/// Rules for HTTP/1.1, HTTP2 and gRPC traffic.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// The name assigned to the route for debugging purposes.
    pub name: Option<String>,
    /// Match conditions to be satisfied for the rule to be activated.
    #[serde(rename = "match")]
    pub match_: Option<Vec<HttpMatchRequest>>,
    /// A HTTP rule can either return a direct_response, redirect or forward (default) traffic.
    pub route: Option<Vec<HttpRouteDestination>>,
    /// A HTTP rule can either return a direct_response, redirect or forward (default) traffic.
    pub redirect: Option<HttpRedirect>,
    /// A HTTP rule can either return a direct_response, redirect or forward (default) traffic.
    pub direct_response: Option<HttpDirectResponse>,
    /// Delegate is used to specify the particular VirtualService which can be used to define
    /// delegate HTTPRoute.
    pub delegate: Option<Delegate>,
    /// Rewrite HTTP URIs and Authority headers.
    pub rewrite: Option<HttpRewrite>,
    /// Timeout for HTTP requests, default is disabled.
    pub timeout: Option<Duration>,
    /// Retry policy for HTTP requests.
    pub retries: Option<HttpRetry>,
    /// Fault injection policy to apply on HTTP traffic at the client side.
    pub fault: Option<HttpFaultInjection>,
    /// Mirror HTTP traffic to a another destination in addition to forwarding the requests to
    /// the intended destination.
    pub mirror: Option<Destination>,
    /// Specifies the destinations to mirror HTTP traffic in addition to the original destination.
    pub mirrors: Option<Vec<HttpMirrorPolicy>>,
    /// Percentage of the traffic to be mirrored by the `mirror` field.
    #[schemars(transform = nullable)]
    pub mirror_percent: Option<u32>,
    /// Percentage of the traffic to be mirrored by the `mirror` field (protobuf field name).
    #[serde(rename = "mirror_percent")]
    #[schemars(transform = nullable)]
    pub mirror_percent_snake: Option<u32>,
    /// Percentage of the traffic to be mirrored by the `mirror` field.
    pub mirror_percentage: Option<Percent>,
    /// Cross-Origin Resource Sharing policy (CORS).
    pub cors_policy: Option<CorsPolicy>,
    /// Header manipulation rules.
    pub headers: Option<Headers>,
}

/// Specifies a delegate VirtualService.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Delegate {
    /// Name specifies the name of the delegate VirtualService.
    pub name: Option<String>,
    /// Namespace specifies the namespace where the delegate VirtualService resides.
    pub namespace: Option<String>,
}

/// Message headers can be manipulated when Envoy forwards requests to, or responses from, a
/// destination service.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Headers {
    /// Header manipulation rules to apply before forwarding a request to the destination service.
    pub request: Option<HeaderOperations>,
    /// Header manipulation rules to apply before returning a response to the caller.
    pub response: Option<HeaderOperations>,
}

/// HeaderOperations describes the header manipulations to apply.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeaderOperations {
    /// Overwrite the headers specified by key with the given values.
    pub set: Option<BTreeMap<String, String>>,
    /// Append the given values to the headers specified by keys.
    pub add: Option<BTreeMap<String, String>>,
    /// Remove the specified headers.
    pub remove: Option<Vec<String>>,
}

/// Describes match conditions and actions for routing unterminated TLS traffic.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TlsRoute {
    /// Match conditions to be satisfied for the rule to be activated.
    #[serde(rename = "match")]
    pub match_: Vec<TlsMatchAttributes>,
    /// The destination to which the connection should be forwarded to.
    pub route: Option<Vec<RouteDestination>>,
}

/// Describes match conditions and actions for routing TCP traffic.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TcpRoute {
    /// Match conditions to be satisfied for the rule to be activated.
    #[serde(rename = "match")]
    pub match_: Option<Vec<L4MatchAttributes>>,
    /// The destination to which the connection should be forwarded to.
    pub route: Option<Vec<RouteDestination>>,
}

/// Specifies a set of criteria to be met in order for the rule to be applied to the HTTP request.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatchRequest {
    /// The name assigned to a match.
    pub name: Option<String>,
    /// URI to match.
    pub uri: Option<StringMatch>,
    /// URI Scheme.
    pub scheme: Option<StringMatch>,
    /// HTTP Method.
    pub method: Option<StringMatch>,
    /// HTTP Authority.
    pub authority: Option<StringMatch>,
    /// The header keys must be lowercase and use hyphen as the separator.
    pub headers: Option<BTreeMap<String, StringMatch>>,
    /// Specifies the ports on the host that is being addressed.
    pub port: Option<u32>,
    /// One or more labels that constrain the applicability of a rule to source (client)
    /// workloads with the given labels.
    pub source_labels: Option<BTreeMap<String, String>>,
    /// Names of gateways where the rule should be applied.
    pub gateways: Option<Vec<String>>,
    /// Query parameters for matching.
    pub query_params: Option<BTreeMap<String, StringMatch>>,
    /// Flag to specify whether the URI matching should be case-insensitive.
    pub ignore_uri_case: Option<bool>,
    /// withoutHeader has the same syntax with the header, but has opposite meaning.
    pub without_headers: Option<BTreeMap<String, StringMatch>>,
    /// Source namespace constraining the applicability of a rule to workloads in that namespace.
    pub source_namespace: Option<String>,
    /// The human readable prefix to use when emitting statistics for this route.
    pub stat_prefix: Option<String>,
}

/// Each routing rule is associated with one or more service versions.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HttpRouteDestination {
    /// Destination uniquely identifies the instances of a service to which the request/connection
    /// should be forwarded to.
    pub destination: Destination,
    /// Weight specifies the relative proportion of traffic to be forwarded to the destination.
    pub weight: Option<i32>,
    /// Header manipulation rules.
    pub headers: Option<Headers>,
}

/// L4 routing rule weighted destination.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RouteDestination {
    /// Destination uniquely identifies the instances of a service to which the request/connection
    /// should be forwarded to.
    pub destination: Destination,
    /// Weight specifies the relative proportion of traffic to be forwarded to the destination.
    pub weight: Option<i32>,
}

/// L4 connection match attributes.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct L4MatchAttributes {
    /// IPv4 or IPv6 ip addresses of destination with optional subnet.
    pub destination_subnets: Option<Vec<String>>,
    /// Specifies the port on the host that is being addressed.
    pub port: Option<u32>,
    /// IPv4 or IPv6 ip address of source with optional subnet.
    pub source_subnet: Option<String>,
    /// One or more labels that constrain the applicability of a rule to workloads with the given
    /// labels.
    pub source_labels: Option<BTreeMap<String, String>>,
    /// Names of gateways where the rule should be applied.
    pub gateways: Option<Vec<String>>,
    /// Source namespace constraining the applicability of a rule to workloads in that namespace.
    pub source_namespace: Option<String>,
}

/// TLS connection match attributes.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsMatchAttributes {
    /// SNI (server name indicator) to match on.
    pub sni_hosts: Vec<String>,
    /// IPv4 or IPv6 ip addresses of destination with optional subnet.
    pub destination_subnets: Option<Vec<String>>,
    /// Specifies the port on the host that is being addressed.
    pub port: Option<u32>,
    /// One or more labels that constrain the applicability of a rule to workloads with the given
    /// labels.
    pub source_labels: Option<BTreeMap<String, String>>,
    /// Names of gateways where the rule should be applied.
    pub gateways: Option<Vec<String>>,
    /// Source namespace constraining the applicability of a rule to workloads in that namespace.
    pub source_namespace: Option<String>,
}

/// HTTPRedirect can be used to send a 301 redirect response to the caller.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = redirect_port_one_of)]
pub struct HttpRedirect {
    /// On a redirect, overwrite the Path portion of the URL with this value.
    pub uri: Option<String>,
    /// On a redirect, overwrite the Authority/Host portion of the URL with this value.
    pub authority: Option<String>,
    /// On a redirect, overwrite the port portion of the URL with this value.
    pub port: Option<u32>,
    /// On a redirect, dynamically set the port.
    pub derive_port: Option<RedirectPortSelection>,
    /// On a redirect, overwrite the scheme portion of the URL with this value.
    pub scheme: Option<String>,
    /// On a redirect, Specifies the HTTP status code to use in the redirect response.
    pub redirect_code: Option<u32>,
    /// On a redirect, overwrite the prefix matched portion of the Path with this value.
    pub prefix_rewrite: Option<String>,
}

fn redirect_port_one_of(schema: &mut Schema) {
    one_of(schema, &["port", "derivePort"]);
}

/// How a redirect derives its port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum RedirectPortSelection {
    FROM_PROTOCOL_DEFAULT,
    FROM_REQUEST_PORT,
}

/// HTTPDirectResponse can be used to send a fixed response to clients.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HttpDirectResponse {
    /// Specifies the HTTP response status to be returned.
    pub status: u32,
    /// Specifies the content of the response body.
    pub body: Option<HttpBody>,
}

/// The body of a direct response (`oneof specifier`).
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = body_one_of)]
pub struct HttpBody {
    /// response body as a string
    pub string: Option<String>,
    /// response body as base64 encoded bytes.
    #[schemars(extend("format" = "byte"))]
    pub bytes: Option<String>,
}

fn body_one_of(schema: &mut Schema) {
    one_of(schema, &["string", "bytes"]);
}

/// HTTPRewrite can be used to rewrite specific parts of a HTTP request before forwarding the
/// request to the destination.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRewrite {
    /// rewrite the path (or the prefix) portion of the URI with this value.
    pub uri: Option<String>,
    /// rewrite the Authority/Host header with this value.
    pub authority: Option<String>,
    /// rewrite the path portion of the URI with the specified regex.
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// A regex match and its substitution.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RegexRewrite {
    /// RE2 style regex-based match (<https://github.com/google/re2/wiki/Syntax>).
    #[serde(rename = "match")]
    pub match_: Option<String>,
    /// The string that should replace into matching portions of original URI.
    pub rewrite: Option<String>,
}

/// Describes the retry policy to use when a HTTP request fails.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetry {
    /// Number of retries to be allowed for a given request.
    pub attempts: Option<i32>,
    /// Timeout per attempt for a given request, including the initial call and any retries.
    pub per_try_timeout: Option<Duration>,
    /// Specifies the conditions under which retry takes place.
    pub retry_on: Option<String>,
    /// Flag to specify whether the retries should retry to other localities.
    #[schemars(transform = nullable)]
    pub retry_remote_localities: Option<bool>,
    /// Flag to specify whether the retries should ignore previously attempted hosts during retry.
    #[schemars(transform = nullable)]
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Specifies the minimum duration between retry attempts.
    pub backoff: Option<Duration>,
}

/// Describes the Cross-Origin Resource Sharing (CORS) policy for a given service.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsPolicy {
    /// The list of origins that are allowed to perform CORS requests (deprecated).
    pub allow_origin: Option<Vec<String>>,
    /// String patterns that match allowed origins.
    pub allow_origins: Option<Vec<StringMatch>>,
    /// List of HTTP methods allowed to access the resource.
    pub allow_methods: Option<Vec<String>>,
    /// List of HTTP headers that can be used when requesting the resource.
    pub allow_headers: Option<Vec<String>>,
    /// A list of HTTP headers that the browsers are allowed to access.
    pub expose_headers: Option<Vec<String>>,
    /// Specifies how long the results of a preflight request can be cached.
    pub max_age: Option<Duration>,
    /// Indicates whether the caller is allowed to send the actual request (not the preflight)
    /// using credentials.
    #[schemars(transform = nullable)]
    pub allow_credentials: Option<bool>,
    /// Indicates whether preflight requests not matching the configured allowed origin shouldn't
    /// be forwarded to the upstream.
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// What to do with preflight requests that match no allowed origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum UnmatchedPreflights {
    UNSPECIFIED,
    FORWARD,
    IGNORE,
}

/// Specifies one or more faults to inject while forwarding HTTP requests.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HttpFaultInjection {
    /// Delay requests before forwarding, emulating various failures.
    pub delay: Option<FaultDelay>,
    /// Abort Http request attempts and return error codes back to downstream service.
    pub abort: Option<FaultAbort>,
}

/// Delay specification used to inject latency into the request forwarding path.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = delay_one_of)]
pub struct FaultDelay {
    /// Percentage of requests on which the delay will be injected (deprecated integer form).
    pub percent: Option<i32>,
    /// Add a fixed delay before forwarding the request.
    pub fixed_delay: Option<Duration>,
    /// Add an exponential delay (not supported by Istio).
    pub exponential_delay: Option<Duration>,
    /// Percentage of requests on which the delay will be injected.
    pub percentage: Option<Percent>,
}

fn delay_one_of(schema: &mut Schema) {
    one_of(schema, &["fixedDelay", "exponentialDelay"]);
}

/// Abort specification used to prematurely abort a request with a pre-specified error code.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = abort_one_of)]
pub struct FaultAbort {
    /// HTTP status code to use to abort the Http request.
    pub http_status: Option<i32>,
    /// GRPC status code to use to abort the request.
    pub grpc_status: Option<String>,
    /// HTTP/2 error to abort with (not supported by Istio).
    pub http2_error: Option<String>,
    /// Percentage of requests to be aborted with the error code provided.
    pub percentage: Option<Percent>,
}

fn abort_one_of(schema: &mut Schema) {
    one_of(schema, &["httpStatus", "grpcStatus", "http2Error"]);
}

/// A mirror destination with its own percentage.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HttpMirrorPolicy {
    /// Destination specifies the target of the mirror operation.
    pub destination: Destination,
    /// Percentage of the traffic to be mirrored by the `destination` field.
    pub percentage: Option<Percent>,
}

impl HttpRoute {
    /// The mirror percentage as configured, whichever of its three spellings was used.
    pub fn mirror_percent_any(&self) -> Option<u32> {
        self.mirror_percent.or(self.mirror_percent_snake)
    }
}

impl PortSelector {
    /// The port number when one is given (protobuf's zero means unset).
    pub fn port(&self) -> Option<u32> {
        self.number.filter(|n| *n != 0)
    }
}
