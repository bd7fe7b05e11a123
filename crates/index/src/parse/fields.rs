//! Field-level checks shared by the kinds, following Istio's `pkg/config/validation`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use sextant_api::StringMatch as ApiStringMatch;
use sextant_model::{Duration, StringMatch, Visibility};

use super::Report;

/// The longest regex Istio accepts.
pub const MAX_REGEX_LEN: usize = 1024;
/// The compiled-size limit for regexes, so a hostile pattern cannot exhaust memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

thread_local! {
    /// When regex checks on this thread stop compiling (see [`with_deadline`]).
    static DEADLINE: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    /// Whether a regex check on this thread was skipped for the deadline.
    static PASSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (checks of one object) with a time budget: once `deadline` passes, every further
/// regex is reported as not checked instead of compiled, so a hostile object full of regexes
/// costs at most the budget (and one regex). Also returns whether the deadline passed.
pub fn with_deadline<T>(deadline: std::time::Instant, f: impl FnOnce() -> T) -> (T, bool) {
    let before = DEADLINE.replace(Some(deadline));
    let passed = PASSED.replace(false);
    let out = f();
    DEADLINE.set(before);
    (out, PASSED.replace(passed))
}

/// True (and remembered) when this thread's check deadline has passed.
fn past_deadline() -> bool {
    let past = DEADLINE
        .get()
        .is_some_and(|d| std::time::Instant::now() >= d);
    if past {
        PASSED.set(true);
    }
    past
}

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Istio's `ValidateWildcardDomain`: an optional leading `*` label, then DNS-1123 labels.
pub fn check_wildcard_domain(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    if host.len() > 255 {
        return Err(format!("domain name {host:?} too long (max 255)"));
    }
    let rest = match host.strip_prefix('*') {
        Some("") => return Ok(()),
        Some(rest) => match rest.strip_prefix('.') {
            Some(rest) => rest,
            None => {
                return Err(format!(
                    "domain name {host:?} invalid (label {:?} invalid)",
                    host.split('.').next().unwrap_or(host)
                ));
            }
        },
        None => host,
    };
    let rest = rest.strip_suffix('.').unwrap_or(rest);
    let labels: Vec<&str> = rest.split('.').collect();
    for label in &labels {
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {host:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    if let Some(top) = labels.last()
        && labels.len() > 1
        && top.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "domain name {host:?} invalid (top level domain {top:?} cannot be all-numeric)"
        ));
    }
    Ok(())
}

/// A host that may also be an IP address (VirtualService hosts, SNI hosts).
pub fn check_host_or_ip(host: &str) -> Result<(), String> {
    match check_wildcard_domain(host) {
        Ok(()) => Ok(()),
        Err(_) if host.parse::<IpAddr>().is_ok() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Parses a protobuf JSON duration as Istio reads it (Go's `time.ParseDuration` syntax:
/// `1.5s`, `100ms`, `1h30m`). Returns `None` when the text is not a duration.
pub fn parse_duration(text: &str) -> Option<(bool, Duration)> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some((negative, Duration::ZERO));
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..num_end];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per: u128 = match &rest[..unit_end] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_end..];
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut value = int.checked_mul(nanos_per)?;
        let mut scale = nanos_per;
        for digit in frac.bytes().take(18) {
            scale /= 10;
            value += u128::from(digit - b'0') * scale;
        }
        total = total.checked_add(value)?;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    Some((
        negative,
        Duration::new(secs, (total % 1_000_000_000) as u32),
    ))
}

/// Istio's `ValidateDuration`: at least 1ms, millisecond precision.
/// The longest duration protobuf (and so Envoy) can hold: 10,000 years.
const MAX_DURATION_SECS: u64 = 315_576_000_000;
const DURATION_TOO_LONG: &str =
    "duration must be at most 315576000000s, the longest a protobuf Duration holds";

/// Envoy's rule for a value it puts in a header or a path (its non-strict
/// `HTTP_HEADER_VALUE`): no NUL, CR or LF.
pub fn check_no_line_breaks(value: &str, path: &str, report: &mut Report) -> bool {
    if value.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        report.error(path, format!("{value:?} holds a NUL, CR or LF"));
        false
    } else {
        true
    }
}

