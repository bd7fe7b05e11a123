//! Gateway: Istio's `ValidateGateway` (`validateServer`, `validateServerPort`,
//! `validateServerBind`, `validateTLSOptions`) and the model it yields.

use std::{collections::BTreeSet, net::IpAddr};

use sextant_api as api;
use sextant_model::{self as model, Kind, Protocol};

use super::{Invalid, Parsed, Report, fields, object_ref};

pub(super) mod tls;

/// A listener bound to a Unix domain socket instead of an IP address.
const UNIX_PREFIX: &str = "unix://";

/// Validates a Gateway and builds its model.
pub fn gateway(obj: &api::Gateway) -> Result<Parsed<model::Gateway>, Invalid> {
    let id = object_ref(Kind::Gateway, &obj.metadata);
    let mut r = Report::default();
    super::check_metadata(&obj.metadata, &mut r);
    // Istio's Gateway names are DNS labels, stricter than the subdomain every object name is
    // (which check_metadata has already reported when it fails).
    if let Some(name) = obj.metadata.name.as_deref()
        && fields::is_dns1123_subdomain(name)
        && !fields::is_dns1123_label(name)
    {
        r.error("metadata.name", format!("invalid gateway name: {name:?}"));
    }
    let spec = &obj.spec;
    let servers_in = spec.servers.as_deref().unwrap_or_default();
    if servers_in.is_empty() {
        r.error("spec.servers", "gateway must have at least one server");
    }
    let mut port_names = BTreeSet::new();
    let mut servers = Vec::new();
    for (i, s) in servers_in.iter().enumerate() {
        let path = format!("spec.servers[{i}]");
        if !port_names.insert(s.port.name.as_str()) {
            r.error(
                format!("{path}.port.name"),
                format!(
                    "port names in servers must be unique: duplicate name {}",
                    s.port.name
                ),
            );
        }
        servers.extend(server(s, &id.namespace, &path, &mut r));
    }
    let value = model::Gateway {
        id: id.clone(),
        creation_timestamp: super::creation_timestamp(&obj.metadata),
        selector: spec.selector.clone().unwrap_or_default(),
        servers,
    };
    r.finish(id, value)
}

/// Istio's protocol names (case-insensitive), as `protocol.Parse` reads them.
fn protocol(name: &str) -> Protocol {
    Protocol::detect("", Some(name), "TCP", 0)
}

fn server(s: &api::Server, namespace: &str, path: &str, r: &mut Report) -> Option<model::Server> {
    let errors_before = r.errors.len();
    if s.hosts.is_empty() {
        r.error(
            format!("{path}.hosts"),
            "server config must contain at least one host",
        );
    }
    for (j, host) in s.hosts.iter().enumerate() {
        check_host(host, &format!("{path}.hosts[{j}]"), r);
    }
    let bind = s.bind.as_deref().unwrap_or_default();
    let protocol = protocol(&s.port.protocol);
    let port_ok = check_port(&s.port, bind, path, r);
    check_bind(&s.port, bind, path, r);
    if let Some(tls) = &s.tls {
        tls::check(tls, &format!("{path}.tls"), r);
        if !protocol.is_http() && tls.https_redirect == Some(true) {
            r.warn(
                format!("{path}.tls.httpsRedirect"),
                "tls.httpsRedirect should only be used with http servers",
            );
        }
    }
    if port_ok {
        let is_tls = matches!(protocol, Protocol::Https | Protocol::Tls);
        match &s.tls {
            None if is_tls => r.error(
                path,
                "server must have TLS settings for HTTPS/TLS protocols",
            ),
            Some(tls) if !is_tls && protocol.is_http() => {
                // Only a redirect (a passthrough mode with no files) fits a plain-text port.
                let passthrough = matches!(
                    tls.mode,
                    None | Some(
                        api::ServerTlsMode::PASSTHROUGH | api::ServerTlsMode::AUTO_PASSTHROUGH
                    )
                );
                if !passthrough
                    || tls::set(&tls.ca_certificates)
                    || tls::set(&tls.private_key)
                    || tls::set(&tls.server_certificate)
                {
                    r.error(
                        format!("{path}.tls"),
                        "server cannot have TLS settings for plain text HTTP ports",
                    );
                }
            }
            Some(_) if !is_tls => r.error(
                format!("{path}.tls"),
                "server cannot have TLS settings for non HTTPS/TLS ports",
            ),
            _ => {}
        }
    }
    if r.errors.len() > errors_before {
        return None;
    }
    Some(model::Server {
        port: u16::try_from(s.port.number).unwrap_or_default(),
        port_name: s.port.name.clone(),
        protocol,
        hosts: s.hosts.iter().map(|h| server_host(h, namespace)).collect(),
        bind: Some(bind.to_owned()).filter(|b| !b.is_empty()),
        name: s.name.clone().filter(|n| !n.is_empty()),
        tls: s.tls.as_ref().map(tls::model),
    })
}

