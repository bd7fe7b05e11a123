//! Sidecars against each other and the Pods they select: Istio's IST0111 (two Sidecars without
//! a selector in one namespace), IST0110 (two Sidecars selecting one Pod) and IST0101 (a
//! selector that picks no Pod of its namespace).

use std::collections::BTreeMap;

use sextant_index::check::Config;
use sextant_model::Sidecar;

use super::{Diagnostic, Located, Report};

/// A Pod of the input.
pub(super) struct PodRef {
    /// `metadata.namespace` (`default` when none).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
}

/// An analysis warning at the Sidecar's selector (the object itself without one).
fn warning(
    located: &Located,
    sidecar: &Sidecar,
    code: &'static str,
    message: String,
) -> Diagnostic {
    let field = if sidecar.selector.is_some() {
        "spec.workloadSelector"
    } else {
        ""
    };
    super::warning(located, &sidecar.id, field.to_owned(), code, message)
}

/// A Go `%v` of a sorted list of names: `[a b]`.
fn names(sidecars: &[(&Located, &Sidecar)]) -> String {
    let mut names: Vec<&str> = sidecars.iter().map(|(_, s)| s.id.name.as_str()).collect();
    names.sort_unstable();
    format!("[{}]", names.join(" "))
}

/// The three Sidecar analyses. Selectors are judged against Pods only when the input holds
/// Pods at all, as for Gateways: configuration alone says nothing about which workloads run.
pub(super) fn references(configs: &[Located], pods: &[PodRef], report: &mut Report) {
    let sidecars: Vec<(&Located, &Sidecar)> = configs
        .iter()
        .filter_map(|l| match &l.checked.config {
            Some(Config::Sidecar(s)) => Some((l, s)),
            _ => None,
        })
        .collect();
    let mut without_selector: BTreeMap<&str, Vec<(&Located, &Sidecar)>> = BTreeMap::new();
    for &(l, s) in sidecars.iter().filter(|(_, s)| s.selector.is_none()) {
        without_selector
            .entry(s.id.namespace.as_str())
            .or_default()
            .push((l, s));
    }
    for (ns, list) in &without_selector {
        if list.len() > 1 {
            let all = names(list);
            for (l, s) in list {
                report.diagnostics.push(warning(
                    l,
                    s,
                    "IST0111",
                    format!(
                        "The Sidecars {all} in namespace {ns:?} have no workload selector, which can lead to undefined behavior."
                    ),
                ));
            }
        }
    }
    let with_selector: Vec<(&Located, &Sidecar)> = sidecars
        .iter()
        .copied()
        .filter(|(_, s)| s.selector.is_some())
        .collect();
    for pod in pods {
        let selecting: Vec<(&Located, &Sidecar)> = with_selector
            .iter()
            .copied()
            .filter(|(_, s)| s.id.namespace == pod.namespace && s.selects(&pod.labels))
            .collect();
        if selecting.len() > 1 {
            let all = names(&selecting);
            for (l, s) in &selecting {
                report.diagnostics.push(warning(
                    l,
                    s,
                    "IST0110",
                    format!(
                        "The Sidecars {all} in namespace {:?} select the same workload pod {:?}, which can lead to undefined behavior.",
                        pod.namespace, pod.name
                    ),
                ));
            }
        }
    }
    if pods.is_empty() {
        return;
    }
    for (l, s) in with_selector {
        let Some(selector) = s.selector.as_ref().filter(|sel| !sel.is_empty()) else {
            continue;
        };
        let found = pods
            .iter()
            .any(|p| p.namespace == s.id.namespace && s.selects(&p.labels));
        if !found {
            let text: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            report.diagnostics.push(warning(
                l,
                s,
                "IST0101",
                format!("Referenced selector not found: {:?}", text.join(",")),
            ));
        }
    }
}
