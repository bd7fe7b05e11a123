//! What the demo, the end-to-end tests and the benchmarks share to drive Sextant from the
//! outside, the way a user or a proxy does:
//! - `tools`: the real Envoy, kubectl and helm (and the `sextant` binary of this build);
//! - `process`: child processes killed on drop, commands that must succeed or fail, waiting on
//!   a condition, free ports;
//! - `http`: HTTP/1.1 requests through hyper's client;
//! - `backend`: small HTTP backends (axum) that answer with their name;
//! - `serve`: `sextant serve` on free ports;
//! - `envoy`: a real Envoy started from `sextant bootstrap`;
//! - `traffic`: traffic splits, metrics and `/debug/syncz` entries;
//! - `ads_client`: a fake Envoy's ADS client (state of the world or delta) that subscribes and
//!   ACKs like Envoy, for the ADS benchmark and tests;
//! - `kubelet`: a node shim that runs the API server's Pods in those namespaces;
//! - `netns`: network namespaces joined by a bridge, standing for Pods on one node, for the
//!   sidecar-capture tests;
//! - `xds`: a first-response probe of the ADS port, plaintext or TLS, with a client
//!   certificate or a bearer token.
//!
//! Nothing here is part of the control plane; `sextant demo` uses it to show one.

pub mod ads_client;
pub mod backend;
pub mod envoy;
pub mod http;
pub mod kubelet;
pub mod netns;
pub mod process;
pub mod serve;
pub mod tools;
pub mod traffic;
pub mod xds;

pub use ads_client::AdsClient;
pub use backend::Backend;
pub use envoy::Envoy;
pub use http::{HttpsAnswer, TlsClient, http_get, http_post, https_request, request};
pub use process::{Process, free_port, run, run_fails, try_wait_for, wait_for};
pub use serve::Serve;
pub use tools::{
    envoy, example_certificates, grpc_python, helm, issue_certificate, kubectl, openssl, plugin_ca,
    repo, sextant_bin, tool,
};
pub use traffic::{assert_even_split, metric, split, syncz};
pub use xds::{SecureClient, first_clusters};