/// `[ns/]dnsName` as the model keeps it: `./h` is the Gateway's namespace, `*/h` and `h` any
/// namespace; the name is lower-cased.
fn server_host(host: &str, namespace: &str) -> model::ServerHost {
    let (ns, name) = match host.split_once('/') {
        Some((".", name)) => (Some(namespace.to_owned()), name),
        Some(("*", name)) => (None, name),
        Some((ns, name)) => (Some(ns.to_owned()), name),
        None => (None, host),
    };
    model::ServerHost {
        namespace: ns,
        host: name.to_ascii_lowercase(),
    }
}

/// Istio's `ValidateNamespaceSlashWildcardHostname` for gateways.
fn check_host(host: &str, path: &str, r: &mut Report) {
    let Some((ns, name)) = host.split_once('/') else {
        check_dns_name(host, path, r);
        return;
    };
    if ns.is_empty() || name.is_empty() {
        r.error(
            path,
            "config namespace and dnsName in host entry cannot be empty",
        );
    }
    if ns != "*" && ns != "." && !fields::is_dns1123_label(ns) {
        r.error(path, format!("invalid namespace value {ns:?} in gateway"));
    }
    check_dns_name(name, path, r);
}

/// The dnsName of a server host: an FQDN, `*.suffix`, `*` or an IP address.
fn check_dns_name(name: &str, path: &str, r: &mut Report) {
    if name != "*" && !name.contains('.') {
        r.error(path, "short names (non FQDN) are not allowed");
    }
    // Istio's DNS labels may be upper case (host names are not case-sensitive).
    if fields::check_wildcard_domain(&name.to_ascii_lowercase()).is_err()
        && name.parse::<IpAddr>().is_err()
        && let Err(e) = fields::check_wildcard_domain(name)
    {
        r.error(path, e);
    }
    if name.contains('*') && name.len() != 1 && !name.starts_with("*.") {
        r.error(path, format!("partial wildcard {name:?} not allowed"));
    }
}

/// Istio's `validateServerPort`; false when it found something wrong.
fn check_port(port: &api::Port, bind: &str, path: &str, r: &mut Report) -> bool {
    let errors_before = r.errors.len();
    if protocol(&port.protocol) == Protocol::Unsupported {
        r.error(
            format!("{path}.port.protocol"),
            format!(
                "invalid protocol {:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
                port.protocol
            ),
        );
    }
    if port.number > 0 || !bind.starts_with(UNIX_PREFIX) {
        fields::check_port(port.number, &format!("{path}.port.number"), r);
    }
    if port.target_port.is_some_and(|p| p > 0) {
        r.error(
            format!("{path}.port.targetPort"),
            "targetPort has no impact on Gateways",
        );
    }
    if port.name.is_empty() {
        r.error(
            format!("{path}.port.name"),
            format!("port name must be set: {}", show_port(port)),
        );
    }
    r.errors.len() == errors_before
}

/// A port as Go prints the protobuf message (`number:80 protocol:"HTTP"`).
fn show_port(port: &api::Port) -> String {
    let mut parts = Vec::new();
    if port.number > 0 {
        parts.push(format!("number:{}", port.number));
    }
    if !port.protocol.is_empty() {
        parts.push(format!("protocol:{:?}", port.protocol));
    }
    if !port.name.is_empty() {
        parts.push(format!("name:{:?}", port.name));
    }
    parts.join(" ")
}

/// Istio's `validateServerBind`: an IP address, or a Unix domain socket with port 0.
fn check_bind(port: &api::Port, bind: &str, path: &str, r: &mut Report) {
    let at = format!("{path}.bind");
    if let Some(socket) = bind.strip_prefix(UNIX_PREFIX) {
        if socket.is_empty() {
            r.error(&at, "unix address must not be empty");
        } else if !socket.starts_with('@') && (!socket.starts_with('/') || socket.ends_with('/')) {
            r.error(&at, format!("{socket} is not an absolute path to a file"));
        }
        if port.number != 0 {
            r.error(
                &at,
                format!(
                    "port number must be 0 for unix domain socket: {}",
                    show_port(port)
                ),
            );
        }
    } else if !bind.is_empty() && bind.parse::<IpAddr>().is_err() {
        r.error(&at, format!("{bind} is not a valid IP"));
    }
}
