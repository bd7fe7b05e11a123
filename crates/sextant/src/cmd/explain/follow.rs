//! Follows a request through a proxy's decoded Envoy resources, stage by stage, the way Envoy
//! processes it. Everything here reads the compiled configuration (what Envoy is sent), never
//! the Istio objects, so `explain` cannot disagree with Envoy about where a request goes.

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{Cluster, cluster::ClusterDiscoveryType, cluster::DiscoveryType},
            core::v3::{HealthStatus, Metadata, address, socket_address},
            endpoint::v3::{ClusterLoadAssignment, lb_endpoint},
            listener::v3::{FilterChain, filter},
            route::v3::{RedirectAction, Route, RouteAction, redirect_action, route, route_action},
        },
        extensions::filters::{
            common::fault::v3::fault_delay,
            http::fault::v3::{HttpFault, fault_abort},
            network::{
                http_connection_manager::v3::{
                    HttpConnectionManager, http_connection_manager::RouteSpecifier,
                    http_connection_manager::StripPortMode,
                },
                tcp_proxy::v3::{TcpProxy, tcp_proxy},
            },
        },
        r#type::v3::{FractionalPercent, fractional_percent::DenominatorType},
    },
    google::protobuf::{Any, Duration, value::Kind},
};
use prost::Message;
use sextant_compiler::Resources;

use super::{
    listener::{self, address_text},
    routing,
    steps::{ClusterStep, EndpointStep, Explanation, Fault, Request, RouteStep, Step},
};

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const FAULT_FILTER: &str = "envoy.filters.http.fault";

/// Follows `request` through `resources`, the configuration of proxy `proxy`.
pub fn explain(resources: &Resources, proxy: &str, request: &Request) -> Explanation {
    let mut out = Explanation {
        proxy: proxy.to_owned(),
        request: request.clone(),
        ..Default::default()
    };
    out.outcome = follow(resources, request, &mut out).unwrap_or_else(|why| why);
    out
}

/// Fills the stages of `out`; the outcome, or why the request goes nowhere.
fn follow(
    resources: &Resources,
    request: &Request,
    out: &mut Explanation,
) -> Result<String, String> {
    let chosen = listener::listener(&resources.listeners, request)?;
    let l = chosen.listener;
    out.listener = Some(Step {
        name: l.name.clone(),
        why: chosen.why,
    });
    let (chain, why) = listener::filter_chain(l, request)?;
    out.filter_chain = Some(Step {
        name: if chain.name.is_empty() {
            "-".to_owned()
        } else {
            chain.name.clone()
        },
        why,
    });
    match network_filter(chain) {
        Some(Network::Http(hcm)) => http(resources, request, &hcm, out),
        Some(Network::Tcp(tcp)) => {
            out.clusters = tcp_clusters(&tcp)
                .into_iter()
                .map(|(name, weight)| cluster_step(resources, &name, weight))
                .collect();
            Ok(tcp_outcome(&out.clusters))
        }
        None => Err(format!(
            "filter chain of {} ({}) has neither an HTTP connection manager nor a TCP proxy",
            l.name,
            address_text(l)
        )),
    }
}

/// What a TCP proxy does with the connection, Istio's catch-all clusters named for what they
/// mean.
fn tcp_outcome(clusters: &[ClusterStep]) -> String {
    match clusters {
        [c] if c.name == "PassthroughCluster" || c.name == "InboundPassthroughCluster" => format!(
            "passthrough: forwarded as TCP to the original destination ({})",
            c.name
        ),
        [c] if c.name == "BlackHoleCluster" => {
            "blocked: BlackHoleCluster drops the connection (the outbound traffic policy is \
             REGISTRY_ONLY, or the destination is the proxy itself)"
                .to_owned()
        }
        _ => format!(
            "TCP proxy to {} (the request is forwarded as bytes, not routed by HTTP)",
            names(clusters)
        ),
    }
}

enum Network {
    Http(Box<HttpConnectionManager>),
    Tcp(TcpProxy),
}

fn typed(config: Option<&filter::ConfigType>) -> Option<&Any> {
    match config {
        Some(filter::ConfigType::TypedConfig(any)) => Some(any),
        _ => None,
    }
}

