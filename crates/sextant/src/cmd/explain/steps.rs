//! What `sextant explain` answers: the request it followed and one step per stage of Envoy's
//! processing. The same types are the admin endpoint's JSON and what the CLI reads back, so the
//! offline and live answers print alike.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The request to follow through a proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The `Host` (`:authority`) header, with or without a port.
    pub host: String,
    /// The destination port the application connects to.
    pub port: u16,
    /// The `:path`, query string included.
    pub path: String,
    /// The `:method`.
    pub method: String,
    /// Further request headers, in order (names as given; matched case-insensitively).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The destination address the application connects to (a Service's VIP, or the
    /// proxy's bind address); when absent, listeners are chosen by port.
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// The TLS server name, when the application speaks TLS itself.
    #[serde(default)]
    pub sni: Option<String>,
}

/// A named stage and why it was chosen.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The resource's (or filter chain's) name.
    pub name: String,
    /// Why this one: the address, match or domain that selected it.
    pub why: String,
}

/// The route that matched and what it does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteStep {
    /// The route's name (`http.name` of the rule, `.match name` when both are set).
    pub name: String,
    /// Its position in the virtual host.
    pub index: usize,
    /// What it matches, as Envoy's match fields.
    #[serde(rename = "match")]
    pub matches: String,
    /// The VirtualService that produced it, `namespace/name`.
    pub virtual_service: Option<String>,
    /// The index of the http rule in that VirtualService.
    pub rule: Option<u32>,
    /// The index of the match within that rule.
    pub rule_match: Option<u32>,
    /// `route`, `redirect ...` or `direct response ...`.
    pub action: String,
    /// The route's timeout (`0s` means none).
    pub timeout: Option<String>,
    /// Retries: conditions, attempts and per-try timeout.
    pub retries: Option<String>,
    /// The fault filter's per-route configuration.
    pub fault: Option<Fault>,
}

/// Faults injected on the route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// `DURATION for P% of requests`.
    pub delay: Option<String>,
    /// `http STATUS for P% of requests`.
    pub abort: Option<String>,
}

/// A cluster the request may go to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStep {
    /// Its name, `outbound|PORT|SUBSET|HOST` for a service.
    pub name: String,
    /// Its weight when the route splits traffic; `None` when it takes everything.
    pub weight: Option<u32>,
    /// Its discovery type (`EDS`, `STATIC`, `STRICT_DNS`, `ORIGINAL_DST`, ...), or `missing`
    /// when the proxy has no such cluster.
    pub kind: String,
    /// The DestinationRule whose policy it carries, `namespace/name`.
    pub destination_rule: Option<String>,
    /// The DestinationRule subset it is.
    pub subset: Option<String>,
    /// Its endpoints.
    pub endpoints: Vec<EndpointStep>,
}

/// One endpoint of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointStep {
    /// `IP:PORT` (or `HOST:PORT` for DNS clusters).
    pub address: String,
    /// Its load-balancing weight (1 when unset).
    pub weight: u32,
    /// `region/zone/subzone`, empty parts left out.
    pub locality: String,
    /// The locality's weight, when set.
    pub locality_weight: Option<u32>,
    /// Its priority (0 first).
    pub priority: u32,
    /// Envoy's health status (`UNKNOWN` is healthy).
    pub health: String,
}

/// How a request fares, stage by stage; the stages not reached are absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The proxy's node id.
    pub proxy: String,
    /// Whose configuration was followed: a directory compiled offline, what a connected
    /// proxy is sent, or one compiled from the node id alone.
    #[serde(default)]
    pub configuration: String,
    /// The request followed.
    pub request: Request,
    /// The listener that takes the connection.
    pub listener: Option<Step>,
    /// Its filter chain.
    pub filter_chain: Option<Step>,
    /// The route configuration's virtual host (HTTP only).
    pub virtual_host: Option<Step>,
    /// The first route that matches (HTTP only).
    pub route: Option<RouteStep>,
    /// Where the request goes.
    pub clusters: Vec<ClusterStep>,
    /// One sentence: what happens to the request, and why when nothing matched.
    pub outcome: String,
    /// Why Envoy may not be doing what this says: a connected proxy that rejected (NACKed)
    /// or has not yet acknowledged the latest configuration still runs an older one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}
