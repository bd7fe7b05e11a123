//! A Pod's traffic capture: the rules Istio's `istio-iptables` init step puts in the Pod's
//! network namespace so that its TCP traffic passes through the sidecar's Envoy (outbound to
//! 15001, inbound to 15006), and nothing the proxy itself sends is captured again.
//!
//! [`Flags`] holds `istio-iptables`' flags as given; [`CaptureConfig::parse`] checks them.
//! [`rules::ruleset`] lists the rules for one address family in Istio's order, and
//! [`Plan`] renders them for a backend (`iptables-restore` input or an `nft -f` script) with
//! the `ip` commands TPROXY needs. Everything here is pure but [`apply`], which finds the
//! tools and runs a plan.

pub mod apply;
mod cidr;
mod config;
mod inet6;
mod iptables;
mod nft;
mod plan;
pub mod rules;

pub use cidr::Cidr;
pub use config::{
    CaptureConfig, FlagError, Flags, InterceptionMode, PortList, Problem, Ranges, defaults,
};
pub use inet6::has_ipv6;
pub use plan::{Backend, Plan, Repeat, Step, Tool};
pub use rules::Family;
