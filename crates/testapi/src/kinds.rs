//! The kinds the server serves (`ServedKinds`): the built-in kinds Sextant and its Helm chart
//! use, and those that CustomResourceDefinitions add, one `ResourceType` per group, version
//! and plural. Discovery and OpenAPI documents (`api::discovery`) are derived from them.

use serde_json::{Value, json};
use sextant_schema::Schema;

/// One served resource type (one group, version and plural).
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// API group, empty for the core group.
    pub group: String,
    /// Served version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural, lowercase (the URL segment).
    pub plural: String,
    /// Singular, lowercase.
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// `kubectl get` abbreviations.
    pub short_names: Vec<String>,
    /// Categories (`kubectl get istio-io`).
    pub categories: Vec<String>,
    /// Has a `status` subresource.
    pub status: bool,
    /// Only `create` (TokenReview, SubjectAccessReview).
    pub create_only: bool,
    /// What a CustomResourceDefinition adds.
    pub custom: Option<Custom>,
}

/// Per-version details of a custom resource.
#[derive(Clone, Debug)]
pub struct Custom {
    /// The CRD's name (`virtualservices.networking.istio.io`).
    pub crd: String,
    /// Schema to validate objects with (`None`: no schema, everything preserved).
    pub schema: Option<std::sync::Arc<Schema>>,
    /// `additionalPrinterColumns`.
    pub columns: Vec<Column>,
}

/// A printer column of a custom resource.
#[derive(Clone, Debug)]
pub struct Column {
    /// Header.
    pub name: String,
    /// OpenAPI type (`string`, `integer`, `date`, ...).
    pub type_: String,
    /// Simple JSONPath (`.spec.gateways`).
    pub json_path: String,
    /// Description shown by `kubectl explain`-like tools.
    pub description: String,
    /// Shown only with `-o wide` when above 0.
    pub priority: i64,
}

/// What the server serves: the built-in kinds and those of the stored CRDs.
#[derive(Clone, Debug, Default)]
pub struct ServedKinds {
    types: Vec<ResourceType>,
}

impl ServedKinds {
    /// The built-in kinds plus those of `crds`; a CRD that cannot be served is skipped, with a
    /// warning.
    pub fn new<'a>(crds: impl IntoIterator<Item = &'a Value>) -> ServedKinds {
        let mut types = builtins();
        for crd in crds {
            match from_crd(crd) {
                Ok(t) => types.extend(t),
                Err(e) => tracing::warn!(error = %e, "CRD not served"),
            }
        }
        ServedKinds { types }
    }

    /// Every served type, built-in kinds first.
    pub fn iter(&self) -> std::slice::Iter<'_, ResourceType> {
        self.types.iter()
    }

    /// The type served at `group`, `version` and `plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// The types of one group version.
    pub fn group_version(&self, group: &str, version: &str) -> Vec<&ResourceType> {
        self.types
            .iter()
            .filter(|t| t.group == group && t.version == version)
            .collect()
    }
}

impl ResourceType {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The URL prefix of the group version: `/api/v1` or `/apis/GROUP/VERSION`.
    pub fn prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// Serves the `token` subresource (TokenRequest): core ServiceAccounts.
    pub fn issues_tokens(&self) -> bool {
        self.group.is_empty() && self.plural == "serviceaccounts"
    }

    /// Verbs for discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.create_only {
            vec!["create"]
        } else {
            vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }
}

fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        status,
        create_only: false,
        custom: None,
    }
}

/// The built-in kinds: what Sextant watches and writes, and what its Helm chart renders.
pub fn builtins() -> Vec<ResourceType> {
    let mut out = vec![
        builtin("", "v1", "Namespace", "namespaces", false, &["ns"], true),
        builtin("", "v1", "Node", "nodes", false, &["no"], true),
        builtin("", "v1", "Service", "services", true, &["svc"], true),
        builtin("", "v1", "Pod", "pods", true, &["po"], true),
        builtin("", "v1", "ConfigMap", "configmaps", true, &["cm"], false),
        builtin("", "v1", "Secret", "secrets", true, &[], false),
        builtin(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            true,
            &["sa"],
            false,
        ),
        builtin("", "v1", "Endpoints", "endpoints", true, &["ep"], false),
        builtin("", "v1", "Event", "events", true, &["ev"], false),
        builtin(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            true,
            &[],
            false,
        ),
        builtin(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            true,
            &["deploy"],
            true,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            true,
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
            &[],
            false,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            true,
            &[],
            false,
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            false,
            &[],
            false,
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            false,
            &[],
            false,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
            true,
        ),
        builtin(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            &["pdb"],
            true,
        ),
        builtin(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
            &["hpa"],
            true,
        ),
        builtin(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
            &["netpol"],
            false,
        ),
    ];
    let mut review = builtin(
        "authentication.k8s.io",
        "v1",
        "TokenReview",
        "tokenreviews",
        false,
        &[],
        false,
    );
    review.create_only = true;
    out.push(review);
    let mut access = builtin(
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        "subjectaccessreviews",
        false,
        &[],
        false,
    );
    access.create_only = true;
    out.push(access);
    out
}

/// The resource types a CustomResourceDefinition serves, one per served version, or why it
/// cannot be served.
pub fn from_crd(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().ok_or("spec.group: Required value")?;
    let names = &spec["names"];
    let plural = names["plural"]
        .as_str()
        .ok_or("spec.names.plural: Required value")?;
    let kind = names["kind"]
        .as_str()
        .ok_or("spec.names.kind: Required value")?;
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => return Err("spec.scope: Unsupported value: must be Namespaced or Cluster".into()),
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions = spec["versions"]
        .as_array()
        .filter(|v| !v.is_empty())
        .ok_or("spec.versions: Required value")?;
    let mut out = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        if v["served"] != json!(true) {
            continue;
        }
        let version = v["name"]
            .as_str()
            .ok_or_else(|| format!("spec.versions[{i}].name: Required value"))?;
        let schema = match v["schema"].get("openAPIV3Schema") {
            Some(s) => Some(std::sync::Arc::new(Schema::new(s.clone()).map_err(
                |e| format!("spec.versions[{i}].schema.openAPIV3Schema: Invalid value: {e}"),
            )?)),
            None => None,
        };
        let columns = v["additionalPrinterColumns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| Column {
                        name: c["name"].as_str().unwrap_or_default().to_owned(),
                        type_: c["type"].as_str().unwrap_or("string").to_owned(),
                        json_path: c["jsonPath"].as_str().unwrap_or_default().to_owned(),
                        description: c["description"].as_str().unwrap_or_default().to_owned(),
                        priority: c["priority"].as_i64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(ResourceType {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            singular: names["singular"]
                .as_str()
                .map_or_else(|| kind.to_lowercase(), str::to_owned),
            namespaced,
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status: v["subresources"].get("status").is_some(),
            create_only: false,
            custom: Some(Custom {
                crd: name.to_owned(),
                schema,
                columns,
            }),
        });
    }
    Ok(out)
}

/// The version objects of a CRD are stored at.
pub fn storage_version(crd: &Value) -> Option<String> {
    crd["spec"]["versions"]
        .as_array()?
        .iter()
        .find(|v| v["storage"] == json!(true))
        .and_then(|v| v["name"].as_str().map(str::to_owned))
}