pub fn duration(text: &str, path: &str, report: &mut Report) -> Option<Duration> {
    match parse_duration(text) {
        None => {
            report.error(
                path,
                format!("{text:?} is not a valid duration (e.g. \"1.5s\", \"100ms\")"),
            );
            None
        }
        Some((true, _)) => {
            report.error(path, "duration must be greater than 1ms");
            None
        }
        Some((false, d)) if d < Duration::from_millis(1) => {
            report.error(path, "duration must be greater than 1ms");
            None
        }
        Some((false, d)) if d.as_secs() > MAX_DURATION_SECS => {
            report.error(path, DURATION_TOO_LONG);
            None
        }
        Some((false, d)) if d.subsec_nanos() % 1_000_000 != 0 => {
            report.error(path, "only durations to ms precision are supported");
            None
        }
        Some((false, d)) => Some(d),
    }
}

/// A duration that may be zero (`tcp.idleTimeout: 0s` disables the timeout).
pub fn non_negative_duration(text: &str, path: &str, report: &mut Report) -> Option<Duration> {
    match parse_duration(text) {
        Some((false, d)) if d.as_secs() > MAX_DURATION_SECS => {
            report.error(path, DURATION_TOO_LONG);
            None
        }
        Some((false, d)) => Some(d),
        Some((true, _)) => {
            report.error(path, "duration must not be negative");
            None
        }
        None => {
            report.error(
                path,
                format!("{text:?} is not a valid duration (e.g. \"1.5s\", \"100ms\")"),
            );
            None
        }
    }
}

/// Compiles an RE2 regex the way Istio checks them; the `regex` crate accepts RE2's syntax
/// except for a few rarely used forms (`\C`, and Perl classes in character-class ranges).
pub fn check_regex(pattern: &str, path: &str, report: &mut Report) -> bool {
    if pattern.is_empty() {
        report.error(
            path,
            format!("{pattern:?}: regex string match should not be empty"),
        );
        return false;
    }
    if pattern.len() > MAX_REGEX_LEN {
        report.error(
            path,
            format!("regex is too large, max length allowed is {MAX_REGEX_LEN}"),
        );
        return false;
    }
    if past_deadline() {
        report.error(
            path,
            "not checked: validation ran past its time budget".to_owned(),
        );
        return false;
    }
    if let Some(why) = super::re2::refused_by_re2(pattern) {
        report.error(
            path,
            format!(
                "{pattern:?}: {why}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
            ),
        );
        return false;
    }
    // The estimate first: it is cheap, and refuses large programs (such as many Unicode
    // `\w{30}`) before the regex crate spends tens of milliseconds compiling each.
    let Some(size_limit) = check_program_size(pattern, path, report) else {
        return false;
    };
    // RE2's `\w`, `\d`, `\s` and `\b` are ASCII: compiled so first, Unicode only for what
    // needs it (`\pL`), so that `\w{30}` is not refused for the size of Unicode's `\w`.
    let ascii = regex::bytes::RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(size_limit)
        .build();
    if ascii.is_ok() {
        return true;
    }
    match regex::RegexBuilder::new(pattern)
        .size_limit(size_limit)
        .build()
    {
        Ok(_) => true,
        Err(e) => {
            let reason = e.to_string();
            let reason = reason.lines().last().unwrap_or("invalid regex").trim();
            report.error(
                path,
                format!(
                    "{pattern:?}: {reason}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
                ),
            );
            false
        }
    }
}

/// Refuses a regex whose RE2 program Envoy would find too large (it rejects the whole
/// RouteConfiguration, every other route of the port with it). Otherwise returns the memory
/// the regex crate may use to compile it: enough for any program Envoy accepts (about 128
/// bytes an instruction), and [`REGEX_SIZE_LIMIT`] when the size could not be estimated.
fn check_program_size(pattern: &str, path: &str, report: &mut Report) -> Option<usize> {
    use super::re2::{ENVOY_MAX_PROGRAM_SIZE, Estimate, MAX_INSTRUCTIONS, estimate};
    let limit = super::re2::max_program_size();
    let size = match estimate(pattern) {
        Estimate::Size(size) if size > limit => size.to_string(),
        Estimate::Beyond if MAX_INSTRUCTIONS >= limit => format!("more than {MAX_INSTRUCTIONS}"),
        Estimate::Size(size) => return Some(REGEX_SIZE_LIMIT.max(size.saturating_mul(128))),
        Estimate::Beyond | Estimate::Unknown => return Some(REGEX_SIZE_LIMIT),
    };
    report.error(
        path,
        format!(
            "{pattern:?}: its RE2 program has {size} instructions, more than Envoy's limit of {limit} (runtime re2.max_program_size.error_level, which Istio's bootstrap and `sextant bootstrap` set to {ENVOY_MAX_PROGRAM_SIZE}; Sextant's --max-regex-program-size); Envoy would reject every route of this port. Use fewer counted repetitions or alternatives"
        ),
    );
    None
}

