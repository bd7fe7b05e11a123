//! Which listener and filter chain take a connection, as Envoy chooses them.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::{
    core::v3::{Address, CidrRange, address, socket_address},
    listener::v3::{FilterChain, FilterChainMatch, Listener},
};

use super::steps::Request;

/// A listener chosen for a request, and why.
pub struct Chosen<'a> {
    /// The listener.
    pub listener: &'a Listener,
    /// Why it takes the connection.
    pub why: String,
}

/// The listener's socket address as (IP, port), when it listens on one.
fn socket(a: Option<&Address>) -> Option<(IpAddr, u32)> {
    let Some(address::Address::SocketAddress(s)) = a.and_then(|a| a.address.as_ref()) else {
        return None;
    };
    let port = match s.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => p,
        _ => return None,
    };
    Some((s.address.parse().ok()?, port))
}

/// `IP:PORT` of a listener, or `-`.
pub fn address_text(l: &Listener) -> String {
    match socket(l.address.as_ref()) {
        Some((IpAddr::V6(ip), port)) => format!("[{ip}]:{port}"),
        Some((ip, port)) => format!("{ip}:{port}"),
        None => "-".to_owned(),
    }
}

/// Among `listeners`, the one for `address:port`: the exact address first, then the wildcard
/// address (`0.0.0.0` or `::`) on that port, as Envoy looks them up.
fn by_address<'a>(
    listeners: &[&'a Listener],
    address: Option<IpAddr>,
    port: u16,
) -> Option<(&'a Listener, &'static str)> {
    let on_port =
        |l: &&&Listener| socket(l.address.as_ref()).is_some_and(|(_, p)| p == u32::from(port));
    if let Some(ip) = address
        && let Some(l) = listeners
            .iter()
            .filter(on_port)
            .find(|l| socket(l.address.as_ref()).is_some_and(|(a, _)| a == ip))
    {
        return Some((l, "its address and port"));
    }
    if let Some(l) = listeners
        .iter()
        .filter(on_port)
        .find(|l| socket(l.address.as_ref()).is_some_and(|(a, _)| a.is_unspecified()))
    {
        return Some((l, "the wildcard address on the port"));
    }
    if address.is_none() {
        // No address given: a lone listener on the port is the one the application reaches.
        let mut on = listeners.iter().filter(on_port);
        if let (Some(l), None) = (on.next(), on.next()) {
            return Some((l, "the only listener on the port (no --address given)"));
        }
    }
    None
}

/// Whether the proxy is captured by iptables (a `use_original_dst` listener takes every
/// outbound connection): then the destination address chooses the listener, and an
/// application reaches a Service at its cluster IP.
pub fn captured(listeners: &[Listener]) -> bool {
    listeners
        .iter()
        .any(|l| l.use_original_dst.as_ref().is_some_and(|b| b.value))
}

