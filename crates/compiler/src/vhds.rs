//! On-demand virtual hosts (VHDS): a scope's outbound part as a proxy sees it when it fetches
//! virtual hosts by Host instead of receiving every one inside its route configurations.
//!
//! Derived from the compiled part rather than compiled apart, so that proxies of a scope
//! share one compilation whichever way they are served, and each virtual host resource is
//! the bytes of the full route configuration's virtual host (shared, not copied) after a
//! name of its own:
//! - route configurations keep everything but their virtual hosts, and gain `vhds` (over ADS);
//! - each virtual host becomes a resource `ROUTE_CONFIG/VHOST`, the name it also carries
//!   (Envoy keeps VHDS virtual hosts by their own name and removes them by resource name);
//! - a virtual host with the domain `*` (the catch-all: `allow_any`, `block_all`) is left
//!   out: it would match every Host, and Envoy asks for a virtual host only when none matches.
//!   A Host that no service's virtual host serves therefore gets 404 rather than the outbound
//!   traffic policy's answer;
//! - HTTP connection managers whose routes come from RDS get the `on_demand` filter.

use std::{collections::HashMap, ops::Range};

use bytes::Bytes;
use envoy_types::pb::envoy::config::{
    listener::v3::Listener,
    route::v3::{RouteConfiguration, Vhds},
};
use prost::Message;
use sextant_resources::{Encoded, EncodedResources, List, wire};

use crate::{hcm::ask_on_demand, proto::ads};

/// A scope's outbound part for proxies served virtual hosts on demand.
#[derive(Clone, Debug, Default)]
pub struct OnDemand {
    /// The part, with route configurations that hold no virtual hosts and ask for them over
    /// VHDS, and listeners whose HTTP connection managers ask for missing ones.
    pub resources: EncodedResources,
    /// The virtual hosts, each named `ROUTE_CONFIG/VHOST`, sorted by name.
    pub virtual_hosts: List,
    /// The hash of the listener each of `resources.listeners` was made from.
    sources: Vec<u64>,
}

/// `scope` (a compiled outbound part) as proxies served virtual hosts on demand see it. With
/// `previous` (the same derived from an earlier part), listeners whose source did not change
/// are taken from it rather than decoded again.
pub fn on_demand(scope: &EncodedResources, previous: Option<&OnDemand>) -> OnDemand {
    let old: HashMap<&str, (u64, &Encoded)> = previous
        .map(|p| {
            p.resources
                .listeners
                .iter()
                .zip(&p.sources)
                .map(|(l, source)| (l.name.as_str(), (*source, l)))
                .collect()
        })
        .unwrap_or_default();
    let mut sources = Vec::with_capacity(scope.listeners.len());
    let listeners: Vec<Encoded> = scope
        .listeners
        .iter()
        .map(|l| {
            sources.push(l.hash);
            match old.get(l.name.as_str()) {
                Some((source, kept)) if *source == l.hash => (*kept).clone(),
                _ => asking(l),
            }
        })
        .collect();
    let mut vhds = Vec::new();
    RouteConfiguration {
        vhds: Some(Vhds {
            config_source: Some(ads()),
        }),
        ..Default::default()
    }
    .encode_raw(&mut vhds);
    let vhds = Bytes::from(vhds);
    let mut virtual_hosts = Vec::new();
    let routes: Vec<Encoded> = scope
        .routes
        .iter()
        .map(|r| split(r, &vhds, &mut virtual_hosts))
        .collect();
    virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
    OnDemand {
        resources: EncodedResources {
            clusters: scope.clusters.clone(),
            endpoints: scope.endpoints.clone(),
            listeners: listeners.into(),
            routes: routes.into(),
            memo: Default::default(),
        },
        virtual_hosts: virtual_hosts.into(),
        sources,
    }
}

/// `listener` with `on_demand` in its RDS connection managers (itself when it has none).
fn asking(listener: &Encoded) -> Encoded {
    let mut decoded: Listener = listener.decode();
    if ask_on_demand(&mut decoded) {
        Encoded::new(&listener.name, &decoded)
    } else {
        listener.clone()
    }
}

/// The route configuration `config` without its virtual hosts and with `vhds` (its encoded
/// field), pushing the virtual hosts as VHDS resources onto `hosts`.
fn split(config: &Encoded, vhds: &Bytes, hosts: &mut Vec<Encoded>) -> Encoded {
    // The compiler writes each part as whole fields; anything else is read as one buffer.
    let whole;
    let mut chunks = config.body.chunks();
    if !chunks.iter().all(|c| each_field(c, |_, _, _| {}).is_some()) {
        whole = [config.body.to_bytes()];
        chunks = &whole;
    }
    let mut kept = Vec::with_capacity(chunks.len() + 1);
    for chunk in chunks {
        let mut from = 0;
        each_field(chunk, |tag, field, value| {
            if tag != 2 {
                return;
            }
            if field.start > from {
                kept.push(chunk.slice(from..field.start));
            }
            from = field.end;
            hosts.extend(virtual_host(&config.name, chunk.slice(value)));
        })
        .expect("checked above");
        if from < chunk.len() {
            kept.push(chunk.slice(from..));
        }
    }
    kept.push(vhds.clone());
    Encoded::from_parts(&config.name, kept)
}

