//! PeerAuthentication: Istio's `ValidatePeerAuthentication` and the model it yields.

use std::collections::BTreeMap;

use sextant_api as api;
use sextant_model::{self as model, Kind};

use super::{Invalid, Parsed, Report, fields, object_ref};

/// Validates a PeerAuthentication and builds its model.
pub fn peer_authentication(
    obj: &api::PeerAuthentication,
) -> Result<Parsed<model::PeerAuthentication>, Invalid> {
    let id = object_ref(Kind::PeerAuthentication, &obj.metadata);
    let mut r = Report::default();
    super::check_metadata(&obj.metadata, &mut r);
    let spec = &obj.spec;
    let selector = spec.selector.as_ref().and_then(|s| {
        let labels = s.match_labels.clone().unwrap_or_default();
        fields::check_labels(&labels, "spec.selector.matchLabels", &mut r);
        if labels.is_empty() {
            r.warn(
                "spec.selector",
                "workload selector specified without labels, selecting all workloads",
            );
            None
        } else {
            Some(labels)
        }
    });
    let mut port_modes = BTreeMap::new();
    if let Some(ports) = &spec.port_level_mtls {
        if selector.is_none() {
            r.error(
                "spec.portLevelMtls",
                "mesh/namespace peer authentication cannot have port level mTLS",
            );
        }
        if ports.is_empty() {
            r.error(
                "spec.portLevelMtls",
                "port level mTLS, if defined, must have at least one element",
            );
        }
        for (key, tls) in ports {
            // Only the plain decimal form: `+80` or `080` would name a port twice, and which
            // of two spellings won would depend on their order.
            let canonical =
                !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) && !key.starts_with('0');
            match key.parse::<u16>() {
                Ok(port) if canonical && port > 0 => {
                    port_modes.insert(port, mode(tls.mode));
                }
                _ => r.error(
                    format!("spec.portLevelMtls[{key}]"),
                    format!("port {key:?} must be in range 1..65535, written in decimal without a sign or leading zeros"),
                ),
            }
        }
    }
    let value = model::PeerAuthentication {
        id: id.clone(),
        creation_timestamp: super::creation_timestamp(&obj.metadata),
        selector,
        mode: spec.mtls.as_ref().map(|m| mode(m.mode)).unwrap_or_default(),
        port_modes,
    };
    r.finish(id, value)
}

fn mode(mode: Option<api::MtlsMode>) -> model::MtlsMode {
    match mode {
        None | Some(api::MtlsMode::UNSET) => model::MtlsMode::Unset,
        Some(api::MtlsMode::DISABLE) => model::MtlsMode::Disable,
        Some(api::MtlsMode::PERMISSIVE) => model::MtlsMode::Permissive,
        Some(api::MtlsMode::STRICT) => model::MtlsMode::Strict,
    }
}
