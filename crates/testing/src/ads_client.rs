//! A fake Envoy's ADS client, for benchmarks and tests: it subscribes to clusters and
//! listeners, asks for the endpoints of the EDS clusters after each cluster response and for
//! the route configurations after each listener response, and ACKs every response, like
//! Envoy, over state-of-the-world or delta streams. It reads only the fields it needs to do
//! that, so thousands of them fit in one process beside the server they load.
//!
//! ```no_run
//! # async fn f(channel: tonic::transport::Channel) -> Result<(), tonic::Status> {
//! use sextant_testing::ads_client::AdsClient;
//! let node = envoy_types::pb::envoy::config::core::v3::Node {
//!     id: "sidecar~10.0.0.1~a-0.ns~ns.svc.cluster.local".into(),
//!     ..Default::default()
//! };
//! let mut stream = AdsClient::new(node).routes(["8080"]).sotw(channel).await?;
//! while let Some(response) = stream.next().await {
//!     let response = response?;
//!     if response.configured {
//!         break;
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod scan;

use std::{collections::BTreeSet, time::SystemTime};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Status, Streaming,
    codegen::http::uri::PathAndQuery,
    transport::{Channel, Endpoint},
};

/// The type URLs the client knows. Spelled out here rather than taken from Sextant's crates,
/// so that a typo on the server's side is not repeated on the client's.
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

/// HTTP/2 windows of Envoy's gRPC client: 256 MiB for each stream and for the connection
/// (Envoy's defaults), so the server is never held back waiting for window updates.
pub const ENVOY_WINDOW: u32 = 256 << 20;

/// An endpoint for `uri` with the HTTP/2 windows of Envoy's gRPC client ([`ENVOY_WINDOW`]).
pub fn envoy_endpoint(uri: String) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri)?
        .initial_stream_window_size(ENVOY_WINDOW)
        .initial_connection_window_size(ENVOY_WINDOW))
}

/// How a fake proxy subscribes; open a stream with [`AdsClient::sotw`] or [`AdsClient::delta`].
#[derive(Clone, Debug)]
pub struct AdsClient {
    node: Node,
    types: Vec<String>,
    routes: Vec<String>,
    token: Option<String>,
    max_message_size: usize,
    keep_messages: bool,
}

/// One response, as the client read it.
#[derive(Clone, Debug)]
pub struct Response {
    pub type_url: String,
    /// `version_info` (state of the world) or `system_version_info` (delta).
    pub version: String,
    /// Resources in the response (added or updated ones, for delta).
    pub resources: usize,
    /// Encoded size of those resources (the values of their `Any`s).
    pub bytes: u64,
    /// When the response was read. Its ACK is sent when the next response is asked for.
    pub received: SystemTime,
    /// Whether this stream has now received clusters, endpoints, listeners and routes.
    pub configured: bool,
    /// The whole response, with [`AdsClient::keep_messages`] on a state-of-the-world stream.
    pub message: Option<DiscoveryResponse>,
}

impl AdsClient {
    /// A client for `node` (sent in the first request) that subscribes to every cluster and
    /// listener and asks for no routes.
    pub fn new(node: Node) -> AdsClient {
        AdsClient {
            node,
            types: vec![type_url::CLUSTER.into(), type_url::LISTENER.into()],
            routes: Vec::new(),
            token: None,
            max_message_size: 512 << 20,
            keep_messages: false,
        }
    }

    /// The types subscribed to (every resource of each) when the stream opens, in order.
    pub fn subscribe<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.types = types.into_iter().map(Into::into).collect();
        self
    }

    /// The route configurations asked for after each listener response. The client does not
    /// read them from the listeners: a caller that knows its workload names them.
    pub fn routes<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.routes = names.into_iter().map(Into::into).collect();
        self
    }

    /// Sends `authorization: Bearer <token>` with the stream.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The largest response accepted (512 MiB unless set).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Also decodes each state-of-the-world response whole, into [`Response::message`].
    pub fn keep_messages(mut self) -> Self {
        self.keep_messages = true;
        self
    }

    fn request<T>(&self, messages: mpsc::Receiver<T>) -> tonic::Request<ReceiverStream<T>> {
        let mut request = tonic::Request::new(ReceiverStream::new(messages));
        if let Some(token) = &self.token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}")
                    .parse()
                    .expect("a token is a header value"),
            );
        }
        request
    }

    /// Opens a state-of-the-world stream on `channel`; the status the server refused it with,
    /// if it did.
    pub async fn sotw(&self, channel: Channel) -> Result<Sotw, Status> {
        let mut grpc =
            tonic::client::Grpc::new(channel).max_decoding_message_size(self.max_message_size);
        grpc.ready()
            .await
            .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
        let (tx, rx) = mpsc::channel(16);
        for (i, url) in self.types.iter().enumerate() {
            tx.send(DiscoveryRequest {
                node: (i == 0).then(|| self.node.clone()),
                type_url: url.clone(),
                ..Default::default()
            })
            .await
            .map_err(|_| Status::cancelled("request stream closed"))?;
        }
        let codec = scan::Codec {
            keep_messages: self.keep_messages,
        };
        let inbound = grpc
            .streaming(
                self.request(rx),
                PathAndQuery::from_static(
                    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
                ),
                codec,
            )
            .await?
            .into_inner();
        Ok(Sotw {
            requests: Requests::new(tx),
            inbound,
            routes: self.routes.clone(),
            eds_clusters: Vec::new(),
        })
    }

    /// Opens a delta stream on `channel`; the status the server refused it with, if it did.
    /// After each cluster response the client subscribes to the endpoints of the clusters named
    /// `outbound|…` in it.
    pub async fn delta(&self, channel: Channel) -> Result<Delta, Status> {
        let mut client = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(self.max_message_size);
        let (tx, rx) = mpsc::channel(16);
        for (i, url) in self.types.iter().enumerate() {
            tx.send(DeltaDiscoveryRequest {
                node: (i == 0).then(|| self.node.clone()),
                type_url: url.clone(),
                ..Default::default()
            })
            .await
            .map_err(|_| Status::cancelled("request stream closed"))?;
        }
        let inbound = client
            .delta_aggregated_resources(self.request(rx))
            .await?
            .into_inner();
        Ok(Delta {
            requests: Requests::new(tx),
            inbound,
            routes: self.routes.clone(),
        })
    }
}