/// A string match; `allow_empty_prefix` is set for URIs, where `prefix: ""` is meaningful.
pub fn string_match(
    m: &ApiStringMatch,
    path: &str,
    allow_empty_prefix: bool,
    report: &mut Report,
) -> Option<StringMatch> {
    if let Some(exact) = &m.exact {
        return Some(StringMatch::Exact(exact.clone()));
    }
    if let Some(prefix) = &m.prefix {
        if prefix.is_empty() && !allow_empty_prefix {
            report.error(
                format!("{path}.prefix"),
                format!("{prefix:?}: prefix string match should not be empty"),
            );
            return None;
        }
        return Some(StringMatch::Prefix(prefix.clone()));
    }
    if let Some(regex) = &m.regex {
        return check_regex(regex, &format!("{path}.regex"), report)
            .then(|| StringMatch::Regex(regex.clone()));
    }
    None
}

/// RFC 7230 token characters: what an HTTP header name may contain.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Istio's check of a header name (`validHeaderNameRegex`: an RFC 7230 token, upper case
/// allowed), for CORS header lists and the names of header matches.
pub fn check_header_name(name: &str, path: &str, report: &mut Report) -> bool {
    if name.is_empty() {
        report.error(path, "header name cannot be empty");
        false
    } else if !is_header_name(name) {
        report.error(
            path,
            format!("header name {name} is not a valid header name"),
        );
        false
    } else {
        true
    }
}

/// What Envoy itself requires of a header name it is given to add, remove or hash by (its
/// non-strict `HTTP_HEADER_NAME`: not empty, no NUL, CR or LF). Istio checks no characters
/// there, so Sextant asks only what keeps Envoy from rejecting the route configuration.
pub fn check_envoy_header_name(name: &str, path: &str, report: &mut Report) -> bool {
    if name.is_empty() {
        report.error(path, "header name cannot be empty");
        false
    } else {
        check_no_line_breaks(name, path, report)
    }
}

/// Envoy header values may hold `%COMMAND%` substitutions; `%%` is a literal percent. As
/// Istio's `ValidateHTTPHeaderValue`, no control characters but tab.
pub fn check_header_value(value: &str, path: &str, report: &mut Report) {
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        report.error(
            path,
            format!("header value configuration {value:?} is invalid: it holds control characters"),
        );
        return;
    }
    if let Err(at) = substitutions(value) {
        report.error(
            path,
            format!(
                "header value configuration {value:?} is invalid: un-escaped % at position {at} (write %% for a percent sign; a substitution is %NAME% or %NAME(args)%)"
            ),
        );
    }
}

/// Checks the `%...%` substitutions of an Envoy header value as Envoy's header parser reads
/// them: `%%` is a percent sign; otherwise `%` opens a command of capitals, digits and `_`,
/// optionally with `(arguments)` and a `:suffix`, closed by `%`. The error is the position of
/// the `%` that does not fit.
fn substitutions(value: &str) -> Result<(), usize> {
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        let open = i;
        if bytes.get(i + 1) == Some(&b'%') {
            i += 2;
            continue;
        }
        i += 1;
        let name = i;
        while i < bytes.len()
            && (bytes[i].is_ascii_uppercase() || bytes[i].is_ascii_digit() || bytes[i] == b'_')
        {
            i += 1;
        }
        if i == name {
            return Err(open);
        }
        if bytes.get(i) == Some(&b'(') {
            // Arguments run to the `)` before the closing `%`.
            let close = value[i..].find(")%").ok_or(open)?;
            i += close + 1;
        } else if bytes.get(i) == Some(&b':') {
            while i < bytes.len() && bytes[i] != b'%' {
                i += 1;
            }
        }
        if bytes.get(i) != Some(&b'%') {
            return Err(open);
        }
        i += 1;
    }
    Ok(())
}

