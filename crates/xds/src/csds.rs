//! Envoy's Client Status Discovery Service (CSDS) on the xDS port: for each connected proxy and
//! type, the version last sent and whether the proxy ACKed or NACKed it (what istiod reports to
//! `istioctl proxy-status`). Built from the same per-stream status as `/debug/syncz`.

use std::{pin::Pin, sync::Arc, time::SystemTime};

use envoy_types::pb::{
    envoy::{
        admin::v3::{ClientResourceStatus, UpdateFailureState},
        config::core::v3::Node,
        service::status::v3::{
            ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
            client_config::GenericXdsConfig,
            client_status_discovery_service_server::{
                ClientStatusDiscoveryService, ClientStatusDiscoveryServiceServer,
            },
        },
        r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern},
    },
    google::protobuf::Timestamp,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::{protocol::TypeStatus, server::Connections};

/// The CSDS service over the server's connections.
pub struct Csds {
    connections: Arc<Connections>,
}

impl Csds {
    /// Reports on the connections in `connections`.
    pub fn new(connections: Arc<Connections>) -> Self {
        Csds { connections }
    }

    /// The gRPC service to add to a tonic server.
    pub fn into_service(self) -> ClientStatusDiscoveryServiceServer<Self> {
        ClientStatusDiscoveryServiceServer::new(self)
    }

    /// The status of every connected proxy the request's node matchers select.
    pub fn status(&self, request: &ClientStatusRequest) -> Result<ClientStatusResponse, Status> {
        let mut config = Vec::new();
        for connection in self.connections.list() {
            let mut selected = true;
            for m in &request.node_matchers {
                if !m.node_metadatas.is_empty() {
                    return Err(Status::invalid_argument(
                        "node_matchers[].node_metadatas is not supported; match on node_id",
                    ));
                }
                if let Some(id) = &m.node_id {
                    selected &= string_matches(id, &connection.proxy)?;
                }
            }
            if !selected {
                continue;
            }
            config.push(ClientConfig {
                node: Some(Node {
                    id: connection.proxy.clone(),
                    ..Default::default()
                }),
                generic_xds_configs: connection
                    .types
                    .iter()
                    .map(|(url, status)| generic(url, status))
                    .collect(),
                ..Default::default()
            });
        }
        Ok(ClientStatusResponse { config })
    }
}

fn string_matches(m: &StringMatcher, value: &str) -> Result<bool, Status> {
    let (value, fold) = if m.ignore_case {
        (value.to_lowercase(), true)
    } else {
        (value.to_owned(), false)
    };
    let norm = |s: &str| if fold { s.to_lowercase() } else { s.to_owned() };
    Ok(match &m.match_pattern {
        Some(MatchPattern::Exact(s)) => value == norm(s),
        Some(MatchPattern::Prefix(s)) => value.starts_with(&norm(s)),
        Some(MatchPattern::Suffix(s)) => value.ends_with(&norm(s)),
        Some(MatchPattern::Contains(s)) => value.contains(&norm(s)),
        _ => {
            return Err(Status::invalid_argument(
                "node_matchers[].node_id supports exact, prefix, suffix and contains",
            ));
        }
    })
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// One type of one proxy: SYNCED when the last version sent was ACKed, ERROR when it was
/// NACKed, STALE while an ACK is awaited, NOT_SENT before anything was sent.
fn generic(url: &str, s: &TypeStatus) -> GenericXdsConfig {
    let sent = s.sent_version.clone();
    let nacked = s.nack.as_ref().filter(|(v, _)| Some(v) == sent.as_ref());
    let (config_status, client_status) = match (&sent, nacked) {
        (None, _) => (ConfigStatus::NotSent, ClientResourceStatus::Requested),
        (Some(_), Some(_)) => (ConfigStatus::Error, ClientResourceStatus::Nacked),
        (Some(v), None) if s.acked_version.as_ref() == Some(v) => {
            (ConfigStatus::Synced, ClientResourceStatus::Acked)
        }
        (Some(_), None) => (ConfigStatus::Stale, ClientResourceStatus::Requested),
    };
    GenericXdsConfig {
        type_url: url.to_owned(),
        version_info: s.acked_version.clone().unwrap_or_default(),
        last_updated: s.sent_at.map(timestamp),
        config_status: config_status as i32,
        client_status: client_status as i32,
        error_state: nacked.map(|(v, details)| UpdateFailureState {
            details: details.clone(),
            version_info: v.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for Csds {
    type StreamClientStatusStream = StatusStream;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<StatusStream>, Status> {
        let connections = self.connections.clone();
        let responses = request.into_inner().map(move |r| {
            let csds = Csds {
                connections: connections.clone(),
            };
            csds.status(&r?)
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        self.status(request.get_ref()).map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(sent: Option<&str>, acked: Option<&str>, nack: Option<&str>) -> TypeStatus {
        TypeStatus {
            sent_version: sent.map(str::to_owned),
            acked_version: acked.map(str::to_owned),
            nack: nack.map(|v| (v.to_owned(), "bad".to_owned())),
            ..Default::default()
        }
    }

    #[test]
    fn config_status_follows_acks_and_nacks() {
        let of = |s: TypeStatus| ConfigStatus::try_from(generic("t", &s).config_status);
        assert_eq!(of(status(None, None, None)), Ok(ConfigStatus::NotSent));
        assert_eq!(
            of(status(Some("2"), Some("2"), None)),
            Ok(ConfigStatus::Synced)
        );
        assert_eq!(
            of(status(Some("2"), Some("1"), None)),
            Ok(ConfigStatus::Stale)
        );
        assert_eq!(
            of(status(Some("2"), Some("1"), Some("2"))),
            Ok(ConfigStatus::Error)
        );
        // A NACK of an older version no longer counts once a newer one is ACKed.
        assert_eq!(
            of(status(Some("3"), Some("3"), Some("2"))),
            Ok(ConfigStatus::Synced)
        );
        let nacked = generic("t", &status(Some("2"), Some("1"), Some("2")));
        assert_eq!(nacked.error_state.expect("error state").details, "bad");
    }

    #[test]
    fn node_matchers_select_by_id_and_reject_what_is_not_supported() {
        let prefix = StringMatcher {
            match_pattern: Some(MatchPattern::Prefix("sidecar~".into())),
            ..Default::default()
        };
        assert!(string_matches(&prefix, "sidecar~1.2.3.4~a.b~b.svc").expect("supported"));
        assert!(!string_matches(&prefix, "router~1.2.3.4~a.b~b.svc").expect("supported"));
        let regex = StringMatcher {
            match_pattern: Some(MatchPattern::SafeRegex(Default::default())),
            ..Default::default()
        };
        assert!(string_matches(&regex, "x").is_err());
    }
}
