//! Compiles the mesh model into the Envoy v3 resources an Istio sidecar would receive.
//!
//! `compile(&Snapshot, &Proxy)` is a pure, deterministic function: no clock, no globals that
//! affect output, no cache inside. One module per xDS type (`cds`, `eds`, `lds`, `rds`);
//! `policy` applies DestinationRule traffic policy to clusters and `routes` translates
//! VirtualService rules. Names and defaults follow istiod (see `istio-compat.md` in the design
//! notes). Istio-proxy-only extensions (`istio.*` filters) are never emitted, so every resource
//! is accepted by stock Envoy. `json` renders resources with Envoy's field names and `bootstrap`
//! inlines them into a static Envoy bootstrap for `envoy --mode validate`.

pub mod bootstrap;
mod cds;
mod context;
mod eds;
pub mod json;
mod lds;
mod policy;
mod proto;
mod rds;
mod routes;

use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
    route::v3::RouteConfiguration,
};
use sextant_model::{Proxy, Snapshot};

pub use context::Context;

/// Type URLs of the resources the compiler produces.
pub mod type_url {
    /// CDS.
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// EDS.
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// LDS.
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// RDS.
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
}

/// Everything one proxy receives, each list sorted by resource name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// CDS.
    pub clusters: Vec<Cluster>,
    /// EDS, one per EDS cluster.
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// LDS.
    pub listeners: Vec<Listener>,
    /// RDS.
    pub routes: Vec<RouteConfiguration>,
}

/// Compiles the full configuration of `proxy` from `snapshot`.
pub fn compile(snapshot: &Snapshot, proxy: &Proxy) -> Resources {
    let ctx = Context::new(snapshot, proxy);
    let clusters = cds::clusters(&ctx);
    let endpoints = eds::load_assignments(&ctx, &clusters);
    let listeners = lds::listeners(&ctx);
    let routes = rds::route_configurations(&ctx);
    Resources {
        clusters,
        endpoints,
        listeners,
        routes,
    }
}
