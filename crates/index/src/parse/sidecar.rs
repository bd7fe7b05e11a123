//! Sidecar: Istio's `ValidateSidecar` (with `ValidateAlphaWorkloadSelector`,
//! `validateSidecarIngressPortAndBind`, `validateSidecarEgressPortBindAndCaptureMode`,
//! `ValidateNamespaceSlashWildcardHostname` and `validateSidecarOutboundTrafficPolicy`), its
//! texts and order, and the model it yields.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use sextant_api as api;
use sextant_model::{self as model, Kind, OutboundTrafficPolicy, Protocol};

use super::{Invalid, Parsed, Report, destination_rule, fields, gateway::tls, object_ref};

const UNIX_PREFIX: &str = "unix://";

/// Validates a Sidecar and builds its model.
pub fn sidecar(obj: &api::Sidecar) -> Result<Parsed<model::Sidecar>, Invalid> {
    let id = object_ref(Kind::Sidecar, &obj.metadata);
    let mut r = Report::default();
    super::check_metadata(&obj.metadata, &mut r);
    let spec = &obj.spec;
    let selector = spec
        .workload_selector
        .as_ref()
        .map(|s| s.labels.clone().unwrap_or_default());
    if let Some(labels) = &selector {
        // Istio stops at a bad selector.
        if !check_selector(labels, &mut r) {
            return r.finish(id.clone(), empty(id));
        }
        if labels.is_empty() {
            r.warn(
                "spec.workloadSelector",
                "sidecar: workload selector specified without labels, will be applied to all services in namespace",
            );
        }
    }
    let ingress_in = spec.ingress.as_deref().unwrap_or_default();
    let egress_in = spec.egress.as_deref().unwrap_or_default();
    if ingress_in.is_empty()
        && egress_in.is_empty()
        && spec.outbound_traffic_policy.is_none()
        && spec.inbound_connection_pool.is_none()
    {
        r.error("spec", "sidecar: empty configuration provided");
        return r.finish(id.clone(), empty(id));
    }
    let mut ports = BTreeSet::new();
    let ingress = ingress_in
        .iter()
        .enumerate()
        .filter_map(|(i, l)| ingress(l, &format!("spec.ingress[{i}]"), &mut ports, &mut r))
        .collect();
    let inbound_connection_pool = spec
        .inbound_connection_pool
        .as_ref()
        .map(|cp| destination_rule::connection_pool(cp, "spec.inboundConnectionPool", &mut r));
    let egress = egress(egress_in, &id.namespace, &mut r);
    let outbound_traffic_policy = spec
        .outbound_traffic_policy
        .as_ref()
        .map(|p| outbound_policy(p, &mut r));
    let value = model::Sidecar {
        id: id.clone(),
        creation_timestamp: super::creation_timestamp(&obj.metadata),
        selector,
        egress,
        ingress,
        outbound_traffic_policy,
        inbound_connection_pool,
    };
    r.finish(id, value)
}

/// A placeholder model for an object that failed early (never used: `finish` returns the
/// errors).
fn empty(id: model::ObjectRef) -> model::Sidecar {
    model::Sidecar {
        id,
        creation_timestamp: None,
        selector: None,
        egress: Vec::new(),
        ingress: Vec::new(),
        outbound_traffic_policy: None,
        inbound_connection_pool: None,
    }
}

/// Istio's `ValidateAlphaWorkloadSelector`; false when it found an error.
fn check_selector(labels: &BTreeMap<String, String>, r: &mut Report) -> bool {
    let before = r.errors.len();
    for (k, v) in labels {
        let at = format!("spec.workloadSelector.labels[{k}]");
        if k.is_empty() {
            r.error(
                &at,
                format!(
                    "empty key is not supported in selector: {:?}",
                    format!("{k}={v}")
                ),
            );
        }
        if k.contains('*') || v.contains('*') {
            r.error(
                &at,
                format!(
                    "wildcard is not supported in selector: {:?}",
                    format!("{k}={v}")
                ),
            );
        }
    }
    r.errors.len() == before
}

