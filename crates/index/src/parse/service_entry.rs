//! ServiceEntry and WorkloadEntry: Istio's `ValidateServiceEntry`, `validateWorkloadEntry`
//! and `validateExportTo` (with `~`), and the models they yield.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use sextant_api as api;
use sextant_model::{
    self as model, EntryAddress, EntryResolution, Kind, Locality, Location, Protocol, Visibility,
};

use super::{Invalid, Parsed, Report, fields, object_ref};

/// The label that opts a ServiceEntry out of address auto-allocation.
pub const AUTO_ALLOCATE_LABEL: &str = "networking.istio.io/enable-autoallocate-ip";

const UNIX_PREFIX: &str = "unix://";

/// Validates a ServiceEntry and builds its model.
pub fn service_entry(obj: &api::ServiceEntry) -> Result<Parsed<model::ServiceEntry>, Invalid> {
    let id = object_ref(Kind::ServiceEntry, &obj.metadata);
    let mut r = Report::default();
    super::check_metadata(&obj.metadata, &mut r);
    let spec = &obj.spec;
    let resolution = match spec.resolution.unwrap_or_default() {
        api::Resolution::NONE => EntryResolution::None,
        api::Resolution::STATIC => EntryResolution::Static,
        api::Resolution::DNS => EntryResolution::Dns,
        api::Resolution::DNS_ROUND_ROBIN => EntryResolution::DnsRoundRobin,
        api::Resolution::DYNAMIC_DNS => EntryResolution::DynamicDns,
    };
    let resolution_name = format!("{:?}", spec.resolution.unwrap_or_default());
    let selector = spec.workload_selector.as_ref().map(|s| {
        let labels = s.labels.clone().unwrap_or_default();
        check_selector(&labels, "spec.workloadSelector.labels", &mut r);
        if labels.is_empty() {
            r.warn(
                "spec.workloadSelector",
                "service entry: workload selector specified without labels, will be applied to all services in namespace",
            );
        }
        labels
    });
    if spec.workload_selector.is_some() && spec.endpoints.is_some() {
        r.error(
            "spec",
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        );
    }
    if spec.hosts.is_empty() {
        r.error("spec.hosts", "service entry must have at least one host");
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        let path = format!("spec.hosts[{i}]");
        if host == "*" {
            r.error(path, format!("invalid host {host}"));
            continue;
        }
        if let Err(e) = fields::check_wildcard_domain(host) {
            r.error(&path, e);
        }
        if resolution != EntryResolution::DynamicDns
            && host.contains('*')
            && host.len() != 1
            && !host.starts_with("*.")
        {
            r.warn(path, format!("partial wildcard {host:?} not allowed"));
        }
    }
    let addresses = spec.addresses.clone().unwrap_or_default();
    let mut cidr = false;
    for (i, address) in addresses.iter().enumerate() {
        let path = format!("spec.addresses[{i}]");
        cidr |= address.contains('/');
        if address.matches('/').count() == 1 {
            if !is_prefix(address) {
                r.error(path, format!("{address} is not a valid CIDR block"));
            }
        } else if address.parse::<IpAddr>().is_err() {
            r.error(path, format!("{address} is not a valid IP"));
        }
    }
    if cidr && !matches!(resolution, EntryResolution::None | EntryResolution::Static) {
        r.error(
            "spec.addresses",
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }
    let auto_allocate = resolution != EntryResolution::None
        && addresses.is_empty()
        && !obj
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(AUTO_ALLOCATE_LABEL))
            .is_some_and(|v| v.eq_ignore_ascii_case("false"));
    let ports = ports(spec, auto_allocate, &mut r);
    let port_names: BTreeSet<&str> = ports.iter().map(|p| p.name.as_str()).collect();
    let endpoints_in = spec.endpoints.as_deref().unwrap_or_default();
    let mut endpoints = Vec::new();
    let name = id.name.as_str();
    match resolution {
        EntryResolution::None => {
            if !endpoints_in.is_empty() {
                r.error(
                    "spec.endpoints",
                    "no endpoints should be provided for resolution type none",
                );
            }
            if spec.workload_selector.is_some() {
                r.warn(
                    "spec.workloadSelector",
                    "workloadSelector should not be set when resolution mode is NONE",
                );
            }
        }
        EntryResolution::Static => {
            for (i, ep) in endpoints_in.iter().enumerate() {
                let path = format!("spec.endpoints[{i}]");
                let address = workload_address(ep, Some(&port_names), false, &path, &mut r);
                endpoints.push(entry(
                    ep,
                    address,
                    &id.namespace,
                    format!("{name}-{i}"),
                    None,
                ));
            }
        }
        EntryResolution::Dns | EntryResolution::DnsRoundRobin => {
            if endpoints_in.is_empty()
                && let Some(bad) = spec.hosts.iter().find_map(|h| check_fqdn(h).err())
            {
                r.error(
                    "spec.hosts",
                    format!("hosts must be FQDN or contain only prefix wildcards if no endpoints are provided for resolution mode {resolution_name}, {bad}"),
                );
            }
            if resolution == EntryResolution::DnsRoundRobin && endpoints_in.len() > 1 {
                r.error(
                    "spec.endpoints",
                    format!(
                        "there must only be 0 or 1 endpoint for resolution mode {resolution_name}"
                    ),
                );
            }
            for (i, ep) in endpoints_in.iter().enumerate() {
                let path = format!("spec.endpoints[{i}]");
                let text = ep.address.as_deref().unwrap_or_default();
                let address = match text.parse::<IpAddr>() {
                    Ok(ip) => EntryAddress::Ip(ip),
                    Err(_) if check_fqdn(text).is_ok() => EntryAddress::Dns(text.to_owned()),
                    Err(_) => {
                        r.error(
                            format!("{path}.address"),
                            format!(
                                "endpoint address {text:?} is not a valid FQDN or an IP address"
                            ),
                        );
                        EntryAddress::Unset
                    }
                };
                let labels = ep.labels.clone().unwrap_or_default();
                fields::check_labels(&labels, &format!("{path}.labels"), &mut r);
                endpoint_ports(ep, Some(&port_names), &path, &mut r);
                endpoints.push(entry(
                    ep,
                    address,
                    &id.namespace,
                    format!("{name}-{i}"),
                    None,
                ));
            }
            if !addresses.is_empty()
                && ports
                    .iter()
                    .any(|p| is_tls(p.protocol) || p.protocol == Protocol::Tcp)
                && spec.hosts.len() > 1
            {
                r.warn(
                    "spec.hosts",
                    "service entry can not have more than one host specified simultaneously with address and tcp port",
                );
            }
        }
        EntryResolution::DynamicDns => dynamic_dns(spec, &resolution_name, &ports, &mut r),
    }
    if resolution != EntryResolution::None
        && spec.hosts.len() > 1
        && ports
            .iter()
            .any(|p| !p.protocol.is_http() && !is_tls(p.protocol))
    {
        r.error(
            "spec.ports",
            "multiple hosts provided with non-HTTP, non-TLS ports",
        );
    }
    let export_to = export_to(spec.export_to.as_deref(), &id.namespace, &mut r);
    let location = match spec.location.unwrap_or_default() {
        api::Location::MESH_EXTERNAL => Location::MeshExternal,
        api::Location::MESH_INTERNAL => Location::MeshInternal,
    };
    let value = model::ServiceEntry {
        id: id.clone(),
        hosts: spec.hosts.clone(),
        addresses,
        ports,
        location,
        resolution,
        endpoints,
        workload_selector: selector,
        export_to,
        subject_alt_names: spec.subject_alt_names.clone().unwrap_or_default(),
        auto_allocate,
        creation_timestamp: super::creation_timestamp(&obj.metadata),
    };
    r.finish(id, value)
}

