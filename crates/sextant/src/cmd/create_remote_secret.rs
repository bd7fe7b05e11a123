//! `sextant create-remote-secret`: registers a remote cluster with a control plane, as
//! `istioctl create-remote-secret` does. In the remote cluster, reached with the caller's
//! kubeconfig, it makes sure of a ServiceAccount, a ClusterRole that reads what the control
//! plane watches there, and their binding (each created when missing, left as it is when
//! present); asks the TokenRequest API for a token of that account; and prints a Secret for
//! the control plane's namespace. The Secret is labelled `istio/multiCluster: "true"`, names
//! the cluster in the annotation `networking.istio.io/cluster`, and holds, under the cluster's
//! name, a kubeconfig with one cluster, one user (the token) and one context. Applied in the
//! control plane's cluster, it makes the control plane watch the remote one.

use std::{path::Path, process::ExitCode, time::Duration};

use anyhow::Context as _;
use base64::Engine;
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Namespace, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig, KubeconfigError},
};
use serde_json::{Value, json};

use crate::cli::CreateRemoteSecretArgs;

/// The label that marks a Secret as a remote cluster's kubeconfig (Istio's).
pub const MULTI_CLUSTER_LABEL: &str = "istio/multiCluster";
/// The annotation that names the remote cluster (Istio's).
pub const CLUSTER_ANNOTATION: &str = "networking.istio.io/cluster";
/// The printed Secret is named this followed by the cluster's name (Istio's).
pub const SECRET_PREFIX: &str = "istio-remote-secret-";
/// What the ClusterRole and its binding are named, followed by the namespace: two control
/// planes in different namespaces of one remote cluster do not share them.
const READER_PREFIX: &str = "sextant-reader-";
/// The config cluster's id (Istio's default `CLUSTER_ID`, which `sextant serve` uses): the
/// control plane refuses a remote cluster registered under it.
const CONFIG_CLUSTER_ID: &str = "Kubernetes";
/// How long to wait for the remote API server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for one answer of the remote API server.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(args: CreateRemoteSecretArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(create(args)) {
        Ok(secret) => {
            crate::cmd::out(format_args!("{secret}"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::from(1)
        }
    }
}

/// `error` and its causes, each said once: many errors (kube's, io's) print their cause in
/// their own text and name it as their source too, and `{:#}` would print it twice.
fn message(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// Prepares the remote cluster and returns the Secret, as YAML.
async fn create(args: CreateRemoteSecretArgs) -> anyhow::Result<String> {
    let CreateRemoteSecretArgs {
        name,
        kubeconfig,
        context,
        namespace,
        server,
        token_seconds,
        service_account,
    } = args;
    check_cluster_name(&name)?;
    check_label("--namespace", &namespace)?;
    check_label("--service-account", &service_account)?;
    if token_seconds < 600 {
        anyhow::bail!("--token-seconds {token_seconds}: the API server grants no less than 600");
    }
    if let Some(url) = &server {
        check_server_url(url)?;
    }
    let loaded = load_kubeconfig(kubeconfig.as_deref())?;
    let cluster = remote_cluster(&loaded, context.as_deref())?;
    let client = connect(loaded, context).await?;
    let remote = Remote {
        client,
        url: cluster.server.clone(),
    };
    remote.ensure_namespace(&namespace).await?;
    remote.ensure_reader(&namespace, &service_account).await?;
    let token = remote
        .request_token(&namespace, &service_account, token_seconds)
        .await?;
    let target = ClusterAccess {
        server: server.unwrap_or(cluster.server),
        ..cluster
    };
    let kubeconfig = remote_kubeconfig(&name, &target, &token);
    Ok(render_secret(&name, &namespace, &kubeconfig))
}

/// How the control plane reaches the remote cluster: what goes into the Secret's kubeconfig
/// besides the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterAccess {
    /// The API server's URL.
    pub server: String,
    /// Base64 PEM of the CA bundle that signs the API server's certificate.
    pub certificate_authority_data: Option<String>,
    /// The kubeconfig's `insecure-skip-tls-verify`, kept as the caller had it.
    pub insecure_skip_tls_verify: bool,
    /// The kubeconfig's `tls-server-name`.
    pub tls_server_name: Option<String>,
}