/// The VHDS resource of an encoded `VirtualHost` of route configuration `config`: named
/// `config/NAME` in its own name field, followed by the rest of its fields as they are; `None`
/// for a catch-all (domain `*`) or bytes that do not parse.
fn virtual_host(config: &str, body: Bytes) -> Option<Encoded> {
    let mut name = None;
    let mut catch_all = false;
    let mut rest = Vec::new();
    let mut from = 0;
    each_field(&body, |tag, field, value| match tag {
        1 => {
            name = std::str::from_utf8(&body[value]).ok().map(str::to_owned);
            if field.start > from {
                rest.push(body.slice(from..field.start));
            }
            from = field.end;
        }
        2 => catch_all |= &body[value] == b"*",
        _ => {}
    })?;
    if catch_all {
        return None;
    }
    if from < body.len() {
        rest.push(body.slice(from..));
    }
    let name = format!("{config}/{}", name?);
    let mut head = Vec::with_capacity(name.len() + 3);
    wire::string_field(&mut head, 1, &name);
    let mut parts = Vec::with_capacity(rest.len() + 1);
    parts.push(Bytes::from(head));
    parts.extend(rest);
    Some(Encoded::from_parts(&name, parts))
}

/// Calls `f` with each top-level field of `buf`: its tag, where the whole field lies, and
/// where its value lies (empty but for length-delimited fields); `None` when `buf` is not
/// whole fields.
fn each_field(buf: &[u8], mut f: impl FnMut(u32, Range<usize>, Range<usize>)) -> Option<()> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut rest = buf;
    while !rest.is_empty() {
        let start = buf.len() - rest.len();
        let (tag, wire) = decode_key(&mut rest).ok()?;
        let value = match wire {
            WireType::Varint => {
                decode_varint(&mut rest).ok()?;
                0
            }
            WireType::LengthDelimited => usize::try_from(decode_varint(&mut rest).ok()?).ok()?,
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::StartGroup | WireType::EndGroup => return None,
        };
        let at = buf.len() - rest.len();
        rest = rest.get(value..)?;
        let end = buf.len() - rest.len();
        let value = if wire == WireType::LengthDelimited {
            at..end
        } else {
            end..end
        };
        f(tag, start..end, value);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::route::v3::VirtualHost;

    fn config() -> Encoded {
        let vh = |name: &str, domains: &[&str]| VirtualHost {
            name: name.to_owned(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            include_request_attempt_count: true,
            ..Default::default()
        };
        let mut first = Vec::new();
        wire::string_field(&mut first, 1, "80");
        let mut a = Vec::new();
        wire::message_field(&mut a, 2, &vh("a:80", &["a", "a.ns"]));
        let mut rest = Vec::new();
        wire::message_field(&mut rest, 2, &vh("literal:80", &["example.com"]));
        wire::message_field(&mut rest, 2, &vh("allow_any", &["*"]));
        RouteConfiguration {
            ignore_port_in_host_matching: true,
            ..Default::default()
        }
        .encode_raw(&mut rest);
        Encoded::from_parts("80", vec![first.into(), a.into(), rest.into()])
    }

    #[test]
    fn route_configurations_lose_their_virtual_hosts_to_vhds_resources() {
        let scope = EncodedResources {
            routes: vec![config()].into(),
            ..Default::default()
        };
        let out = on_demand(&scope, None);
        let rc: RouteConfiguration = out.resources.routes[0].decode();
        assert_eq!(rc.name, "80");
        assert!(rc.virtual_hosts.is_empty());
        assert!(rc.ignore_port_in_host_matching);
        assert!(rc.vhds.and_then(|v| v.config_source).is_some());
        let names: Vec<&str> = out.virtual_hosts.iter().map(|e| e.name.as_str()).collect();
        // The catch-all would match every Host, so it is never sent.
        assert_eq!(names, ["80/a:80", "80/literal:80"]);
        let a: VirtualHost = out.virtual_hosts[0].decode();
        assert_eq!(a.name, "80/a:80");
        assert_eq!(a.domains, ["a", "a.ns"]);
        assert!(a.include_request_attempt_count);
    }
}
