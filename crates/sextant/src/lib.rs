//! The `sextant` command: every subcommand and the glue between the library crates.

pub mod admin;
pub mod cli;
pub mod cmd;
pub mod demo;
pub mod files;
pub mod mesh;
pub mod metrics;
