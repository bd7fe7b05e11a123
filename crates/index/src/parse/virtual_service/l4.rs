//! TCP and TLS rules.

use std::collections::BTreeMap;

use sextant_api as api;
use sextant_model as model;

use super::{check_gateway_name, l4_destinations};
use crate::parse::{
    Report,
    fields::{self, check_port},
};

fn l4_match_common(
    subnets: Option<&[String]>,
    port: Option<u32>,
    labels: Option<&BTreeMap<String, String>>,
    gateways: Option<&[String]>,
    source_namespace: Option<&str>,
    path: &str,
    r: &mut Report,
) -> model::L4Match {
    for (i, subnet) in subnets.into_iter().flatten().enumerate() {
        check_subnet(subnet, &format!("{path}.destinationSubnets[{i}]"), r);
    }
    let labels = labels.cloned().unwrap_or_default();
    fields::check_labels(&labels, &format!("{path}.sourceLabels"), r);
    for (i, gw) in gateways.into_iter().flatten().enumerate() {
        check_gateway_name(gw, &format!("{path}.gateways[{i}]"), r);
    }
    if let Some(ns) = source_namespace.filter(|n| !n.is_empty())
        && !fields::is_dns1123_label(ns)
    {
        r.error(
            format!("{path}.sourceNamespace"),
            format!("sourceNamespace match {ns} is invalid"),
        );
    }
    model::L4Match {
        sni_hosts: Vec::new(),
        destination_subnets: subnets.map(<[String]>::to_vec).unwrap_or_default(),
        port: port
            .filter(|p| *p != 0)
            .and_then(|p| check_port(p, &format!("{path}.port"), r)),
        source_subnet: None,
        source_labels: labels,
        source_namespace: source_namespace
            .filter(|n| !n.is_empty())
            .map(str::to_owned),
        gateways: gateways.map(<[String]>::to_vec).unwrap_or_default(),
    }
}

fn check_subnet(subnet: &str, path: &str, r: &mut Report) {
    let (addr, len) = match subnet.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (subnet, None),
    };
    let ok = match addr.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            len.is_none_or(|l| l.parse::<u8>().is_ok_and(|l| l <= max))
        }
        Err(_) => false,
    };
    if !ok {
        r.error(
            path,
            format!("{subnet:?} is not a valid IP address or CIDR"),
        );
    }
}

pub(super) fn tcp_route(route: &api::TcpRoute, path: &str, r: &mut Report) -> model::TcpRoute {
    for (i, m) in route.match_.iter().flatten().enumerate() {
        if m.destination_subnets
            .as_ref()
            .is_some_and(|s| !s.is_empty())
        {
            r.unsupported(
                format!("{path}.match[{i}].destinationSubnets"),
                "tcp match destinationSubnets",
            );
        }
    }
    let matches = route
        .match_
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("{path}.match[{i}]");
            let mut out = l4_match_common(
                m.destination_subnets.as_deref(),
                m.port,
                m.source_labels.as_ref(),
                m.gateways.as_deref(),
                m.source_namespace.as_deref(),
                &at,
                r,
            );
            if let Some(s) = m.source_subnet.as_deref().filter(|s| !s.is_empty()) {
                check_subnet(s, &format!("{at}.sourceSubnet"), r);
                r.unsupported(format!("{at}.sourceSubnet"), "tcp match sourceSubnet");
                out.source_subnet = Some(s.to_owned());
            }
            out
        })
        .collect();
    let dests = route.route.as_deref().unwrap_or_default();
    if dests.is_empty() {
        r.error(format!("{path}.route"), "TCP route is required");
    }
    model::TcpRoute {
        matches,
        route: l4_destinations(dests, &format!("{path}.route"), r),
    }
}

pub(super) fn tls_route(
    route: &api::TlsRoute,
    hosts: &[String],
    path: &str,
    r: &mut Report,
) -> model::TlsRoute {
    if route.match_.is_empty() {
        r.error(
            format!("{path}.match"),
            "TLS route must have at least one match condition",
        );
    }
    let matches = route
        .match_
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("{path}.match[{i}]");
            if m.sni_hosts.is_empty() {
                r.error(format!("{at}.sniHosts"), "TLS match must have at least one SNI host");
            }
            for (j, sni) in m.sni_hosts.iter().enumerate() {
                let sat = format!("{at}.sniHosts[{j}]");
                if sni.parse::<std::net::IpAddr>().is_ok() {
                    r.warn(&sat, format!("using an IP address ({sni}) as an SNI host is not standard and may not work"));
                } else if let Err(e) = fields::check_wildcard_domain(sni) {
                    r.error(&sat, e);
                } else if !hosts.iter().any(|h| host_covers(h, sni)) {
                    r.error(
                        &sat,
                        format!(
                            "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                            hosts.join(", ")
                        ),
                    );
                }
            }
            let mut out = l4_match_common(
                m.destination_subnets.as_deref(),
                m.port,
                m.source_labels.as_ref(),
                m.gateways.as_deref(),
                m.source_namespace.as_deref(),
                &at,
                r,
            );
            out.sni_hosts = m.sni_hosts.clone();
            out
        })
        .collect();
    let dests = route.route.as_deref().unwrap_or_default();
    if dests.is_empty() {
        r.error(format!("{path}.route"), "TLS route is required");
    }
    model::TlsRoute {
        matches,
        route: l4_destinations(dests, &format!("{path}.route"), r),
    }
}

/// Whether VirtualService host `host` covers SNI `sni` (wildcards on either side).
fn host_covers(host: &str, sni: &str) -> bool {
    let matches = |wild: &str, name: &str| match wild.strip_prefix('*') {
        Some(suffix) => name.ends_with(suffix),
        None => wild.eq_ignore_ascii_case(name),
    };
    host == "*"
        || matches(host, sni)
        || matches(sni, host)
        || host.starts_with(&format!("{sni}."))
        || sni.starts_with(&format!("{host}."))
}
