//! HTTP rule policies: retries, fault injection, mirroring and CORS.

use sextant_api as api;
use sextant_model::{self as model, AbortError, Percentage, StringMatch};

use super::{GRPC_CODES, HTTP_METHODS, RETRY_ON, destination};
use crate::parse::{
    Report,
    fields::{self, check_header_name, duration},
};

pub(super) fn retries(
    x: &api::HttpRetry,
    path: &str,
    r: &mut Report,
) -> Option<model::RetryPolicy> {
    let attempts = x.attempts.unwrap_or(0);
    if attempts < 0 {
        r.error(format!("{path}.attempts"), "attempts cannot be negative");
        return None;
    }
    if attempts == 0
        && (x.per_try_timeout.is_some()
            || x.retry_on.as_deref().is_some_and(|s| !s.is_empty())
            || x.retry_remote_localities.is_some())
    {
        r.error(
            path,
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    let per_try_timeout = x
        .per_try_timeout
        .as_ref()
        .and_then(|d| duration(d.as_str(), &format!("{path}.perTryTimeout"), r));
    let backoff = x
        .backoff
        .as_ref()
        .and_then(|d| duration(d.as_str(), &format!("{path}.backoff"), r));
    let mut retry_on = Vec::new();
    let mut codes = Vec::new();
    for policy in x.retry_on.iter().flat_map(|s| s.split(',')).map(str::trim) {
        if policy.is_empty() {
            continue;
        }
        if RETRY_ON.contains(&policy) {
            retry_on.push(policy.to_owned());
        } else if let Some(code) = policy
            .parse::<u32>()
            .ok()
            .filter(|c| (100..=599).contains(c))
        {
            codes.push(code);
        } else {
            r.error(
                format!("{path}.retryOn"),
                format!("{policy:?} is not a valid retryOn policy"),
            );
        }
    }
    if !codes.is_empty() && !retry_on.iter().any(|p| p == "retriable-status-codes") {
        retry_on.push("retriable-status-codes".into());
    }
    Some(model::RetryPolicy {
        attempts: attempts.unsigned_abs(),
        per_try_timeout,
        retry_on,
        retriable_status_codes: codes,
        retry_remote_localities: x.retry_remote_localities,
        retry_ignore_previous_hosts: x.retry_ignore_previous_hosts,
        backoff,
    })
}

pub(super) fn fault(
    f: &api::HttpFaultInjection,
    path: &str,
    r: &mut Report,
) -> Option<model::Fault> {
    if f.abort.is_none() && f.delay.is_none() {
        r.error(
            path,
            "HTTP fault injection must have an abort and/or a delay",
        );
        return None;
    }
    let delay = f.delay.as_ref().and_then(|d| {
        let at = format!("{path}.delay");
        let percentage = fault_percentage(d.percentage.as_ref(), d.percent, &at, r);
        if d.exponential_delay.is_some() {
            r.error(
                format!("{at}.exponentialDelay"),
                "exponentialDelay not supported yet",
            );
        }
        match &d.fixed_delay {
            Some(fd) => duration(fd.as_str(), &format!("{at}.fixedDelay"), r).map(|fixed_delay| {
                model::FaultDelay {
                    fixed_delay,
                    percentage,
                }
            }),
            None => {
                if d.exponential_delay.is_none() {
                    r.warn(&at, "delay has no fixedDelay and is ignored");
                }
                None
            }
        }
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let at = format!("{path}.abort");
        let percentage = fault_percentage(a.percentage.as_ref(), None, &at, r);
        let error = if let Some(status) = a.http_status {
            if !(200..=599).contains(&status) {
                r.error(format!("{at}.httpStatus"), format!("invalid abort http status {status}"));
                return None;
            }
            AbortError::Http(status.unsigned_abs() as u16)
        } else if let Some(grpc) = &a.grpc_status {
            match GRPC_CODES.iter().find(|(name, _)| name == grpc) {
                Some((_, code)) => AbortError::Grpc(*code),
                None => {
                    r.error(
                        format!("{at}.grpcStatus"),
                        format!("gRPC status {grpc:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md"),
                    );
                    return None;
                }
            }
        } else if a.http2_error.is_some() {
            r.error(format!("{at}.http2Error"), "HTTP/2 abort fault injection not supported yet");
            return None;
        } else {
            r.error(&at, "abort configured, but error type not set");
            return None;
        };
        Some(model::FaultAbort { error, percentage })
    });
    Some(model::Fault { delay, abort })
}

/// `percentage` wins over the deprecated integer `percent`; unset means none for aborts and
/// (per Istio) all for delays given only `percent`.
fn fault_percentage(
    percentage: Option<&api::Percent>,
    percent: Option<i32>,
    path: &str,
    r: &mut Report,
) -> Percentage {
    if let Some(p) = percentage {
        fields::check_percentage(p.value, &format!("{path}.percentage.value"), r);
        return Percentage::from_percent(p.value.clamp(0.0, 100.0));
    }
    match percent {
        Some(p) if !(0..=100).contains(&p) => {
            r.error(
                format!("{path}.percent"),
                format!("percentage {p} is not in range 0..100"),
            );
            Percentage::Hundred(0)
        }
        Some(p) => Percentage::Hundred(p.unsigned_abs()),
        None => Percentage::Hundred(0),
    }
}

pub(super) fn mirrors(http: &api::HttpRoute, path: &str, r: &mut Report) -> Vec<model::Mirror> {
    let mut out = Vec::new();
    if let Some(m) = &http.mirror {
        let percentage = if let Some(p) = &http.mirror_percentage {
            if p.value > 100.0 {
                r.error(
                    format!("{path}.mirrorPercentage.value"),
                    format!(
                        "mirror_percentage must have a max value of 100 (it has {})",
                        p.value
                    ),
                );
            } else if p.value < 0.0 {
                r.error(
                    format!("{path}.mirrorPercentage.value"),
                    format!(
                        "mirror_percentage must have a min value of 0 (it has {})",
                        p.value
                    ),
                );
            }
            Percentage::from_percent(p.value.clamp(0.0, 100.0))
        } else if let Some(p) = http.mirror_percent_any() {
            r.warn(
                format!("{path}.mirrorPercent"),
                "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
            );
            if p > 100 {
                r.error(
                    format!("{path}.mirrorPercent"),
                    format!("mirror_percent must have a max value of 100 (it has {p})"),
                );
            }
            Percentage::Hundred(p.min(100))
        } else {
            Percentage::Million(1_000_000)
        };
        let destination = destination(m, &format!("{path}.mirror"), r);
        if percentage != Percentage::Hundred(0) && percentage != Percentage::Million(0) {
            out.push(model::Mirror {
                destination,
                percentage,
            });
        }
    }
    for (i, m) in http.mirrors.iter().flatten().enumerate() {
        let at = format!("{path}.mirrors[{i}]");
        let percentage = match &m.percentage {
            Some(p) => {
                if p.value > 100.0 || p.value < 0.0 {
                    r.error(
                        format!("{at}.percentage.value"),
                        format!(
                            "mirror percentage must have a max value of 100 (it has {})",
                            p.value
                        ),
                    );
                }
                Percentage::from_percent(p.value.clamp(0.0, 100.0))
            }
            None => Percentage::Million(1_000_000),
        };
        let destination = destination(&m.destination, &format!("{at}.destination"), r);
        if percentage != Percentage::Million(0) {
            out.push(model::Mirror {
                destination,
                percentage,
            });
        }
    }
    out
}

pub(super) fn cors(c: &api::CorsPolicy, path: &str, r: &mut Report) -> model::CorsPolicy {
    let mut allow_origins = Vec::new();
    for (i, origin) in c.allow_origin.iter().flatten().enumerate() {
        if origin.is_empty() {
            r.error(
                format!("{path}.allowOrigin[{i}]"),
                "allow origin cannot be empty",
            );
        }
        allow_origins.push(StringMatch::Exact(origin.clone()));
    }
    for (i, origin) in c.allow_origins.iter().flatten().enumerate() {
        let at = format!("{path}.allowOrigins[{i}]");
        if origin.exact.is_none() && origin.prefix.is_none() && origin.regex.is_none() {
            r.error(
                &at,
                format!("'{origin:?}' is not a valid match type for CORS allow origins"),
            );
        } else if let Some(m) = fields::string_match(origin, &at, false, r) {
            allow_origins.push(m);
        }
    }
    for (i, method) in c.allow_methods.iter().flatten().enumerate() {
        if !HTTP_METHODS.contains(&method.as_str()) {
            r.error(
                format!("{path}.allowMethods[{i}]"),
                format!("{method:?} is not a supported HTTP method"),
            );
        }
    }
    for (field, list) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (i, h) in list.iter().flatten().enumerate() {
            if h != "*" {
                check_header_name(h, &format!("{path}.{field}[{i}]"), r);
            }
        }
    }
    let max_age = c.max_age.as_ref().and_then(|d| {
        let at = format!("{path}.maxAge");
        let parsed = duration(d.as_str(), &at, r)?;
        if parsed.subsec_nanos() != 0 {
            r.error(
                &at,
                "max_age duration is accurate only to seconds precision",
            );
        }
        Some(parsed)
    });
    model::CorsPolicy {
        allow_origins,
        allow_methods: c.allow_methods.clone().unwrap_or_default(),
        allow_headers: c.allow_headers.clone().unwrap_or_default(),
        expose_headers: c.expose_headers.clone().unwrap_or_default(),
        max_age,
        allow_credentials: c.allow_credentials,
        forward_not_matching_preflights: c.unmatched_preflights
            != Some(api::UnmatchedPreflights::IGNORE),
    }
}
