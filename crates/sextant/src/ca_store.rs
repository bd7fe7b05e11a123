//! Where the CA is kept, so that a restart never changes the root:
//! - a plug-in CA in Istio's `cacerts` layout (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`,
//!   `cert-chain.pem`): the directory `--ca-dir`, or the Secret `cacerts` in a cluster.
//!   Sextant signs as the operator's intermediate;
//! - otherwise Sextant's own root (`ca.crt`, `ca.key`): in `--ca-dir`, else in the cluster's
//!   Secret `sextant-ca` (created by the first replica and shared by the others, so every
//!   replica's serving certificate is trusted by one `caBundle`), else in the state directory
//!   of directory mode. A missing root is generated there once and read ever after.
//!
//! The CA itself ([`sextant_ca`]) only sees PEM text.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use sextant_ca::{Ca, Clock};

/// Name of the Secret holding Sextant's own root in the cluster.
pub const SECRET: &str = "sextant-ca";

/// Name of the Secret holding a plug-in CA (Istio's).
pub const PLUGIN_SECRET: &str = "cacerts";

/// The CA in `dir`: a plug-in CA (`ca-cert.pem` present), else Sextant's root (`ca.crt`,
/// `ca.key`), generated and written there first if the directory has neither.
pub fn read_dir(dir: &Path, clock: Arc<dyn Clock>) -> anyhow::Result<Ca> {
    let where_ = dir.display().to_string();
    let read = |f: &str| -> anyhow::Result<Option<String>> {
        let path = dir.join(f);
        if !path.exists() {
            return Ok(None);
        }
        std::fs::read_to_string(&path)
            .map(Some)
            .with_context(|| format!("reading {}", path.display()))
    };
    match from_files(&read, &where_, clock.clone())? {
        Some(ca) => Ok(ca),
        None if read("ca.key")?.is_some() => anyhow::bail!("{where_} has ca.key but no ca.crt"),
        None => generate_into(dir, clock),
    }
}

/// The CA in a set of named files (a directory's, or a Secret's keys): Istio's plug-in layout
/// when `ca-cert.pem` is there, else Sextant's own root (`ca.crt`, `ca.key`) with the roots of
/// a rotation in progress (`sextant ca rotate`) trusted beside it; `None` when neither is.
/// `where_` names the place in messages.
fn from_files(
    file: &dyn Fn(&str) -> anyhow::Result<Option<String>>,
    where_: &str,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Option<Ca>> {
    let need = |f: &str| file(f)?.with_context(|| format!("{where_} has no {f}"));
    if let Some(cert) = file("ca-cert.pem")? {
        if file("ca.crt")?.is_some() {
            tracing::warn!(%where_, "both a plug-in CA (ca-cert.pem) and ca.crt are here: the plug-in CA is used");
        }
        tracing::info!(%where_, "the plug-in CA (Istio's cacerts layout) signs as an intermediate");
        let chain: Vec<String> = file("cert-chain.pem")?.into_iter().collect();
        let ca = Ca::intermediate(
            &cert,
            &need("ca-key.pem")?,
            &chain,
            &need("root-cert.pem")?,
            clock,
        )
        .with_context(|| {
            format!(
                "the plug-in CA in {where_}: ca-cert.pem, ca-key.pem (a PKCS#8 key, as \
                     `openssl genpkey` writes), root-cert.pem and cert-chain.pem must be a CA \
                     certificate, its key, the roots and the chain between them"
            )
        })?;
        return Ok(Some(ca));
    }
    let Some(signing) = file("ca.crt")? else {
        return Ok(None);
    };
    tracing::info!(%where_, "Sextant's own root (ca.crt) signs");
    let mut bundle = signing.clone();
    for other in [ROTATION_NEXT, ROTATION_PREVIOUS] {
        if let Some(root) = file(other)? {
            bundle.push_str(&root);
        }
    }
    let ca = Ca::intermediate(&signing, &need("ca.key")?, &[], &bundle, clock)
        .with_context(|| format!("the CA in {where_}"))?;
    Ok(Some(ca))
}

/// A root being introduced by `sextant ca rotate` (trusted, not yet signing), and its key.
pub const ROTATION_NEXT: &str = "next-ca.crt";
/// Its key.
pub const ROTATION_NEXT_KEY: &str = "next-ca.key";
/// A root being retired (trusted, no longer signing).
pub const ROTATION_PREVIOUS: &str = "previous-ca.crt";

/// A new root written into `dir` at once (through a directory renamed into place), or, if
/// another process got there first, the root it wrote.
fn generate_into(dir: &Path, clock: Arc<dyn Clock>) -> anyhow::Result<Ca> {
    let ca = Ca::generate(clock.clone())?;
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = parent.join(format!(
        ".{}.{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("ca"),
        std::process::id()
    ));
    write_dir(&ca, &staging)?;
    let empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    if empty {
        let _ = std::fs::remove_dir(dir);
    }
    match std::fs::rename(&staging, dir) {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), "generated a root CA and stored it");
            Ok(ca)
        }
        Err(_) => {
            let _ = std::fs::remove_dir_all(&staging);
            read_dir(dir, clock)
        }
    }
}