/// Validates a standalone WorkloadEntry and builds its model (labels merged with the
/// object's, which win).
pub fn workload_entry(obj: &api::WorkloadEntry) -> Result<Parsed<model::WorkloadEntry>, Invalid> {
    let id = object_ref(Kind::WorkloadEntry, &obj.metadata);
    let mut r = Report::default();
    super::check_metadata(&obj.metadata, &mut r);
    let address = workload_address(&obj.spec, None, true, "spec", &mut r);
    let value = entry(
        &obj.spec,
        address,
        &id.namespace,
        id.name.clone(),
        obj.metadata.labels.as_ref(),
    );
    let value = model::WorkloadEntry {
        creation_timestamp: super::creation_timestamp(&obj.metadata),
        ..value
    };
    r.finish(id, value)
}

fn ports(
    spec: &api::ServiceEntrySpec,
    auto_allocate: bool,
    r: &mut Report,
) -> Vec<model::ServicePort> {
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    let mut out = Vec::new();
    let no_addresses = spec.addresses.as_deref().unwrap_or_default().is_empty();
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        let path = format!("spec.ports[{i}]");
        if !names.insert(port.name.as_str()) {
            r.error(
                format!("{path}.name"),
                format!("service entry port name {:?} already defined", port.name),
            );
        }
        if !numbers.insert(port.number) {
            r.error(
                format!("{path}.number"),
                format!("service entry port {} already defined", port.number),
            );
        }
        let target_port = port
            .target_port
            .filter(|t| *t != 0)
            .and_then(|t| fields::check_port(t, &format!("{path}.targetPort"), r));
        let protocol_text = port.protocol.as_deref().unwrap_or_default();
        if no_addresses && !auto_allocate && matches!(protocol_text, "" | "TCP") {
            r.warn(
                &path,
                "addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation is not enabled",
            );
        }
        if !is_port_name(&port.name) {
            r.error(
                format!("{path}.name"),
                format!("invalid port name: {}", port.name),
            );
        }
        let protocol = if protocol_text.is_empty() {
            Protocol::Unsupported
        } else {
            let p = Protocol::detect("", Some(protocol_text), "TCP", 0);
            if p == Protocol::Unsupported {
                r.error(
                    format!("{path}.protocol"),
                    format!("unsupported protocol: {protocol_text}"),
                );
            }
            p
        };
        if let Some(number) = fields::check_port(port.number, &format!("{path}.number"), r) {
            out.push(model::ServicePort {
                name: port.name.clone(),
                port: number,
                target_port,
                protocol,
            });
        }
    }
    out
}

