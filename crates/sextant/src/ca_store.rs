//! Where the CA's root is kept: files (`--ca-dir DIR` with `ca.crt` and `ca.key`) or the
//! cluster (the Secret `sextant-ca`, created by the first replica and shared by the others,
//! so every replica's serving certificate is trusted by one `caBundle`). Without either the
//! root is generated for this process. The CA itself ([`sextant_ca`]) only sees PEM text.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use sextant_ca::{Ca, Clock};

/// Name of the Secret holding the root in the cluster.
pub const SECRET: &str = "sextant-ca";

/// `DIR/ca.crt` and `DIR/ca.key`.
pub fn read_dir(dir: &Path, clock: Arc<dyn Clock>) -> anyhow::Result<Ca> {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .with_context(|| format!("reading {}", dir.join(f).display()))
    };
    Ok(Ca::from_pem(&read("ca.crt")?, &read("ca.key")?, clock)?)
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
    for _ in 0..3 {
        if let Some(secret) = api.get_opt(SECRET).await.context("reading the CA Secret")? {
            let data = secret.data.unwrap_or_default();
            let field = |k: &str| {
                data.get(k)
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .with_context(|| format!("the Secret {SECRET} has no {k}"))
            };
            return Ok(Ca::from_pem(&field("ca.crt")?, &field("ca.key")?, clock)?);
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
