//! CustomResourceDefinitions generated from the types in this crate.
//!
//! The schema is derived with schemars and then rewritten into the Kubernetes structural form
//! Istio's CRDs use: plain optional fields are not `nullable` (only protobuf wrapper types are),
//! unsigned integers are bounded instead of carrying a format, and no defaults are injected. A
//! kind's served versions share one schema; `v1` is the storage version.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use schemars::{JsonSchema, generate::SchemaSettings, transform::Transform};
use serde_json::{Map, Value, json};

use crate::{
    DestinationRuleSpec, GatewaySpec, IstioStatus, PeerAuthenticationSpec, ServiceEntrySpec,
    SidecarSpec, VirtualServiceSpec, WorkloadEntrySpec,
};

/// The API group of VirtualService, DestinationRule and Gateway.
pub const GROUP: &str = "networking.istio.io";
/// Their served versions, newest first. All share one schema.
pub const VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];
/// The API group of PeerAuthentication.
pub const SECURITY_GROUP: &str = "security.istio.io";
/// Its served versions, newest first.
pub const SECURITY_VERSIONS: [&str; 2] = ["v1", "v1beta1"];
/// The version the API server stores, in both groups.
pub const STORAGE_VERSION: &str = "v1";

/// Every CRD: VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry, Sidecar,
/// PeerAuthentication.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        virtual_service(),
        destination_rule(),
        gateway(),
        service_entry(),
        workload_entry(),
        sidecar(),
        peer_authentication(),
    ]
}

/// The `virtualservices.networking.istio.io` CRD.
pub fn virtual_service() -> CustomResourceDefinition {
    build(
        Names {
            group: GROUP,
            versions: &VERSIONS,
            kind: "VirtualService",
            plural: "virtualservices",
            singular: "virtualservice",
            short: "vs",
        },
        &[
            column(
                "Gateways",
                ".spec.gateways",
                "string",
                "The names of gateways and sidecars that should apply these routes",
            ),
            column(
                "Hosts",
                ".spec.hosts",
                "string",
                "The destination hosts to which traffic is being sent",
            ),
            age_column(),
        ],
        spec_schema::<VirtualServiceSpec>(),
    )
}

/// The `destinationrules.networking.istio.io` CRD.
pub fn destination_rule() -> CustomResourceDefinition {
    build(
        Names {
            group: GROUP,
            versions: &VERSIONS,
            kind: "DestinationRule",
            plural: "destinationrules",
            singular: "destinationrule",
            short: "dr",
        },
        &[
            column(
                "Host",
                ".spec.host",
                "string",
                "The name of a service from the service registry",
            ),
            age_column(),
        ],
        spec_schema::<DestinationRuleSpec>(),
    )
}

/// The `gateways.networking.istio.io` CRD (no printer columns, as Istio's).
pub fn gateway() -> CustomResourceDefinition {
    build(
        Names {
            group: GROUP,
            versions: &VERSIONS,
            kind: "Gateway",
            plural: "gateways",
            singular: "gateway",
            short: "gw",
        },
        &[],
        spec_schema::<GatewaySpec>(),
    )
}

/// The `serviceentries.networking.istio.io` CRD.
pub fn service_entry() -> CustomResourceDefinition {
    require_spec(build(
        Names {
            group: GROUP,
            versions: &VERSIONS,
            kind: "ServiceEntry",
            plural: "serviceentries",
            singular: "serviceentry",
            short: "se",
        },
        &[
            column(
                "Hosts",
                ".spec.hosts",
                "string",
                "The hosts associated with the ServiceEntry",
            ),
            column(
                "Location",
                ".spec.location",
                "string",
                "Whether the service is external to the mesh or part of the mesh (MESH_EXTERNAL or MESH_INTERNAL)",
            ),
            column(
                "Resolution",
                ".spec.resolution",
                "string",
                "Service resolution mode for the hosts (NONE, STATIC, or DNS)",
            ),
            age_column(),
        ],
        spec_schema::<ServiceEntrySpec>(),
    ))
}

/// The `workloadentries.networking.istio.io` CRD.
pub fn workload_entry() -> CustomResourceDefinition {
    require_spec(build(
        Names {
            group: GROUP,
            versions: &VERSIONS,
            kind: "WorkloadEntry",
            plural: "workloadentries",
            singular: "workloadentry",
            short: "we",
        },
        &[
            age_column(),
            column(
                "Address",
                ".spec.address",
                "string",
                "Address associated with the network endpoint.",
            ),
        ],
        spec_schema::<WorkloadEntrySpec>(),
    ))
}

/// Istio's ServiceEntry and WorkloadEntry CRDs require a `spec`.
fn require_spec(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            schema.required = Some(vec!["spec".to_owned()]);
        }
    }
    crd
}

/// The `sidecars.networking.istio.io` CRD (no short name and no printer columns, as
/// Istio's).
pub fn sidecar() -> CustomResourceDefinition {
    build(
        Names {
            group: GROUP,
            versions: &VERSIONS,
            kind: "Sidecar",
            plural: "sidecars",
            singular: "sidecar",
            short: "",
        },
        &[],
        spec_schema::<SidecarSpec>(),
    )
}

