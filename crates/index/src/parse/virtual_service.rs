//! VirtualService: Istio's `ValidateVirtualService` and the model it yields.

use sextant_api as api;
use sextant_model::{self as model, HttpAction, Kind};

use super::{
    Invalid, Parsed, Report,
    fields::{self, check_port, duration},
    object_ref,
};

mod actions;
mod l4;
mod matches;
mod policies;

use actions::{direct_response, redirect_action, rewrite};
use l4::{tcp_route, tls_route};
use matches::{headers, http_match};
use policies::{cors, fault, mirrors, retries};

pub(super) const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

pub(super) const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// gRPC status names and their codes.
pub(super) const GRPC_CODES: &[(&str, u32)] = &[
    ("OK", 0),
    ("CANCELLED", 1),
    ("UNKNOWN", 2),
    ("INVALID_ARGUMENT", 3),
    ("DEADLINE_EXCEEDED", 4),
    ("NOT_FOUND", 5),
    ("ALREADY_EXISTS", 6),
    ("PERMISSION_DENIED", 7),
    ("RESOURCE_EXHAUSTED", 8),
    ("FAILED_PRECONDITION", 9),
    ("ABORTED", 10),
    ("OUT_OF_RANGE", 11),
    ("UNIMPLEMENTED", 12),
    ("INTERNAL", 13),
    ("UNAVAILABLE", 14),
    ("DATA_LOSS", 15),
    ("UNAUTHENTICATED", 16),
];

/// Validates a VirtualService and builds its model.
pub fn virtual_service(
    obj: &api::VirtualService,
) -> Result<Parsed<model::VirtualService>, Invalid> {
    let id = object_ref(Kind::VirtualService, &obj.metadata);
    let mut r = Report::default();
    super::check_metadata(&obj.metadata, &mut r);
    let spec = &obj.spec;
    let hosts = spec.hosts.clone().unwrap_or_default();
    let gateways = spec.gateways.clone().unwrap_or_default();
    let is_delegate = hosts.is_empty();
    let applies_to_mesh = gateways.is_empty() || gateways.iter().any(|g| g == "mesh");

    if is_delegate {
        if !gateways.is_empty() {
            r.error(
                "spec.gateways",
                "delegate virtual service must have no gateways specified",
            );
        }
        if spec.tls.as_ref().is_some_and(|t| !t.is_empty()) {
            r.error(
                "spec.tls",
                "delegate virtual service must have no tls route specified",
            );
        }
        if spec.tcp.as_ref().is_some_and(|t| !t.is_empty()) {
            r.error(
                "spec.tcp",
                "delegate virtual service must have no tcp route specified",
            );
        }
    }
    for (i, host) in hosts.iter().enumerate() {
        let path = format!("spec.hosts[{i}]");
        if host == "*" && applies_to_mesh {
            r.error(
                &path,
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
            );
        } else if let Err(e) = fields::check_host_or_ip(host) {
            r.error(&path, e);
        }
        if let Some(j) = hosts[..i].iter().position(|h| h.eq_ignore_ascii_case(host)) {
            r.error(
                &path,
                format!("duplicate hosts in virtual service: {} & {host}", hosts[j]),
            );
        }
    }
    for (i, gw) in gateways.iter().enumerate() {
        check_gateway_name(gw, &format!("spec.gateways[{i}]"), &mut r);
    }
    let http_in = spec.http.as_deref().unwrap_or_default();
    let tcp_in = spec.tcp.as_deref().unwrap_or_default();
    let tls_in = spec.tls.as_deref().unwrap_or_default();
    if http_in.is_empty() && tcp_in.is_empty() && tls_in.is_empty() {
        r.error(
            "spec",
            "http, tcp or tls must be provided in virtual service",
        );
    }
    let ctx = Ctx {
        namespace: &id.namespace,
        is_delegate,
        applies_to_mesh,
        gateways: &gateways,
    };
    let http: Vec<_> = http_in
        .iter()
        .enumerate()
        .filter_map(|(i, route)| http_route(route, &format!("spec.http[{i}]"), &ctx, &mut r))
        .collect();
    unreachable_rules(http_in, &mut r);
    let tls: Vec<_> = tls_in
        .iter()
        .enumerate()
        .map(|(i, route)| tls_route(route, &hosts, &format!("spec.tls[{i}]"), &mut r))
        .collect();
    let tcp: Vec<_> = tcp_in
        .iter()
        .enumerate()
        .map(|(i, route)| tcp_route(route, &format!("spec.tcp[{i}]"), &mut r))
        .collect();
    let export_to = fields::export_to(
        spec.export_to.as_deref(),
        &id.namespace,
        "spec.exportTo",
        &mut r,
    );
    let mut value = model::VirtualService {
        id: id.clone(),
        creation_timestamp: super::creation_timestamp(&obj.metadata),
        hosts,
        gateways,
        http,
        tls,
        tcp,
        export_to,
    };
    resolve_gateway_names(&mut value);
    r.finish(id, value)
}

