//! ServiceEntry analysis: Istio's IST0134 (addresses required for TCP ports) and IST0177
//! (several entries give one host and port different protocols).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sextant_index::check::Config;
use sextant_model::ServiceEntry;

use super::{Located, Report};

/// The host names ServiceEntries declare, for reference checks.
pub(super) fn hosts(configs: &[Located]) -> impl Iterator<Item = String> + '_ {
    entries(configs).flat_map(|(_, se)| se.hosts.iter().cloned())
}

fn entries(configs: &[Located]) -> impl Iterator<Item = (&Located, &ServiceEntry)> {
    configs.iter().filter_map(|l| match &l.checked.config {
        Some(Config::ServiceEntry(se)) => Some((l, se)),
        _ => None,
    })
}

/// Both analyses, over every valid ServiceEntry of the input.
pub(super) fn analyze(configs: &[Located], report: &mut Report) {
    addresses_required(configs, report);
    conflicting_protocols(configs, report);
}

/// IST0134, as istioctl raises it without a mesh config: each port with no protocol or TCP of
/// an entry without `spec.addresses` and without `status.addresses`. (Sextant allocates
/// addresses to entries that are not NONE, and writes them to `status.addresses` in a cluster;
/// files read from a directory carry no status.)
fn addresses_required(configs: &[Located], report: &mut Report) {
    for (located, se) in entries(configs) {
        let value = &located.doc.value;
        let allocated = value
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        if !se.addresses.is_empty() || allocated {
            continue;
        }
        let ports = value
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, port) in ports.iter().enumerate() {
            let protocol = port.get("protocol").and_then(Value::as_str).unwrap_or("");
            if protocol.is_empty() || protocol.eq_ignore_ascii_case("TCP") {
                report.diagnostics.push(super::warning(
                    located,
                    &se.id,
                    format!("spec.ports[{i}]"),
                    "IST0134",
                    "ServiceEntry addresses are required for this protocol.".to_owned(),
                ));
            }
        }
    }
}

/// IST0177: entries exported to a common scope (`*` reaches every scope) declaring the same
/// host and port with protocols that differ (case aside); each entry is reported once.
fn conflicting_protocols(configs: &[Located], report: &mut Report) {
    // (scope, host, port) -> (protocol, entry index)
    let mut index: BTreeMap<(String, String, u16), Vec<(String, usize)>> = BTreeMap::new();
    let all: Vec<(&Located, &ServiceEntry)> = entries(configs).collect();
    for (n, (located, se)) in all.iter().enumerate() {
        let export: Vec<String> = located
            .doc
            .value
            .pointer("/spec/exportTo")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let scopes: BTreeSet<String> = if export.is_empty() || export.iter().any(|e| e == "*") {
            BTreeSet::from(["*".to_owned()])
        } else {
            export
                .iter()
                .map(|e| {
                    if e == "." {
                        se.id.namespace.clone()
                    } else {
                        e.clone()
                    }
                })
                .collect()
        };
        let ports = located
            .doc
            .value
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for scope in &scopes {
            for host in &se.hosts {
                for port in &ports {
                    let Some(number) = port.get("number").and_then(Value::as_u64) else {
                        continue;
                    };
                    let protocol = port.get("protocol").and_then(Value::as_str).unwrap_or("");
                    index
                        .entry((scope.clone(), host.clone(), number as u16))
                        .or_default()
                        .push((protocol.to_ascii_uppercase(), n));
                }
            }
        }
    }
    let mut reported = BTreeSet::new();
    for ((scope, host, port), entries) in &index {
        let mut entries = entries.clone();
        if scope != "*"
            && let Some(public) = index.get(&("*".to_owned(), host.clone(), *port))
        {
            entries.extend(public.iter().cloned());
        }
        let protocols: BTreeSet<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
        if protocols.len() < 2 {
            continue;
        }
        let names: BTreeSet<String> = entries
            .iter()
            .map(|(_, n)| format!("{}/{}", all[*n].1.id.namespace, all[*n].1.id.name))
            .collect();
        let names = names.into_iter().collect::<Vec<_>>().join(", ");
        let protocols = protocols.into_iter().collect::<Vec<_>>().join(", ");
        for (_, n) in &entries {
            if !reported.insert(*n) {
                continue;
            }
            let (located, se) = all[*n];
            report.diagnostics.push(super::warning(
                located,
                &se.id,
                "metadata.name".to_owned(),
                "IST0177",
                format!(
                    "Multiple ServiceEntries ({names}) define the same host {host:?} and port {port} with conflicting protocols ({protocols})."
                ),
            ));
        }
    }
}
