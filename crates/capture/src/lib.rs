//! A Pod's traffic capture: the rules Istio's `istio-iptables` init step puts in the Pod's
//! network namespace so that its TCP traffic passes through the sidecar's Envoy (outbound to
//! 15001, inbound to 15006), and nothing the proxy itself sends is captured again.
//!
//! [`Flags`] holds `istio-iptables`' flags as given; [`CaptureConfig::parse`] checks them.
//! [`rules::ruleset`] lists the rules for one address family in Istio's order, and
//! [`Plan`] renders them for a backend (`iptables-restore` input or an `nft -f` script) with
//! the `ip` commands TPROXY needs, after a [`Cleanup`] of whatever earlier runs left in any
//! mode, backend or family. Everything here is pure but [`apply`], which finds the tools,
//! reads what the namespace holds and runs a plan.

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
pub use inet6::{Ipv6Interface, ipv6_address};
pub use plan::{Backend, Cleanup, Plan, ROUTE_PROTOCOL, Repeat, Step, Tool};
pub use rules::Family;