/// Every gateway a VirtualService names, in the `namespace/name` form Gateways are keyed by.
fn resolve_gateway_names(vs: &mut model::VirtualService) {
    let ns = vs.id.namespace.clone();
    let resolve = |names: &mut Vec<String>| {
        for name in names.iter_mut() {
            *name = gateway_ref(name, &ns);
        }
    };
    resolve(&mut vs.gateways);
    vs.http
        .iter_mut()
        .flat_map(|h| h.matches.iter_mut())
        .for_each(|m| resolve(&mut m.gateways));
    let l4 = vs.tls.iter_mut().flat_map(|t| t.matches.iter_mut());
    l4.chain(vs.tcp.iter_mut().flat_map(|t| t.matches.iter_mut()))
        .for_each(|m| resolve(&mut m.gateways));
}

/// Istio's `resolveGatewayName`: `mesh` stays, `name` (or `./name`) is in the
/// VirtualService's namespace, `ns/name` stays, and the legacy `name.ns.svc.cluster.local`
/// (or `name.ns`) is `ns/name`.
pub fn gateway_ref(gateway: &str, namespace: &str) -> String {
    if gateway == "mesh" {
        return gateway.to_owned();
    }
    match gateway.split_once('/') {
        Some((".", name)) => format!("{namespace}/{name}"),
        Some(_) => gateway.to_owned(),
        None => match gateway.split_once('.') {
            None => format!("{namespace}/{gateway}"),
            Some((name, rest)) => {
                let ns = rest.split('.').next().unwrap_or(rest);
                format!("{ns}/{name}")
            }
        },
    }
}

pub(super) struct Ctx<'a> {
    namespace: &'a str,
    is_delegate: bool,
    applies_to_mesh: bool,
    gateways: &'a [String],
}

pub(super) fn check_gateway_name(gw: &str, path: &str, r: &mut Report) {
    if gw == "mesh" {
        return;
    }
    match gw.split_once('/') {
        Some((ns, name)) => {
            if ns.is_empty() || name.is_empty() {
                r.error(path, "config namespace and gateway name cannot be empty");
            } else {
                if !fields::is_dns1123_label(ns) {
                    r.error(path, format!("invalid value for namespace: {ns:?}"));
                }
                if !fields::is_dns1123_subdomain(name) {
                    r.error(path, format!("invalid value for gateway name: {name:?}"));
                }
            }
        }
        None => {
            if !fields::is_dns1123_subdomain(gw) {
                r.error(path, format!("invalid value for gateway name: {gw:?}"));
            } else if gw.contains('.') {
                r.warn(
                    path,
                    "using legacy gatewayName format; prefer namespace/name",
                );
            }
        }
    }
}

