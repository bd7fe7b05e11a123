//! Load balancing: the simple policies, consistent hashing, warm-up and locality.

use std::collections::BTreeSet;

use sextant_api as api;
use sextant_model::{self as model, HashAlgorithm, HashKey, LbPolicy};

use crate::parse::{
    Report,
    fields::{self, duration, non_negative_duration},
};

pub(super) fn load_balancer(
    lb: &api::LoadBalancerSettings,
    path: &str,
    r: &mut Report,
) -> model::LoadBalancer {
    let policy = if let Some(simple) = lb.simple {
        Some(match simple {
            api::SimpleLb::UNSPECIFIED
            | api::SimpleLb::LEAST_CONN
            | api::SimpleLb::LEAST_REQUEST => LbPolicy::LeastRequest,
            api::SimpleLb::ROUND_ROBIN => LbPolicy::RoundRobin,
            api::SimpleLb::RANDOM => LbPolicy::Random,
            api::SimpleLb::PASSTHROUGH => LbPolicy::Passthrough,
        })
    } else if let Some(ch) = &lb.consistent_hash {
        consistent_hash(ch, &format!("{path}.consistentHash"), r).map(LbPolicy::ConsistentHash)
    } else {
        None
    };
    let mut out = model::LoadBalancer {
        policy,
        ..Default::default()
    };
    if lb.backend_utilization.is_some() {
        r.unsupported(
            format!("{path}.backendUtilization"),
            "loadBalancer.backendUtilization",
        );
        out.unsupported.push("backendUtilization");
    }
    if lb.locality_lb_setting.is_some() && lb.zone_aware_lb_setting.is_some() {
        r.error(
            path,
            "only one of localityLbSetting and zoneAwareLbSetting can be set",
        );
    }
    if lb.zone_aware_lb_setting.is_some() {
        r.unsupported(
            format!("{path}.zoneAwareLbSetting"),
            "loadBalancer.zoneAwareLbSetting",
        );
        out.unsupported.push("zoneAwareLbSetting");
    }
    if let Some(l) = &lb.locality_lb_setting {
        out.locality = Some(locality(l, &format!("{path}.localityLbSetting"), r));
    }
    if let Some(w) = &lb.warmup {
        let at = format!("{path}.warmup");
        if w.minimum_percent
            .is_some_and(|p| !(0.0..=100.0).contains(&p))
        {
            r.error(
                format!("{at}.minimumPercent"),
                "minimumPercent value should be between 0 and 100",
            );
        }
        if w.aggression.is_some_and(|a| a <= 0.0) {
            r.error(
                format!("{at}.aggression"),
                "aggression should be greater than 0",
            );
        }
        if let Some(d) = duration(w.duration.as_str(), &format!("{at}.duration"), r) {
            out.warmup = Some(model::Warmup {
                duration: d,
                minimum_percent: w.minimum_percent,
                aggression: w.aggression,
            });
        }
    } else if let Some(secs) = &lb.warmup_duration_secs
        && let Some(d) = duration(secs.as_str(), &format!("{path}.warmupDurationSecs"), r)
    {
        out.warmup = Some(model::Warmup {
            duration: d,
            minimum_percent: None,
            aggression: None,
        });
    }
    out
}

