//! Gateways and what they refer to: the Secrets holding their credentials, the Pods their
//! selectors pick, and the Gateways VirtualServices bind to (Istio's IST0101 and IST0132).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sextant_index::{check::Config, manifest::Document, parse};
use sextant_model::{Kind, VirtualService};

use super::{Located, Report, Severity, diag, rebase};

/// Reads a Secret as the index would: a value that is not base64 is an error naming the key.
/// Secrets that hold no credential are fine.
pub(super) fn check_secret(
    file: &str,
    doc: &Document,
    item: Option<usize>,
    value: &Value,
    line: usize,
    report: &mut Report,
) {
    let errors = match parse::Secret::from_json(value) {
        Err(e) => {
            report.diagnostics.push(diag(
                file,
                line,
                Severity::Error,
                None,
                "",
                format!("Secret: {e}"),
            ));
            return;
        }
        Ok(secret) => match parse::secret(&secret) {
            Ok(_) => return,
            Err(invalid) => invalid,
        },
    };
    let doc = match item {
        Some(i) => rebase(doc, i, value.clone()),
        None => doc.clone(),
    };
    for e in errors.errors {
        report.diagnostics.push(diag(
            file,
            doc.line_of(&e.path),
            Severity::Error,
            Some(errors.object.to_string()),
            &e.path,
            e.message,
        ));
    }
}

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

/// IST0101 for Gateways a VirtualService names that the input lacks, IST0132 for its hosts
/// that no server of a named Gateway offers, and IST0101 for Gateway selectors that pick none
/// of `pods`.
///
/// Gateways are always looked for: a VirtualService bound to a Gateway the input lacks binds
/// to nothing. A selector is judged only when the input holds Pods at all: a manifest of
/// configuration alone says nothing about which workloads run, so every selector would be
/// reported.
pub(super) fn references(
    configs: &[Located],
    pods: &[BTreeMap<String, String>],
    report: &mut Report,
) {
    // Every Gateway of the input counts as present, valid or not: an invalid one is reported
    // for its own errors.
    let present: BTreeSet<String> = configs
        .iter()
        .filter(|l| l.checked.object.kind == Kind::Gateway)
        .map(|l| format!("{}/{}", l.checked.object.namespace, l.checked.object.name))
        .collect();
    let gateways: BTreeMap<String, &sextant_model::Gateway> = configs
        .iter()
        .filter_map(|l| match &l.checked.config {
            Some(Config::Gateway(g)) => Some((g.key(), g)),
            _ => None,
        })
        .collect();
    for located in configs {
        match &located.checked.config {
            Some(Config::VirtualService(vs)) => {
                let mut named = BTreeSet::new();
                for (field, name) in gateway_fields(vs) {
                    if name == "mesh" {
                        continue;
                    }
                    if !present.contains(name) {
                        report.diagnostics.push(super::warning(
                            located,
                            &vs.id,
                            field,
                            "IST0101",
                            format!("Referenced gateway not found: {name:?}"),
                        ));
                    } else if field.starts_with("spec.gateways")
                        && named.insert(name)
                        && let Some(gw) = gateways.get(name)
                    {
                        hosts_in_gateway(located, vs, gw, report);
                    }
                }
            }
            Some(Config::Gateway(gw))
                if !pods.is_empty()
                    && !gw.selector.is_empty()
                    && !pods.iter().any(|labels| gw.selects(labels)) =>
            {
                let selector: Vec<String> = gw
                    .selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                report.diagnostics.push(super::warning(
                    located,
                    &gw.id,
                    "spec.selector".into(),
                    "IST0101",
                    format!("Referenced selector not found: {:?}", selector.join(",")),
                ));
            }
            _ => {}
        }
    }
}

/// IST0132: the VirtualService's hosts that no server host of `gw` visible to its namespace
/// matches (either way round, wildcards included).
fn hosts_in_gateway(
    located: &Located,
    vs: &VirtualService,
    gw: &sextant_model::Gateway,
    report: &mut Report,
) {
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
        report.diagnostics.push(super::warning(
            located,
            &vs.id,
            "spec.hosts".into(),
            "IST0132",
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