/// The chain's terminal network filter: an HTTP connection manager or a TCP proxy.
fn network_filter(chain: &FilterChain) -> Option<Network> {
    chain.filters.iter().rev().find_map(|f| {
        let any = typed(f.config_type.as_ref())?;
        match any.type_url.as_str() {
            HCM => HttpConnectionManager::decode(any.value.as_slice())
                .ok()
                .map(|h| Network::Http(Box::new(h))),
            TCP_PROXY => TcpProxy::decode(any.value.as_slice())
                .ok()
                .map(Network::Tcp),
            _ => None,
        }
    })
}

fn tcp_clusters(tcp: &TcpProxy) -> Vec<(String, Option<u32>)> {
    match &tcp.cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => vec![(c.clone(), None)],
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => w
            .clusters
            .iter()
            .map(|c| (c.name.clone(), Some(c.weight)))
            .collect(),
        None => Vec::new(),
    }
}

fn names(clusters: &[ClusterStep]) -> String {
    let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

fn http(
    resources: &Resources,
    request: &Request,
    hcm: &HttpConnectionManager,
    out: &mut Explanation,
) -> Result<String, String> {
    let inline;
    let config = match &hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => resources
            .routes
            .iter()
            .find(|r| r.name == rds.route_config_name)
            .ok_or_else(|| {
                format!(
                    "route configuration {:?} (RDS) is not among the proxy's routes",
                    rds.route_config_name
                )
            })?,
        Some(RouteSpecifier::RouteConfig(c)) => {
            inline = c.clone();
            &inline
        }
        _ => return Err("the HTTP connection manager has no route configuration".to_owned()),
    };
    // The connection manager may strip the Host's port before routing.
    let mut host = request.host.clone();
    let strip_any = matches!(
        hcm.strip_port_mode,
        Some(StripPortMode::StripAnyHostPort(true))
    );
    let matching_port = format!(":{}", request.port);
    if (strip_any || (hcm.strip_matching_host_port && host.ends_with(&matching_port)))
        && let Some((h, p)) = host.rsplit_once(':')
        && p.chars().all(|c| c.is_ascii_digit())
    {
        host = h.to_owned();
    }
    let Some((vhost, why)) = routing::virtual_host(
        &config.virtual_hosts,
        &host,
        config.ignore_port_in_host_matching,
    ) else {
        return Err(format!(
            "404: no virtual host of route configuration {} has a domain for Host {host:?}",
            config.name
        ));
    };
    out.virtual_host = Some(Step {
        name: vhost.name.clone(),
        why: format!("route configuration {}, {why}", config.name),
    });
    let Some((index, r)) = routing::first_route(vhost, request) else {
        return Err(format!(
            "404: none of the {} routes of virtual host {} matches {} {}",
            vhost.routes.len(),
            vhost.name,
            request.method,
            request.path
        ));
    };
    let mut step = route_step(index, r);
    let (action, clusters) = match &r.action {
        Some(route::Action::Route(a)) => {
            step.timeout = a.timeout.as_ref().map(duration);
            step.retries = a.retry_policy.as_ref().map(|p| {
                format!(
                    "{} on {}{}",
                    p.num_retries.as_ref().map_or(1, |n| n.value),
                    p.retry_on,
                    p.per_try_timeout
                        .as_ref()
                        .map(|t| format!(", {} per try", duration(t)))
                        .unwrap_or_default()
                )
            });
            ("route".to_owned(), action_clusters(a))
        }
        Some(route::Action::Redirect(rd)) => (redirect(rd), Vec::new()),
        Some(route::Action::DirectResponse(d)) => {
            (format!("direct response {}", d.status), Vec::new())
        }
        _ => ("no action Envoy forwards by".to_owned(), Vec::new()),
    };
    step.action = action.clone();
    out.route = Some(step);
    out.clusters = clusters
        .into_iter()
        .map(|(name, weight)| cluster_step(resources, &name, weight))
        .collect();
    let fault = out.route.as_ref().and_then(|r| r.fault.as_ref());
    let faulted = fault.map(|f| {
        let parts: Vec<&str> = [f.delay.as_deref(), f.abort.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        format!("; fault: {}", parts.join(", "))
    });
    Ok(match action.as_str() {
        "route" => format!(
            "routed to {}{}",
            names(&out.clusters),
            faulted.unwrap_or_default()
        ),
        _ => action,
    })
}

fn redirect(rd: &RedirectAction) -> String {
    use redirect_action::{PathRewriteSpecifier as P, SchemeRewriteSpecifier as S};
    let mut parts = vec![format!(
        "redirect {}",
        match rd.response_code {
            1 => 302,
            2 => 303,
            3 => 307,
            4 => 308,
            _ => 301,
        }
    )];
    if let Some(S::SchemeRedirect(s)) = &rd.scheme_rewrite_specifier {
        parts.push(format!("scheme {s}"));
    }
    if !rd.host_redirect.is_empty() {
        parts.push(format!("host {}", rd.host_redirect));
    }
    if rd.port_redirect != 0 {
        parts.push(format!("port {}", rd.port_redirect));
    }
    match &rd.path_rewrite_specifier {
        Some(P::PathRedirect(p)) => parts.push(format!("path {p}")),
        Some(P::PrefixRewrite(p)) => parts.push(format!("prefix {p}")),
        _ => {}
    }
    parts.join(", ")
}

fn action_clusters(a: &RouteAction) -> Vec<(String, Option<u32>)> {
    match &a.cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(c)) => vec![(c.clone(), None)],
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => w
            .clusters
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    Some(c.weight.as_ref().map_or(0, |w| w.value)),
                )
            })
            .collect(),
        Some(route_action::ClusterSpecifier::ClusterHeader(h)) => {
            vec![(format!("(the value of header {h})"), None)]
        }
        _ => Vec::new(),
    }
}

