//! The `sextant` command: every subcommand and the glue between the library crates.

pub mod admin;
pub mod ca_store;
pub mod certificates;
pub mod cli;
pub mod cmd;
pub mod credentials;
#[cfg(feature = "demo")]
pub mod demo;
pub mod expiry;
pub mod generator;
pub mod inject;
pub mod listen;
pub mod metrics;
pub mod push_status;
pub mod quarantine;
pub mod secure;
pub mod streams;
pub mod tls;
pub mod webhook;

/// A listener for the plaintext xDS port (see [`tls::listen`]); responses must not wait for
/// Nagle's algorithm.
pub fn xds_incoming(
    addr: std::net::SocketAddr,
) -> std::io::Result<tonic::transport::server::TcpIncoming> {
    Ok(tonic::transport::server::TcpIncoming::from(tls::listen(addr)?).with_nodelay(Some(true)))
}

/// The gRPC server settings of both xDS ports.
pub fn xds_server() -> tonic::transport::Server {
    use std::time::Duration;
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // Rebalance long-lived streams across replicas, as istiod does (30 min).
        .max_connection_age(Duration::from_secs(30 * 60))
        .max_connection_age_grace(Duration::from_secs(10))
        // What a proxy may send before the server reads it: a stream waiting to reassemble a
        // large request (see `sextant_xds::grpc::LARGE_REQUEST`) holds at most this much.
        .initial_stream_window_size(Some(sextant_xds::grpc::LARGE_REQUEST as u32))
        .initial_connection_window_size(Some(4 * sextant_xds::grpc::LARGE_REQUEST as u32))
}

/// The gRPC server of an xDS port with its streams bounded per connection by `streams`.
pub fn bounded_xds_server(
    streams: streams::StreamCap,
) -> tonic::transport::Server<
    tower::layer::util::Stack<streams::StreamCap, tower::layer::util::Identity>,
> {
    xds_server()
        .max_concurrent_streams(Some(streams.http2_limit()))
        .layer(streams)
}
