//! The objects `sextant analyze` reads from a cluster, and which objects local files replace.

use std::{collections::HashSet, path::Path, time::Duration};

use anyhow::Context as _;
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::Value;
use sextant_index::{
    check::{self, ObjectKind},
    manifest,
};
use sextant_model::Kind;

/// The kinds listed: the Istio kinds Sextant serves, and what the reference checks read
/// (Services for hosts, Pods for selectors). Secrets are not read: `analyze` needs no
/// credentials, and the caller may not be allowed them.
pub const KINDS: [Kind; 9] = [
    Kind::VirtualService,
    Kind::DestinationRule,
    Kind::Gateway,
    Kind::Sidecar,
    Kind::ServiceEntry,
    Kind::WorkloadEntry,
    Kind::PeerAuthentication,
    Kind::Service,
    Kind::Pod,
];

/// Objects per list request: a large cluster is read in pages.
const PAGE: u32 = 500;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Time one page may take, however its server trickles it.
const PAGE_TIMEOUT: Duration = Duration::from_secs(120);
/// Objects read at most: far over any cluster's Istio objects, Services and Pods, and a bound
/// on a server whose pages never end.
const MAX_OBJECTS: usize = 500_000;

/// What was read.
pub struct Live {
    /// The kubeconfig context's namespace (`default` when it names none).
    pub namespace: String,
    /// Every object listed, with `apiVersion` and `kind`, without `managedFields`.
    pub objects: Vec<Value>,
}

/// A runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Lists [`KINDS`] in every namespace through the kubeconfig at `path` (else as kubectl finds
/// one) and its `context`. A kind the cluster does not serve (its CRD not installed) is
/// skipped with a note.
pub async fn list(path: Option<&Path>, context: Option<String>) -> anyhow::Result<Live> {
    let kubeconfig = match path {
        Some(path) => Kubeconfig::read_from(path)
            .with_context(|| format!("reading the kubeconfig {}", path.display()))?,
        None => Kubeconfig::read().context(
            "reading the kubeconfig (from KUBECONFIG, else ~/.kube/config; or give --kubeconfig)",
        )?,
    };
    let options = KubeConfigOptions {
        context,
        ..KubeConfigOptions::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .context("loading the kubeconfig")?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    let namespace = config.default_namespace.clone();
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).context("building a client from the kubeconfig")?;
    let mut objects = Vec::new();
    for kind in KINDS {
        let resource = sextant_kube::api_resource(kind);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let mut params = ListParams::default().limit(PAGE);
        let mut last_token = None;
        loop {
            let listed = tokio::time::timeout(PAGE_TIMEOUT, api.list(&params))
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "listing {} from {url}: no page within {PAGE_TIMEOUT:?}",
                        kind.as_str()
                    )
                })?;
            let page = match listed {
                Ok(page) => page,
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    eprintln!(
                        "note: {url} does not serve {} ({}): skipped",
                        kind.as_str(),
                        resource.api_version
                    );
                    break;
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("listing {} from {url}", kind.as_str())));
                }
            };
            for item in page.items {
                let mut value = serde_json::to_value(&item).context("reading a listed object")?;
                value["apiVersion"] = resource.api_version.clone().into();
                value["kind"] = resource.kind.clone().into();
                if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("managedFields");
                }
                objects.push(value);
            }
            if objects.len() > MAX_OBJECTS {
                anyhow::bail!("{url}: more than {MAX_OBJECTS} objects listed");
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) if last_token.as_ref() == Some(&token) => {
                    anyhow::bail!(
                        "listing {} from {url}: the server gave the same continue token twice",
                        kind.as_str()
                    );
                }
                Some(token) => {
                    params = params.continue_token(&token);
                    last_token = Some(token);
                }
                None => break,
            }
        }
    }
    Ok(Live { namespace, objects })
}

/// Which object a value is: its kind, namespace (`default_namespace` when it names none) and
/// name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    kind: String,
    namespace: String,
    name: String,
}

impl Identity {
    /// `VirtualService default/reviews`, as the diagnostics name objects.
    pub fn origin(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The identity of a Kubernetes object, if it has a kind and a name.
pub fn identity(value: &Value, default_namespace: &str) -> Option<Identity> {
    let kind = value.get("kind")?.as_str()?;
    let meta = value.get("metadata")?;
    let name = meta.get("name")?.as_str()?;
    let namespace = meta
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(default_namespace);
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    // Every served version of a kind is one object (`v1beta1` and `v1` VirtualServices alike).
    let kind = match check::classify(api_version, kind) {
        ObjectKind::Istio(k) | ObjectKind::Kubernetes(k) | ObjectKind::UnservedVersion(k) => {
            k.as_str().to_owned()
        }
        ObjectKind::Other => kind.to_owned(),
    };
    Some(Identity {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// The identities of the objects in local files (items of `List`s included). Files that do
/// not parse replace nothing; `validate` reports them.
pub fn identities(local: &[(String, String)], default_namespace: &str) -> HashSet<Identity> {
    let mut out = HashSet::new();
    for (_, text) in local {
        let Ok(docs) = manifest::parse_documents(text) else {
            continue;
        };
        for doc in docs {
            let items = match doc.value.get("items").and_then(Value::as_array) {
                Some(items) if doc.value.get("kind").and_then(Value::as_str) == Some("List") => {
                    items.clone()
                }
                _ => vec![doc.value],
            };
            out.extend(items.iter().filter_map(|v| identity(v, default_namespace)));
        }
    }
    out
}
