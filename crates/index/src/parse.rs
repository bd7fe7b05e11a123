//! One parser per kind, shared by the index, the admission webhook and `sextant validate`.
//!
//! Each parser implements Istio's semantic validation (`pkg/config/validation`) and turns the API
//! type into the validated model type. Every error names the field path and says what is wrong;
//! all errors of an object are collected, not just the first.

mod access_log;
mod destination_rule;
mod fields;
mod gateway;
pub mod kube;
mod mesh_config;
mod peer_authentication;
pub mod re2;
mod secret;
mod service_entry;
mod sidecar;
mod virtual_service;

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sextant_model::{Kind, ObjectRef};

pub use destination_rule::destination_rule;
pub use fields::with_deadline;
pub use gateway::gateway;
pub use mesh_config::{InvalidMeshConfig, MeshConfigRead, mesh_config};
pub use peer_authentication::peer_authentication;
pub use secret::{CREDENTIAL_KEYS, Secret, secret};
pub use service_entry::{AUTO_ALLOCATE_LABEL, service_entry, workload_entry};
pub use sidecar::sidecar;
pub use virtual_service::{gateway_ref, virtual_service};

/// Something wrong (or worth a warning) at one field of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Field path, `spec.http[2].route[0].weight`.
    pub path: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A successfully parsed object, with any warnings (deprecated or unsupported fields).
#[derive(Clone, Debug)]
pub struct Parsed<T> {
    /// The validated model value.
    pub value: T,
    /// Warnings; the object is still used.
    pub warnings: Vec<FieldError>,
}

/// An object that failed validation.
#[derive(Clone, Debug, thiserror::Error)]
pub struct Invalid {
    /// The object.
    pub object: ObjectRef,
    /// Every error found.
    pub errors: Vec<FieldError>,
    /// Warnings found along the way.
    pub warnings: Vec<FieldError>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is invalid: ", self.object)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects errors and warnings while walking an object.
#[derive(Default)]
pub(crate) struct Report {
    errors: Vec<FieldError>,
    warnings: Vec<FieldError>,
}

impl Report {
    pub(crate) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(crate) fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Reports a field Sextant accepts but does not implement.
    pub(crate) fn unsupported(&mut self, path: impl Into<String>, what: &str) {
        self.warn(
            path,
            format!("{what} is not supported by Sextant and is ignored"),
        );
    }

    fn finish<T>(self, object: ObjectRef, value: T) -> Result<Parsed<T>, Invalid> {
        if self.errors.is_empty() {
            Ok(Parsed {
                value,
                warnings: self.warnings,
            })
        } else {
            Err(Invalid {
                object,
                errors: self.errors,
                warnings: self.warnings,
            })
        }
    }
}

/// The object reference of a namespaced object; objects without a namespace land in `default`,
/// as `kubectl apply` would place them.
pub fn object_ref(kind: Kind, meta: &ObjectMeta) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: meta
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned()),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// An object's creation time (RFC 3339), which orders objects of equal precedence.
fn creation_timestamp(meta: &ObjectMeta) -> Option<String> {
    meta.creation_timestamp.as_ref().map(|t| t.0.to_string())
}

fn check_metadata(meta: &ObjectMeta, report: &mut Report) {
    match meta.name.as_deref() {
        None | Some("") => report.error("metadata.name", "name is required"),
        Some(name) if !fields::is_dns1123_subdomain(name) => report.error(
            "metadata.name",
            format!(
                "{name:?} is not a valid name: it must be a lowercase RFC 1123 subdomain (letters, digits, '-' and '.')"
            ),
        ),
        _ => {}
    }
    if let Some(ns) = meta.namespace.as_deref()
        && !ns.is_empty()
        && !fields::is_dns1123_label(ns)
    {
        report.error(
            "metadata.namespace",
            format!("{ns:?} is not a valid namespace name"),
        );
    }
    if let Some(annotations) = &meta.annotations
        && annotations.contains_key("istio.io/dry-run")
    {
        report.error(
            "metadata.annotations[istio.io/dry-run]",
            "the istio.io/dry-run annotation is only supported on AuthorizationPolicy",
        );
    }
}
