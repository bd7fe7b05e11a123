use std::process::ExitCode;

use clap::Parser;

// Compiling configuration allocates many short-lived buffers; mimalloc keeps that cheap
// (the compile benchmark's figure is measured with it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    sextant::cli::Cli::parse().run()
}