/// Istio's `protocol.Parse`, with `HTTP_PROXY`; `None` for a name it does not know.
fn parse_protocol(name: &str) -> Option<(Protocol, bool)> {
    if name.is_empty() {
        return Some((Protocol::Unsupported, false));
    }
    if name.eq_ignore_ascii_case("HTTP_PROXY") {
        return Some((Protocol::Http, true));
    }
    match name.to_ascii_lowercase().as_str() {
        "udp" => Some((Protocol::Udp, false)),
        "grpc-web" => Some((Protocol::GrpcWeb, false)),
        _ => match Protocol::detect("", Some(name), "TCP", 0) {
            Protocol::Unsupported => None,
            p => Some((p, false)),
        },
    }
}

/// The checks every listener port gets: name, protocol, and (unless a Unix socket's 0) range.
fn check_port(port: &api::SidecarPort, path: &str, check_number: bool, r: &mut Report) {
    if port.target_port.is_some_and(|p| p > 0) {
        r.error(
            format!("{path}.port.targetPort"),
            "targetPort has no impact on Sidecars",
        );
    }
    if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty())
        && !fields::is_dns1123_label(name)
    {
        r.error(
            format!("{path}.port.name"),
            format!("invalid port name: {name}"),
        );
    }
    let protocol = port.protocol.as_deref().unwrap_or_default();
    if parse_protocol(protocol).is_none() {
        r.error(
            format!("{path}.port.protocol"),
            format!("unsupported protocol: {protocol}"),
        );
    }
    if check_number {
        fields::check_port(
            port.number.unwrap_or_default(),
            &format!("{path}.port.number"),
            r,
        );
    }
}

fn model_port(port: &api::SidecarPort) -> model::ListenerPort {
    let (protocol, http_proxy) = parse_protocol(port.protocol.as_deref().unwrap_or_default())
        .unwrap_or((Protocol::Unsupported, false));
    model::ListenerPort {
        number: u16::try_from(port.number.unwrap_or_default()).unwrap_or_default(),
        protocol,
        http_proxy,
        name: port.name.clone().filter(|n| !n.is_empty()),
    }
}

fn capture_mode(mode: Option<api::CaptureMode>) -> model::CaptureMode {
    match mode {
        None | Some(api::CaptureMode::DEFAULT) => model::CaptureMode::Default,
        Some(api::CaptureMode::IPTABLES) => model::CaptureMode::Iptables,
        Some(api::CaptureMode::NONE) => model::CaptureMode::None,
    }
}

/// Istio's `ValidateIPAddress` for a non-empty bind.
fn check_ip(bind: &str, path: &str, r: &mut Report) -> Option<IpAddr> {
    match bind.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            r.error(path, format!("{bind} is not a valid IP"));
            None
        }
    }
}

/// Istio's `ValidateUnixAddress`.
fn check_unix(socket: &str, path: &str, r: &mut Report) {
    if socket.starts_with('@') {
        return;
    }
    if socket.is_empty() {
        r.error(path, "unix address must not be empty");
    } else if !socket.starts_with('/') || socket.ends_with('/') {
        r.error(path, format!("{socket} is not an absolute path to a file"));
    }
}

