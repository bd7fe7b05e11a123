//! `sextant ca init` and `sextant ca issue`: a CA directory for `serve --ca-dir`, and workload
//! certificates from it for proxies that authenticate to the secure xDS port with a client
//! certificate (plain Envoy outside Kubernetes, where there are no service-account tokens).

use std::{path::Path, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use sextant_ca::{Ca, SystemClock};
use sextant_model::Identity;

use crate::{
    ca_store::{self, ROTATION_NEXT, ROTATION_NEXT_KEY, ROTATION_PREVIOUS, write_file},
    cli::{CaCommand, IssueArgs, RotateStep},
};

/// Longest workload certificate issued (Istio's `MAX_WORKLOAD_CERT_TTL`).
const MAX_TTL_HOURS: u64 = 90 * 24;

pub fn run(command: CaCommand) -> ExitCode {
    let result = match command {
        CaCommand::Init { dir } => init(&dir),
        CaCommand::Issue(args) => issue(args),
        CaCommand::Rotate { dir, step } => rotate(&dir, step),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init(dir: &Path) -> anyhow::Result<()> {
    for file in ["ca.crt", "ca.key"] {
        if dir.join(file).exists() {
            anyhow::bail!(
                "{} exists; not replacing a CA that may have issued certificates",
                dir.join(file).display()
            );
        }
    }
    ca_store::write_dir(&Ca::generate(Arc::new(SystemClock))?, dir)?;
    println!("wrote {}/ca.crt and ca.key", dir.display());
    Ok(())
}

fn issue(args: IssueArgs) -> anyhow::Result<()> {
    let IssueArgs {
        ca_dir,
        namespace,
        service_account,
        trust_domain,
        ttl_hours,
        out_dir,
    } = args;
    if ttl_hours == 0 || ttl_hours > MAX_TTL_HOURS {
        anyhow::bail!("--ttl-hours {ttl_hours}: must be between 1 and {MAX_TTL_HOURS}");
    }
    let uri = format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}");
    let identity = Identity::parse(&uri).with_context(|| {
        format!("{uri} is not a SPIFFE identity (--trust-domain, --namespace and --service-account must be non-empty and contain no '/')")
    })?;
    let ca = ca_store::read_dir(&ca_dir, Arc::new(SystemClock))?;
    let workload = ca.workload(&identity, Duration::from_secs(ttl_hours * 3600))?;
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    write_file(&out_dir.join("cert-chain.pem"), &workload.chain_pem, 0o644)?;
    write_file(&out_dir.join("key.pem"), &workload.key_pem, 0o600)?;
    write_file(&out_dir.join("root-cert.pem"), &ca.roots_pem(), 0o644)?;
    println!(
        "wrote {identity} to {}/cert-chain.pem, key.pem and root-cert.pem",
        out_dir.display()
    );
    Ok(())
}

/// One step of a root rotation in `dir`, each taken on every replica (a rolling restart, or
/// the next start) before the next step:
/// 1. `trust`: a new root is made and trusted beside the current one, which still signs;
/// 2. `sign`: the new root signs, and the old one stays trusted while the certificates it
///    signed turn over (a workload TTL, 24 h by default);
/// 3. `retire`: the old root is no longer trusted.
fn rotate(dir: &Path, step: RotateStep) -> anyhow::Result<()> {
    let path = |f: &str| dir.join(f);
    // A `sign` cut short leaves ca.crt moved and the new root not yet in place: running it
    // again finishes it.
    let signing_cut_short = matches!(step, RotateStep::Sign)
        && path(ROTATION_PREVIOUS).exists()
        && (path(ROTATION_NEXT).exists() || path(ROTATION_NEXT_KEY).exists());
    if !path("ca.crt").exists() && !signing_cut_short {
        if path("ca-cert.pem").exists() {
            anyhow::bail!(
                "{} holds a plug-in CA (ca-cert.pem): its root is the operator's, rotated by replacing the four files",
                dir.display()
            );
        }
        anyhow::bail!("{} has no ca.crt: nothing to rotate", dir.display());
    }
    match step {
        RotateStep::Trust => {
            if path(ROTATION_NEXT).exists() || path(ROTATION_PREVIOUS).exists() {
                anyhow::bail!(
                    "a rotation is already in progress in {}: finish it first",
                    dir.display()
                );
            }
            let next = Ca::generate(Arc::new(SystemClock))?;
            write_file(&path(ROTATION_NEXT_KEY), next.key_pem(), 0o600)?;
            write_file(&path(ROTATION_NEXT), next.cert_pem(), 0o644)?;
            println!(
                "step 1 of 3: {ROTATION_NEXT} is trusted beside ca.crt; restart every replica, then run `--step sign`"
            );
        }
        RotateStep::Sign => {
            if !signing_cut_short
                && (!path(ROTATION_NEXT).exists() || !path(ROTATION_NEXT_KEY).exists())
            {
                anyhow::bail!(
                    "no {ROTATION_NEXT} in {}: run `--step trust` first",
                    dir.display()
                );
            }
            if path("ca.crt").exists()
                && path(ROTATION_PREVIOUS).exists()
                && path(ROTATION_NEXT).exists()
            {
                anyhow::bail!(
                    "{} holds ca.crt, {ROTATION_PREVIOUS} and {ROTATION_NEXT}: retire the previous root first",
                    dir.display()
                );
            }
            // Each rename is one step; a run cut short between them is finished by the next.
            if path("ca.crt").exists() && !path(ROTATION_PREVIOUS).exists() {
                std::fs::rename(path("ca.crt"), path(ROTATION_PREVIOUS))?;
            }
            if path(ROTATION_NEXT_KEY).exists() {
                std::fs::rename(path(ROTATION_NEXT_KEY), path("ca.key"))?;
            }
            if path(ROTATION_NEXT).exists() {
                std::fs::rename(path(ROTATION_NEXT), path("ca.crt"))?;
            }
            println!(
                "step 2 of 3: the new root signs and {ROTATION_PREVIOUS} stays trusted; restart every replica, wait a workload TTL, then run `--step retire`"
            );
        }
        RotateStep::Retire => {
            if !path(ROTATION_PREVIOUS).exists() {
                if path(ROTATION_NEXT).exists() {
                    anyhow::bail!(
                        "{ROTATION_NEXT} in {} does not sign yet: run `--step sign` first",
                        dir.display()
                    );
                }
                anyhow::bail!(
                    "no {ROTATION_PREVIOUS} in {}: nothing to retire",
                    dir.display()
                );
            }
            std::fs::remove_file(path(ROTATION_PREVIOUS))?;
            println!("step 3 of 3: the old root is no longer trusted; restart every replica");
        }
    }
    Ok(())
}
