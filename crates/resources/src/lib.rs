//! The encoded-resource vocabulary the compiler produces and the ADS server sends.
//!
//! A resource is encoded once ([`Encoded`]: name, protobuf bytes, content hash) and shared
//! (`Bytes`, `Arc`) by every scope and every stream that sends it; a proxy's configuration is
//! an [`EncodedResources`] of sorted [`List`]s. `type_url` and `secret` are the names both
//! sides agree on, and `wire` assembles protobuf fields from pre-encoded parts. The compiler
//! and `sextant-xds` both depend on this crate, so the server never depends on the compiler.

pub mod wire;

use std::{any::Any, sync::Arc};

use bytes::Bytes;

/// Type URLs of the resources Sextant serves.
pub mod type_url {
    /// CDS.
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// EDS.
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// LDS.
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// RDS.
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// SDS.
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
}

/// Istio's SDS names, which TLS contexts refer to and the control plane serves.
pub mod secret {
    /// The workload certificate and key.
    pub const WORKLOAD: &str = "default";
    /// The trust bundle.
    pub const ROOT: &str = "ROOTCA";
}

/// One resource encoded once: its name, protobuf bytes (shared, cheap to clone) and a content
/// hash used as its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Resource name.
    pub name: String,
    /// Protobuf encoding of the resource (not wrapped in `Any`).
    pub body: Body,
    /// xxh3 of the encoding.
    pub hash: u64,
}

/// A resource's encoding: one buffer, or parts sent one after the other. A route
/// configuration is kept as parts (one per virtual host) so that the parts are shared between
/// scopes and reused when a snapshot changes other virtual hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// The whole encoding.
    One(Bytes),
    /// The encoding is the concatenation of the parts; `len` is their total size.
    Parts {
        /// In order.
        parts: Arc<[Bytes]>,
        /// Total size.
        len: usize,
    },
}

impl Body {
    /// Encoded size.
    pub fn len(&self) -> usize {
        match self {
            Body::One(b) => b.len(),
            Body::Parts { len, .. } => *len,
        }
    }

    /// Whether the encoding is empty (a message with every field at its default).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffers to send, in order.
    pub fn chunks(&self) -> &[Bytes] {
        match self {
            Body::One(b) => std::slice::from_ref(b),
            Body::Parts { parts, .. } => parts,
        }
    }

    /// The encoding in one buffer (copied when in parts).
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Body::One(b) => b.clone(),
            Body::Parts { parts, len } => {
                let mut out = Vec::with_capacity(*len);
                for p in parts.iter() {
                    out.extend_from_slice(p);
                }
                out.into()
            }
        }
    }

    fn hash(&self) -> u64 {
        match self {
            Body::One(b) => xxhash_rust::xxh3::xxh3_64(b),
            Body::Parts { parts, .. } => {
                let mut h = xxhash_rust::xxh3::Xxh3::new();
                for p in parts.iter() {
                    h.update(p);
                }
                h.digest()
            }
        }
    }
}

impl Encoded {
    /// Encodes one message.
    pub fn new<M: prost::Message>(name: &str, message: &M) -> Encoded {
        Encoded::from_bytes(name, message.encode_to_vec())
    }

    /// Wraps already encoded bytes.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Encoded {
        Encoded::from_body(name, Body::One(bytes.into()))
    }

    /// Wraps an encoding made of parts.
    pub fn from_parts(name: &str, parts: Vec<Bytes>) -> Encoded {
        let len = parts.iter().map(Bytes::len).sum();
        Encoded::from_body(
            name,
            Body::Parts {
                parts: parts.into(),
                len,
            },
        )
    }

    fn from_body(name: &str, body: Body) -> Encoded {
        Encoded {
            name: name.to_owned(),
            hash: body.hash(),
            body,
        }
    }

    /// Decodes the resource (for display and tests).
    pub fn decode<M: prost::Message + Default>(&self) -> M {
        M::decode(self.body.to_bytes()).expect("resources are encoded from valid messages")
    }

    /// The version string sent to Envoy.
    pub fn version(&self) -> String {
        format!("{:016x}", self.hash)
    }
}

/// Resources of one type, sorted by name; shared by every scope with the same list.
pub type List = Arc<[Encoded]>;

/// What the producer of a set of resources keeps beside them to rebuild them later (the
/// compiler's record of where each route configuration's virtual hosts came from). Opaque
/// here: only its producer reads it, and an empty one means "nothing to reuse".
#[derive(Clone, Default)]
pub struct Memo(Option<Arc<dyn Any + Send + Sync>>);

impl Memo {
    /// Keeps `memo`.
    pub fn new<T: Any + Send + Sync>(memo: T) -> Memo {
        Memo(Some(Arc::new(memo)))
    }

    /// The memo, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.as_deref()?.downcast_ref()
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Memo(..)" } else { "Memo" })
    }
}

/// A proxy's resources, encoded. Two are equal when their resources are (whatever the memo).
#[derive(Clone, Debug, Default)]
pub struct EncodedResources {
    /// CDS.
    pub clusters: List,
    /// EDS.
    pub endpoints: List,
    /// LDS.
    pub listeners: List,
    /// RDS.
    pub routes: List,
    /// What the compiler reuses when it rebuilds these from an earlier snapshot.
    pub memo: Memo,
}

impl PartialEq for EncodedResources {
    fn eq(&self, other: &Self) -> bool {
        self.clusters == other.clusters
            && self.endpoints == other.endpoints
            && self.listeners == other.listeners
            && self.routes == other.routes
    }
}

impl Eq for EncodedResources {}

impl EncodedResources {
    /// Total encoded size in bytes.
    pub fn size(&self) -> usize {
        [
            &self.clusters,
            &self.endpoints,
            &self.listeners,
            &self.routes,
        ]
        .iter()
        .flat_map(|l| l.iter())
        .map(|e| e.body.len())
        .sum()
    }

    /// Merges two parts (each sorted by name) into one sorted set, without a memo.
    pub fn merge(&self, other: &EncodedResources) -> EncodedResources {
        fn join(a: &[Encoded], b: &[Encoded]) -> Vec<Encoded> {
            let mut out: Vec<Encoded> = a.iter().chain(b).cloned().collect();
            out.sort_by(|x, y| x.name.cmp(&y.name));
            out.dedup_by(|x, y| x.name == y.name);
            out
        }
        EncodedResources {
            clusters: join(&self.clusters, &other.clusters).into(),
            endpoints: join(&self.endpoints, &other.endpoints).into(),
            listeners: join(&self.listeners, &other.listeners).into(),
            routes: join(&self.routes, &other.routes).into(),
            memo: Memo::default(),
        }
    }
}