fn ingress(
    l: &api::IstioIngressListener,
    path: &str,
    ports: &mut BTreeSet<u32>,
    r: &mut Report,
) -> Option<model::IngressListener> {
    let before = r.errors.len();
    check_port(&l.port, path, true, r);
    let bind = l
        .bind
        .as_deref()
        .filter(|b| !b.is_empty())
        .and_then(|b| check_ip(b, &format!("{path}.bind"), r));
    let number = l.port.number.unwrap_or_default();
    if !ports.insert(number) {
        r.error(
            format!("{path}.port.number"),
            "sidecar: ports on IP bound listeners must be unique",
        );
    }
    let default_endpoint = default_endpoint(
        l.default_endpoint.as_deref().unwrap_or_default(),
        &format!("{path}.defaultEndpoint"),
        r,
    );
    let protocol = l.port.protocol.as_deref().unwrap_or_default();
    if let Some(t) = &l.tls {
        check_tls(t, protocol, &format!("{path}.tls"), r);
    }
    let connection_pool = l
        .connection_pool
        .as_ref()
        .map(|cp| destination_rule::connection_pool(cp, &format!("{path}.connectionPool"), r));
    if l.connection_pool
        .as_ref()
        .is_some_and(|cp| cp.http.is_some())
        && !parse_protocol(protocol).is_some_and(|(p, _)| p.is_http())
    {
        r.warn(
            format!("{path}.connectionPool.http"),
            format!(
                "sidecar: HTTP connection pool settings are configured for port {number} ({:?}) but its protocol is not HTTP ({protocol}); only TCP settings will apply",
                l.port.name.as_deref().unwrap_or_default()
            ),
        );
    }
    (r.errors.len() == before).then(|| model::IngressListener {
        port: model_port(&l.port),
        bind,
        capture_mode: capture_mode(l.capture_mode),
        default_endpoint: default_endpoint.unwrap_or(model::DefaultEndpoint::None),
        tls: l.tls.as_ref().map(tls::model),
        connection_pool,
    })
}

/// An ingress `tls`: what sidecars do not support, then the Gateway's `validateTLSOptions`.
fn check_tls(t: &api::ServerTlsSettings, protocol: &str, path: &str, r: &mut Report) {
    if t.subject_alt_names.as_ref().is_some_and(|s| !s.is_empty()) {
        r.error(
            format!("{path}.subjectAltNames"),
            "sidecar: subjectAltNames is not supported in ingress tls",
        );
    }
    if t.https_redirect == Some(true) {
        r.error(
            format!("{path}.httpsRedirect"),
            "sidecar: httpsRedirect is not supported",
        );
    }
    if tls::set(&t.credential_name) {
        r.error(
            format!("{path}.credentialName"),
            "sidecar: credentialName is not currently supported",
        );
    }
    if t.credential_names.as_ref().is_some_and(|c| !c.is_empty()) {
        r.error(
            format!("{path}.credentialNames"),
            "sidecar: credentialNames is not currently supported",
        );
    }
    if t.tls_certificates.as_ref().is_some_and(|c| !c.is_empty()) {
        r.error(
            format!("{path}.tlsCertificates"),
            "sidecar: tls_certificates is not currently supported",
        );
    }
    if let Some(mode @ (api::ServerTlsMode::ISTIO_MUTUAL | api::ServerTlsMode::AUTO_PASSTHROUGH)) =
        t.mode
    {
        r.error(
            format!("{path}.mode"),
            format!("configuration is invalid: cannot set mode to {mode:?} in sidecar ingress tls"),
        );
    }
    if !matches!(
        parse_protocol(protocol),
        Some((Protocol::Https | Protocol::Tls, _))
    ) {
        r.error(
            path,
            "server cannot have TLS settings for non HTTPS/TLS ports",
        );
    }
    tls::check(t, path, r);
}

/// `defaultEndpoint`: `unix://PATH`, or `HOST:PORT` with a loopback or unspecified host.
fn default_endpoint(text: &str, path: &str, r: &mut Report) -> Option<model::DefaultEndpoint> {
    if text.is_empty() {
        return Some(model::DefaultEndpoint::None);
    }
    if let Some(socket) = text.strip_prefix(UNIX_PREFIX) {
        let before = r.errors.len();
        check_unix(socket, path, r);
        return (r.errors.len() == before).then(|| model::DefaultEndpoint::Unix(socket.to_owned()));
    }
    let before = r.errors.len();
    let (host, port) = match split_host_port(text) {
        Ok(parts) => parts,
        Err(e) => {
            r.error(path, e);
            ("", "")
        }
    };
    if !["", "127.0.0.1", "0.0.0.0", "::1", "::"].contains(&host) {
        r.error(
            path,
            "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset",
        );
    }
    let number = match port.parse::<i64>() {
        Ok(n) => u32::try_from(n)
            .ok()
            .and_then(|n| fields::check_port(n, path, r))
            .or_else(|| {
                if n < 0 {
                    r.error(
                        path,
                        format!("port number {n} must be in the range 1..65535"),
                    );
                }
                None
            }),
        Err(_) => {
            r.error(
                path,
                format!(
                    "sidecar: defaultEndpoint port ({port}) is not a number: strconv.Atoi: parsing {port:?}: invalid syntax"
                ),
            );
            None
        }
    };
    if r.errors.len() > before {
        return None;
    }
    let port = number?;
    Some(match host {
        "0.0.0.0" => model::DefaultEndpoint::PodIp { port, ipv6: false },
        "::" => model::DefaultEndpoint::PodIp { port, ipv6: true },
        "::1" => model::DefaultEndpoint::Loopback { port, ipv6: true },
        _ => model::DefaultEndpoint::Loopback { port, ipv6: false },
    })
}

