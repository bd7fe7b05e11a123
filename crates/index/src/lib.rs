//! Turns Kubernetes objects into the mesh model.
//!
//! `manifest` reads YAML streams with line information; `parse` holds the one parser per kind
//! that the admission webhook, `sextant validate` and the index all share, so an object is
//! accepted or rejected the same way everywhere.

pub mod analysis;
pub mod check;
mod delegate;
mod index;
pub mod manifest;
pub mod parse;

pub use index::{
    Changes, Index, MAX_GATEWAY_ADDRESSES, MAX_GATEWAYS_PER_NETWORK, NETWORK_LABEL, Object,
    ObjectError, REMOTE_KINDS,
};
