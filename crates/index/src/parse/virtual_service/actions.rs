//! What an HTTP rule does besides routing: rewrites, redirects and direct responses.

use base64::Engine;
use sextant_api as api;
use sextant_model::{self as model, Body, RedirectPort};

use crate::parse::{
    Report,
    fields::{self, check_port},
};

/// Direct response bodies above this are refused (Istio's limit).
const MAX_DIRECT_RESPONSE_BODY: usize = 1024 * 1024;
/// Direct response bodies above this get a warning.
const WARN_DIRECT_RESPONSE_BODY: usize = 100 * 1024;

pub(super) fn rewrite(rw: &api::HttpRewrite, path: &str, r: &mut Report) -> Option<model::Rewrite> {
    let uri = rw.uri.clone().filter(|u| !u.is_empty());
    let authority = rw.authority.clone().filter(|a| !a.is_empty());
    // Envoy puts them in the request's path and Host: no line breaks.
    for (field, value) in [("uri", &uri), ("authority", &authority)] {
        if let Some(v) = value {
            fields::check_no_line_breaks(v, &format!("{path}.{field}"), r);
        }
    }
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
                if fields::check_regex(m, &format!("{path}.uriRegexRewrite.match"), r) {
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

pub(super) fn redirect_action(
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
    // Envoy writes them into the Location header: no line breaks.
    for (field, value) in [
        ("uri", &uri),
        ("prefixRewrite", &prefix),
        ("authority", &authority),
        ("scheme", &scheme),
    ] {
        if let Some(v) = value {
            fields::check_no_line_breaks(v, &format!("{path}.{field}"), r);
        }
    }
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

pub(super) fn direct_response(
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