pub fn check_port(port: u32, path: &str, report: &mut Report) -> Option<u16> {
    match u16::try_from(port) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            report.error(
                path,
                format!("port number {port} must be in the range 1..65535"),
            );
            None
        }
    }
}

/// Kubernetes label keys (`prefix/name`) and values.
pub fn check_labels(labels: &BTreeMap<String, String>, path: &str, report: &mut Report) {
    for (key, value) in labels {
        let (prefix, name) = match key.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, key.as_str()),
        };
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
        if !name_ok || prefix.is_some_and(|p| !is_dns1123_subdomain(p)) {
            report.error(
                format!("{path}[{key}]"),
                format!("invalid label key {key:?}"),
            );
        }
        let value_ok = value.is_empty()
            || (value.len() <= 63
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                && value.as_bytes()[0].is_ascii_alphanumeric()
                && value.as_bytes()[value.len() - 1].is_ascii_alphanumeric());
        if !value_ok {
            report.error(
                format!("{path}[{key}]"),
                format!("invalid label value {value:?}"),
            );
        }
    }
}

/// `exportTo`: `.`, `*`, or namespace names; `~` is not allowed for these kinds.
pub fn export_to(
    entries: Option<&[String]>,
    own_namespace: &str,
    path: &str,
    report: &mut Report,
) -> Visibility {
    let Some(entries) = entries.filter(|e| !e.is_empty()) else {
        return Visibility::Public;
    };
    let mut seen = BTreeSet::new();
    let mut public = false;
    let mut namespaces = BTreeSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if !seen.insert(entry.as_str()) {
            report.error(
                &at,
                format!("duplicate entries in exportTo for entry {entry}"),
            );
            continue;
        }
        match entry.as_str() {
            "*" => public = true,
            "." => {
                namespaces.insert(own_namespace.to_owned());
            }
            "~" => report.error(
                &at,
                "exportTo ~ (none) is not allowed for Istio configuration objects",
            ),
            ns if is_dns1123_label(ns) => {
                namespaces.insert(ns.to_owned());
            }
            other => report.error(
                &at,
                format!("only .,*, or a valid DNS 1123 label is allowed as exportTo entry, got {other:?}"),
            ),
        }
    }
    if seen.contains(".") && seen.contains(own_namespace) {
        report.error(
            path,
            format!("duplicate entries in exportTo: . and current namespace {own_namespace}"),
        );
    }
    if public && entries.len() > 1 {
        report.error(
            path,
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
    if public {
        Visibility::Public
    } else {
        Visibility::Namespaces(namespaces)
    }
}

/// Istio's `validatePercentage`: 0, or in [0.0001, 100].
pub fn check_percentage(value: f64, path: &str, report: &mut Report) -> bool {
    if !(0.0..=100.0).contains(&value) || (value > 0.0 && value < 0.0001) {
        report.error(
            path,
            format!("percentage {value} is neither 0.0, nor in range [0.0001, 100.0]"),
        );
        false
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(
            parse_duration("1.5s"),
            Some((false, Duration::from_millis(1500)))
        );
        assert_eq!(
            parse_duration("1h1m"),
            Some((false, Duration::from_secs(3660)))
        );
        assert_eq!(
            parse_duration("100ms"),
            Some((false, Duration::from_millis(100)))
        );
        assert_eq!(parse_duration("-1s"), Some((true, Duration::from_secs(1))));
        assert_eq!(parse_duration("0"), Some((false, Duration::ZERO)));
        assert_eq!(parse_duration("1"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn wildcard_domains() {
        assert!(check_wildcard_domain("*").is_ok());
        assert!(check_wildcard_domain("*.bookinfo.com").is_ok());
        assert!(check_wildcard_domain("reviews.default.svc.cluster.local").is_ok());
        assert!(check_wildcard_domain("foo.*.com").is_err());
        assert!(check_wildcard_domain("*foo.com").is_err());
        assert!(check_wildcard_domain("a.123").is_err());
        assert!(check_wildcard_domain("").is_err());
        assert!(check_host_or_ip("10.0.0.1").is_ok());
    }
}
