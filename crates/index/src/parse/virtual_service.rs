//! VirtualService: Istio's `ValidateVirtualService` and the model it yields.

use std::collections::BTreeMap;

use base64::Engine;
use sextant_api as api;
use sextant_model::{self as model, Body, HeaderMatch, HttpAction, Kind, RedirectPort};

use super::{
    Invalid, Parsed, Report,
    checks::{self, check_header_name, check_header_value, check_port, duration},
    object_ref,
};

mod l4;
mod policies;

use l4::{tcp_route, tls_route};
use policies::{cors, fault, mirrors, retries};

/// Direct response bodies above this are refused (Istio's limit).
const MAX_DIRECT_RESPONSE_BODY: usize = 1024 * 1024;
/// Direct response bodies above this get a warning.
const WARN_DIRECT_RESPONSE_BODY: usize = 100 * 1024;

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
        } else if let Err(e) = checks::check_host_or_ip(host) {
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
    let export_to = checks::export_to(
        spec.export_to.as_deref(),
        &id.namespace,
        "spec.exportTo",
        &mut r,
    );
    let value = model::VirtualService {
        id: id.clone(),
        creation_timestamp: obj
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        hosts,
        gateways,
        http,
        tls,
        tcp,
        export_to,
    };
    r.finish(id, value)
}

