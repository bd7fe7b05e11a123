//! Remote clusters as Istio registers them: a Secret labelled `istio/multiCluster: "true"`
//! (or `sextant.io/multiCluster: "true"`) in the control plane's namespace, each data key a
//! cluster id and its value that cluster's kubeconfig; or a kubeconfig file named on the
//! command line (`serve --remote-kubeconfig NAME=PATH`).
//!
//! A kubeconfig from a Secret is a credential anyone who may write Secrets in that namespace
//! can hand Sextant, so, as istiod does by default, it may not make Sextant run a command
//! (`exec`, `auth-provider`) or read a file (`tokenFile`, certificate and key paths): only
//! inline credentials. A file on the command line is the operator's own and is not limited.
//! Nothing of a kubeconfig's content reaches an error, a log or a `Debug`.

use std::{fmt, path::PathBuf};

use k8s_openapi::api::core::v1::Secret;
use kube::config::Kubeconfig;

/// The labels that mark a Secret as holding remote clusters' kubeconfigs (value `"true"`).
pub const LABELS: [&str; 2] = ["istio/multiCluster", "sextant.io/multiCluster"];

/// Largest kubeconfig read (one with inline certificates is a few KiB).
pub const MAX_KUBECONFIG_BYTES: usize = 128 * 1024;

/// Where a remote cluster's kubeconfig comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// `--remote-kubeconfig NAME=PATH`.
    File(PathBuf),
    /// Key `key` of Secret `namespace/name`.
    Secret {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The data key (the cluster id).
        key: String,
    },
}

impl Origin {
    /// The Secret it comes from, if it does.
    pub fn secret(&self) -> Option<&str> {
        match self {
            Origin::Secret { name, .. } => Some(name),
            Origin::File(_) => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "kubeconfig file {}", path.display()),
            Origin::Secret {
                namespace,
                name,
                key,
            } => write!(f, "Secret {namespace}/{name} key {key}"),
        }
    }
}

/// A remote cluster asked for: its id, where from, and its kubeconfig as read.
#[derive(Clone)]
pub struct Registration {
    /// The cluster id.
    pub cluster: String,
    /// Where it comes from.
    pub origin: Origin,
    /// The kubeconfig's bytes: a change of them restarts the cluster's watches.
    pub kubeconfig: Vec<u8>,
    /// The kubeconfig read, or why it cannot be used (naming the origin).
    pub read: Result<Kubeconfig, String>,
    /// The API server its current context names, when it reads.
    pub server: Option<String>,
}

impl Registration {
    /// Cluster `cluster` from `kubeconfig`, read under the rules of `origin`.
    pub fn new(cluster: &str, origin: Origin, kubeconfig: Vec<u8>) -> Registration {
        let trusted = matches!(origin, Origin::File(_));
        let read = read_kubeconfig(&kubeconfig, trusted).map_err(|e| format!("{origin}: {e}"));
        let server = read.as_ref().ok().and_then(server_of);
        Registration {
            cluster: cluster.to_owned(),
            origin,
            kubeconfig,
            read,
            server,
        }
    }
}

// A kubeconfig holds credentials: never shown.
impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("cluster", &self.cluster)
            .field("origin", &self.origin)
            .field("kubeconfig_bytes", &self.kubeconfig.len())
            .field("read", &self.read.as_ref().map(|_| "ok"))
            .finish()
    }
}

/// Longest cluster id: a Secret data key's limit.
pub const MAX_CLUSTER_ID: usize = 253;

/// Checks `id` as the API server checks a Secret data key (which is what a cluster id is):
/// letters, digits, `-`, `_` and `.`, at most [`MAX_CLUSTER_ID`] of them.
pub fn check_cluster_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the cluster id is empty".to_owned());
    }
    if id.len() > MAX_CLUSTER_ID {
        return Err(format!(
            "the cluster id is {} characters, more than {MAX_CLUSTER_ID}",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "the cluster id {id:?} has {c:?}: only letters, digits, '-', '_' and '.' may be used (as in a Secret data key)"
        ));
    }
    Ok(())
}

/// The API server `config`'s current context names.
fn server_of(config: &Kubeconfig) -> Option<String> {
    let context = config.current_context.as_deref()?;
    let named = config
        .contexts
        .iter()
        .find(|c| c.name == context)?
        .context
        .as_ref()?;
    config
        .clusters
        .iter()
        .find(|c| c.name == named.cluster)?
        .cluster
        .as_ref()?
        .server
        .clone()
}

