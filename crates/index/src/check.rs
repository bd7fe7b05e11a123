//! Whole-object checks: the CRD schema (as the API server applies it) followed by Istio's
//! semantic validation. Shared by `sextant validate`, the admission webhook and the file source,
//! so an object is judged the same way on every path.

use std::sync::OnceLock;

use serde_json::Value;
use sextant_api as api;
use sextant_model::{Kind, ObjectRef};
use sextant_schema::Schema;

use crate::parse::{self, FieldError};

/// A configuration object that passed every check, as its model value.
#[derive(Clone, Debug)]
pub enum Config {
    /// A VirtualService.
    VirtualService(sextant_model::VirtualService),
    /// A DestinationRule.
    DestinationRule(sextant_model::DestinationRule),
    /// A PeerAuthentication.
    PeerAuthentication(sextant_model::PeerAuthentication),
    /// A Gateway.
    Gateway(sextant_model::Gateway),
    /// A ServiceEntry.
    ServiceEntry(sextant_model::ServiceEntry),
    /// A WorkloadEntry.
    WorkloadEntry(sextant_model::WorkloadEntry),
    /// A Sidecar.
    Sidecar(sextant_model::Sidecar),
}

/// The outcome of checking one Istio configuration object.
#[derive(Clone, Debug)]
pub struct Checked {
    /// Which object (namespace defaults to `default`).
    pub object: ObjectRef,
    /// Schema and semantic errors; empty when the object is valid.
    pub errors: Vec<FieldError>,
    /// Warnings (deprecated or unsupported fields, unreachable rules).
    pub warnings: Vec<FieldError>,
    /// The model value when there are no errors.
    pub config: Option<Config>,
}

/// What an object's `apiVersion`/`kind` make it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// A kind Sextant validates (VirtualService, DestinationRule, Gateway, PeerAuthentication)
    /// at a served version.
    Istio(Kind),
    /// A Kubernetes kind Sextant reads (Service, EndpointSlice, Pod, Namespace, Secret).
    Kubernetes(Kind),
    /// One of those kinds at a version that is not served.
    UnservedVersion(Kind),
    /// Anything else.
    Other,
}

/// Classifies an object by `apiVersion` and `kind`.
pub fn classify(api_version: &str, kind: &str) -> ObjectKind {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    match (group, kind) {
        (
            "networking.istio.io",
            "VirtualService" | "DestinationRule" | "Gateway" | "ServiceEntry" | "WorkloadEntry"
            | "Sidecar",
        ) => {
            let k = match kind {
                "VirtualService" => Kind::VirtualService,
                "Gateway" => Kind::Gateway,
                "ServiceEntry" => Kind::ServiceEntry,
                "WorkloadEntry" => Kind::WorkloadEntry,
                "Sidecar" => Kind::Sidecar,
                _ => Kind::DestinationRule,
            };
            if api::crd::VERSIONS.contains(&version) {
                ObjectKind::Istio(k)
            } else {
                ObjectKind::UnservedVersion(k)
            }
        }
        ("security.istio.io", "PeerAuthentication") => {
            if api::crd::SECURITY_VERSIONS.contains(&version) {
                ObjectKind::Istio(Kind::PeerAuthentication)
            } else {
                ObjectKind::UnservedVersion(Kind::PeerAuthentication)
            }
        }
        ("", "Service") if version == "v1" => ObjectKind::Kubernetes(Kind::Service),
        ("", "Pod") if version == "v1" => ObjectKind::Kubernetes(Kind::Pod),
        ("", "Namespace") if version == "v1" => ObjectKind::Kubernetes(Kind::Namespace),
        ("", "Node") if version == "v1" => ObjectKind::Kubernetes(Kind::Node),
        ("", "Secret") if version == "v1" => ObjectKind::Kubernetes(Kind::Secret),
        ("discovery.k8s.io", "EndpointSlice") if version == "v1" => {
            ObjectKind::Kubernetes(Kind::EndpointSlice)
        }
        _ => ObjectKind::Other,
    }
}

fn schema(kind: Kind) -> &'static Schema {
    static VS: OnceLock<Schema> = OnceLock::new();
    static DR: OnceLock<Schema> = OnceLock::new();
    static PA: OnceLock<Schema> = OnceLock::new();
    static GW: OnceLock<Schema> = OnceLock::new();
    static SE: OnceLock<Schema> = OnceLock::new();
    static WE: OnceLock<Schema> = OnceLock::new();
    static SC: OnceLock<Schema> = OnceLock::new();
    let (cell, crd): (_, fn() -> _) = match kind {
        Kind::ServiceEntry => (&SE, api::crd::service_entry),
        Kind::WorkloadEntry => (&WE, api::crd::workload_entry),
        Kind::Sidecar => (&SC, api::crd::sidecar),
        Kind::DestinationRule => (&DR, api::crd::destination_rule),
        Kind::Gateway => (&GW, api::crd::gateway),
        Kind::PeerAuthentication => (&PA, api::crd::peer_authentication),
        _ => (&VS, api::crd::virtual_service),
    };
    cell.get_or_init(|| {
        let crd = crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("generated CRDs carry a schema");
        let value = serde_json::to_value(schema).expect("schemas serialize");
        Schema::new(value).expect("generated CRD schemas compile")
    })
}

