//! Kubernetes kinds the mesh reads: Service, EndpointSlice, Pod, Namespace.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use k8s_openapi::api::{
    core::v1::{Pod, Service},
    discovery::v1::EndpointSlice,
};
use sextant_model::{self as model, Kind, Locality, Protocol, Resolution, ServicePort, Visibility};

use super::{Invalid, Parsed, Report, fields, object_ref};

/// Annotation that limits which namespaces see a Service.
const EXPORT_TO: &str = "networking.istio.io/exportTo";

/// A Service as the mesh sees it.
pub fn service(svc: &Service, domain_suffix: &str) -> Result<Parsed<model::Service>, Invalid> {
    let id = object_ref(Kind::Service, &svc.metadata);
    let mut r = Report::default();
    super::check_metadata(&svc.metadata, &mut r);
    let spec = svc.spec.clone().unwrap_or_default();
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let at = format!("spec.ports[{i}]");
        let Some(port) = u16::try_from(p.port).ok().filter(|p| *p > 0) else {
            r.error(
                format!("{at}.port"),
                format!("port number {} must be in the range 1..65535", p.port),
            );
            continue;
        };
        let name = p.name.clone().unwrap_or_default();
        let l4 = p.protocol.as_deref().unwrap_or("TCP");
        let target_port = match &p.target_port {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                u16::try_from(*n).ok()
            }
            Some(_) => None,
            None => Some(port),
        };
        ports.push(ServicePort {
            protocol: Protocol::detect(&name, p.app_protocol.as_deref(), l4, port),
            name,
            port,
            target_port,
        });
    }
    let cluster_ip = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    let external_name = spec.external_name.as_deref().filter(|n| !n.is_empty());
    let resolution = if let (Some("ExternalName"), Some(target)) =
        (spec.type_.as_deref(), external_name)
    {
        for (i, p) in ports.iter().enumerate() {
            // Istio's IST0150: the port's protocol cannot be known, so it is treated as TCP.
            if p.protocol == Protocol::Unsupported || p.name == "tcp" {
                r.warn(
                    format!("spec.ports[{i}].name"),
                    format!(
                        "port name {:?} of ExternalName service {}: ExternalName services need a protocol-prefixed port name (http-, grpc-, tls-, ...) other than \"tcp\"",
                        p.name, id.name
                    ),
                );
            }
        }
        Resolution::Alias(target.to_owned())
    } else if spec.cluster_ip.as_deref() == Some("None") {
        Resolution::Passthrough
    } else {
        Resolution::ClientSideLb
    };
    let annotations = svc.metadata.annotations.clone().unwrap_or_default();
    let export_to = match annotations.get(EXPORT_TO) {
        Some(list) => {
            let entries: Vec<String> = list.split(',').map(|s| s.trim().to_owned()).collect();
            fields::export_to(
                Some(&entries),
                &id.namespace,
                &format!("metadata.annotations[{EXPORT_TO}]"),
                &mut r,
            )
        }
        None => Visibility::Public,
    };
    let value = model::Service {
        hostname: format!("{}.{}.svc.{domain_suffix}", id.name, id.namespace),
        name: id.name.clone(),
        namespace: id.namespace.clone(),
        ports,
        cluster_ip,
        labels: svc.metadata.labels.clone().unwrap_or_default(),
        selector: spec.selector.clone().unwrap_or_default(),
        export_to,
        resolution,
        creation_timestamp: super::creation_timestamp(&svc.metadata),
        origin: model::Origin::Kubernetes,
    };
    r.finish(id, value)
}

/// A Pod, reduced to what the mesh needs (labels, IPs, identity, locality).
pub fn workload(pod: &Pod) -> Result<Parsed<model::Workload>, Invalid> {
    let id = object_ref(Kind::Pod, &pod.metadata);
    let mut r = Report::default();
    super::check_metadata(&pod.metadata, &mut r);
    let status = pod.status.clone().unwrap_or_default();
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty()
        && let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
    {
        ips.push(ip);
    }
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some((
                p.name.clone().unwrap_or_default(),
                u16::try_from(p.container_port).ok()?,
            ))
        })
        .collect();
    let value = model::Workload {
        name: id.name.clone(),
        namespace: id.namespace.clone(),
        locality: locality_from_labels(&labels),
        labels: Arc::new(labels),
        ips,
        service_account: spec.service_account_name.clone(),
        node: spec.node_name.clone(),
        ports,
    };
    r.finish(id, value)
}