/// The kubeconfig at `path`, or as kubectl finds one (`KUBECONFIG`, else `~/.kube/config`).
fn load_kubeconfig(path: Option<&Path>) -> anyhow::Result<Kubeconfig> {
    let (read, whence) = match path {
        Some(path) => (Kubeconfig::read_from(path), ""),
        None => (
            Kubeconfig::read(),
            " (from KUBECONFIG, else ~/.kube/config; or give --kubeconfig)",
        ),
    };
    read.map_err(|e| match e {
        // Its text names the path (Debug-quoted) and the cause, and its source is the cause.
        KubeconfigError::ReadConfig(cause, path) => {
            anyhow::anyhow!("reading the kubeconfig {}{whence}: {cause}", path.display())
        }
        e => {
            let which = path
                .map(|p| format!(" {}", p.display()))
                .unwrap_or_default();
            anyhow::Error::new(e).context(format!("reading the kubeconfig{which}{whence}"))
        }
    })
}

/// The cluster of `context` (or of the current context), with its CA read in.
fn remote_cluster(kubeconfig: &Kubeconfig, context: Option<&str>) -> anyhow::Result<ClusterAccess> {
    let context_name = context
        .map(str::to_owned)
        .or_else(|| kubeconfig.current_context.clone())
        .filter(|c| !c.is_empty())
        .context("the kubeconfig has no current context: name one with --context")?;
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .with_context(|| format!("the kubeconfig has no context {context_name:?}"))?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .with_context(|| {
            format!("context {context_name:?} names cluster {cluster_name:?}, which the kubeconfig lacks")
        })?;
    let server = cluster
        .server
        .clone()
        .filter(|s| !s.is_empty())
        .with_context(|| format!("cluster {cluster_name:?} of the kubeconfig has no server"))?;
    let certificate_authority_data = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(data), _) if !data.is_empty() => Some(data.clone()),
        (_, Some(file)) if !file.is_empty() => {
            let pem = std::fs::read(file).with_context(|| {
                format!("reading the certificate-authority {file} of cluster {cluster_name:?}")
            })?;
            Some(base64::engine::general_purpose::STANDARD.encode(pem))
        }
        _ => None,
    };
    Ok(ClusterAccess {
        server,
        certificate_authority_data,
        insecure_skip_tls_verify: cluster.insecure_skip_tls_verify.unwrap_or(false),
        tls_server_name: cluster.tls_server_name.clone().filter(|s| !s.is_empty()),
    })
}

async fn connect(kubeconfig: Kubeconfig, context: Option<String>) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context,
        ..KubeConfigOptions::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .context("loading the kubeconfig")?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    Client::try_from(config).context("building a client from the kubeconfig")
}

/// The remote cluster, through the caller's credentials.
struct Remote {
    client: Client,
    /// The API server's URL, for messages.
    url: String,
}