fn http_route(
    http: &api::HttpRoute,
    path: &str,
    ctx: &Ctx<'_>,
    r: &mut Report,
) -> Option<model::HttpRoute> {
    let errors_before = r.errors.len();
    let has_route = http.route.as_ref().is_some_and(|d| !d.is_empty());
    if http.redirect.is_some() {
        if has_route {
            r.error(path, "HTTP route cannot contain both route and redirect");
        }
        if http.fault.is_some() {
            r.error(path, "HTTP route cannot contain both fault and redirect");
        }
        if http.rewrite.is_some() {
            r.error(
                path,
                "HTTP route rule cannot contain both rewrite and redirect",
            );
        }
        if http.direct_response.is_some() {
            r.error(
                path,
                "HTTP route cannot contain both direct_response and redirect",
            );
        }
    }
    if http.direct_response.is_some() {
        if has_route {
            r.error(
                path,
                "HTTP route cannot contain both route and direct_response",
            );
        }
        if http.fault.is_some() {
            r.error(
                path,
                "HTTP route cannot contain both fault and direct_response",
            );
        }
    }
    if let Some(delegate) = &http.delegate {
        if ctx.is_delegate {
            r.error(
                format!("{path}.delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        } else if has_route || http.redirect.is_some() {
            r.error(
                path,
                format!(
                    "root HTTP route {} must not specify redirect/route",
                    http.name.as_deref().unwrap_or("")
                ),
            );
        }
        if delegate.name.as_deref().is_none_or(str::is_empty) {
            r.error(format!("{path}.delegate.name"), "delegate name is required");
        }
        if let Some(ns) = delegate.namespace.as_deref()
            && !ns.is_empty()
            && !fields::is_dns1123_label(ns)
        {
            r.error(
                format!("{path}.delegate.namespace"),
                format!("invalid namespace {ns:?}"),
            );
        }
    } else if !has_route && http.redirect.is_none() && http.direct_response.is_none() {
        r.error(path, "HTTP route, redirect or direct_response is required");
    }
    if http.mirror.is_some() && http.mirrors.as_ref().is_some_and(|m| !m.is_empty()) {
        r.error(path, "HTTP route cannot contain both mirror and mirrors");
    }

    let matches: Vec<_> = http
        .match_
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| http_match(m, &format!("{path}.match[{i}]"), ctx, r))
        .collect();

    let mut authority_from_headers = None;
    let headers = headers(
        http.headers.as_ref(),
        &format!("{path}.headers"),
        &mut authority_from_headers,
        r,
    );
    let rewrite = http
        .rewrite
        .as_ref()
        .and_then(|rw| rewrite(rw, &format!("{path}.rewrite"), r));
    if let (Some(rw), Some(h)) = (
        rewrite.as_ref().and_then(|rw| rw.authority.as_ref()),
        authority_from_headers.as_ref(),
    ) {
        r.error(
            format!("{path}.headers.request"),
            format!("authority header cannot be set multiple times: have {rw:?}, attempting to set {h:?}"),
        );
    }

    let action = if let Some(redirect) = &http.redirect {
        redirect_action(redirect, http, &format!("{path}.redirect"), r).map(HttpAction::Redirect)
    } else if let Some(direct) = &http.direct_response {
        direct_response(direct, &format!("{path}.directResponse"), r)
            .map(HttpAction::DirectResponse)
    } else if let Some(delegate) = &http.delegate {
        Some(HttpAction::Delegate {
            name: delegate.name.clone().unwrap_or_default(),
            namespace: delegate
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| ctx.namespace.to_owned()),
        })
    } else {
        Some(HttpAction::Route(http_destinations(
            http.route.as_deref().unwrap_or_default(),
            &format!("{path}.route"),
            r,
        )))
    };

    let timeout = http
        .timeout
        .as_ref()
        .and_then(|t| duration(t.as_str(), &format!("{path}.timeout"), r));
    let retries = http
        .retries
        .as_ref()
        .and_then(|x| retries(x, &format!("{path}.retries"), r));
    let fault = http
        .fault
        .as_ref()
        .and_then(|f| fault(f, &format!("{path}.fault"), r));
    let mirrors = mirrors(http, path, r);
    let cors = http
        .cors_policy
        .as_ref()
        .map(|c| cors(c, &format!("{path}.corsPolicy"), r));

    if r.errors.len() > errors_before {
        return None;
    }
    Some(model::HttpRoute {
        name: http.name.clone(),
        matches,
        action: action?,
        rewrite,
        timeout,
        retries,
        fault,
        mirrors,
        cors,
        headers,
    })
}