/// Whether `secret` carries one of the [`LABELS`] with value `"true"`.
pub fn is_remote_secret(secret: &Secret) -> bool {
    let labels = secret.metadata.labels.as_ref();
    LABELS
        .iter()
        .any(|l| labels.and_then(|m| m.get(*l)).map(String::as_str) == Some("true"))
}

/// The remote clusters `secret` registers, one per data key (`stringData` too, as a server
/// that has not merged it keeps it), in key order. A key naming the `local` cluster is
/// skipped with a warning.
pub fn registrations(secret: &Secret, local: &str) -> Vec<Registration> {
    let namespace = secret.metadata.namespace.clone().unwrap_or_default();
    let name = secret.metadata.name.clone().unwrap_or_default();
    let mut entries: std::collections::BTreeMap<&str, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.0.clone()))
        .collect();
    // As the API server merges them: stringData over data.
    for (k, v) in secret.string_data.iter().flatten() {
        entries.insert(k, v.as_bytes().to_vec());
    }
    entries
        .into_iter()
        .filter(|(key, _)| {
            let local_key = *key == local;
            if local_key {
                tracing::warn!(secret = %format!("{namespace}/{name}"), key, "a remote cluster Secret names the local cluster; ignored");
            }
            !local_key
        })
        .map(|(key, kubeconfig)| {
            let origin = Origin::Secret {
                namespace: namespace.clone(),
                name: name.clone(),
                key: key.to_owned(),
            };
            Registration::new(key, origin, kubeconfig)
        })
        .collect()
}

