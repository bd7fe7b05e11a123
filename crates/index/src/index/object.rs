//! The objects the index reads, from JSON.

use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use sextant_api as api;
use sextant_model::Kind;

use crate::{
    check::{self, ObjectKind},
    parse::Secret,
};

/// A Kubernetes object of a kind the index reads.
#[derive(Clone, Debug)]
pub enum Object {
    /// core/v1 Service.
    Service(Box<Service>),
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// core/v1 Pod.
    Pod(Box<Pod>),
    /// core/v1 Namespace.
    Namespace(Box<Namespace>),
    /// networking.istio.io VirtualService (any served version).
    VirtualService(Box<api::VirtualService>),
    /// networking.istio.io DestinationRule (any served version).
    DestinationRule(Box<api::DestinationRule>),
    /// security.istio.io PeerAuthentication (any served version).
    PeerAuthentication(Box<api::PeerAuthentication>),
    /// networking.istio.io Gateway (any served version).
    Gateway(Box<api::Gateway>),
    /// core/v1 Secret, as far as a credential goes.
    Secret(Box<Secret>),
    /// networking.istio.io ServiceEntry (any served version).
    ServiceEntry(Box<api::ServiceEntry>),
    /// networking.istio.io WorkloadEntry (any served version).
    WorkloadEntry(Box<api::WorkloadEntry>),
    /// networking.istio.io Sidecar (any served version).
    Sidecar(Box<api::Sidecar>),
    /// core/v1 Node.
    Node(Box<Node>),
}

/// A JSON document that is not an object the index reads.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// Not one of the kinds the index reads.
    #[error("{api_version} {kind} is not a kind sextant reads")]
    Unknown {
        /// apiVersion.
        api_version: String,
        /// kind.
        kind: String,
    },
    /// The object does not have the shape of its kind.
    #[error("{0}")]
    Malformed(String),
}

impl Object {
    /// Reads a JSON object; objects without a namespace are placed in `default_namespace`.
    pub fn from_json(mut value: Value, default_namespace: &str) -> Result<Object, ObjectError> {
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let class = check::classify(&api_version, &kind);
        if !matches!(class, ObjectKind::Kubernetes(Kind::Namespace | Kind::Node))
            && let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut)
            && meta
                .get("namespace")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            meta.insert(
                "namespace".into(),
                Value::String(default_namespace.to_owned()),
            );
        }
        // Errors name the object when its metadata does (the namespace is set by now).
        let meta = |k: &str| {
            value
                .pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
        };
        let who = match (meta("namespace"), meta("name")) {
            (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
            (None, Some(name)) => format!("{kind} {name}"),
            _ => kind.clone(),
        };
        let malformed = |e: String| ObjectError::Malformed(format!("{who}: {e}"));
        fn read<T: serde::de::DeserializeOwned>(value: Value) -> Result<Box<T>, String> {
            serde_json::from_value(value)
                .map(Box::new)
                .map_err(|e| e.to_string())
        }
        Ok(match class {
            ObjectKind::Istio(Kind::VirtualService) => {
                Object::VirtualService(read(value).map_err(malformed)?)
            }
            ObjectKind::Istio(Kind::PeerAuthentication) => {
                let value = check::with_empty_spec(Kind::PeerAuthentication, &value).into_owned();
                Object::PeerAuthentication(read(value).map_err(malformed)?)
            }
            ObjectKind::Istio(Kind::Gateway) => Object::Gateway(read(value).map_err(malformed)?),
            ObjectKind::Istio(Kind::ServiceEntry) => {
                Object::ServiceEntry(read(value).map_err(malformed)?)
            }
            ObjectKind::Istio(Kind::WorkloadEntry) => {
                Object::WorkloadEntry(read(value).map_err(malformed)?)
            }
            ObjectKind::Istio(Kind::Sidecar) => Object::Sidecar(read(value).map_err(malformed)?),
            ObjectKind::Istio(_) => Object::DestinationRule(read(value).map_err(malformed)?),
            ObjectKind::Kubernetes(Kind::Service) => {
                Object::Service(read(value).map_err(malformed)?)
            }
            ObjectKind::Kubernetes(Kind::EndpointSlice) => {
                Object::EndpointSlice(read(value).map_err(malformed)?)
            }
            ObjectKind::Kubernetes(Kind::Pod) => Object::Pod(read(value).map_err(malformed)?),
            ObjectKind::Kubernetes(Kind::Namespace) => {
                Object::Namespace(read(value).map_err(malformed)?)
            }
            ObjectKind::Kubernetes(Kind::Node) => Object::Node(read(value).map_err(malformed)?),
            // Not through serde's errors, which may quote the values they could not read.
            ObjectKind::Kubernetes(Kind::Secret) => {
                Object::Secret(Box::new(Secret::from_json(&value).map_err(malformed)?))
            }
            _ => return Err(ObjectError::Unknown { api_version, kind }),
        })
    }

    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Pod(_) => Kind::Pod,
            Object::Namespace(_) => Kind::Namespace,
            Object::VirtualService(_) => Kind::VirtualService,
            Object::DestinationRule(_) => Kind::DestinationRule,
            Object::PeerAuthentication(_) => Kind::PeerAuthentication,
            Object::Gateway(_) => Kind::Gateway,
            Object::Secret(_) => Kind::Secret,
            Object::ServiceEntry(_) => Kind::ServiceEntry,
            Object::WorkloadEntry(_) => Kind::WorkloadEntry,
            Object::Sidecar(_) => Kind::Sidecar,
            Object::Node(_) => Kind::Node,
        }
    }

    /// The object's metadata (name, namespace, labels, ...).
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::VirtualService(o) => &o.metadata,
            Object::DestinationRule(o) => &o.metadata,
            Object::PeerAuthentication(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::ServiceEntry(o) => &o.metadata,
            Object::WorkloadEntry(o) => &o.metadata,
            Object::Sidecar(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
        }
    }
}
