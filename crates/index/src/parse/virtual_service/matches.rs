//! Match conditions of HTTP rules, and the header operations of rules and destinations.

use std::collections::BTreeMap;

use sextant_api as api;
use sextant_model::{self as model, HeaderMatch};

use super::{Ctx, check_gateway_name};
use crate::parse::{
    Report,
    fields::{self, check_envoy_header_name, check_header_name, check_header_value, check_port},
};

pub(super) fn http_match(
    m: &api::HttpMatchRequest,
    path: &str,
    ctx: &Ctx<'_>,
    r: &mut Report,
) -> model::HttpMatch {
    let sm = |field: &str, v: &Option<api::StringMatch>, allow_empty: bool, r: &mut Report| {
        v.as_ref()
            .and_then(|v| fields::string_match(v, &format!("{path}.{field}"), allow_empty, r))
    };
    let uri = sm("uri", &m.uri, true, r);
    let scheme = sm("scheme", &m.scheme, false, r);
    let method = sm("method", &m.method, false, r);
    let authority = sm("authority", &m.authority, false, r);
    let headers = header_matches(
        m.headers.as_ref(),
        &format!("{path}.headers"),
        false,
        ctx,
        r,
    );
    let without_headers = header_matches(
        m.without_headers.as_ref(),
        &format!("{path}.withoutHeaders"),
        true,
        ctx,
        r,
    );
    let mut query_params = BTreeMap::new();
    for (name, q) in m.query_params.iter().flatten() {
        let at = format!("{path}.queryParams[{name}]");
        // Istio checks no query parameter names; Envoy wants 1 to 1024 bytes.
        if name.is_empty() || name.len() > 1024 {
            r.error(
                &at,
                "query parameter name must be 1 to 1024 bytes long (Envoy's QueryParameterMatcher)",
            );
        }
        query_params.insert(name.clone(), present_or_match(q, &at, false, r));
    }
    let port = m
        .port
        .filter(|p| *p != 0)
        .and_then(|p| check_port(p, &format!("{path}.port"), r));
    let source_labels = m.source_labels.clone().unwrap_or_default();
    fields::check_labels(&source_labels, &format!("{path}.sourceLabels"), r);
    if let Some(ns) = m.source_namespace.as_deref()
        && !ns.is_empty()
        && !fields::is_dns1123_label(ns)
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

/// The pseudo-headers Istio accepts as header match names (`pseudoHeaders` in
/// `pkg/config/validation`): exactly these, in lower case.
const PSEUDO_HEADERS: [&str; 5] = [":method", ":scheme", ":authority", ":path", ":status"];

/// Header matches, named as Istio's `ValidateHTTPHeaderNameOrJwtClaimRoute` allows: a JWT
/// claim (`@request.auth.claims.a.b` or `@request.auth.claims[a][b]`, gateways only), one of
/// the pseudo-headers, or an RFC 7230 token. Envoy matches pseudo-headers itself, so names
/// pass through unchanged.
fn header_matches(
    headers: Option<&BTreeMap<String, api::StringMatch>>,
    path: &str,
    without: bool,
    ctx: &Ctx<'_>,
    r: &mut Report,
) -> BTreeMap<String, HeaderMatch> {
    let mut out = BTreeMap::new();
    for (name, m) in headers.into_iter().flatten() {
        let at = format!("{path}[{name}]");
        if is_jwt_claim(name) {
            if ctx.applies_to_mesh {
                r.error(
                    &at,
                    format!(
                        "JWT claim based routing (key: {name}) is only supported for gateway, found no gateways: {:?}",
                        ctx.gateways
                    ),
                );
            }
        } else if !PSEUDO_HEADERS.contains(&name.as_str()) {
            check_header_name(name, &at, r);
        }
        out.insert(name.clone(), present_or_match(m, &at, without, r));
    }
    out
}

/// Istio's `jwt.ToRoutingClaim`: the prefix in any case, then `.a.b` or `[a][b]`.
fn is_jwt_claim(name: &str) -> bool {
    const PREFIX: &str = "@request.auth.claims";
    let Some(rest) = name
        .get(..PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(PREFIX))
        .map(|_| &name[PREFIX.len()..])
    else {
        return false;
    };
    (rest.starts_with('.') && rest.len() > 1)
        || (rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2)
}

/// An empty match is "header present", and so is `regex: "*"` in `withoutHeaders`; in
/// `headers` Istio compiles that regex, and refuses it.
fn present_or_match(m: &api::StringMatch, path: &str, star: bool, r: &mut Report) -> HeaderMatch {
    let empty = m.exact.is_none() && m.prefix.is_none() && m.regex.is_none();
    if empty || (star && m.regex.as_deref() == Some("*")) {
        return HeaderMatch::Present;
    }
    match fields::string_match(m, path, false, r) {
        Some(sm) => HeaderMatch::Value(sm),
        None => HeaderMatch::Present,
    }
}

pub(super) fn headers(
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
                check_envoy_header_name(name, &at, r);
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
        } else if check_envoy_header_name(name, &at, r) {
            out.remove.push(name.clone());
        }
    }
    out
}