/// Directory mode's CA without `--ca-dir`: the one in the state directory ([`default_dir`]),
/// made there the first time. A root found there that cannot be read is an error (a restart
/// must not change the root silently); where none can be stored (no home, a read-only file
/// system) the root lives as long as the process, with a warning.
pub fn from_state_dir(clock: Arc<dyn Clock>) -> anyhow::Result<Ca> {
    let Some(dir) = default_dir() else {
        tracing::warn!(
            "no --ca-dir and no HOME or XDG_STATE_HOME: the root lives only as long as this process"
        );
        return Ok(Ca::generate(clock)?);
    };
    if dir.join("ca.crt").exists() || dir.join("ca.key").exists() {
        return read_dir(&dir, clock);
    }
    match generate_into(&dir, clock.clone()) {
        Ok(ca) => Ok(ca),
        Err(e) => {
            tracing::warn!(
                dir = %dir.display(),
                error = format!("{e:#}"),
                "cannot store a root CA there (give --ca-dir): it lives only as long as this process"
            );
            Ok(Ca::generate(clock)?)
        }
    }
}

/// Where directory mode keeps its root when `--ca-dir` is not given:
/// `$XDG_STATE_HOME/sextant/ca`, else `~/.local/state/sextant/ca`.
pub fn default_dir() -> Option<std::path::PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|s| !s.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))?;
    Some(state.join("sextant/ca"))
}

/// The Secret `sextant-ca` in `namespace`, created with a new root if missing. Replicas
/// racing to create it all end up with the one that was created first.
pub async fn from_cluster(
    client: kube::Client,
    namespace: &str,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Ca> {
    use k8s_openapi::{ByteString, api::core::v1::Secret};
    use kube::api::{Api, PostParams};
    let api: Api<Secret> = Api::namespaced(client, namespace);
    // A Secret's keys as the files of a directory.
    let from_secret = |secret: Secret, name: &str| {
        let data = secret.data.unwrap_or_default();
        let file = |k: &str| -> anyhow::Result<Option<String>> {
            Ok(data
                .get(k)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned()))
        };
        from_files(
            &file,
            &format!("the Secret {namespace}/{name}"),
            clock.clone(),
        )?
        .with_context(|| format!("the Secret {namespace}/{name} holds no CA"))
    };
    if let Some(secret) = api
        .get_opt(PLUGIN_SECRET)
        .await
        .context("reading the Secret cacerts")?
    {
        return from_secret(secret, PLUGIN_SECRET);
    }
    for _ in 0..3 {
        if let Some(secret) = api.get_opt(SECRET).await.context("reading the CA Secret")? {
            return from_secret(secret, SECRET);
        }
        let ca = Ca::generate(clock.clone())?;
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(SECRET.to_owned()),
                ..Default::default()
            },
            data: Some(
                [
                    (
                        "ca.crt".to_owned(),
                        ByteString(ca.cert_pem().as_bytes().to_vec()),
                    ),
                    (
                        "ca.key".to_owned(),
                        ByteString(ca.key_pem().as_bytes().to_vec()),
                    ),
                ]
                .into(),
            ),
            type_: Some("Opaque".to_owned()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok(ca),
            // Another replica was first: use its root.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e).context("creating the CA Secret"),
        }
    }
    anyhow::bail!("the CA Secret {SECRET} keeps changing")
}

/// Writes `DIR/ca.crt` and `DIR/ca.key` (the key readable by the owner only).
pub fn write_dir(ca: &Ca, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_file(&dir.join("ca.crt"), ca.cert_pem(), 0o644)?;
    write_file(&dir.join("ca.key"), ca.key_pem(), 0o600)
}

/// Writes `text` to `path` with `mode` (on Unix), replacing what is there.
pub fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    use std::io::Write;
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // An existing file keeps its mode on open: set it, before the content goes in.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