fn metadata_field<'a>(m: Option<&'a Metadata>, ns: &str, key: &str) -> Option<&'a Kind> {
    m?.filter_metadata.get(ns)?.fields.get(key)?.kind.as_ref()
}

fn metadata_string(m: Option<&Metadata>, ns: &str, key: &str) -> Option<String> {
    match metadata_field(m, ns, key)? {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn metadata_index(m: Option<&Metadata>, key: &str) -> Option<u32> {
    match metadata_field(m, "sextant", key)? {
        // Indexes are small whole numbers written by the compiler.
        Kind::NumberValue(n) if *n >= 0.0 && *n <= f64::from(u32::MAX) => Some(*n as u32),
        _ => None,
    }
}

/// `namespace/name` of an object path `/apis/GROUP/VERSION/namespaces/NS/KIND/NAME`.
fn object(path: &str) -> Option<String> {
    let (_, rest) = path.split_once("/namespaces/")?;
    let mut parts = rest.split('/');
    let (ns, _kind, name) = (parts.next()?, parts.next()?, parts.next()?);
    Some(format!("{ns}/{name}"))
}

fn route_step(index: usize, r: &Route) -> RouteStep {
    let meta = r.metadata.as_ref();
    RouteStep {
        name: if r.name.is_empty() {
            "-".to_owned()
        } else {
            r.name.clone()
        },
        index,
        matches: r
            .r#match
            .as_ref()
            .map(routing::describe_match)
            .unwrap_or_default(),
        virtual_service: metadata_string(meta, "istio", "config").and_then(|p| object(&p)),
        rule: metadata_index(meta, "http_rule"),
        rule_match: metadata_index(meta, "match"),
        fault: r
            .typed_per_filter_config
            .get(FAULT_FILTER)
            .and_then(|any| HttpFault::decode(any.value.as_slice()).ok())
            .map(|f| fault(&f)),
        ..Default::default()
    }
}

fn duration(d: &Duration) -> String {
    if d.nanos == 0 {
        format!("{}s", d.seconds)
    } else {
        let ms = i128::from(d.seconds) * 1000 + i128::from(d.nanos) / 1_000_000;
        format!("{ms}ms")
    }
}

fn percent(p: Option<&FractionalPercent>) -> String {
    let Some(p) = p else {
        return "100%".to_owned();
    };
    let scale = match DenominatorType::try_from(p.denominator) {
        Ok(DenominatorType::TenThousand) => 100.0,
        Ok(DenominatorType::Million) => 10_000.0,
        _ => 1.0,
    };
    format!("{}%", f64::from(p.numerator) / scale)
}

fn fault(f: &HttpFault) -> Fault {
    Fault {
        delay: f.delay.as_ref().map(|d| {
            let how = match &d.fault_delay_secifier {
                Some(fault_delay::FaultDelaySecifier::FixedDelay(t)) => duration(t),
                _ => "a header's delay".to_owned(),
            };
            format!(
                "delay {how} for {} of requests",
                percent(d.percentage.as_ref())
            )
        }),
        abort: f.abort.as_ref().map(|a| {
            let how = match &a.error_type {
                Some(fault_abort::ErrorType::HttpStatus(s)) => format!("http {s}"),
                Some(fault_abort::ErrorType::GrpcStatus(s)) => format!("grpc {s}"),
                _ => "a header's status".to_owned(),
            };
            format!(
                "abort {how} for {} of requests",
                percent(a.percentage.as_ref())
            )
        }),
    }
}

fn kind(c: &Cluster) -> String {
    match &c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(*t)
            .map(|t| t.as_str_name().to_owned())
            .unwrap_or_else(|_| t.to_string()),
        Some(ClusterDiscoveryType::ClusterType(t)) => t.name.clone(),
        None => "STATIC".to_owned(),
    }
}

fn cluster_step(resources: &Resources, name: &str, weight: Option<u32>) -> ClusterStep {
    let Some(c) = resources.clusters.iter().find(|c| c.name == name) else {
        return ClusterStep {
            name: name.to_owned(),
            weight,
            kind: "missing".to_owned(),
            ..Default::default()
        };
    };
    let meta = c.metadata.as_ref();
    let kind = kind(c);
    let assignment = if kind == "EDS" {
        let service = c
            .eds_cluster_config
            .as_ref()
            .map(|e| e.service_name.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or(name);
        resources
            .endpoints
            .iter()
            .find(|a| a.cluster_name == service)
    } else {
        c.load_assignment.as_ref()
    };
    ClusterStep {
        name: name.to_owned(),
        weight,
        kind,
        destination_rule: metadata_string(meta, "istio", "config").and_then(|p| object(&p)),
        subset: metadata_string(meta, "istio", "subset"),
        endpoints: assignment.map(endpoints).unwrap_or_default(),
    }
}

fn endpoints(a: &ClusterLoadAssignment) -> Vec<EndpointStep> {
    let mut out = Vec::new();
    for group in &a.endpoints {
        let locality = group
            .locality
            .as_ref()
            .map(|l| {
                [&l.region, &l.zone, &l.sub_zone]
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_default();
        for e in &group.lb_endpoints {
            let address = match &e.host_identifier {
                Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => ep
                    .address
                    .as_ref()
                    .and_then(|a| a.address.as_ref())
                    .map(|a| match a {
                        address::Address::SocketAddress(s) => {
                            let port = match s.port_specifier {
                                Some(socket_address::PortSpecifier::PortValue(p)) => p,
                                _ => 0,
                            };
                            if s.address.contains(':') {
                                format!("[{}]:{port}", s.address)
                            } else {
                                format!("{}:{port}", s.address)
                            }
                        }
                        address::Address::Pipe(p) => format!("unix:{}", p.path),
                        _ => "-".to_owned(),
                    })
                    .unwrap_or_else(|| "-".to_owned()),
                _ => "-".to_owned(),
            };
            out.push(EndpointStep {
                address,
                weight: e.load_balancing_weight.as_ref().map_or(1, |w| w.value),
                locality: locality.clone(),
                locality_weight: group.load_balancing_weight.as_ref().map(|w| w.value),
                priority: group.priority,
                health: HealthStatus::try_from(e.health_status)
                    .map(|h| h.as_str_name().to_owned())
                    .unwrap_or_else(|_| e.health_status.to_string()),
            });
        }
    }
    out
}
