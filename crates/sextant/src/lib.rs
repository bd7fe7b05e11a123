//! The `sextant` command: every subcommand and the glue between the library crates.

pub mod admin;
pub mod ca;
pub mod cli;
pub mod cmd;
pub mod demo;
pub mod files;
pub mod mesh;
pub mod metrics;
pub mod webhook;

/// A listener for the xDS port: a connect storm of every proxy in the mesh must not overflow
/// the accept backlog (a dropped SYN costs a proxy a second), and responses must not wait for
/// Nagle's algorithm.
pub fn xds_incoming(
    addr: std::net::SocketAddr,
) -> std::io::Result<tonic::transport::server::TcpIncoming> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    Ok(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)))
}
