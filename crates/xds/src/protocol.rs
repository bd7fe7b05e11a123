//! The xDS protocol as synchronous state machines, one per stream, with no IO: requests and
//! resource updates go in, responses come out. `Sotw` implements state-of-the-world ADS and
//! `Delta` incremental ADS, following the xDS spec and istiod's choices:
//!
//! - CDS and LDS are wildcard types; EDS and RDS are named.
//! - A request with an empty nonce (first request, reconnect) is always answered.
//! - A request whose nonce is not the last one sent is stale and ignored.
//! - A request carrying `error_detail` for the last nonce is a NACK: the error is kept and
//!   nothing is sent; that same version is never sent again, a newer one will be.
//! - A request for the last nonce with unchanged names is an ACK: nothing is sent.
//! - After clusters are sent, the next EDS request is answered even if nothing changed (Envoy
//!   needs the assignments to finish warming updated clusters).
//! - Updates are level-triggered: a type is sent only when its content differs from what the
//!   proxy last received, so a slow proxy simply gets the newest state.
//! - State of the world: an update of a named type (EDS, RDS) carries only the resources that
//!   changed, as the protocol allows for those types and istiod does for EDS (an endpoint
//!   change is one assignment, not all of them); an explicit request gets the whole set. CDS
//!   and LDS responses always carry everything.
//!
//! - On-demand virtual hosts (VHDS, `vhds`) are delta only: a name asked for is answered in
//!   the next response, by the virtual host that serves it (again, even if the proxy holds it)
//!   or by a resource without a body; later updates carry the virtual hosts that answer the
//!   names the stream asked for, and only when they change.
//!
//! `resources` is what a stream serves from (a proxy's shared and own parts, by type), `sotw`
//! and `delta` the two state machines. What streams share is given to each machine: the
//! [`Interner`] of subscribed names (one per server) and the [`Clock`] statuses are stamped
//! with.

mod delta;
mod resources;
mod sotw;
pub mod vhds;

use std::time::SystemTime;

pub use delta::{Delta, DeltaResponse};
pub use resources::{PUSH_ORDER, ProxyResources, ResourceSet, is_wildcard_type, resources_of};
pub use sotw::{Interner, Names, Sotw, SotwRequest, SotwResponse};

/// The time the state machines record in [`TypeStatus`] (nothing they decide depends on it).
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// What is known about one type of one stream, for `/debug/syncz`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeStatus {
    /// Last version sent.
    pub sent_version: Option<String>,
    /// Nonce of the last response.
    pub sent_nonce: Option<String>,
    /// When it was sent.
    pub sent_at: Option<SystemTime>,
    /// Last version the proxy ACKed.
    pub acked_version: Option<String>,
    /// When.
    pub acked_at: Option<SystemTime>,
    /// Last NACK: version and Envoy's error text.
    pub nack: Option<(String, String)>,
    /// Responses sent.
    pub responses: u64,
    /// Resources in the last response.
    pub resources: usize,
}

impl TypeStatus {
    fn record_sent(&mut self, version: &str, nonce: &str, resources: usize, at: SystemTime) {
        self.sent_version = Some(version.to_owned());
        self.sent_nonce = Some(nonce.to_owned());
        self.sent_at = Some(at);
        self.responses += 1;
        self.resources = resources;
    }
}

/// Names one subscription may hold by default: W-L's sidecar subscribes to about 60,000
/// load assignments (10,000 services, two ports, a default and two subsets each).
pub const DEFAULT_SUBSCRIPTION_NAMES: usize = 100_000;

/// Bytes of a NACK's error text kept by default. Envoy's own messages name the resource
/// and the field at fault in a few hundred bytes; a peer's megabytes are not worth keeping.
pub const DEFAULT_NACK_MESSAGE_BYTES: usize = 4096;

/// What a stream's state machine keeps of what its peer sends. Everything here is held per
/// stream and rendered by `/debug/syncz` and the logs, so a peer must not choose its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a NACK's error text kept; the rest is cut (and the cut said).
    pub nack_message_bytes: usize,
    /// Names one type's subscription may hold; a request that would pass it is refused.
    pub subscription_names: usize,
}

impl Limits {
    /// Refuses a subscription of `type_url` that would hold `names` names.
    pub fn admit_names(&self, type_url: &str, names: usize) -> Result<(), Refused> {
        if names > self.subscription_names {
            return Err(Refused::TooManyNames {
                type_url: type_url.to_owned(),
                names,
                limit: self.subscription_names,
            });
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            nack_message_bytes: DEFAULT_NACK_MESSAGE_BYTES,
            subscription_names: DEFAULT_SUBSCRIPTION_NAMES,
        }
    }
}

/// A request refused by one of the [`Limits`]; the stream ends with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The subscription to `type_url` would hold `names` names, more than `limit`.
    TooManyNames {
        type_url: String,
        names: usize,
        limit: usize,
    },
}

impl Refused {
    /// The bound that refused it, as `sextant_xds_bounded_total` labels it.
    pub fn bound(&self) -> &'static str {
        match self {
            Refused::TooManyNames { .. } => "subscription_names",
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::TooManyNames {
                type_url,
                names,
                limit,
            } => write!(
                f,
                "the subscription to {type_url} would hold {names} names, more than {limit}"
            ),
        }
    }
}

/// `message` as kept within `limit` bytes, cut on a character boundary with the cut said;
/// and whether it was cut.
pub(crate) fn kept_message(message: &str, limit: usize) -> (String, bool) {
    if message.len() <= limit {
        return (message.to_owned(), false);
    }
    let mut end = limit;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let cut = message.len() - end;
    (
        format!("{}... ({cut} more bytes cut)", &message[..end]),
        true,
    )
}

/// An event worth counting (metrics) that the state machine saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The proxy ACKed a version.
    Ack { type_url: String },
    /// The proxy rejected a version; `error` is its text as kept (see [`Limits`]).
    Nack {
        type_url: String,
        error: String,
        /// The text was longer than the limit and was cut.
        truncated: bool,
    },
    /// A request was refused by a bound (`Refused::bound`).
    Refused { bound: &'static str },
    /// A response for an older nonce arrived and was ignored.
    Stale { type_url: String },
    /// A response was sent.
    Sent { type_url: String, resources: usize },
}
