//! `sextant-testapi`: the test API server as a program (see the library documentation).

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use clap::Parser;

/// A small Kubernetes API server for tests and local use; kubectl, helm and kube-rs can talk
/// to it through the kubeconfig it writes.
#[derive(Parser, Debug)]
#[command(name = "sextant-testapi", version)]
struct Args {
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: std::net::IpAddr,
    /// Keep objects here, so that they survive a restart.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write a kubeconfig for this server here.
    #[arg(long, default_value = "kubeconfig")]
    kubeconfig: PathBuf,
    /// A bearer token TokenReview accepts, as TOKEN=USERNAME, or TOKEN=USERNAME@AUD1,AUD2 for a
    /// token bound to those audiences (repeatable).
    #[arg(long = "token", value_parser = parse_token)]
    tokens: Vec<(String, String)>,
}

fn parse_token(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(t, u)| (t.to_owned(), u.to_owned()))
        .filter(|(t, u)| !t.is_empty() && !u.is_empty())
        .ok_or_else(|| format!("expected TOKEN=USERNAME, got {s:?}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(dir) = &args.data_dir {
        std::fs::create_dir_all(dir)?;
    }
    let handle = sextant_testapi::start(sextant_testapi::Options {
        listen: Some(SocketAddr::new(args.address, args.port)),
        data_dir: args.data_dir,
        kubeconfig: Some(args.kubeconfig.clone()),
        tokens: args.tokens.into_iter().collect::<BTreeMap<_, _>>(),
        ..Default::default()
    })
    .await?;
    // One line on stdout for scripts and tests: the URL and the kubeconfig.
    println!("{} {}", handle.url(), args.kubeconfig.display());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