impl Remote {
    /// Creates the namespace when it is missing. A caller who may not read namespaces goes on:
    /// creating the ServiceAccount then says whether the namespace is there.
    async fn ensure_namespace(&self, name: &str) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.get_opt(name).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(kube::Error::Api(status)) if status.code == 403 => return Ok(()),
            Err(e) => return Err(self.explain(e, &format!("reading namespace {name}"))),
        }
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        self.create(&api, &namespace, &format!("Namespace {name}"))
            .await
            .map(drop)
    }

    /// The ServiceAccount, the ClusterRole and the ClusterRoleBinding.
    async fn ensure_reader(&self, namespace: &str, account: &str) -> anyhow::Result<()> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(account.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(managed_labels()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        self.create(
            &accounts,
            &sa,
            &format!("ServiceAccount {namespace}/{account}"),
        )
        .await?;

        let name = format!("{READER_PREFIX}{namespace}");
        let roles: Api<ClusterRole> = Api::all(self.client.clone());
        let role = ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(managed_labels()),
                ..ObjectMeta::default()
            },
            rules: Some(reader_rules()),
            ..ClusterRole::default()
        };
        if let Created::Existed(existing) = self
            .create(&roles, &role, &format!("ClusterRole {name}"))
            .await?
            && existing.rules != role.rules
        {
            eprintln!(
                "warning: ClusterRole {name} exists with other rules than Sextant's and was left as it is; \
                 the control plane may be refused what it watches (delete it and run again to replace it)"
            );
        }

        let bindings: Api<ClusterRoleBinding> = Api::all(self.client.clone());
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(managed_labels()),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: name.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: account.to_owned(),
                namespace: Some(namespace.to_owned()),
                ..Subject::default()
            }]),
        };
        if let Created::Existed(existing) = self
            .create(&bindings, &binding, &format!("ClusterRoleBinding {name}"))
            .await?
            && (existing.role_ref != binding.role_ref || existing.subjects != binding.subjects)
        {
            eprintln!(
                "warning: ClusterRoleBinding {name} exists with another role or subjects and was left as it is; \
                 ServiceAccount {namespace}/{account} may lack the rights the control plane needs"
            );
        }
        Ok(())
    }

    /// A token for the ServiceAccount from the TokenRequest API.
    async fn request_token(
        &self,
        namespace: &str,
        account: &str,
        seconds: u64,
    ) -> anyhow::Result<String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(i64::try_from(seconds).unwrap_or(i64::MAX)),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let what = format!("requesting a token for ServiceAccount {namespace}/{account}");
        let granted = accounts
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .map_err(|e| self.explain(e, &what))?;
        let status = granted
            .status
            .filter(|s| !s.token.is_empty())
            .with_context(|| format!("{what}: the API server at {} returned no token", self.url))?;
        eprintln!(
            "the token of ServiceAccount {namespace}/{account} expires at {}; run this again before then",
            status.expiration_timestamp.0
        );
        Ok(status.token)
    }

    /// Creates `object`, or finds it already there (then returns it as it is).
    async fn create<K>(&self, api: &Api<K>, object: &K, what: &str) -> anyhow::Result<Created<K>>
    where
        K: kube::Resource
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        match api.create(&PostParams::default(), object).await {
            Ok(_) => {
                eprintln!("created {what}");
                Ok(Created::New)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let name = object.meta().name.clone().unwrap_or_default();
                let existing = api
                    .get(&name)
                    .await
                    .map_err(|e| self.explain(e, &format!("reading {what}")))?;
                eprintln!("{what} exists; left as it is");
                Ok(Created::Existed(Box::new(existing)))
            }
            Err(e) => Err(self.explain(e, &format!("creating {what}"))),
        }
    }

    /// An error of the remote API server as the user can act on it: unreachable, credentials
    /// refused, or RBAC denying the caller.
    fn explain(&self, error: kube::Error, what: &str) -> anyhow::Error {
        explain(error, what, &self.url)
    }
}

/// What `Remote::create` found.
enum Created<K> {
    New,
    Existed(Box<K>),
}

fn explain(error: kube::Error, what: &str, url: &str) -> anyhow::Error {
    match error {
        kube::Error::Api(status) => match status.code {
            401 => anyhow::anyhow!(
                "{what}: the API server at {url} did not accept the kubeconfig's credentials: {}",
                status.message
            ),
            403 => anyhow::anyhow!(
                "{what}: denied by the remote cluster's RBAC: {}. The kubeconfig's user needs to create \
                 namespaces, serviceaccounts, serviceaccounts/token, clusterroles and clusterrolebindings \
                 (cluster-admin can), and to hold every right the ClusterRole grants",
                status.message
            ),
            code => anyhow::anyhow!(
                "{what}: the API server at {url} answered {code} {}: {}",
                status.reason,
                status.message
            ),
        },
        e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => {
            anyhow::Error::new(e).context(format!("{what}: cannot reach the API server at {url}"))
        }
        e => anyhow::Error::new(e).context(format!("{what} at {url}")),
    }
}

/// The labels of what this command creates in the remote cluster.
fn managed_labels() -> std::collections::BTreeMap<String, String> {
    [(
        "app.kubernetes.io/managed-by".to_owned(),
        "sextant-create-remote-secret".to_owned(),
    )]
    .into()
}