/// Go's `net.SplitHostPort`, with its error texts.
fn split_host_port(text: &str) -> Result<(&str, &str), String> {
    let err = |what: &str| format!("address {text}: {what}");
    if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(err("missing ']' in address"));
        };
        return match after.strip_prefix(':') {
            Some(port) if !port.contains(':') => Ok((host, port)),
            Some(_) => Err(err("too many colons in address")),
            None if after.is_empty() => Err(err("missing port in address")),
            None => Err(err("missing port in address")),
        };
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(err("missing port in address"));
    };
    if host.contains(':') {
        return Err(err("too many colons in address"));
    }
    if host.contains('[') || host.contains(']') {
        return Err(err("unexpected '[' in address"));
    }
    Ok((host, port))
}

fn egress(
    listeners: &[api::IstioEgressListener],
    namespace: &str,
    r: &mut Report,
) -> Vec<model::EgressListener> {
    let mut ports = BTreeSet::new();
    let mut sockets = BTreeSet::new();
    let mut catch_all = false;
    let mut out = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        let path = format!("spec.egress[{i}]");
        let before = r.errors.len();
        let bind = l.bind.as_deref().unwrap_or_default();
        let mut model_bind = None;
        match &l.port {
            None if catch_all => {
                r.error(
                    &path,
                    "sidecar: egress can have only one listener with empty port",
                );
                continue;
            }
            None if i == listeners.len() - 1 => catch_all = true,
            None => r.error(
                &path,
                "sidecar: the egress listener with empty port should be the last listener in the list",
            ),
            Some(port) => {
                let number = port.number.unwrap_or_default();
                check_port(port, &path, number != 0, r);
                let at = format!("{path}.bind");
                if number == 0 {
                    match bind.strip_prefix(UNIX_PREFIX) {
                        Some(socket) => {
                            check_unix(socket, &at, r);
                            model_bind = Some(model::Bind::Unix(socket.to_owned()));
                        }
                        None => r.error(
                            &at,
                            "sidecar: ports with 0 value must have a unix domain socket bind address",
                        ),
                    }
                    if l.capture_mode == Some(api::CaptureMode::IPTABLES) {
                        r.error(
                            format!("{path}.captureMode"),
                            "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
                        );
                    }
                    if !sockets.insert(bind) {
                        r.error(
                            &at,
                            "sidecar: unix domain socket values for listeners must be unique",
                        );
                    }
                } else {
                    if !bind.is_empty() {
                        model_bind = check_ip(bind, &at, r).map(model::Bind::Ip);
                    }
                    if !ports.insert(number) {
                        r.error(
                            format!("{path}.port.number"),
                            "sidecar: ports on IP bound listeners must be unique",
                        );
                    }
                }
            }
        }
        if l.port.is_none() && !bind.is_empty() {
            model_bind = match bind.strip_prefix(UNIX_PREFIX) {
                Some(socket) => Some(model::Bind::Unix(socket.to_owned())),
                None => bind.parse().ok().map(model::Bind::Ip),
            };
        }
        let hosts = egress_hosts(&l.hosts, namespace, &format!("{path}.hosts"), r);
        if r.errors.len() == before {
            out.push(model::EgressListener {
                port: l.port.as_ref().map(model_port),
                bind: model_bind,
                capture_mode: capture_mode(l.capture_mode),
                hosts,
            });
        }
    }
    out
}