/// The `peerauthentications.security.istio.io` CRD.
pub fn peer_authentication() -> CustomResourceDefinition {
    build(
        Names {
            group: SECURITY_GROUP,
            versions: &SECURITY_VERSIONS,
            kind: "PeerAuthentication",
            plural: "peerauthentications",
            singular: "peerauthentication",
            short: "pa",
        },
        &[
            column(
                "Mode",
                ".spec.mtls.mode",
                "string",
                "Defines the mTLS mode used for peer authentication.",
            ),
            age_column(),
        ],
        spec_schema::<PeerAuthenticationSpec>(),
    )
}

struct Names {
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    /// Empty for none.
    short: &'static str,
}

fn build(names: Names, columns: &[Value], spec: Value) -> CustomResourceDefinition {
    let schema = json!({
        "type": "object",
        "properties": {
            "spec": spec,
            "status": structural::<IstioStatus>(),
        },
    });
    let group = names.group;
    let versions: Vec<Value> = names
        .versions
        .iter()
        .map(|version| {
            let mut v = json!({
                "name": version,
                "served": true,
                "storage": *version == STORAGE_VERSION,
                "schema": { "openAPIV3Schema": schema },
                "subresources": { "status": {} },
            });
            if !columns.is_empty() {
                v["additionalPrinterColumns"] = json!(columns);
            }
            v
        })
        .collect();
    let mut crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{}.{group}", names.plural),
            "labels": { "app.kubernetes.io/part-of": "sextant" },
            "annotations": { "helm.sh/resource-policy": "keep" },
        },
        "spec": {
            "group": group,
            "names": {
                "categories": ["istio-io", format!("{}-istio-io", group.split('.').next().unwrap_or_default())],
                "kind": names.kind,
                "listKind": format!("{}List", names.kind),
                "plural": names.plural,
                "singular": names.singular,
            },
            "scope": "Namespaced",
            "versions": versions,
        },
    });
    if !names.short.is_empty() {
        crd["spec"]["names"]["shortNames"] = json!([names.short]);
    }
    serde_json::from_value(crd).expect("generated CRD matches the apiextensions/v1 types")
}

fn column(name: &str, path: &str, type_: &str, description: &str) -> Value {
    json!({ "name": name, "jsonPath": path, "type": type_, "description": description })
}

fn age_column() -> Value {
    column(
        "Age",
        ".metadata.creationTimestamp",
        "date",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    )
}

fn spec_schema<T: JsonSchema>() -> Value {
    let mut spec = structural::<T>();
    if let Some(obj) = spec.as_object_mut() {
        obj.entry("description").or_insert_with(|| {
            Value::String(format!(
                "Configuration of the {}; see Istio's reference documentation.",
                T::schema_name()
            ))
        });
    }
    spec
}

/// The structural OpenAPI v3 schema of `T`, in the form Istio's CRDs use.
pub fn structural<T: JsonSchema>() -> Value {
    let mut settings = SchemaSettings::openapi3().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    });
    // AddNullable would mark every Option nullable; Istio marks only wrapper types, which the
    // types in this crate do explicitly.
    settings
        .transforms
        .retain(|t| !t.is::<schemars::transform::AddNullable>());
    settings.transforms.push(Box::new(Structural));
    let schema = settings.into_generator().into_root_schema_for::<T>();
    let mut value = schema.to_value();
    if let Some(obj) = value.as_object_mut() {
        obj.remove("title");
        obj.remove("$schema");
    }
    value
}

/// Rewrites schemars output into Kubernetes' structural dialect.
#[derive(Clone)]
struct Structural;

impl Transform for Structural {
    fn transform(&mut self, schema: &mut schemars::Schema) {
        if let Some(obj) = schema.as_object_mut() {
            rewrite(obj);
        }
    }
}

fn rewrite(obj: &mut Map<String, Value>) {
    strip_null(obj);
    obj.remove("default");
    obj.remove("title");
    match obj.get("format").and_then(Value::as_str) {
        Some("uint32") => {
            obj.remove("format");
            obj.entry("minimum").or_insert(json!(0));
            obj.entry("maximum").or_insert(json!(4294967295u64));
        }
        Some("uint64" | "uint" | "uint16" | "uint8") => {
            obj.remove("format");
            obj.entry("minimum").or_insert(json!(0));
        }
        Some("float") => {
            obj.insert("format".into(), json!("double"));
        }
        _ => {}
    }
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        for child in props.values_mut() {
            if let Some(child) = child.as_object_mut() {
                rewrite(child);
            }
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(Value::Object(child)) = obj.get_mut(key) {
            rewrite(child);
        }
    }
}

/// `type: [T, "null"]` and `anyOf: [S, {type: null}]` (schemars' encoding of `Option`) become the
/// plain `T` / `S`.
fn strip_null(obj: &mut Map<String, Value>) {
    if let Some(Value::Array(types)) = obj.get("type") {
        let rest: Vec<Value> = types
            .iter()
            .filter(|t| t.as_str() != Some("null"))
            .cloned()
            .collect();
        if rest.len() == 1 {
            obj.insert("type".into(), rest[0].clone());
        }
    }
    if let Some(Value::Array(any)) = obj.get("anyOf") {
        let is_null = |v: &Value| v.get("type").and_then(Value::as_str) == Some("null");
        if any.len() == 2 && any.iter().any(is_null) {
            let inner = any.iter().find(|v| !is_null(v)).cloned();
            obj.remove("anyOf");
            if let Some(Value::Object(inner)) = inner {
                for (k, v) in inner {
                    obj.entry(k).or_insert(v);
                }
            }
        }
    }
    if let Some(Value::Array(e)) = obj.get_mut("enum") {
        e.retain(|v| !v.is_null());
    }
}