/// Reads a kubeconfig; unless `trusted`, refuses one that would run a command or read a
/// file. The error never quotes the content.
pub fn read_kubeconfig(bytes: &[u8], trusted: bool) -> Result<Kubeconfig, String> {
    if bytes.len() > MAX_KUBECONFIG_BYTES {
        return Err(format!(
            "the kubeconfig is {} bytes, more than the {MAX_KUBECONFIG_BYTES} read",
            bytes.len()
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "the kubeconfig is not UTF-8 text (byte {})",
            e.valid_up_to()
        )
    })?;
    let config = Kubeconfig::from_yaml(text).map_err(|e| match e {
        // The parser's message may quote the text; say only where.
        kube::config::KubeconfigError::Parse(_) => {
            "the kubeconfig is not kubeconfig YAML".to_owned()
        }
        other => format!("the kubeconfig cannot be read: {other}"),
    })?;
    if !trusted {
        for user in &config.auth_infos {
            let Some(info) = &user.auth_info else {
                continue;
            };
            let refused = [
                (info.exec.is_some(), "runs a command (exec)"),
                (info.auth_provider.is_some(), "uses an auth-provider plugin"),
                (info.token_file.is_some(), "reads a token file"),
                (
                    info.client_certificate.is_some() || info.client_key.is_some(),
                    "reads its client certificate or key from a file",
                ),
            ];
            if let Some((_, what)) = refused.iter().find(|(r, _)| *r) {
                return Err(format!(
                    "user {:?} {what}, which a kubeconfig from a Secret may not: use inline credentials (token, client-certificate-data)",
                    user.name
                ));
            }
        }
        for cluster in &config.clusters {
            if cluster
                .cluster
                .as_ref()
                .is_some_and(|c| c.certificate_authority.is_some())
            {
                return Err(format!(
                    "cluster {:?} reads its certificate authority from a file, which a kubeconfig from a Secret may not: use certificate-authority-data",
                    cluster.name
                ));
            }
        }
    }
    let context = config
        .current_context
        .as_deref()
        .ok_or_else(|| "the kubeconfig has no current-context".to_owned())?;
    let named = config
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| format!("the kubeconfig has no context {context:?}"))?;
    if server_of(&config).is_none() {
        return Err(format!(
            "the kubeconfig's cluster {:?} has no server",
            named.cluster
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn kubeconfig(user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: b\n  cluster:\n    server: https://10.0.0.1:6443\ncontexts:\n- name: b\n  context: {{cluster: b, user: b}}\ncurrent-context: b\nusers:\n- name: b\n  user: {user}\n"
        )
    }

    fn secret(labels: &[(&str, &str)], data: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some("remote".into());
        s.metadata.namespace = Some("istio-system".into());
        s.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        s.data = Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        );
        s
    }

    #[test]
    fn secrets_are_remote_by_either_label_set_to_true() {
        assert!(is_remote_secret(&secret(
            &[("istio/multiCluster", "true")],
            &[]
        )));
        assert!(is_remote_secret(&secret(
            &[("sextant.io/multiCluster", "true")],
            &[]
        )));
        assert!(!is_remote_secret(&secret(
            &[("istio/multiCluster", "false")],
            &[]
        )));
        assert!(!is_remote_secret(&secret(&[("app", "x")], &[])));
    }

    #[test]
    fn each_key_is_a_cluster_and_the_local_cluster_is_skipped() {
        let good = kubeconfig("{token: abc}");
        let s = secret(
            &[("istio/multiCluster", "true")],
            &[("B", &good), ("Kubernetes", &good), ("C", &good)],
        );
        let found = registrations(&s, "Kubernetes");
        let ids: Vec<&str> = found.iter().map(|r| r.cluster.as_str()).collect();
        assert_eq!(ids, ["B", "C"]);
        assert!(found.iter().all(|r| r.read.is_ok()), "{found:?}");
        assert_eq!(
            found[0].origin.to_string(),
            "Secret istio-system/remote key B"
        );
    }

    #[test]
    fn string_data_counts_and_wins_over_data() {
        let mut s = secret(&[("istio/multiCluster", "true")], &[("B", "not yaml: [")]);
        s.string_data = Some([("B".to_owned(), kubeconfig("{token: abc}"))].into());
        let found = registrations(&s, "Kubernetes");
        assert_eq!(found.len(), 1);
        assert!(found[0].read.is_ok(), "{found:?}");
    }

    #[test]
    fn unreadable_kubeconfigs_name_the_secret_and_key_and_quote_nothing() {
        let s = secret(
            &[("istio/multiCluster", "true")],
            &[("B", "secret-token-value: [unclosed")],
        );
        let error = registrations(&s, "Kubernetes")[0]
            .read
            .clone()
            .expect_err("unreadable");
        assert!(
            error.starts_with("Secret istio-system/remote key B: "),
            "{error}"
        );
        assert!(!error.contains("secret-token-value"), "{error}");
        let big = "x".repeat(MAX_KUBECONFIG_BYTES + 1);
        let error = read_kubeconfig(big.as_bytes(), false).expect_err("too big");
        assert!(error.contains("more than the 131072 read"), "{error}");
        let error = read_kubeconfig(b"\xff\xfe", false).expect_err("binary");
        assert!(error.contains("not UTF-8"), "{error}");
        let error =
            read_kubeconfig(b"apiVersion: v1\nkind: Config\n", false).expect_err("no context");
        assert!(error.contains("no current-context"), "{error}");
    }

    #[test]
    fn cluster_ids_are_checked_as_secret_data_keys() {
        for good in ["B", "cluster-b", "us_east.1"] {
            assert_eq!(check_cluster_id(good), Ok(()), "{good}");
        }
        let error = check_cluster_id("b/c").expect_err("a slash");
        assert!(
            error.contains("'/'") && error.contains("Secret data key"),
            "{error}"
        );
        assert!(check_cluster_id("").is_err());
        let long = "b".repeat(MAX_CLUSTER_ID + 1);
        assert!(
            check_cluster_id(&long)
                .expect_err("too long")
                .contains("253")
        );
        let read = Registration::new(
            "B",
            Origin::File("b".into()),
            kubeconfig("{token: a}").into(),
        );
        assert_eq!(read.server.as_deref(), Some("https://10.0.0.1:6443"));
    }

    #[test]
    fn secrets_may_not_run_commands_or_read_files_but_files_may() {
        for user in [
            "{exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh}}",
            "{auth-provider: {name: gcp}}",
            "{tokenFile: /var/run/secrets/token}",
            "{client-certificate: /etc/cert.pem, client-key: /etc/key.pem}",
        ] {
            let text = kubeconfig(user);
            let error = read_kubeconfig(text.as_bytes(), false).expect_err(user);
            assert!(error.contains("may not"), "{user}: {error}");
            assert!(read_kubeconfig(text.as_bytes(), true).is_ok(), "{user}");
        }
        let ca_file = kubeconfig("{token: abc}").replace(
            "server: https://10.0.0.1:6443",
            "server: https://10.0.0.1:6443\n    certificate-authority: /etc/ca.pem",
        );
        let error = read_kubeconfig(ca_file.as_bytes(), false).expect_err("a CA file");
        assert!(
            error.contains("certificate authority from a file"),
            "{error}"
        );
    }
}