/// Istio's `istio-locality` label (`region.zone.subzone`) or Kubernetes topology labels.
fn locality_from_labels(labels: &BTreeMap<String, String>) -> Option<Locality> {
    if let Some(l) = labels.get("istio-locality") {
        let mut parts = l.split('.');
        return Some(Locality {
            region: parts.next().unwrap_or_default().to_owned(),
            zone: parts.next().unwrap_or_default().to_owned(),
            subzone: parts.next().unwrap_or_default().to_owned(),
        });
    }
    let region = labels.get("topology.kubernetes.io/region");
    let zone = labels.get("topology.kubernetes.io/zone");
    (region.is_some() || zone.is_some()).then(|| Locality {
        region: region.cloned().unwrap_or_default(),
        zone: zone.cloned().unwrap_or_default(),
        subzone: labels
            .get("topology.istio.io/subzone")
            .cloned()
            .unwrap_or_default(),
    })
}

/// One endpoint of a slice before it is joined with its Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceEndpoint {
    /// Address.
    pub address: IpAddr,
    /// Pod it belongs to, if the slice says.
    pub pod: Option<(String, String)>,
    /// Zone from the slice.
    pub zone: Option<String>,
    /// Node from the slice.
    pub node: Option<String>,
    /// Health from the conditions.
    pub health: model::Health,
}

/// An EndpointSlice reduced to the service it belongs to, its ports and endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    /// Namespace.
    pub namespace: String,
    /// Service name (`kubernetes.io/service-name`).
    pub service: String,
    /// Ports (name, number).
    pub ports: Arc<Vec<(String, u16)>>,
    /// Endpoints.
    pub endpoints: Vec<SliceEndpoint>,
}

/// Reads an EndpointSlice; FQDN slices are skipped (nothing to route to by IP).
pub fn slice(es: &EndpointSlice) -> Result<Parsed<Slice>, Invalid> {
    let id = object_ref(Kind::EndpointSlice, &es.metadata);
    let mut r = Report::default();
    super::check_metadata(&es.metadata, &mut r);
    let service = es
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/service-name"))
        .cloned()
        .unwrap_or_default();
    if service.is_empty() {
        r.error(
            "metadata.labels[kubernetes.io/service-name]",
            "EndpointSlice has no kubernetes.io/service-name label, so it belongs to no Service",
        );
    }
    let mut ports = Vec::new();
    for (i, p) in es.ports.iter().flatten().enumerate() {
        match p
            .port
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
        {
            Some(n) => ports.push((p.name.clone().unwrap_or_default(), n)),
            None => r.error(
                format!("ports[{i}].port"),
                "port must be in the range 1..65535",
            ),
        }
    }
    let mut endpoints = Vec::new();
    if es.address_type != "FQDN" {
        for (i, ep) in es.endpoints.iter().enumerate() {
            let conditions = ep.conditions.clone().unwrap_or_default();
            let health = if conditions.terminating == Some(true) {
                model::Health::Draining
            } else if conditions.ready == Some(false) {
                model::Health::Unhealthy
            } else {
                model::Health::Healthy
            };
            let pod = ep
                .target_ref
                .as_ref()
                .filter(|t| t.kind.as_deref() == Some("Pod"))
                .and_then(|t| {
                    Some((
                        t.namespace.clone().unwrap_or_else(|| id.namespace.clone()),
                        t.name.clone()?,
                    ))
                });
            for (j, addr) in ep.addresses.iter().enumerate() {
                match addr.parse::<IpAddr>() {
                    Ok(address) => endpoints.push(SliceEndpoint {
                        address,
                        pod: pod.clone(),
                        zone: ep.zone.clone(),
                        node: ep.node_name.clone(),
                        health,
                    }),
                    Err(_) => r.error(
                        format!("endpoints[{i}].addresses[{j}]"),
                        format!("{addr:?} is not an IP address"),
                    ),
                }
            }
        }
    }
    let value = Slice {
        namespace: id.namespace.clone(),
        service,
        ports: Arc::new(ports),
        endpoints,
    };
    r.finish(id, value)
}
