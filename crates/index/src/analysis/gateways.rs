//! The Gateways VirtualServices bind to (IST0101, IST0132) and the Pods Gateway selectors pick
//! (IST0101).

use std::collections::{BTreeSet, HashMap};

use sextant_model::{Gateway, VirtualService};

use super::{
    Input, Message, REFERENCED_RESOURCE_NOT_FOUND, VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
    message,
};

/// `name` matches `pattern` as Istio's host names do: `*` matches everything, `*.suffix`
/// every name ending in `.suffix` (wildcard patterns included).
fn matches(name: &str, pattern: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => name.ends_with(suffix),
        None => name == pattern,
    }
}

/// Every gateway a VirtualService names, with the field naming it.
fn gateway_fields(vs: &VirtualService) -> Vec<(String, &str)> {
    let mut out: Vec<(String, &str)> = vs
        .gateways
        .iter()
        .enumerate()
        .map(|(i, g)| (format!("spec.gateways[{i}]"), g.as_str()))
        .collect();
    for (i, rule) in vs.http.iter().enumerate() {
        for (j, m) in rule.matches.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                out.push((format!("spec.http[{i}].match[{j}].gateways[{k}]"), g));
            }
        }
    }
    for (kind, rules) in [
        ("tls", vs.tls.iter().map(|t| &t.matches).collect::<Vec<_>>()),
        ("tcp", vs.tcp.iter().map(|t| &t.matches).collect()),
    ] {
        for (i, matches) in rules.into_iter().enumerate() {
            for (j, m) in matches.iter().enumerate() {
                for (k, g) in m.gateways.iter().enumerate() {
                    out.push((format!("spec.{kind}[{i}].match[{j}].gateways[{k}]"), g));
                }
            }
        }
    }
    out
}

/// IST0101 for Gateways a VirtualService names that are not there, IST0132 for its hosts
/// that no server of a named Gateway offers, and IST0101 for Gateway selectors that pick no
/// Pod (judged only when the Pods are known).
///
/// Gateways are always looked for: a VirtualService bound to a Gateway that is not there
/// binds to nothing.
pub(super) fn references(input: &Input<'_>, out: &mut Vec<Message>) {
    let gateways: HashMap<String, &Gateway> =
        input.gateways.iter().map(|g| (g.key(), *g)).collect();
    for (at, vs) in input.virtual_services.iter().enumerate() {
        let mut named = BTreeSet::new();
        for (field, name) in gateway_fields(vs) {
            if name == "mesh" {
                continue;
            }
            if !input.gateway_names.contains(name) {
                out.push(message(
                    &vs.id,
                    at,
                    field,
                    REFERENCED_RESOURCE_NOT_FOUND,
                    format!("Referenced gateway not found: {name:?}"),
                ));
            } else if field.starts_with("spec.gateways")
                && named.insert(name)
                && let Some(gw) = gateways.get(name)
            {
                hosts_in_gateway(at, vs, gw, out);
            }
        }
    }
    let Some(pods) = input.pods.as_ref().filter(|p| !p.is_empty()) else {
        return;
    };
    for (at, gw) in input.gateways.iter().enumerate() {
        if gw.selector.is_empty() || pods.iter().any(|p| gw.selects(p.labels)) {
            continue;
        }
        let selector: Vec<String> = gw
            .selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push(message(
            &gw.id,
            at,
            "spec.selector".into(),
            REFERENCED_RESOURCE_NOT_FOUND,
            format!("Referenced selector not found: {:?}", selector.join(",")),
        ));
    }
}

/// IST0132: the VirtualService's hosts that no server host of `gw` visible to its namespace
/// matches (either way round, wildcards included).
fn hosts_in_gateway(at: usize, vs: &VirtualService, gw: &Gateway, out: &mut Vec<Message>) {
    let ns = &vs.id.namespace;
    let offered: Vec<&str> = gw
        .servers
        .iter()
        .flat_map(|s| &s.hosts)
        .filter(|h| h.namespace.as_ref().is_none_or(|n| n == ns))
        .map(|h| h.host.as_str())
        .collect();
    let missing: Vec<&str> = vs
        .hosts
        .iter()
        .map(String::as_str)
        .filter(|h| {
            let h = h.to_ascii_lowercase();
            !offered.iter().any(|o| matches(&h, o) || matches(o, &h))
        })
        .collect();
    if !missing.is_empty() {
        out.push(message(
            &vs.id,
            at,
            "spec.hosts".into(),
            VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
            format!(
                "one or more host [{}] defined in VirtualService {}/{} not found in Gateway {}.",
                missing.join(" "),
                vs.id.namespace,
                vs.id.name,
                gw.key()
            ),
        ));
    }
}
