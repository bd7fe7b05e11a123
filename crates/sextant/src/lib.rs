//! The `sextant` command: every subcommand and the glue between the library crates.

pub mod admin;
pub mod ca;
pub mod cli;
pub mod cmd;
pub mod demo;
pub mod files;
pub mod mesh;
pub mod metrics;
pub mod secure;
pub mod tls;
pub mod webhook;

/// A listener for the plaintext xDS port (see [`tls::listen`]); responses must not wait for
/// Nagle's algorithm.
pub fn xds_incoming(
    addr: std::net::SocketAddr,
) -> std::io::Result<tonic::transport::server::TcpIncoming> {
    Ok(tonic::transport::server::TcpIncoming::from(tls::listen(addr)?).with_nodelay(Some(true)))
}
