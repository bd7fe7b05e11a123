use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    sextant::cli::Cli::parse().run()
}