/// `egress[].hosts`: each `namespace/dnsName`, with Istio's duplicate warnings.
fn egress_hosts(
    hosts: &[String],
    namespace: &str,
    path: &str,
    r: &mut Report,
) -> Vec<model::EgressHost> {
    if hosts.is_empty() {
        r.error(
            path,
            "sidecar: egress listener must contain at least one host",
        );
        return Vec::new();
    }
    // Hosts seen per namespace (`.` as the Sidecar's), for the duplicate warnings.
    let mut seen: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut out = Vec::new();
    for (j, host) in hosts.iter().enumerate() {
        let at = format!("{path}[{j}]");
        let Some((ns, name)) = host.split_once('/') else {
            r.error(&at, "host must be of form namespace/dnsName");
            continue;
        };
        let key = if ns == "." { namespace } else { ns };
        let names = seen.entry(key).or_default();
        let duplicate = if name == "*" {
            !names.is_empty()
        } else {
            names.contains(name) || names.contains("*")
        };
        if duplicate {
            r.warn(&at, format!("duplicated egress host: {host}"));
        }
        names.insert(name);
        let before = r.errors.len();
        if ns.is_empty() || name.is_empty() {
            r.error(
                &at,
                "config namespace and dnsName in host entry cannot be empty",
            );
        }
        if !["*", ".", "~"].contains(&ns) && !fields::is_dns1123_label(ns) {
            r.error(&at, format!("invalid namespace value {ns:?} in sidecar"));
        }
        if name != "*" && !name.contains('.') {
            r.error(&at, "short names (non FQDN) are not allowed");
        }
        if let Err(e) = fields::check_wildcard_domain(name) {
            r.error(&at, e);
        }
        if name.contains('*') && name.len() != 1 && !name.starts_with("*.") {
            r.error(&at, format!("partial wildcard {name:?} not allowed"));
        }
        if r.errors.len() == before {
            out.push(model::EgressHost {
                namespace: match ns {
                    "*" => model::HostNamespace::Any,
                    "." => model::HostNamespace::Own,
                    "~" => model::HostNamespace::None,
                    ns => model::HostNamespace::Named(ns.to_owned()),
                },
                dns_name: name.to_owned(),
            });
        }
    }
    if seen.get("*").is_some_and(|n| n.contains("*")) && seen.len() != 1 {
        r.warn(
            path,
            "`*/*` host select all resources, no other hosts can be added",
        );
    }
    out
}

/// `outboundTrafficPolicy`. The protobuf's zero mode is `REGISTRY_ONLY`: a policy without a
/// mode refuses unknown hosts.
fn outbound_policy(p: &api::OutboundTrafficPolicy, r: &mut Report) -> model::SidecarOutboundPolicy {
    let mode = match p.mode {
        Some(api::OutboundTrafficMode::ALLOW_ANY) => OutboundTrafficPolicy::AllowAny,
        None | Some(api::OutboundTrafficMode::REGISTRY_ONLY) => OutboundTrafficPolicy::RegistryOnly,
    };
    let path = "spec.outboundTrafficPolicy.egressProxy";
    let egress_proxy = p.egress_proxy.as_ref().and_then(|d| {
        if mode != OutboundTrafficPolicy::AllowAny {
            r.error(
                path,
                "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
            );
            return None;
        }
        let before = r.errors.len();
        if d.host.contains('*') {
            r.error(
                format!("{path}.host"),
                format!("domain name {:?} invalid (label \"*\" invalid)", d.host),
            );
        } else if let Err(e) = fields::check_wildcard_domain(&d.host) {
            r.error(format!("{path}.host"), e);
        }
        let Some(port) = d.port.as_ref() else {
            r.error(path, "sidecar: egress_proxy port must be non-nil");
            return None;
        };
        let port = fields::check_port(
            port.number.unwrap_or_default(),
            &format!("{path}.port.number"),
            r,
        );
        (r.errors.len() == before).then(|| model::EgressProxy {
            host: d.host.clone(),
            subset: d.subset.clone().filter(|s| !s.is_empty()),
            port: port.unwrap_or_default(),
        })
    });
    model::SidecarOutboundPolicy { mode, egress_proxy }
}
