//! Small constructors for the protobuf pieces every xDS type needs.

use std::{collections::HashMap, hash::RandomState, net::IpAddr, sync::LazyLock};

use envoy_types::pb::{
    envoy::config::core::v3::{
        Address, ApiVersion, ConfigSource, Metadata, SocketAddress, TransportSocket, address,
        config_source, socket_address,
    },
    google::protobuf::{Any, BoolValue, Duration, ListValue, Struct, UInt32Value, Value, value},
};
use prost::{Message, Name};

/// One hasher for every protobuf map the compiler builds. Maps built from the same entries in
/// the same (sorted) order then iterate alike, so equal inputs encode to identical bytes within
/// a process, which content-hash versions rely on.
static MAP_STATE: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// An empty protobuf map with the shared hasher.
pub fn map<K, V>() -> HashMap<K, V> {
    HashMap::with_hasher(MAP_STATE.clone())
}

/// A map from `(key, value)` pairs inserted in the given order.
pub fn map_of<K: std::hash::Hash + Eq, V>(
    entries: impl IntoIterator<Item = (K, V)>,
) -> HashMap<K, V> {
    let mut m = map();
    m.extend(entries);
    m
}

/// Packs a message into `Any`.
pub fn any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// A protobuf duration.
pub fn duration(d: std::time::Duration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A duration of whole seconds.
pub fn seconds(s: i64) -> Duration {
    Duration {
        seconds: s,
        nanos: 0,
    }
}

/// `google.protobuf.UInt32Value`.
pub fn u32v(v: u32) -> UInt32Value {
    UInt32Value { value: v }
}

/// `google.protobuf.BoolValue`.
pub fn boolv(v: bool) -> BoolValue {
    BoolValue { value: v }
}

/// A TCP socket address.
pub fn socket(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// The socket address of an IP.
pub fn ip_socket(ip: IpAddr, port: u32) -> Address {
    socket(&ip.to_string(), port)
}

/// Configuration delivered over the same ADS stream, without waiting on first fetch.
pub fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(
            config_source::ConfigSourceSpecifier::Ads(Default::default()),
        ),
        initial_fetch_timeout: Some(seconds(0)),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// A Unix domain socket address (`@name`: abstract).
pub fn pipe(path: &str) -> envoy_types::pb::envoy::config::core::v3::Address {
    use envoy_types::pb::envoy::config::core::v3::{Address, Pipe, address};
    Address {
        address: Some(address::Address::Pipe(Pipe {
            path: path.to_owned(),
            mode: 0,
        })),
    }
}

/// A string `Value`.
pub fn string_value(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.to_owned())),
    }
}

/// A bool `Value`.
pub fn bool_value(b: bool) -> Value {
    Value {
        kind: Some(value::Kind::BoolValue(b)),
    }
}

/// A list `Value`.
pub fn list_value(items: Vec<Value>) -> Value {
    Value {
        kind: Some(value::Kind::ListValue(ListValue { values: items })),
    }
}

/// A struct `Value` from sorted fields.
pub fn struct_value(fields: Vec<(&str, Value)>) -> Value {
    Value {
        kind: Some(value::Kind::StructValue(Struct {
            fields: map_of(fields.into_iter().map(|(k, v)| (k.to_owned(), v))),
        })),
    }
}

/// Metadata with one filter namespace holding the given string fields.
pub fn metadata(entries: Vec<(&str, Vec<(&str, Value)>)>) -> Metadata {
    Metadata {
        filter_metadata: map_of(entries.into_iter().map(|(ns, fields)| {
            (
                ns.to_owned(),
                Struct {
                    fields: map_of(fields.into_iter().map(|(k, v)| (k.to_owned(), v))),
                },
            )
        })),
        ..Default::default()
    }
}

/// A transport socket with a typed config.
pub fn transport_socket<M: Message + Name>(name: &str, config: &M) -> TransportSocket {
    TransportSocket {
        name: name.to_owned(),
        config_type: Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                any(config),
            ),
        ),
    }
}

/// Formats an IP address without allocating.
pub fn ip_text(ip: std::net::IpAddr, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                let o = *octet;
                if o >= 100 {
                    out.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    out.push(char::from(b'0' + (o / 10) % 10));
                }
                out.push(char::from(b'0' + o % 10));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Envoy CIDR ranges of `ADDRESS[/LEN]` texts; a text that is not one is left out (the
/// validator has reported it).
pub fn cidrs(subnets: &[String]) -> Vec<envoy_types::pb::envoy::config::core::v3::CidrRange> {
    subnets
        .iter()
        .filter_map(|s| {
            let (ip, len) = s.split_once('/').unwrap_or((s, ""));
            let ip: std::net::IpAddr = ip.parse().ok()?;
            let len = len.parse().unwrap_or(if ip.is_ipv4() { 32 } else { 128 });
            Some(envoy_types::pb::envoy::config::core::v3::CidrRange {
                address_prefix: ip.to_string(),
                prefix_len: Some(u32v(len)),
            })
        })
        .collect()
}
