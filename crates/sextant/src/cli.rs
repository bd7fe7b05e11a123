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
            Command::Version => {
                println!("sextant {}", env!("CARGO_PKG_VERSION"));
                ExitCode::SUCCESS
            }
        }
    }
}