fn consistent_hash(
    ch: &api::ConsistentHashLb,
    path: &str,
    r: &mut Report,
) -> Option<model::ConsistentHash> {
    let key = if let Some(h) = &ch.http_header_name {
        // Istio checks nothing here; Envoy's own rule keeps the route configuration valid.
        fields::check_envoy_header_name(h, &format!("{path}.httpHeaderName"), r);
        HashKey::Header(h.clone())
    } else if let Some(c) = &ch.http_cookie {
        let at = format!("{path}.httpCookie");
        if c.name.is_empty() {
            r.error(format!("{at}.name"), "name required for HttpCookie");
        }
        let mut names = BTreeSet::new();
        for (i, a) in c.attributes.iter().flatten().enumerate() {
            if a.name.is_empty() {
                r.error(
                    format!("{at}.attributes[{i}].name"),
                    "cookie attribute name cannot be empty",
                );
            } else if !names.insert(a.name.as_str()) {
                r.error(
                    format!("{at}.attributes[{i}].name"),
                    format!("duplicate cookie attribute name: {}", a.name),
                );
            }
            // They go into a Set-Cookie header.
            fields::check_no_line_breaks(&a.name, &format!("{at}.attributes[{i}].name"), r);
            if let Some(v) = &a.value {
                fields::check_no_line_breaks(v, &format!("{at}.attributes[{i}].value"), r);
            }
        }
        fields::check_no_line_breaks(&c.name, &format!("{at}.name"), r);
        if let Some(p) = &c.path {
            fields::check_no_line_breaks(p, &format!("{at}.path"), r);
        }
        HashKey::Cookie {
            name: c.name.clone(),
            path: c.path.clone(),
            ttl: c
                .ttl
                .as_deref()
                .and_then(|t| non_negative_duration(t, &format!("{at}.ttl"), r)),
            attributes: c
                .attributes
                .iter()
                .flatten()
                .map(|a| (a.name.clone(), a.value.clone()))
                .collect(),
        }
    } else if ch.use_source_ip == Some(true) {
        HashKey::SourceIp
    } else if let Some(q) = &ch.http_query_parameter_name {
        // Istio checks nothing here; Envoy wants a name.
        if q.is_empty() {
            r.error(
                format!("{path}.httpQueryParameterName"),
                "query parameter name cannot be empty",
            );
        }
        HashKey::QueryParameter(q.clone())
    } else {
        HashKey::None
    };
    if ch.minimum_ring_size.is_some() && (ch.ring_hash.is_some() || ch.maglev.is_some()) {
        r.error(
            path,
            "only one of MinimumRingSize or Maglev/Ringhash can be specified",
        );
    }
    let algorithm = if let Some(m) = &ch.maglev {
        let at = format!("{path}.maglev.tableSize");
        match m.table_size {
            None | Some(0) => {
                r.error(&at, "tableSize must be set for maglev");
                None
            }
            Some(n) if n >= 5_000_011 => {
                r.error(&at, "tableSize must be less than 5000011 for maglev");
                None
            }
            Some(n) if !is_prime(n) => {
                r.error(&at, "tableSize must be a prime number for maglev");
                None
            }
            Some(n) => Some(HashAlgorithm::Maglev {
                table_size: Some(n),
            }),
        }
    } else {
        let size = ch
            .ring_hash
            .as_ref()
            .and_then(|rh| rh.minimum_ring_size)
            .or(ch.minimum_ring_size)
            .filter(|s| *s > 0)
            .unwrap_or(1024);
        // Envoy's RingHashLbConfig allows at most 8M entries (Istio does not check).
        if size > 8_388_608 {
            r.error(
                path,
                format!("minimum ring size {size} is more than Envoy's limit of 8388608"),
            );
            return None;
        }
        Some(HashAlgorithm::RingHash {
            minimum_ring_size: size,
        })
    };
    Some(model::ConsistentHash {
        key,
        algorithm: algorithm?,
    })
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

fn locality(l: &api::LocalityLbSetting, path: &str, r: &mut Report) -> model::LocalityLb {
    let distribute_in = l.distribute.as_deref().unwrap_or_default();
    let failover_in = l.failover.as_deref().unwrap_or_default();
    if !distribute_in.is_empty() && !failover_in.is_empty() {
        r.error(
            path,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
    }
    let mut distribute = Vec::new();
    for (i, d) in distribute_in.iter().enumerate() {
        let at = format!("{path}.distribute[{i}]");
        let mut total: u64 = 0;
        let mut to = Vec::new();
        for (loc, weight) in d.to.iter().flatten() {
            if !(1..=100).contains(weight) {
                r.error(
                    format!("{at}.to[{loc}]"),
                    "locality weight must be in range [1, 100]",
                );
            }
            total += u64::from(*weight);
            to.push((loc.clone(), *weight));
        }
        if total != 100 {
            r.error(
                format!("{at}.to"),
                format!("total locality weight {total} != 100"),
            );
        }
        distribute.push((d.from.clone().unwrap_or_default(), to));
    }
    let mut failover = Vec::new();
    for (i, f) in failover_in.iter().enumerate() {
        let at = format!("{path}.failover[{i}]");
        let from = f.from.clone().unwrap_or_default();
        let to = f.to.clone().unwrap_or_default();
        if from == to {
            r.error(
                &at,
                "locality lb failover settings must specify different regions",
            );
        }
        if from.contains('/') || to.contains('/') {
            r.error(&at, "locality lb failover only specify region");
        }
        if from.contains('*') || to.contains('*') {
            r.error(
                &at,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
        failover.push((from, to));
    }
    model::LocalityLb {
        distribute,
        failover,
        failover_priority: l.failover_priority.clone().unwrap_or_default(),
        enabled: l.enabled,
    }
}
