//! Sidecars against each other and the Pods they select: IST0111 (two Sidecars without a
//! selector in one namespace), IST0110 (two Sidecars selecting one Pod) and IST0101 (a
//! selector that picks no Pod of its namespace).

use std::collections::{BTreeMap, HashMap};

use sextant_model::Sidecar;

use super::{
    CONFLICTING_SIDECAR_WORKLOAD_SELECTORS, Code, Input,
    MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS, Message, Pod, REFERENCED_RESOURCE_NOT_FOUND,
    message,
};

/// A message at the Sidecar's selector (the object itself without one).
fn at_selector(at: usize, sidecar: &Sidecar, code: Code, text: String) -> Message {
    let field = if sidecar.selector.is_some() {
        "spec.workloadSelector"
    } else {
        ""
    };
    message(&sidecar.id, at, field.to_owned(), code, text)
}

/// A Go `%v` of a sorted list of names: `[a b]`.
fn names(sidecars: &[(usize, &Sidecar)]) -> String {
    let mut names: Vec<&str> = sidecars.iter().map(|(_, s)| s.id.name.as_str()).collect();
    names.sort_unstable();
    format!("[{}]", names.join(" "))
}

/// The three Sidecar analyses. Selectors are judged against Pods only when the Pods are known
/// and there are some, as for Gateways: configuration alone says nothing about which
/// workloads run.
pub(super) fn references(input: &Input<'_>, out: &mut Vec<Message>) {
    let mut without_selector: BTreeMap<&str, Vec<(usize, &Sidecar)>> = BTreeMap::new();
    // Sidecars with a selector, by namespace: a Pod is only compared with its namespace's.
    let mut with_selector: HashMap<&str, Vec<(usize, &Sidecar)>> = HashMap::new();
    for (at, s) in input.sidecars.iter().enumerate() {
        let by_ns = if s.selector.is_none() {
            without_selector.entry(s.id.namespace.as_str()).or_default()
        } else {
            with_selector.entry(s.id.namespace.as_str()).or_default()
        };
        by_ns.push((at, *s));
    }
    for (ns, list) in &without_selector {
        if list.len() > 1 {
            let all = names(list);
            for (at, s) in list {
                out.push(at_selector(
                    *at,
                    s,
                    MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS,
                    format!(
                        "The Sidecars {all} in namespace {ns:?} have no workload selector, which can lead to undefined behavior."
                    ),
                ));
            }
        }
    }
    let pods: &[Pod<'_>] = input.pods.as_deref().unwrap_or_default();
    if with_selector.is_empty() {
        return;
    }
    let mut selected = vec![false; input.sidecars.len()];
    for pod in pods {
        let Some(candidates) = with_selector.get(pod.namespace) else {
            continue;
        };
        let selecting: Vec<(usize, &Sidecar)> = candidates
            .iter()
            .copied()
            .filter(|(_, s)| s.selects(pod.labels))
            .collect();
        for (at, _) in &selecting {
            selected[*at] = true;
        }
        if selecting.len() > 1 {
            let all = names(&selecting);
            for (at, s) in &selecting {
                out.push(at_selector(
                    *at,
                    s,
                    CONFLICTING_SIDECAR_WORKLOAD_SELECTORS,
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
    for (at, s) in input.sidecars.iter().enumerate() {
        let Some(selector) = s.selector.as_ref().filter(|sel| !sel.is_empty()) else {
            continue;
        };
        if !selected[at] {
            let text: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push(at_selector(
                at,
                s,
                REFERENCED_RESOURCE_NOT_FOUND,
                format!("Referenced selector not found: {:?}", text.join(",")),
            ));
        }
    }
}