fn dynamic_dns(
    spec: &api::ServiceEntrySpec,
    resolution: &str,
    ports: &[model::ServicePort],
    r: &mut Report,
) {
    for (i, host) in spec.hosts.iter().enumerate() {
        if !host.starts_with('*') {
            r.error(
                format!("spec.hosts[{i}]"),
                format!("host must be wildcarded for resolution mode {resolution}"),
            );
        }
    }
    if spec.addresses.as_ref().is_some_and(|a| !a.is_empty()) {
        r.error(
            "spec.addresses",
            format!("addresses cannot be set for resolution type {resolution}. HTTP route domains will only be generatedfrom the hosts field values"),
        );
    }
    if spec.endpoints.as_ref().is_some_and(|e| !e.is_empty()) {
        r.error(
            "spec.endpoints",
            format!("endpoints cannot be set for resolution type {resolution}. Destination IP address determined from hostsfield values"),
        );
    }
    if ports.iter().any(|p| {
        !matches!(
            p.protocol,
            Protocol::Http | Protocol::Tls | Protocol::Grpc | Protocol::Http2
        )
    }) {
        r.error(
            "spec.ports",
            format!("only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type {resolution}"),
        );
    }
    r.unsupported("spec.resolution", "resolution DYNAMIC_DNS");
}

/// Istio's `validateWorkloadEntry`: the address (an IP; a name only when `fqdn` is allowed;
/// a Unix socket without ports), ports (names of `service_ports` when given) and labels.
fn workload_address(
    we: &api::WorkloadEntrySpec,
    service_ports: Option<&BTreeSet<&str>>,
    fqdn: bool,
    path: &str,
    r: &mut Report,
) -> EntryAddress {
    let text = we.address.as_deref().unwrap_or_default();
    let at = format!("{path}.address");
    let address = if text.is_empty() {
        match we.network.as_deref().filter(|n| !n.is_empty()) {
            None => r.error(&at, "address is required"),
            Some(network) => r.warn(&at, format!("address is unset with network {network:?}")),
        }
        EntryAddress::Unset
    } else if let Some(socket) = text.strip_prefix(UNIX_PREFIX) {
        if socket.is_empty() || !(socket.starts_with('/') || socket.starts_with('@')) {
            r.error(&at, format!("{socket} is not an absolute path"));
        }
        if we.ports.as_ref().is_some_and(|p| !p.is_empty()) {
            r.error(
                format!("{path}.ports"),
                format!("unix endpoint {text} must not include ports"),
            );
        }
        if service_ports.is_some_and(|p| p.len() != 1) {
            r.error(path, "exactly 1 service port required for unix endpoints");
        }
        r.unsupported(&at, "a unix domain socket endpoint");
        EntryAddress::Unix(text.to_owned())
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        EntryAddress::Ip(ip)
    } else if !fqdn {
        r.error(
            &at,
            format!("endpoint address {text:?} is not a valid IP address"),
        );
        EntryAddress::Unset
    } else if check_fqdn(text).is_ok() {
        EntryAddress::Dns(text.to_owned())
    } else {
        r.error(
            &at,
            format!("endpoint address {text:?} is not a valid FQDN or an IP address"),
        );
        EntryAddress::Unset
    };
    endpoint_ports(we, service_ports, path, r);
    let labels = we.labels.clone().unwrap_or_default();
    fields::check_labels(&labels, &format!("{path}.labels"), r);
    address
}

