//! On-demand virtual hosts (VHDS): the type, and which virtual host answers a name Envoy asks
//! for.
//!
//! A route configuration with `vhds` holds only the virtual hosts its proxy asked for. When a
//! request's Host matches none of them, Envoy's `on_demand` filter subscribes (delta only) to
//! `ROUTE_CONFIG/HOST`, HOST as the request's `:authority`, lowercased, port included. The
//! answer is the virtual host that Envoy would have matched in the full route configuration,
//! named `ROUTE_CONFIG/VHOST` with the asked name among its `aliases` (Envoy resumes the
//! requests waiting on an alias, not on a resource name); a name no virtual host serves is
//! answered with a resource of that name and alias and no body, so that the request goes on
//! (and gets 404) instead of waiting.

use std::collections::HashMap;

use sextant_resources::{Encoded, List};

/// The type URL of on-demand virtual hosts.
pub const VIRTUAL_HOST: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";

/// The metadata key a proxy's node sets (`"true"`) to ask for on-demand virtual hosts.
pub const VHDS_METADATA_KEY: &str = "SEXTANT_VHDS";

/// One scope's virtual hosts as VHDS resources (named `ROUTE_CONFIG/VHOST`, sorted by name),
/// and the domains they serve, per route configuration, as Envoy matches them.
#[derive(Clone, Debug, Default)]
pub struct VirtualHosts {
    /// The resources, sorted by name.
    pub hosts: List,
    /// By route configuration name.
    tables: HashMap<String, Domains>,
    /// By the name of a virtual host with wildcard domains: the other virtual hosts of its
    /// route configuration whose domains those wildcards cover. Envoy matches a Host under a
    /// wildcard it holds locally and never asks for the more specific virtual host, so these
    /// go with the wildcard's.
    covers: HashMap<String, Vec<usize>>,
}

/// Wildcard domains without their `*` (`.example.com`, `api.`), each with its virtual host.
type Wildcards = Vec<(String, usize)>;

/// Whether a domain falls under a wildcard's affix (`.example.com` ends it, `api.` starts it).
type Under = fn(&str, &str) -> bool;

/// A route configuration's domains, as Envoy looks a Host up: exact names first, then
/// `*.suffix` wildcards, longest first, then `prefix.*` wildcards, longest first. Each names its
/// virtual host by index into [`VirtualHosts::hosts`].
#[derive(Clone, Debug, Default)]
struct Domains {
    exact: HashMap<String, usize>,
    /// `(suffix, host)`, the longest suffix first; the suffix keeps its dot (`.example.com`).
    suffixes: Wildcards,
    /// `(prefix, host)`, the longest prefix first.
    prefixes: Wildcards,
}

impl VirtualHosts {
    /// Indexes `hosts` (sorted by name, each `ROUTE_CONFIG/VHOST`) by the domains their
    /// encodings list. A domain listed twice in one route configuration keeps its first
    /// virtual host, as Envoy would refuse the second.
    pub fn new(hosts: List) -> VirtualHosts {
        let mut tables: HashMap<String, Domains> = HashMap::new();
        for (i, host) in hosts.iter().enumerate() {
            let Some((config, _)) = host.name.rsplit_once('/') else {
                continue;
            };
            let table = tables.entry(config.to_owned()).or_default();
            for_each_domain(host, |domain| {
                let domain = domain.to_ascii_lowercase();
                if let Some(suffix) = domain.strip_prefix('*') {
                    if !suffix.is_empty() {
                        table.suffixes.push((suffix.to_owned(), i));
                    }
                } else if let Some(prefix) = domain.strip_suffix('*') {
                    table.prefixes.push((prefix.to_owned(), i));
                } else {
                    table.exact.entry(domain).or_insert(i);
                }
            });
        }
        let mut covers: HashMap<String, Vec<usize>> = HashMap::new();
        for table in tables.values() {
            let mut covered = |wildcard: usize, other: usize| {
                if wildcard != other {
                    let list = covers
                        .entry(
                            hosts
                                .get(wildcard)
                                .map_or_else(String::new, |h| h.name.clone()),
                        )
                        .or_default();
                    if !list.contains(&other) {
                        list.push(other);
                    }
                }
            };
            // `*.suffix` covers names ending in the suffix; `prefix.*` names starting with it.
            let kinds: [(&Wildcards, Under); 2] = [
                (&table.suffixes, |d, affix| d.ends_with(affix)),
                (&table.prefixes, |d, affix| d.starts_with(affix)),
            ];
            for (wildcards, matches) in kinds {
                for (affix, w) in wildcards {
                    let under = |d: &str| d.len() > affix.len() && matches(d, affix);
                    let exact = table.exact.iter().map(|(d, &i)| (d.as_str(), i));
                    let narrower = wildcards.iter().map(|(d, i)| (d.as_str(), *i));
                    for (_, o) in exact.chain(narrower).filter(|(d, _)| under(d)) {
                        covered(*w, o);
                    }
                }
            }
        }
        for list in covers.values_mut() {
            list.sort_unstable();
        }
        for table in tables.values_mut() {
            // Stable: among equal lengths the first listed wins.
            table
                .suffixes
                .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
            table
                .prefixes
                .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        }
        VirtualHosts {
            hosts,
            tables,
            covers,
        }
    }