/// The listener that takes a connection to the request's destination. A proxy with a
/// `use_original_dst` listener is captured by iptables: the connection arrives there and is
/// handed to the listener of its original destination, bound or not, else stays. Otherwise
/// the application connects to a listener bound on the destination itself.
pub fn listener<'a>(listeners: &'a [Listener], request: &Request) -> Result<Chosen<'a>, String> {
    let to = match request.address {
        Some(ip) => format!("{ip}:{}", request.port),
        None => format!("port {}", request.port),
    };
    let capture = listeners
        .iter()
        .find(|l| l.use_original_dst.as_ref().is_some_and(|b| b.value));
    if let Some(capture) = capture {
        let others: Vec<&Listener> = listeners
            .iter()
            .filter(|l| !std::ptr::eq(*l, capture))
            .collect();
        if let Some((l, how)) = by_address(&others, request.address, request.port) {
            return Ok(Chosen {
                listener: l,
                why: format!(
                    "captured by {} ({}), handed to the listener of the original destination {to}: {how}",
                    capture.name,
                    address_text(capture)
                ),
            });
        }
        return Ok(Chosen {
            listener: capture,
            why: format!("captured; no listener for the original destination {to}"),
        });
    }
    let bound: Vec<&Listener> = listeners
        .iter()
        .filter(|l| l.bind_to_port.as_ref().is_none_or(|b| b.value))
        .collect();
    match by_address(&bound, request.address, request.port) {
        Some((l, how)) => Ok(Chosen {
            listener: l,
            why: format!("bound at {}: {how}", address_text(l)),
        }),
        None => {
            let ports: Vec<String> = bound.iter().map(|l| address_text(l)).collect();
            let on_port: Vec<&String> = ports
                .iter()
                .filter(|p| p.ends_with(&format!(":{}", request.port)))
                .collect();
            if request.address.is_none() && on_port.len() > 1 {
                return Err(format!(
                    "several listeners on port {}: give --address, one of {}",
                    request.port,
                    on_port
                        .iter()
                        .map(|p| p.rsplit_once(':').map_or(p.as_str(), |(a, _)| a))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            Err(format!(
                "no listener for {to}: the proxy listens on {}",
                if ports.is_empty() {
                    "nothing".to_owned()
                } else {
                    ports.join(", ")
                }
            ))
        }
    }
}

fn in_range(ip: IpAddr, range: &CidrRange) -> bool {
    let Ok(net) = range.address_prefix.parse::<IpAddr>() else {
        return false;
    };
    let len = range
        .prefix_len
        .as_ref()
        .map_or(if net.is_ipv4() { 32 } else { 128 }, |l| l.value);
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The longest prefix of `ranges` holding `ip`.
fn longest_range(ip: Option<IpAddr>, ranges: &[CidrRange]) -> Option<u32> {
    let ip = ip?;
    ranges
        .iter()
        .filter(|r| in_range(ip, r))
        .map(|r| r.prefix_len.as_ref().map_or(0, |l| l.value))
        .max()
}

/// How well a server name pattern covers `sni`: exact beats the longest `*.suffix`.
fn name_rank(patterns: &[String], sni: Option<&str>) -> Option<usize> {
    let sni = sni?.to_ascii_lowercase();
    patterns
        .iter()
        .filter_map(|p| {
            let p = p.to_ascii_lowercase();
            if p == sni {
                Some(usize::MAX)
            } else {
                p.strip_prefix('*')
                    .filter(|s| sni.ends_with(s) && sni.len() > s.len())
                    .map(str::len)
            }
        })
        .max()
}

/// Keeps the candidates the most specific value of one criterion selects: those whose rank
/// is highest, else those that leave the criterion unset (a wildcard), as Envoy narrows
/// filter chains one criterion at a time.
fn narrow(
    chains: Vec<&FilterChain>,
    unset: impl Fn(&FilterChainMatch) -> bool,
    rank: impl Fn(&FilterChainMatch) -> Option<usize>,
) -> Vec<&FilterChain> {
    let default = FilterChainMatch::default();
    let fcm = |c: &FilterChain| {
        c.filter_chain_match
            .clone()
            .unwrap_or_else(|| default.clone())
    };
    let best = chains.iter().filter_map(|c| rank(&fcm(c))).max();
    match best {
        Some(best) => chains
            .into_iter()
            .filter(|c| rank(&fcm(c)) == Some(best))
            .collect(),
        None => chains.into_iter().filter(|c| unset(&fcm(c))).collect(),
    }
}

/// The filter chain of `listener` for the request, in Envoy's order of criteria: destination
/// port, destination address ranges, server names, transport protocol, application protocols,
/// then the source criteria (not modelled: chains that set none are preferred). A plain HTTP
/// request is `raw_buffer` with `http/1.1`; with an SNI it is `tls`.
pub fn filter_chain<'a>(
    listener: &'a Listener,
    request: &Request,
) -> Result<(&'a FilterChain, String), String> {
    let port = u32::from(request.port);
    let transport = if request.sni.is_some() {
        "tls"
    } else {
        "raw_buffer"
    };
    let mut chains: Vec<&FilterChain> = listener.filter_chains.iter().collect();
    chains = narrow(
        chains,
        |m| m.destination_port.is_none(),
        |m| (m.destination_port.as_ref().map(|p| p.value) == Some(port)).then_some(1),
    );
    chains = narrow(
        chains,
        |m| m.prefix_ranges.is_empty(),
        |m| longest_range(request.address, &m.prefix_ranges).map(|l| l as usize),
    );
    chains = narrow(
        chains,
        |m| m.server_names.is_empty(),
        |m| name_rank(&m.server_names, request.sni.as_deref()),
    );
    chains = narrow(
        chains,
        |m| m.transport_protocol.is_empty(),
        |m| (m.transport_protocol == transport).then_some(1),
    );
    chains = narrow(
        chains,
        |m| m.application_protocols.is_empty(),
        |m| {
            m.application_protocols
                .iter()
                .any(|p| p == "http/1.1")
                .then_some(1)
        },
    );
    let sourceless = |c: &&&FilterChain| {
        c.filter_chain_match.as_ref().is_none_or(|m| {
            m.source_prefix_ranges.is_empty()
                && m.direct_source_prefix_ranges.is_empty()
                && m.source_ports.is_empty()
                && m.source_type == 0
        })
    };
    if let Some(chain) = chains.iter().find(sourceless).or(chains.first()) {
        return Ok((chain, chain_why(chain)));
    }
    match &listener.default_filter_chain {
        Some(chain) => Ok((
            chain,
            "the listener's default chain: no filter chain matches".to_owned(),
        )),
        None => Err(format!(
            "no filter chain of {} matches ({transport}, port {port}) and it has no default: \
             Envoy closes the connection",
            listener.name
        )),
    }
}

fn chain_why(chain: &FilterChain) -> String {
    let Some(m) = &chain.filter_chain_match else {
        return "matches every connection".to_owned();
    };
    let mut parts = Vec::new();
    if let Some(p) = &m.destination_port {
        parts.push(format!("destination port {}", p.value));
    }
    if !m.prefix_ranges.is_empty() {
        let ranges: Vec<String> = m
            .prefix_ranges
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r.address_prefix,
                    r.prefix_len.as_ref().map_or(0, |l| l.value)
                )
            })
            .collect();
        parts.push(format!("destination in {}", ranges.join(",")));
    }
    if !m.server_names.is_empty() {
        parts.push(format!("server name {}", m.server_names.join(",")));
    }
    if !m.transport_protocol.is_empty() {
        parts.push(format!("transport {}", m.transport_protocol));
    }
    if !m.application_protocols.is_empty() {
        parts.push(format!(
            "application protocols {}",
            m.application_protocols.join(",")
        ));
    }
    if parts.is_empty() {
        "matches every connection".to_owned()
    } else {
        parts.join(", ")
    }
}