fn endpoint_ports(
    we: &api::WorkloadEntrySpec,
    service_ports: Option<&BTreeSet<&str>>,
    path: &str,
    r: &mut Report,
) {
    for (name, port) in we.ports.iter().flatten() {
        let at = format!("{path}.ports[{name}]");
        if service_ports.is_some_and(|p| !p.contains(name.as_str())) {
            r.error(
                &at,
                format!("endpoint port {port} is not defined by the service entry"),
            );
        }
        if !is_port_name(name) {
            r.error(&at, format!("invalid port name: {name}"));
        }
        fields::check_port(*port, &at, r);
    }
}

/// The model of a WorkloadEntry (standalone, or inline as `name`).
fn entry(
    we: &api::WorkloadEntrySpec,
    address: EntryAddress,
    namespace: &str,
    name: String,
    metadata_labels: Option<&BTreeMap<String, String>>,
) -> model::WorkloadEntry {
    let mut labels = we.labels.clone().unwrap_or_default();
    labels.extend(metadata_labels.cloned().unwrap_or_default());
    let locality = we.locality.as_deref().filter(|l| !l.is_empty()).map(|l| {
        let mut parts = l.splitn(3, '/').map(str::to_owned);
        Locality {
            region: parts.next().unwrap_or_default(),
            zone: parts.next().unwrap_or_default(),
            subzone: parts.next().unwrap_or_default(),
        }
    });
    model::WorkloadEntry {
        name,
        namespace: namespace.to_owned(),
        address,
        ports: we
            .ports
            .iter()
            .flatten()
            .filter_map(|(n, p)| Some((n.clone(), u16::try_from(*p).ok().filter(|p| *p > 0)?)))
            .collect(),
        labels,
        network: we.network.clone().filter(|n| !n.is_empty()),
        locality,
        weight: we.weight.unwrap_or_default(),
        service_account: we.service_account.clone().filter(|s| !s.is_empty()),
        creation_timestamp: None,
    }
}

/// Istio's `ValidateAlphaWorkloadSelector`.
fn check_selector(labels: &BTreeMap<String, String>, path: &str, r: &mut Report) {
    for (k, v) in labels {
        if k.is_empty() {
            r.error(
                path,
                format!(
                    "empty key is not supported in selector: {:?}",
                    format!("{k}={v}")
                ),
            );
        }
        if k.contains('*') || v.contains('*') {
            r.error(
                path,
                format!(
                    "wildcard is not supported in selector: {:?}",
                    format!("{k}={v}")
                ),
            );
        }
    }
}

/// `validateExportTo` for a ServiceEntry: as for other kinds, and `~` (visible to no proxy)
/// alone.
fn export_to(entries: Option<&[String]>, namespace: &str, r: &mut Report) -> Visibility {
    let entries = entries.unwrap_or_default();
    let none = entries.iter().filter(|e| *e == "~").count();
    if none == 0 {
        return fields::export_to(Some(entries), namespace, "spec.exportTo", r);
    }
    if none > 1 {
        r.error("spec.exportTo", "duplicate entries in exportTo for entry ~");
    }
    let rest: Vec<String> = entries.iter().filter(|e| *e != "~").cloned().collect();
    if !rest.is_empty() {
        fields::export_to(Some(&rest), namespace, "spec.exportTo", r);
        r.error(
            "spec.exportTo",
            "cannot export service entry to no one (~) and someone",
        );
    }
    Visibility::Hidden
}

/// Istio's `ValidateFQDN`: DNS-1123 labels (either case), a last label that is not all digits,
/// an optional trailing dot.
fn check_fqdn(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty domain name not allowed".to_owned());
    }
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    let parts: Vec<&str> = name.split('.').collect();
    let top = parts.last().copied().unwrap_or_default();
    if !top.is_empty() && top.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain name {name:?} invalid (top level domain {top:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_port_name(label) {
            return Err(format!(
                "domain name {name:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// Istio's `IsDNS1123Label` (letters of either case, digits and inner `-`, at most 63).
fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_prefix(text: &str) -> bool {
    let Some((ip, len)) = text.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    !len.is_empty()
        && len.bytes().all(|b| b.is_ascii_digit())
        && len.parse::<u8>().is_ok_and(|l| l <= max)
        && !(len.len() > 1 && len.starts_with('0'))
}

fn is_tls(p: Protocol) -> bool {
    matches!(p, Protocol::Tls | Protocol::Https)
}