pub(super) fn destination(d: &api::Destination, path: &str, r: &mut Report) -> model::Destination {
    if d.host == "*" {
        r.error(format!("{path}.host"), "invalid destination host *");
    } else if let Err(e) = fields::check_host_or_ip(&d.host) {
        r.error(format!("{path}.host"), e);
    }
    let subset = d.subset.clone().filter(|s| !s.is_empty());
    if let Some(s) = &subset
        && !fields::is_dns1123_label(s)
    {
        r.error(
            format!("{path}.subset"),
            format!("subset name is invalid: {s}"),
        );
    }
    let port = d
        .port
        .as_ref()
        .and_then(api::PortSelector::port)
        .and_then(|p| check_port(p, &format!("{path}.port.number"), r));
    model::Destination {
        host: d.host.clone(),
        subset,
        port,
    }
}

fn http_destinations(
    routes: &[api::HttpRouteDestination],
    path: &str,
    r: &mut Report,
) -> Vec<model::WeightedDestination> {
    let items = routes
        .iter()
        .map(|rd| (&rd.destination, rd.weight, rd.headers.as_ref()));
    weighted_destinations(items, path, r)
}

/// Destinations with weights (HTTP ones may carry headers): Istio's weight rules.
fn weighted_destinations<'a>(
    items: impl ExactSizeIterator<Item = (&'a api::Destination, Option<i32>, Option<&'a api::Headers>)>,
    path: &str,
    r: &mut Report,
) -> Vec<model::WeightedDestination> {
    let count = items.len();
    let mut out = Vec::new();
    let mut total: i64 = 0;
    for (i, (dest, w, h)) in items.enumerate() {
        let at = format!("{path}[{i}]");
        let mut authority = None;
        let headers = headers(h, &format!("{at}.headers"), &mut authority, r);
        let weight = weight(w, &at, r);
        total += i64::from(weight);
        out.push(model::WeightedDestination {
            destination: destination(dest, &format!("{at}.destination"), r),
            weight,
            headers,
        });
    }
    if count > 1 && total == 0 {
        r.error(path, "total destination weight = 0");
    }
    out
}

fn weight(w: Option<i32>, path: &str, r: &mut Report) -> u32 {
    let w = w.unwrap_or(0);
    if w < 0 {
        r.error(format!("{path}.weight"), format!("weight {w} < 0"));
        0
    } else {
        w.unsigned_abs()
    }
}

pub(super) fn l4_destinations(
    routes: &[api::RouteDestination],
    path: &str,
    r: &mut Report,
) -> Vec<model::WeightedDestination> {
    let items = routes.iter().map(|rd| (&rd.destination, rd.weight, None));
    weighted_destinations(items, path, r)
}

/// Istio's analysis warnings for rules that can never match.
fn unreachable_rules(http: &[api::HttpRoute], r: &mut Report) {
    let mut catch_all_at: Option<usize> = None;
    let mut seen: Vec<(usize, String)> = Vec::new();
    for (i, route) in http.iter().enumerate() {
        let name = route.name.clone().unwrap_or_else(|| i.to_string());
        if let Some(prior) = catch_all_at {
            r.warn(
                format!("spec.http[{i}]"),
                format!("virtualService rule {name} not used (route without matches defined before, at http[{prior}])"),
            );
            continue;
        }
        let matches = route.match_.as_deref().unwrap_or_default();
        if matches.is_empty() {
            catch_all_at = Some(i);
            continue;
        }
        for (j, m) in matches.iter().enumerate() {
            let key = serde_json::to_string(m).unwrap_or_default();
            if let Some((prior, _)) = seen.iter().find(|(_, k)| *k == key) {
                r.warn(
                    format!("spec.http[{i}].match[{j}]"),
                    format!("virtualService rule {name} match {j} is not used (duplicate/overlapping match in rule {prior})"),
                );
            } else {
                seen.push((i, key));
            }
        }
    }
}
