//! HTTP routing as Envoy's router does it: the virtual host by `Host`, then the first route
//! whose match holds.

use envoy_types::pb::envoy::{
    config::route::v3::{
        HeaderMatcher, QueryParameterMatcher, Route, RouteMatch, VirtualHost, header_matcher,
        query_parameter_matcher, route_match,
    },
    r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher},
};

use super::steps::Request;

/// Whether `regex` fully matches `value` (Envoy's `safe_regex` is RE2, anchored).
fn regex_matches(regex: &RegexMatcher, value: &str) -> bool {
    regex::Regex::new(&format!("^(?:{})$", regex.regex)).is_ok_and(|r| r.is_match(value))
}

/// Envoy's `StringMatcher`.
pub fn string_matches(m: &StringMatcher, value: &str) -> bool {
    use string_matcher::MatchPattern;
    let fold = |s: &str| {
        if m.ignore_case {
            s.to_ascii_lowercase()
        } else {
            s.to_owned()
        }
    };
    let v = fold(value);
    match &m.match_pattern {
        Some(MatchPattern::Exact(e)) => v == fold(e),
        Some(MatchPattern::Prefix(p)) => v.starts_with(&fold(p)),
        Some(MatchPattern::Suffix(s)) => v.ends_with(&fold(s)),
        Some(MatchPattern::Contains(c)) => v.contains(&fold(c)),
        Some(MatchPattern::SafeRegex(r)) => regex_matches(r, value),
        Some(MatchPattern::Custom(_)) | None => false,
    }
}

/// The request's headers as Envoy's router sees them: pseudo-headers first, names lowercase.
pub fn header_map(request: &Request) -> Vec<(String, String)> {
    let mut headers = vec![
        (":authority".to_owned(), request.host.clone()),
        (":method".to_owned(), request.method.clone()),
        (":path".to_owned(), request.path.clone()),
        (":scheme".to_owned(), "http".to_owned()),
    ];
    headers.extend(
        request
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
    );
    headers
}

/// Envoy's `HeaderMatcher`: several values of a header are matched joined by `,`; a missing
/// header matches nothing (inverted or not) unless `treat_missing_header_as_empty`. The
/// deprecated specifiers are still Envoy's to honour, so they are matched too.
#[allow(deprecated)]
pub fn header_matches(m: &HeaderMatcher, headers: &[(String, String)]) -> bool {
    use header_matcher::HeaderMatchSpecifier as S;
    let name = m.name.to_ascii_lowercase();
    let values: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
        .collect();
    if let Some(S::PresentMatch(present)) = &m.header_match_specifier {
        // Matches when presence is as asked (`present_match: false` asks for absence).
        let present_as_asked = *present != values.is_empty();
        return present_as_asked != m.invert_match;
    }
    if values.is_empty() && !m.treat_missing_header_as_empty {
        return false;
    }
    let value = values.join(",");
    let matched = match &m.header_match_specifier {
        Some(S::ExactMatch(e)) => value == *e,
        Some(S::SafeRegexMatch(r)) => regex_matches(r, &value),
        Some(S::RangeMatch(r)) => value
            .parse::<i64>()
            .is_ok_and(|n| n >= r.start && n < r.end),
        Some(S::PrefixMatch(p)) => value.starts_with(p.as_str()),
        Some(S::SuffixMatch(s)) => value.ends_with(s.as_str()),
        Some(S::ContainsMatch(c)) => value.contains(c.as_str()),
        Some(S::StringMatch(s)) => string_matches(s, &value),
        // Handled above; kept total so no input can panic here.
        Some(S::PresentMatch(p)) => *p,
        None => true,
    };
    matched != m.invert_match
}

