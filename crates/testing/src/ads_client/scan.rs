//! Reading a state-of-the-world response in place: only the fields an Envoy needs to ACK it
//! and to subscribe further. The response is scanned in tonic's receive buffer, which is then
//! reused, so a fake proxy costs about what the transport costs: a benchmark with thousands of
//! them measures the server, not the client's allocator.

use bytes::Buf;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use prost::Message;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};

use super::type_url;

/// What the client reads from a discovery response.
#[derive(Default)]
pub(super) struct Scanned {
    pub version_info: String,
    pub type_url: String,
    pub nonce: String,
    pub resources: usize,
    /// Encoded size of all resources.
    pub bytes: u64,
    /// Names of the clusters that use EDS (CDS responses only).
    pub eds_clusters: Vec<String>,
    /// The whole response, when the client keeps messages.
    pub message: Option<DiscoveryResponse>,
}

/// Calls `f(field number, payload)` for each length-delimited field of `data`; varints and
/// fixed-size fields are skipped. `None` on malformed input.
fn each_field<'a>(mut data: &'a [u8], mut f: impl FnMut(u64, &'a [u8])) -> Option<()> {
    while !data.is_empty() {
        let key = prost::encoding::decode_varint(&mut data).ok()?;
        let len = match key & 7 {
            0 => {
                prost::encoding::decode_varint(&mut data).ok()?;
                0
            }
            1 => 8,
            5 => 4,
            2 => {
                let len = prost::encoding::decode_varint(&mut data).ok()? as usize;
                let (payload, rest) = data.split_at_checked(len)?;
                f(key >> 3, payload);
                data = rest;
                continue;
            }
            _ => return None,
        };
        data = data.get(len..)?;
    }
    Some(())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Scanned {
    /// Field numbers are those of `DiscoveryResponse`, `Any` and `Cluster`
    /// (`eds_cluster_config` is field 3).
    fn scan(data: &[u8]) -> Option<Scanned> {
        let mut r = Scanned::default();
        let mut resources = Vec::new();
        each_field(data, |field, payload| match field {
            1 => r.version_info = text(payload),
            2 => resources.push(payload),
            4 => r.type_url = text(payload),
            5 => r.nonce = text(payload),
            _ => {}
        })?;
        r.resources = resources.len();
        for any in resources {
            each_field(any, |field, value| {
                if field != 2 {
                    return;
                }
                r.bytes += value.len() as u64;
                if r.type_url == type_url::CLUSTER {
                    let (mut name, mut eds) = (None, false);
                    each_field(value, |f, v| match f {
                        1 => name = Some(text(v)),
                        3 => eds = true,
                        _ => {}
                    });
                    if let (Some(name), true) = (name, eds) {
                        r.eds_clusters.push(name);
                    }
                }
            })?;
        }
        Some(r)
    }
}

/// Encodes requests with prost and scans responses in place.
pub(super) struct Codec {
    /// Also decode each response whole, for tests that look inside.
    pub keep_messages: bool,
}

pub(super) struct ScanDecoder {
    keep_messages: bool,
}

impl Decoder for ScanDecoder {
    type Item = Scanned;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Scanned>, tonic::Status> {
        let len = buf.remaining();
        let data = buf.chunk();
        let read = |data: &[u8]| -> Result<Scanned, tonic::Status> {
            let mut scanned = Scanned::scan(data)
                .ok_or_else(|| tonic::Status::internal("malformed discovery response"))?;
            if self.keep_messages {
                scanned.message = Some(
                    DiscoveryResponse::decode(data)
                        .map_err(|e| tonic::Status::internal(e.to_string()))?,
                );
            }
            Ok(scanned)
        };
        let response = if data.len() == len {
            read(data)
        } else {
            read(&buf.copy_to_bytes(len))
        };
        if buf.remaining() > 0 {
            buf.advance(len);
        }
        response.map(Some)
    }

    /// Room for the largest response from the start: growing the buffer would copy it into
    /// fresh pages for every larger response, the client's main cost.
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(2 << 20, 32 << 10)
    }
}

type ProstCodec = tonic_prost::ProstCodec<DiscoveryRequest, DiscoveryRequest>;

impl tonic::codec::Codec for Codec {
    type Encode = DiscoveryRequest;
    type Decode = Scanned;
    type Encoder = <ProstCodec as tonic::codec::Codec>::Encoder;
    type Decoder = ScanDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic::codec::Codec::encoder(&mut ProstCodec::default())
    }

    fn decoder(&mut self) -> ScanDecoder {
        ScanDecoder {
            keep_messages: self.keep_messages,
        }
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::{
        envoy::config::cluster::v3::{Cluster, cluster::EdsClusterConfig},
        google::protobuf::Any,
    };

    use super::*;

    fn cluster(name: &str, eds: bool) -> Any {
        Any {
            type_url: type_url::CLUSTER.into(),
            value: Cluster {
                name: name.into(),
                eds_cluster_config: eds.then(EdsClusterConfig::default),
                ..Default::default()
            }
            .encode_to_vec(),
        }
    }

    #[test]
    fn scan_reads_what_an_envoy_needs_from_a_cluster_response() {
        let resources = vec![
            cluster("outbound|80||a.ns.svc.cluster.local", true),
            cluster("inbound|8080||", false),
        ];
        let bytes: u64 = resources.iter().map(|a| a.value.len() as u64).sum();
        let encoded = DiscoveryResponse {
            version_info: "7".into(),
            resources,
            type_url: type_url::CLUSTER.into(),
            nonce: "n-1".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let scanned = Scanned::scan(&encoded).expect("well formed");
        assert_eq!(scanned.version_info, "7");
        assert_eq!(scanned.type_url, type_url::CLUSTER);
        assert_eq!(scanned.nonce, "n-1");
        assert_eq!(scanned.resources, 2);
        assert_eq!(scanned.bytes, bytes);
        assert_eq!(
            scanned.eds_clusters,
            ["outbound|80||a.ns.svc.cluster.local"]
        );
    }

    #[test]
    fn scan_rejects_a_truncated_response() {
        let encoded = DiscoveryResponse {
            resources: vec![cluster("outbound|80||a.ns.svc.cluster.local", true)],
            type_url: type_url::CLUSTER.into(),
            ..Default::default()
        }
        .encode_to_vec();
        assert!(Scanned::scan(&encoded[..encoded.len() - 3]).is_none());
    }
}
