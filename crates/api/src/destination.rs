//! Where traffic goes: a service host, subset and port.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// A port on a destination service (`PortSelector`).
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PortSelector {
    /// Valid port number.
    pub number: Option<u32>,
}

/// The network addressable service to which a request or connection is sent.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Destination {
    /// The name of a service from the service registry.
    pub host: String,
    /// The name of a subset within the service.
    pub subset: Option<String>,
    /// Specifies the port on the host that is being addressed.
    pub port: Option<PortSelector>,
}