/// What the control plane reads in a remote cluster: its services and their endpoints, the
/// pods, namespaces and nodes (locality) behind them, and token reviews for its workloads.
pub fn reader_rules() -> Vec<PolicyRule> {
    let read = |group: &str, resources: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: ["get", "list", "watch"].map(str::to_owned).into(),
        ..PolicyRule::default()
    };
    vec![
        read(
            "",
            &["services", "endpoints", "pods", "namespaces", "nodes"],
        ),
        read("discovery.k8s.io", &["endpointslices"]),
        PolicyRule {
            api_groups: Some(vec!["authentication.k8s.io".to_owned()]),
            resources: Some(vec!["tokenreviews".to_owned()]),
            verbs: vec!["create".to_owned()],
            ..PolicyRule::default()
        },
        // Whether a gateway of that cluster may read its namespace's Secrets (istiod's
        // SubjectAccessReview before it hands out gateway credentials).
        PolicyRule {
            api_groups: Some(vec!["authorization.k8s.io".to_owned()]),
            resources: Some(vec!["subjectaccessreviews".to_owned()]),
            verbs: vec!["create".to_owned()],
            ..PolicyRule::default()
        },
    ]
}

/// The kubeconfig the control plane uses for the remote cluster `name`: one cluster, one
/// user with the token, one context, and that context current.
pub fn remote_kubeconfig(name: &str, access: &ClusterAccess, token: &str) -> Value {
    let mut cluster = json!({"server": access.server});
    if let Some(ca) = &access.certificate_authority_data {
        cluster["certificate-authority-data"] = json!(ca);
    }
    if access.insecure_skip_tls_verify {
        cluster["insecure-skip-tls-verify"] = json!(true);
    }
    if let Some(sni) = &access.tls_server_name {
        cluster["tls-server-name"] = json!(sni);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "preferences": {},
    })
}

/// The Secret for the control plane's `namespace`, as YAML with a header saying what to do
/// with it.
pub fn render_secret(name: &str, namespace: &str, kubeconfig: &Value) -> String {
    let kubeconfig_yaml = sextant_index::manifest::to_yaml(std::slice::from_ref(kubeconfig));
    let kubeconfig_yaml = kubeconfig_yaml
        .strip_prefix("---\n")
        .unwrap_or(&kubeconfig_yaml);
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": format!("{SECRET_PREFIX}{name}"),
            "namespace": namespace,
            "labels": {MULTI_CLUSTER_LABEL: "true"},
            "annotations": {CLUSTER_ANNOTATION: name},
        },
        "stringData": {name: kubeconfig_yaml},
    });
    format!(
        "# Registers the remote cluster {name:?} with the control plane in namespace {namespace:?}.\n\
         # Generated by `sextant create-remote-secret`; it holds a token: keep it secret.\n\
         # Apply it in the control plane's cluster: kubectl apply -f FILE\n{}",
        sextant_index::manifest::to_yaml(&[secret])
    )
}

/// A cluster's name becomes a Secret's data key, an annotation and part of the Secret's name:
/// lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit.
fn check_cluster_name(name: &str) -> anyhow::Result<()> {
    if name == CONFIG_CLUSTER_ID {
        anyhow::bail!(
            "--name {name}: this id is reserved for the control plane's own (config) cluster, \
             which a remote cluster cannot be registered as; name the remote cluster by an id of \
             its own (lowercase, e.g. --name west)"
        );
    }
    let max = 253 - SECRET_PREFIX.len();
    let valid = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        anyhow::bail!(
            "--name {name:?}: a cluster name must be 1 to {max} lowercase letters, digits, '-' or '.', \
             starting and ending with a letter or digit"
        );
    }
    Ok(())
}

/// A namespace or ServiceAccount name: a DNS label.
fn check_label(flag: &str, value: &str) -> anyhow::Result<()> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        anyhow::bail!(
            "{flag} {value:?}: must be 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
        );
    }
    Ok(())
}

/// `--server`: a URL the control plane can dial, `https://HOST[:PORT]` (or `http://`).
fn check_server_url(url: &str) -> anyhow::Result<()> {
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .map(|rest| rest.split(['/', ':']).next().unwrap_or_default());
    match host {
        Some(h) if !h.is_empty() && !url.contains(char::is_whitespace) => Ok(()),
        _ => anyhow::bail!("--server {url:?}: expected https://HOST[:PORT]"),
    }
}

#[cfg(test)]
mod tests;