/// The query string's parameters, the first value of each name kept (as Envoy parses them).
fn query(path: &str) -> Vec<(String, String)> {
    let Some((_, q)) = path.split_once('?') else {
        return Vec::new();
    };
    let q = q.split('#').next().unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !out.iter().any(|(n, _)| n == k) {
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    out
}

fn query_matches(m: &QueryParameterMatcher, params: &[(String, String)]) -> bool {
    use query_parameter_matcher::QueryParameterMatchSpecifier as S;
    let value = params.iter().find(|(k, _)| *k == m.name).map(|(_, v)| v);
    match (&m.query_parameter_match_specifier, value) {
        (Some(S::PresentMatch(present)), v) => *present == v.is_some(),
        (Some(S::StringMatch(s)), Some(v)) => string_matches(s, v),
        (None, Some(_)) => true,
        (_, None) => false,
    }
}

/// Whether a route's match holds for the request (`runtime_fraction` and TLS/gRPC criteria
/// are not modelled: a route with them is reported as matching on the rest).
pub fn route_matches(m: &RouteMatch, request: &Request, headers: &[(String, String)]) -> bool {
    use route_match::PathSpecifier as P;
    let full = request.path.as_str();
    let path = full.split(['?', '#']).next().unwrap_or_default();
    let sensitive = m.case_sensitive.as_ref().is_none_or(|b| b.value);
    let fold = |s: &str| {
        if sensitive {
            s.to_owned()
        } else {
            s.to_ascii_lowercase()
        }
    };
    let path_ok = match &m.path_specifier {
        Some(P::Prefix(p)) => fold(full).starts_with(&fold(p)),
        Some(P::Path(p)) => fold(path) == fold(p),
        Some(P::SafeRegex(r)) => regex_matches(r, path),
        Some(P::PathSeparatedPrefix(p)) => {
            let (path, p) = (fold(path), fold(p));
            path == p || path.starts_with(&format!("{p}/"))
        }
        Some(P::ConnectMatcher(_)) => request.method.eq_ignore_ascii_case("CONNECT"),
        Some(P::PathMatchPolicy(_)) | None => false,
    };
    path_ok && m.headers.iter().all(|h| header_matches(h, headers)) && {
        let params = query(full);
        m.query_parameters.iter().all(|q| query_matches(q, &params))
    }
}

/// Envoy's text for a route's match.
#[allow(deprecated)]
pub fn describe_match(m: &RouteMatch) -> String {
    use route_match::PathSpecifier as P;
    let mut parts = vec![match &m.path_specifier {
        Some(P::Prefix(p)) => format!("prefix {p}"),
        Some(P::Path(p)) => format!("path {p}"),
        Some(P::SafeRegex(r)) => format!("regex {}", r.regex),
        Some(P::PathSeparatedPrefix(p)) => format!("path_separated_prefix {p}"),
        Some(P::ConnectMatcher(_)) => "CONNECT".to_owned(),
        Some(P::PathMatchPolicy(_)) | None => "-".to_owned(),
    }];
    if m.case_sensitive.as_ref().is_some_and(|b| !b.value) {
        parts.push("case-insensitive".to_owned());
    }
    for h in &m.headers {
        use header_matcher::HeaderMatchSpecifier as S;
        let how = match &h.header_match_specifier {
            Some(S::ExactMatch(e)) => format!("={e}"),
            Some(S::PrefixMatch(p)) => format!(" prefix {p}"),
            Some(S::SuffixMatch(s)) => format!(" suffix {s}"),
            Some(S::ContainsMatch(c)) => format!(" contains {c}"),
            Some(S::SafeRegexMatch(r)) => format!(" ~ {}", r.regex),
            Some(S::RangeMatch(r)) => format!(" in [{}, {})", r.start, r.end),
            Some(S::PresentMatch(p)) => if *p { " present" } else { " absent" }.to_owned(),
            Some(S::StringMatch(s)) => string_text(s),
            None => String::new(),
        };
        let not = if h.invert_match { "not " } else { "" };
        parts.push(format!("{not}header {}{how}", h.name));
    }
    for q in &m.query_parameters {
        use query_parameter_matcher::QueryParameterMatchSpecifier as S;
        let how = match &q.query_parameter_match_specifier {
            Some(S::StringMatch(s)) => string_text(s),
            Some(S::PresentMatch(_)) | None => " present".to_owned(),
        };
        parts.push(format!("query {}{how}", q.name));
    }
    parts.join(", ")
}

fn string_text(s: &StringMatcher) -> String {
    use string_matcher::MatchPattern;
    let case = if s.ignore_case { " (any case)" } else { "" };
    let text = match &s.match_pattern {
        Some(MatchPattern::Exact(e)) => format!("={e}"),
        Some(MatchPattern::Prefix(p)) => format!(" prefix {p}"),
        Some(MatchPattern::Suffix(p)) => format!(" suffix {p}"),
        Some(MatchPattern::Contains(p)) => format!(" contains {p}"),
        Some(MatchPattern::SafeRegex(r)) => format!(" ~ {}", r.regex),
        Some(MatchPattern::Custom(_)) | None => " (custom)".to_owned(),
    };
    format!("{text}{case}")
}

/// The virtual host for `host` (lowercased; its port kept unless `ignore_port`), in Envoy's
/// order: an exact domain, the longest `*suffix`, the longest `prefix*`, then `*`.
pub fn virtual_host<'a>(
    hosts: &'a [VirtualHost],
    host: &str,
    ignore_port: bool,
) -> Option<(&'a VirtualHost, String)> {
    let mut host = host.to_ascii_lowercase();
    if ignore_port && let Some((h, p)) = host.rsplit_once(':') {
        // An IPv6 literal keeps its colons: only a `]:PORT` or a plain `:PORT` is a port.
        if p.chars().all(|c| c.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) {
            host = h.to_owned();
        }
    }
    let domains = || {
        hosts
            .iter()
            .flat_map(|v| v.domains.iter().map(move |d| (v, d.to_ascii_lowercase())))
    };
    if let Some((v, d)) = domains().find(|(_, d)| *d == host) {
        return Some((v, format!("domain {d}")));
    }
    let suffix = domains()
        .filter(|(_, d)| d.len() > 1)
        .filter_map(|(v, d)| {
            let s = d.strip_prefix('*')?;
            (host.ends_with(s) && host.len() > s.len()).then(|| (s.len(), v, d.clone()))
        })
        .max_by_key(|(len, _, _)| *len);
    if let Some((_, v, d)) = suffix {
        return Some((v, format!("suffix wildcard {d}")));
    }
    let prefix = domains()
        .filter(|(_, d)| d.len() > 1)
        .filter_map(|(v, d)| {
            let p = d.strip_suffix('*')?;
            (host.starts_with(p) && host.len() > p.len()).then(|| (p.len(), v, d.clone()))
        })
        .max_by_key(|(len, _, _)| *len);
    if let Some((_, v, d)) = prefix {
        return Some((v, format!("prefix wildcard {d}")));
    }
    domains()
        .find(|(_, d)| d == "*")
        .map(|(v, _)| (v, "the catch-all domain *".to_owned()))
}

/// The first route of `vhost` whose match holds, with its index.
pub fn first_route<'a>(vhost: &'a VirtualHost, request: &Request) -> Option<(usize, &'a Route)> {
    let headers = header_map(request);
    vhost.routes.iter().enumerate().find(|(_, r)| {
        r.r#match
            .as_ref()
            .is_some_and(|m| route_matches(m, request, &headers))
    })
}