/// Requests waiting to be sent: the ACK of the last response and what it leads to.
struct Requests<T> {
    tx: mpsc::Sender<T>,
    pending: Vec<T>,
    /// Types received so far, for [`Response::configured`].
    received: BTreeSet<String>,
}

impl<T> Requests<T> {
    fn new(tx: mpsc::Sender<T>) -> Self {
        Requests {
            tx,
            pending: Vec::new(),
            received: BTreeSet::new(),
        }
    }

    /// Sends what is pending; false once the stream is closed. Safe to cancel: a request
    /// leaves `pending` only when it is sent.
    async fn flush(&mut self) -> bool {
        while !self.pending.is_empty() {
            let Ok(permit) = self.tx.reserve().await else {
                return false;
            };
            permit.send(self.pending.remove(0));
        }
        true
    }

    /// Records a response of `type_url`; whether every type has now been received.
    fn received(&mut self, type_url: &str) -> bool {
        if !self.received.contains(type_url) {
            self.received.insert(type_url.to_owned());
        }
        self.received.len() == 4
    }
}

/// A state-of-the-world stream of a fake proxy.
pub struct Sotw {
    requests: Requests<DiscoveryRequest>,
    inbound: Streaming<scan::Scanned>,
    routes: Vec<String>,
    eds_clusters: Vec<String>,
}

impl Sotw {
    /// ACKs the last response (and sends the subscription it leads to), then waits for the
    /// next one. `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Result<Response, Status>> {
        if !self.requests.flush().await {
            return None;
        }
        let r = match self.inbound.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(status) => return Some(Err(status)),
        };
        let received = SystemTime::now();
        let mut ack = DiscoveryRequest {
            type_url: r.type_url.clone(),
            version_info: r.version_info.clone(),
            response_nonce: r.nonce,
            ..Default::default()
        };
        let mut next = None;
        match r.type_url.as_str() {
            type_url::CLUSTER => {
                self.eds_clusters = r.eds_clusters;
                next = Some(DiscoveryRequest {
                    type_url: type_url::ENDPOINT.into(),
                    resource_names: self.eds_clusters.clone(),
                    ..Default::default()
                });
            }
            type_url::LISTENER => {
                next = Some(DiscoveryRequest {
                    type_url: type_url::ROUTE.into(),
                    resource_names: self.routes.clone(),
                    ..Default::default()
                });
            }
            // An ACK carries the subscription again.
            type_url::ENDPOINT => ack.resource_names = self.eds_clusters.clone(),
            _ => ack.resource_names = self.routes.clone(),
        }
        self.requests.pending.push(ack);
        self.requests.pending.extend(next);
        Some(Ok(Response {
            configured: self.requests.received(&r.type_url),
            type_url: r.type_url,
            version: r.version_info,
            resources: r.resources,
            bytes: r.bytes,
            received,
            message: r.message,
        }))
    }
}

/// A delta stream of a fake proxy.
pub struct Delta {
    requests: Requests<DeltaDiscoveryRequest>,
    inbound: Streaming<DeltaDiscoveryResponse>,
    routes: Vec<String>,
}

impl Delta {
    /// ACKs the last response (and sends the subscription it leads to), then waits for the
    /// next one. `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Result<Response, Status>> {
        if !self.requests.flush().await {
            return None;
        }
        let r = match self.inbound.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(status) => return Some(Err(status)),
        };
        let received = SystemTime::now();
        let bytes = r
            .resources
            .iter()
            .map(|r| r.resource.as_ref().map_or(0, |a| a.value.len() as u64))
            .sum();
        self.requests.pending.push(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        });
        if r.type_url == type_url::CLUSTER {
            self.requests.pending.push(DeltaDiscoveryRequest {
                type_url: type_url::ENDPOINT.into(),
                resource_names_subscribe: r
                    .resources
                    .iter()
                    .map(|r| r.name.clone())
                    .filter(|n| n.starts_with("outbound|"))
                    .collect(),
                ..Default::default()
            });
        }
        if r.type_url == type_url::LISTENER {
            self.requests.pending.push(DeltaDiscoveryRequest {
                type_url: type_url::ROUTE.into(),
                resource_names_subscribe: self.routes.clone(),
                ..Default::default()
            });
        }
        Some(Ok(Response {
            configured: self.requests.received(&r.type_url),
            type_url: r.type_url,
            version: r.system_version_info,
            resources: r.resources.len(),
            bytes,
            received,
            message: None,
        }))
    }
}