/// Checks a VirtualService, DestinationRule, Gateway or PeerAuthentication given as JSON:
/// schema first, then semantics.
/// Semantic errors on a field that already has a schema error are not repeated.
pub fn check_istio_object(kind: Kind, object: &Value) -> Checked {
    let object: &Value = &with_empty_spec(kind, object);
    let meta = object.get("metadata").cloned().unwrap_or(Value::Null);
    let meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
        serde_json::from_value(meta).unwrap_or_default();
    let id = parse::object_ref(kind, &meta);
    let mut errors: Vec<FieldError> = schema(kind)
        .validate(object)
        .into_iter()
        .map(|e| FieldError {
            path: e.path,
            message: e.message,
        })
        .collect();
    let mut warnings = Vec::new();
    let mut config = None;
    let semantic = match kind {
        Kind::VirtualService => serde_json::from_value::<api::VirtualService>(object.clone())
            .map_err(|e| e.to_string())
            .map(|vs| {
                parse::virtual_service(&vs).map(|p| (Config::VirtualService(p.value), p.warnings))
            }),
        Kind::PeerAuthentication => {
            serde_json::from_value::<api::PeerAuthentication>(object.clone())
                .map_err(|e| e.to_string())
                .map(|pa| {
                    parse::peer_authentication(&pa)
                        .map(|p| (Config::PeerAuthentication(p.value), p.warnings))
                })
        }
        Kind::Gateway => serde_json::from_value::<api::Gateway>(object.clone())
            .map_err(|e| e.to_string())
            .map(|gw| parse::gateway(&gw).map(|p| (Config::Gateway(p.value), p.warnings))),
        Kind::ServiceEntry => serde_json::from_value::<api::ServiceEntry>(object.clone())
            .map_err(|e| e.to_string())
            .map(|se| {
                parse::service_entry(&se).map(|p| (Config::ServiceEntry(p.value), p.warnings))
            }),
        Kind::WorkloadEntry => serde_json::from_value::<api::WorkloadEntry>(object.clone())
            .map_err(|e| e.to_string())
            .map(|we| {
                parse::workload_entry(&we).map(|p| (Config::WorkloadEntry(p.value), p.warnings))
            }),
        Kind::Sidecar => serde_json::from_value::<api::Sidecar>(object.clone())
            .map_err(|e| e.to_string())
            .map(|sc| parse::sidecar(&sc).map(|p| (Config::Sidecar(p.value), p.warnings))),
        _ => serde_json::from_value::<api::DestinationRule>(object.clone())
            .map_err(|e| e.to_string())
            .map(|dr| {
                parse::destination_rule(&dr).map(|p| (Config::DestinationRule(p.value), p.warnings))
            }),
    };
    match semantic {
        Ok(Ok((value, w))) => {
            warnings = w;
            if errors.is_empty() {
                config = Some(value);
            }
        }
        Ok(Err(invalid)) => {
            warnings = invalid.warnings;
            // A CEL rule that could not even be evaluated (`int()` of a key that is no
            // number) says nothing the semantic check does not say better about the field.
            errors.retain(|s| {
                !(sextant_schema::is_evaluation_error(&s.message)
                    && invalid.errors.iter().any(|e| e.path.starts_with(&s.path)))
            });
            for e in invalid.errors {
                if !errors.iter().any(|s| s.path == e.path) {
                    errors.push(e);
                }
            }
        }
        Err(message) => {
            if errors.is_empty() {
                errors.push(FieldError {
                    path: String::new(),
                    message: format!("cannot be read: {message}"),
                });
            }
        }
    }
    Checked {
        object: id,
        errors,
        warnings,
        config,
    }
}

/// A PeerAuthentication may have no `spec` (Istio's CRD does not require one): it is read as
/// an empty one, a namespace-wide policy that sets nothing.
pub fn with_empty_spec(kind: Kind, object: &Value) -> std::borrow::Cow<'_, Value> {
    if kind == Kind::PeerAuthentication && object.get("spec").is_none_or(Value::is_null) {
        let mut owned = object.clone();
        if let Some(map) = owned.as_object_mut() {
            map.insert("spec".to_owned(), Value::Object(serde_json::Map::new()));
        }
        std::borrow::Cow::Owned(owned)
    } else {
        std::borrow::Cow::Borrowed(object)
    }
}
