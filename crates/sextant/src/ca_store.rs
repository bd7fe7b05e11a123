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

/// Istio's plug-in CA files (`cacerts`).
pub const PLUGIN_FILES: [&str; 4] = [
    "ca-cert.pem",
    "ca-key.pem",
    "root-cert.pem",
    "cert-chain.pem",
];

/// The CA in `dir`: a plug-in CA (`ca-cert.pem` present), else Sextant's root (`ca.crt`,
/// `ca.key`), generated and written there first if the directory has neither.
pub fn read_dir(dir: &Path, clock: Arc<dyn Clock>) -> anyhow::Result<Ca> {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .with_context(|| format!("reading {}", dir.join(f).display()))
    };
    if dir.join("ca-cert.pem").exists() {
        if dir.join("ca.crt").exists() {
            tracing::warn!(dir = %dir.display(), "both a plug-in CA (ca-cert.pem) and ca.crt are here: the plug-in CA is used");
        }
        tracing::info!(dir = %dir.display(), "the plug-in CA (Istio's cacerts layout) signs as an intermediate");
        let chain = if dir.join("cert-chain.pem").exists() {
            vec![read("cert-chain.pem")?]
        } else {
            Vec::new()
        };
        return plugin(
            &read("ca-cert.pem")?,
            &read("ca-key.pem")?,
            &chain,
            &read("root-cert.pem")?,
            clock,
        )
        .with_context(|| format!("the plug-in CA in {}", dir.display()));
    }
    if !dir.join("ca.crt").exists() && !dir.join("ca.key").exists() {
        return generate_into(dir, clock);
    }
    // A rotation in progress (`sextant ca rotate`): the root being introduced and the one
    // being retired are trusted beside the signing root.
    tracing::info!(dir = %dir.display(), "Sextant's own root (ca.crt) signs");
    let signing = read("ca.crt")?;
    let mut bundle = signing.clone();
    for other in [ROTATION_NEXT, ROTATION_PREVIOUS] {
        if dir.join(other).exists() {
            bundle.push_str(&read(other)?);
        }
    }
    Ok(Ca::intermediate(
        &signing,
        &read("ca.key")?,
        &[],
        &bundle,
        clock,
    )?)
}

/// A root being introduced by `sextant ca rotate` (trusted, not yet signing), and its key.
pub const ROTATION_NEXT: &str = "next-ca.crt";
/// Its key.
pub const ROTATION_NEXT_KEY: &str = "next-ca.key";
/// A root being retired (trusted, no longer signing).
pub const ROTATION_PREVIOUS: &str = "previous-ca.crt";

fn plugin(
    cert: &str,
    key: &str,
    chain: &[String],
    root: &str,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Ca> {
    Ca::intermediate(cert, key, chain, root, clock).context(
        "ca-cert.pem, ca-key.pem (a PKCS#8 key, as `openssl genpkey` writes), root-cert.pem and \
         cert-chain.pem must be a CA certificate, its key, the roots and the chain between them",
    )
}

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
    if let Some(secret) = api
        .get_opt(PLUGIN_SECRET)
        .await
        .context("reading the Secret cacerts")?
    {
        let data = secret.data.unwrap_or_default();
        let field = |k: &str| {
            data.get(k)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .with_context(|| format!("the Secret {PLUGIN_SECRET} has no {k}"))
        };
        let chain = match data.get("cert-chain.pem") {
            Some(_) => vec![field("cert-chain.pem")?],
            None => Vec::new(),
        };
        return plugin(
            &field("ca-cert.pem")?,
            &field("ca-key.pem")?,
            &chain,
            &field("root-cert.pem")?,
            clock,
        )
        .with_context(|| format!("the plug-in CA in the Secret {namespace}/{PLUGIN_SECRET}"));
    }
    for _ in 0..3 {
        if let Some(secret) = api.get_opt(SECRET).await.context("reading the CA Secret")? {
            let data = secret.data.unwrap_or_default();
            let field = |k: &str| {
                data.get(k)
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .with_context(|| format!("the Secret {SECRET} has no {k}"))
            };
            // A rotation in progress: the same files as in a directory (see `read_dir`).
            let signing = field("ca.crt")?;
            let mut bundle = signing.clone();
            for other in [ROTATION_NEXT, ROTATION_PREVIOUS] {
                if data.contains_key(other) {
                    bundle.push_str(&field(other)?);
                }
            }
            return Ok(Ca::intermediate(
                &signing,
                &field("ca.key")?,
                &[],
                &bundle,
                clock,
            )?);
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
