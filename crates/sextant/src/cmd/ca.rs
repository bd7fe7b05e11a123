//! `sextant ca init` and `sextant ca issue`: a CA directory for `serve --ca-dir`, and workload
//! certificates from it for proxies that authenticate to the secure xDS port with a client
//! certificate (plain Envoy outside Kubernetes, where there are no service-account tokens).

use std::{path::Path, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use sextant_ca::{Ca, SystemClock};
use sextant_model::Identity;

use crate::{
    ca_store::{self, write_file},
    cli::{CaCommand, IssueArgs},
};

/// Longest workload certificate issued (Istio's `MAX_WORKLOAD_CERT_TTL`).
const MAX_TTL_HOURS: u64 = 90 * 24;

pub fn run(command: CaCommand) -> ExitCode {
    let result = match command {
        CaCommand::Init { dir } => init(&dir),
        CaCommand::Issue(args) => issue(args),
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
    write_file(&out_dir.join("root-cert.pem"), ca.cert_pem(), 0o644)?;
    println!(
        "wrote {identity} to {}/cert-chain.pem, key.pem and root-cert.pem",
        out_dir.display()
    );
    Ok(())
}