    /// The virtual hosts a proxy holding `host` must hold too: those its wildcard domains
    /// cover (none for a virtual host without wildcards).
    pub fn covered<'a>(&'a self, host: &str) -> impl Iterator<Item = &'a Encoded> + 'a {
        self.covers
            .get(host)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.hosts.get(i))
    }

    /// The virtual host that answers `asked` (`ROUTE_CONFIG/HOST`), if any.
    pub fn resolve(&self, asked: &str) -> Option<&Encoded> {
        let (config, host) = asked.rsplit_once('/')?;
        let table = self.tables.get(config)?;
        // The route configurations ignore the port in host matching, as Istio's do.
        let host = strip_port(host).to_ascii_lowercase();
        let found = table.exact.get(&host).copied().or_else(|| {
            let longer = |affix: &str| host.len() > affix.len();
            table
                .suffixes
                .iter()
                .find(|(s, _)| longer(s) && host.ends_with(s.as_str()))
                .or_else(|| {
                    table
                        .prefixes
                        .iter()
                        .find(|(p, _)| longer(p) && host.starts_with(p.as_str()))
                })
                .map(|(_, i)| *i)
        })?;
        self.hosts.get(found)
    }
}

/// `host` without a `:PORT` suffix (an IPv6 address keeps its brackets, as Host carries it).
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    }
}

/// Calls `f` with each `domains` entry (field 2) of an encoded `VirtualHost`. Its parts are
/// whole fields each (see the compiler's `vhds`); a body that does not parse as such is read
/// whole.
fn for_each_domain(host: &Encoded, mut f: impl FnMut(&str)) {
    let chunks = host.body.chunks();
    if chunks.iter().all(|c| domains(c, &mut |_| {}).is_some()) {
        for chunk in chunks {
            domains(chunk, &mut f);
        }
    } else {
        domains(&host.body.to_bytes(), &mut f);
    }
}

/// The `domains` of the fields in `buf`, or `None` when `buf` is not whole fields.
fn domains(mut buf: &[u8], f: &mut impl FnMut(&str)) -> Option<()> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).ok()?;
        match wire {
            WireType::Varint => {
                decode_varint(&mut buf).ok()?;
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                let value = buf.get(..len)?;
                if tag == 2 {
                    f(std::str::from_utf8(value).ok()?);
                }
                buf = &buf[len..];
            }
            WireType::SixtyFourBit => buf = buf.get(8..)?,
            WireType::ThirtyTwoBit => buf = buf.get(4..)?,
            WireType::StartGroup | WireType::EndGroup => return None,
        }
    }
    Some(())
}

/// Whether a proxy's node metadata asks for on-demand virtual hosts.
pub fn asks_for_vhds(node: &envoy_types::pb::envoy::config::core::v3::Node) -> bool {
    use envoy_types::pb::google::protobuf::value::Kind;
    node.metadata
        .as_ref()
        .and_then(|m| m.fields.get(VHDS_METADATA_KEY))
        .is_some_and(|v| match &v.kind {
            Some(Kind::StringValue(s)) => s.eq_ignore_ascii_case("true"),
            Some(Kind::BoolValue(b)) => *b,
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::route::v3::VirtualHost;

    fn host(name: &str, domains: &[&str]) -> Encoded {
        Encoded::new(
            name,
            &VirtualHost {
                name: name.to_owned(),
                domains: domains.iter().map(|d| d.to_string()).collect(),
                ..Default::default()
            },
        )
    }

    fn index() -> VirtualHosts {
        let mut hosts = vec![
            host("80/a:80", &["a.ns.svc.cluster.local", "a", "10.0.0.1"]),
            host(
                "80/b:80",
                &["b.ns.svc.cluster.local", "*.b.ns.svc.cluster.local"],
            ),
            host("80/p:80", &["api.*"]),
            host("9080/a:9080", &["a.ns.svc.cluster.local", "a"]),
            host("80/v6:80", &["[fd00::1]"]),
        ];
        hosts.sort_by(|x, y| x.name.cmp(&y.name));
        VirtualHosts::new(hosts.into())
    }

    fn resolved(v: &VirtualHosts, asked: &str) -> Option<String> {
        v.resolve(asked).map(|e| e.name.clone())
    }

    #[test]
    fn names_resolve_as_envoy_matches_domains_ignoring_the_port() {
        let v = index();
        assert_eq!(resolved(&v, "80/a:80").as_deref(), Some("80/a:80"));
        assert_eq!(
            resolved(&v, "80/A.ns.svc.cluster.local").as_deref(),
            Some("80/a:80")
        );
        assert_eq!(resolved(&v, "80/10.0.0.1:80").as_deref(), Some("80/a:80"));
        assert_eq!(resolved(&v, "9080/a:9080").as_deref(), Some("9080/a:9080"));
        assert_eq!(
            resolved(&v, "80/x.b.ns.svc.cluster.local").as_deref(),
            Some("80/b:80")
        );
        assert_eq!(resolved(&v, "80/api.example").as_deref(), Some("80/p:80"));
        assert_eq!(resolved(&v, "80/[fd00::1]:80").as_deref(), Some("80/v6:80"));
        // A wildcard needs at least one more character than its fixed part.
        assert_eq!(resolved(&v, "80/.b.ns.svc.cluster.local"), None);
        assert_eq!(resolved(&v, "80/unknown"), None);
        assert_eq!(resolved(&v, "443/a"), None);
        assert_eq!(resolved(&v, "no-slash"), None);
    }
}
