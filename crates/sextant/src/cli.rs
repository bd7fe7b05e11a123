//! Command-line interface.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

use crate::cmd;

/// Sextant: a service-mesh control plane compatible with Istio's traffic-management API.
#[derive(Debug, Parser)]
#[command(name = "sextant", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check VirtualService and DestinationRule manifests offline: schema, Istio's semantic
    /// rules, and references between the objects given.
    Validate(ValidateArgs),
    /// Show the Envoy configuration a proxy gets from a directory of manifests.
    ProxyConfig(ProxyConfigArgs),
    /// Print the CustomResourceDefinitions Sextant serves (generated from its API types).
    Crds(CrdsArgs),
    /// Print the version.
    Version,
}

/// Arguments of `sextant validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Files or directories to check (`-` reads standard input). Directories are read
    /// recursively for `.yaml`, `.yml` and `.json` files.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Treat warnings as errors.
    #[arg(long)]
    pub strict: bool,
}

/// How `validate` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// `path:line: severity: message`, like a compiler.
    Text,
    /// One JSON document for tools.
    Json,
}

/// Arguments of `sextant proxy-config`.
#[derive(Debug, clap::Args)]
pub struct ProxyConfigArgs {
    /// Which resources to show.
    #[arg(value_enum)]
    pub resource: ResourceKind,
    /// Directory of YAML manifests (Services, EndpointSlices, Pods, Namespaces,
    /// VirtualServices, DestinationRules).
    #[arg(long)]
    pub config_dir: PathBuf,
    /// The proxy's node id, `sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`.
    #[arg(long)]
    pub proxy: String,
    /// Node metadata, `KEY=VALUE` (e.g. `INTERCEPTION_MODE=NONE`, `ISTIO_VERSION=1.28`,
    /// `SEXTANT_BIND_ADDRESS=127.0.0.2`, `LABELS=app=a,version=v1`).
    #[arg(long = "meta")]
    pub meta: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ProxyConfigOutput::Table)]
    pub output: ProxyConfigOutput,
    /// Namespace for objects that name none.
    #[arg(long, default_value = "default")]
    pub namespace: String,
}

/// Resource types of `proxy-config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResourceKind {
    /// CDS.
    Clusters,
    /// LDS.
    Listeners,
    /// RDS.
    Routes,
    /// EDS.
    Endpoints,
    /// Everything.
    All,
}

/// Output formats of `proxy-config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProxyConfigOutput {
    /// Columns, like `istioctl proxy-config`.
    Table,
    /// Envoy's JSON field names.
    Json,
    /// A complete Envoy bootstrap with the resources as static_resources.
    EnvoyStatic,
}

/// Arguments of `sextant crds`.
#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Write one file per CRD into this directory instead of printing them.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

impl Cli {
    /// Runs the chosen subcommand and returns the process exit code.
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Validate(args) => cmd::validate::run(args),
            Command::Crds(args) => cmd::crds::run(args),
            Command::ProxyConfig(args) => cmd::proxy_config::run(args),
            Command::Version => {
                println!("sextant {}", env!("CARGO_PKG_VERSION"));
                ExitCode::SUCCESS
            }
        }
    }
}