struct Ctx<'a> {
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
                if !checks::is_dns1123_label(ns) {
                    r.error(path, format!("invalid value for namespace: {ns:?}"));
                }
                if !checks::is_dns1123_subdomain(name) {
                    r.error(path, format!("invalid value for gateway name: {name:?}"));
                }
            }
        }
        None => {
            if !checks::is_dns1123_subdomain(gw) {
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
            && !checks::is_dns1123_label(ns)
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

fn http_match(
    m: &api::HttpMatchRequest,
    path: &str,
    ctx: &Ctx<'_>,
    r: &mut Report,
) -> model::HttpMatch {
    let sm = |field: &str, v: &Option<api::StringMatch>, allow_empty: bool, r: &mut Report| {
        v.as_ref()
            .and_then(|v| checks::string_match(v, &format!("{path}.{field}"), allow_empty, r))
    };
    let uri = sm("uri", &m.uri, true, r);
    let scheme = sm("scheme", &m.scheme, false, r);
    let method = sm("method", &m.method, false, r);
    let authority = sm("authority", &m.authority, false, r);
    let headers = header_matches(m.headers.as_ref(), &format!("{path}.headers"), ctx, r);
    let without_headers = header_matches(
        m.without_headers.as_ref(),
        &format!("{path}.withoutHeaders"),
        ctx,
        r,
    );
    let mut query_params = BTreeMap::new();
    for (name, q) in m.query_params.iter().flatten() {
        let at = format!("{path}.queryParams[{name}]");
        query_params.insert(name.clone(), present_or_match(q, &at, r));
    }
    let port = m
        .port
        .filter(|p| *p != 0)
        .and_then(|p| check_port(p, &format!("{path}.port"), r));
    let source_labels = m.source_labels.clone().unwrap_or_default();
    checks::check_labels(&source_labels, &format!("{path}.sourceLabels"), r);
    if let Some(ns) = m.source_namespace.as_deref()
        && !ns.is_empty()
        && !checks::is_dns1123_label(ns)
    {
        r.error(
            format!("{path}.sourceNamespace"),
            format!("sourceNamespace match {ns} is invalid"),
        );
    }
    let gateways = m.gateways.clone().unwrap_or_default();
    for (i, gw) in gateways.iter().enumerate() {
        check_gateway_name(gw, &format!("{path}.gateways[{i}]"), r);
    }
    model::HttpMatch {
        name: m.name.clone(),
        uri,
        scheme,
        method,
        authority,
        headers,
        without_headers,
        query_params,
        port,
        source_labels,
        source_namespace: m.source_namespace.clone().filter(|s| !s.is_empty()),
        gateways,
        ignore_uri_case: m.ignore_uri_case.unwrap_or(false),
        stat_prefix: m.stat_prefix.clone(),
    }
}

fn header_matches(
    headers: Option<&BTreeMap<String, api::StringMatch>>,
    path: &str,
    ctx: &Ctx<'_>,
    r: &mut Report,
) -> BTreeMap<String, HeaderMatch> {
    let mut out = BTreeMap::new();
    for (name, m) in headers.into_iter().flatten() {
        let at = format!("{path}[{name}]");
        if name.starts_with("@request.auth.claims") {
            if ctx.applies_to_mesh {
                r.error(
                    &at,
                    format!(
                        "JWT claim based routing (key: {name}) is only supported for gateway, found no gateways: {:?}",
                        ctx.gateways
                    ),
                );
            }
        } else {
            check_header_name(name, &at, r);
        }
        out.insert(name.clone(), present_or_match(m, &at, r));
    }
    out
}

/// Istio treats an empty match and `regex: "*"` as "header present".
fn present_or_match(m: &api::StringMatch, path: &str, r: &mut Report) -> HeaderMatch {
    let empty = m.exact.is_none() && m.prefix.is_none() && m.regex.is_none();
    if empty || m.regex.as_deref() == Some("*") {
        return HeaderMatch::Present;
    }
    match checks::string_match(m, path, false, r) {
        Some(sm) => HeaderMatch::Value(sm),
        None => HeaderMatch::Present,
    }
}

fn headers(
    h: Option<&api::Headers>,
    path: &str,
    authority: &mut Option<String>,
    r: &mut Report,
) -> model::Headers {
    let Some(h) = h else {
        return model::Headers::default();
    };
    model::Headers {
        request: header_ops(
            h.request.as_ref(),
            &format!("{path}.request"),
            true,
            authority,
            r,
        ),
        response: header_ops(
            h.response.as_ref(),
            &format!("{path}.response"),
            false,
            authority,
            r,
        ),
    }
}

fn header_ops(
    ops: Option<&api::HeaderOperations>,
    path: &str,
    request: bool,
    authority: &mut Option<String>,
    r: &mut Report,
) -> model::HeaderOperations {
    let Some(ops) = ops else {
        return model::HeaderOperations::default();
    };
    let mut out = model::HeaderOperations::default();
    for (field, map, target) in [
        ("set", &ops.set, &mut out.set),
        ("add", &ops.add, &mut out.add),
    ] {
        for (name, value) in map.iter().flatten() {
            let at = format!("{path}.{field}[{name}]");
            let lower = name.to_ascii_lowercase();
            if request && (lower == ":authority" || lower == "host") {
                if let Some(previous) = authority.replace(value.clone()) {
                    r.error(
                        &at,
                        format!("authority header cannot be set multiple times: have {previous:?}, attempting to set {value:?}"),
                    );
                }
            } else if name.starts_with(':') {
                r.error(
                    &at,
                    format!("invalid header {name:?}: header cannot have \":\" prefix"),
                );
            } else if !request && lower == "host" {
                r.error(
                    &at,
                    format!("invalid header {name:?}: cannot set Host header"),
                );
            } else {
                check_header_name(name, &at, r);
            }
            check_header_value(value, &at, r);
            target.insert(name.clone(), value.clone());
        }
    }
    for (i, name) in ops.remove.iter().flatten().enumerate() {
        let at = format!("{path}.remove[{i}]");
        if name.starts_with(':') {
            r.error(
                &at,
                format!("invalid header {name:?}: header cannot have \":\" prefix"),
            );
        } else if name.eq_ignore_ascii_case("host") {
            r.error(
                &at,
                format!("invalid header {name:?}: cannot remove Host header"),
            );
        } else if check_header_name(name, &at, r) {
            out.remove.push(name.clone());
        }
    }
    out
}

fn rewrite(rw: &api::HttpRewrite, path: &str, r: &mut Report) -> Option<model::Rewrite> {
    let uri = rw.uri.clone().filter(|u| !u.is_empty());
    let authority = rw.authority.clone().filter(|a| !a.is_empty());
    let mut uri_regex = None;
    if let Some(rr) = &rw.uri_regex_rewrite {
        if uri.is_some() {
            r.error(
                path,
                "rewrite may only contain one of URI or UriRegexRewrite",
            );
        }
        match (rr.match_.as_deref(), rr.rewrite.as_deref()) {
            (Some(m), Some(s)) if !m.is_empty() => {
                if checks::check_regex(m, &format!("{path}.uriRegexRewrite.match"), r) {
                    uri_regex = Some((m.to_owned(), s.to_owned()));
                }
            }
            _ => r.error(
                format!("{path}.uriRegexRewrite"),
                "UriRegexRewrite requires both Rewrite and Match fields to be specified",
            ),
        }
    } else if uri.is_none() && authority.is_none() && rw.uri.is_none() {
        r.error(
            path,
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified",
        );
    }
    Some(model::Rewrite {
        uri: rw.uri.clone(),
        authority,
        uri_regex,
    })
}

fn redirect_action(
    red: &api::HttpRedirect,
    http: &api::HttpRoute,
    path: &str,
    r: &mut Report,
) -> Option<model::Redirect> {
    let uri = red.uri.clone().filter(|s| !s.is_empty());
    let prefix = red.prefix_rewrite.clone().filter(|s| !s.is_empty());
    if uri.is_some() && prefix.is_some() {
        r.error(
            path,
            "redirect may only specify one of uri or prefix_rewrite",
        );
    }
    if prefix.is_some() {
        let all_prefix = http
            .match_
            .iter()
            .flatten()
            .all(|m| m.uri.as_ref().is_none_or(|u| u.prefix.is_some()));
        if !all_prefix {
            r.error(
                format!("{path}.prefixRewrite"),
                "redirect prefix_rewrite requires all URI matches to use prefix match type",
            );
        }
    }
    let authority = red.authority.clone().filter(|s| !s.is_empty());
    let scheme = red.scheme.clone().filter(|s| !s.is_empty());
    let port = match (red.port.filter(|p| *p != 0), red.derive_port) {
        (Some(p), _) => check_port(p, &format!("{path}.port"), r).map(RedirectPort::Port),
        (None, Some(api::RedirectPortSelection::FROM_REQUEST_PORT)) => {
            Some(RedirectPort::FromRequest)
        }
        (None, Some(api::RedirectPortSelection::FROM_PROTOCOL_DEFAULT)) => {
            Some(RedirectPort::FromProtocolDefault)
        }
        (None, None) => None,
    };
    if uri.is_none()
        && prefix.is_none()
        && authority.is_none()
        && scheme.is_none()
        && port.is_none()
    {
        r.error(
            path,
            "redirect must specify URI, authority, scheme, or port",
        );
    }
    let code = red.redirect_code.unwrap_or(0);
    if code != 0 && !(300..=399).contains(&code) {
        r.error(
            format!("{path}.redirectCode"),
            format!("{code} is not a valid redirect code, must be 3xx"),
        );
    }
    if let Some(s) = &scheme
        && s != "http"
        && s != "https"
    {
        r.error(
            format!("{path}.scheme"),
            "invalid redirect scheme, must be \"http\" or \"https\"",
        );
    }
    Some(model::Redirect {
        uri,
        prefix_rewrite: prefix,
        authority,
        scheme,
        port,
        code: if code == 0 {
            301
        } else {
            u16::try_from(code).unwrap_or(301)
        },
    })
}

fn direct_response(
    d: &api::HttpDirectResponse,
    path: &str,
    r: &mut Report,
) -> Option<model::DirectResponse> {
    if !(200..=599).contains(&d.status) {
        r.error(
            format!("{path}.status"),
            format!("HTTP status {} is not in range 200-599", d.status),
        );
    }
    let body = match d.body.as_ref() {
        Some(api::HttpBody {
            string: Some(s), ..
        }) => Some(Body::String(s.clone())),
        Some(api::HttpBody { bytes: Some(b), .. }) => {
            match base64::engine::general_purpose::STANDARD.decode(b) {
                Ok(bytes) => Some(Body::Bytes(bytes)),
                Err(e) => {
                    r.error(format!("{path}.body.bytes"), format!("invalid base64: {e}"));
                    None
                }
            }
        }
        _ => None,
    };
    let len = match &body {
        Some(Body::String(s)) => s.len(),
        Some(Body::Bytes(b)) => b.len(),
        None => 0,
    };
    if len > MAX_DIRECT_RESPONSE_BODY {
        r.error(
            format!("{path}.body"),
            "large direct_responses may impact control plane performance, must be less than 1MB",
        );
    } else if len > WARN_DIRECT_RESPONSE_BODY {
        r.warn(
            format!("{path}.body"),
            "large direct_responses may impact control plane performance",
        );
    }
    Some(model::DirectResponse {
        status: u16::try_from(d.status).unwrap_or(500),
        body,
    })
}

pub(super) fn destination(d: &api::Destination, path: &str, r: &mut Report) -> model::Destination {
    if d.host == "*" {
        r.error(format!("{path}.host"), "invalid destination host *");
    } else if let Err(e) = checks::check_host_or_ip(&d.host) {
        r.error(format!("{path}.host"), e);
    }
    let subset = d.subset.clone().filter(|s| !s.is_empty());
    if let Some(s) = &subset
        && !checks::is_dns1123_label(s)
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
