//! Delegate VirtualServices: a root's `delegate` rule is replaced by the delegate's rules, each
//! narrowed by the root rule's matches and inheriting the root's settings it leaves unset
//! (Istio's `mergeVirtualServicesIfNeeded`). One level only; a delegate must be exported to the
//! root's namespace; rules whose matches conflict with the root's are dropped.

use std::sync::Arc;

use sextant_model::{HttpAction, HttpMatch, HttpRoute, StringMatch, VirtualService};

/// Returns the VirtualServices with every delegate reference resolved. Delegates themselves stay
/// in the list (they apply to nothing on their own).
pub fn merge(all: &[Arc<VirtualService>]) -> Vec<Arc<VirtualService>> {
    all.iter()
        .map(|vs| {
            let uses_delegate = vs
                .http
                .iter()
                .any(|r| matches!(r.action, HttpAction::Delegate { .. }));
            if vs.is_delegate() || !uses_delegate {
                return vs.clone();
            }
            let mut merged = VirtualService::clone(vs);
            merged.http = vs
                .http
                .iter()
                .flat_map(|root| match &root.action {
                    HttpAction::Delegate { name, namespace } => {
                        let delegate = all.iter().find(|d| {
                            d.is_delegate()
                                && d.id.name == *name
                                && d.id.namespace == *namespace
                                && (d.id.namespace == vs.id.namespace
                                    || d.export_to.allows(&vs.id.namespace))
                        });
                        match delegate {
                            Some(d) => d.http.iter().filter_map(|r| merge_route(root, r)).collect(),
                            None => Vec::new(),
                        }
                    }
                    _ => vec![root.clone()],
                })
                .collect();
            Arc::new(merged)
        })
        .collect()
}

fn merge_route(root: &HttpRoute, delegate: &HttpRoute) -> Option<HttpRoute> {
    let matches = if root.matches.is_empty() {
        delegate.matches.clone()
    } else if delegate.matches.is_empty() {
        root.matches.clone()
    } else {
        let merged: Vec<HttpMatch> = root
            .matches
            .iter()
            .flat_map(|r| {
                delegate
                    .matches
                    .iter()
                    .filter_map(move |d| merge_match(r, d))
            })
            .collect();
        if merged.is_empty() {
            return None;
        }
        merged
    };
    let name = match (&root.name, &delegate.name) {
        (Some(r), Some(d)) => Some(format!("{r}-{d}")),
        (r, d) => d.clone().or_else(|| r.clone()),
    };
    Some(HttpRoute {
        name,
        matches,
        action: delegate.action.clone(),
        rewrite: delegate.rewrite.clone().or_else(|| root.rewrite.clone()),
        timeout: delegate.timeout.or(root.timeout),
        retries: delegate.retries.clone().or_else(|| root.retries.clone()),
        fault: delegate.fault.clone().or_else(|| root.fault.clone()),
        mirrors: if delegate.mirrors.is_empty() {
            root.mirrors.clone()
        } else {
            delegate.mirrors.clone()
        },
        cors: delegate.cors.clone().or_else(|| root.cors.clone()),
        headers: if delegate.headers == Default::default() {
            root.headers.clone()
        } else {
            delegate.headers.clone()
        },
    })
}

/// The conjunction of a root match and a delegate match, or `None` when they cannot both hold
/// (the delegate's URI must lie within the root's).
fn merge_match(root: &HttpMatch, delegate: &HttpMatch) -> Option<HttpMatch> {
    let mut out = delegate.clone();
    out.uri = match (&root.uri, &delegate.uri) {
        (None, d) => d.clone(),
        (r, None) => r.clone(),
        (Some(r), Some(d)) => Some(narrower_uri(r, d)?),
    };
    for (field, r, d) in [
        ("scheme", &root.scheme, &mut out.scheme),
        ("method", &root.method, &mut out.method),
        ("authority", &root.authority, &mut out.authority),
    ] {
        let _ = field;
        match (r, d.as_ref()) {
            (Some(r), None) => *d = Some(r.clone()),
            (Some(r), Some(dv)) if r != dv => return None,
            _ => {}
        }
    }
    for (r, d) in [
        (&root.headers, &mut out.headers),
        (&root.without_headers, &mut out.without_headers),
        (&root.query_params, &mut out.query_params),
    ] {
        for (k, v) in r {
            match d.get(k) {
                Some(existing) if existing != v => return None,
                _ => {
                    d.insert(k.clone(), v.clone());
                }
            }
        }
    }
    for (k, v) in &root.source_labels {
        match out.source_labels.get(k) {
            Some(existing) if existing != v => return None,
            _ => {
                out.source_labels.insert(k.clone(), v.clone());
            }
        }
    }
    out.port = match (root.port, delegate.port) {
        (Some(r), Some(d)) if r != d => return None,
        (r, d) => d.or(r),
    };
    out.source_namespace = match (&root.source_namespace, &delegate.source_namespace) {
        (Some(r), Some(d)) if r != d => return None,
        (r, d) => d.clone().or_else(|| r.clone()),
    };
    if out.gateways.is_empty() {
        out.gateways = root.gateways.clone();
    }
    out.ignore_uri_case |= root.ignore_uri_case;
    Some(out)
}

fn narrower_uri(root: &StringMatch, delegate: &StringMatch) -> Option<StringMatch> {
    match (root, delegate) {
        (StringMatch::Prefix(r), StringMatch::Prefix(d) | StringMatch::Exact(d))
            if d.starts_with(r.as_str()) =>
        {
            Some(delegate.clone())
        }
        (StringMatch::Exact(r), StringMatch::Exact(d)) if r == d => Some(delegate.clone()),
        (r, d) if r == d => Some(d.clone()),
        _ => None,
    }
}
