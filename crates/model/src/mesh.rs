//! Services, their ports and endpoints, and the proxies that connect.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use crate::{Location, ObjectRef, Visibility};

/// A service in the registry: a Kubernetes Service, or one host of a ServiceEntry.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// Fully qualified host name, `reviews.default.svc.cluster.local`.
    pub hostname: String,
    /// Service name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Ports in declaration order.
    pub ports: Vec<ServicePort>,
    /// Cluster IP (`None` for headless and ExternalName services).
    pub cluster_ip: Option<IpAddr>,
    /// Labels of the Service object.
    pub labels: BTreeMap<String, String>,
    /// Pod selector (empty: endpoints are managed by hand).
    pub selector: BTreeMap<String, String>,
    /// Namespaces the service is visible to (`networking.istio.io/exportTo`).
    pub export_to: Visibility,
    /// How clients find endpoints.
    pub resolution: Resolution,
    /// Creation time, for ordering.
    pub creation_timestamp: Option<String>,
    /// Where the service is declared.
    pub origin: Origin,
}

/// Where a service is declared.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Origin {
    /// A Kubernetes Service.
    #[default]
    Kubernetes,
    /// A ServiceEntry host (the oldest entry of the host when several declare it).
    ServiceEntry {
        /// The ServiceEntry.
        entry: ObjectRef,
        /// Inside or outside the mesh.
        location: Location,
        /// Its `subjectAltNames`.
        subject_alt_names: Vec<String>,
    },
}

impl Service {
    /// Whether a ServiceEntry declares the service outside the mesh (`MESH_EXTERNAL`): no
    /// auto mutual TLS toward it.
    pub fn is_external(&self) -> bool {
        matches!(
            self.origin,
            Origin::ServiceEntry {
                location: Location::MeshExternal,
                ..
            }
        )
    }

    /// Whether this is an ExternalName alias (see [`Resolution::Alias`]).
    pub fn is_alias(&self) -> bool {
        self.alias_target().is_some()
    }

    /// The host name an ExternalName alias names.
    pub fn alias_target(&self) -> Option<&str> {
        match &self.resolution {
            Resolution::Alias(target) => Some(target),
            _ => None,
        }
    }

    /// The port with this number.
    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }
}

/// How a service's endpoints are discovered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Endpoints come from the registry (EDS).
    ClientSideLb,
    /// Headless: connect to the original destination.
    Passthrough,
    /// ExternalName: another name for the service whose host name is this `externalName`, as
    /// Istio has treated it since 1.24. It has no clusters, listeners or virtual host of its
    /// own: its names join its target's virtual hosts (`Snapshot::aliases`), and it reaches
    /// nothing when no service of the mesh has that host name.
    Alias(String),
    /// A DNS ServiceEntry: Envoy resolves each endpoint's name (`STRICT_DNS`).
    Dns,
    /// A DNS_ROUND_ROBIN ServiceEntry: Envoy resolves one name and connects to the first
    /// address (`LOGICAL_DNS`).
    DnsRoundRobin,
}

/// One port of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name (`http`, `grpc-web`, ...).
    pub name: String,
    /// Service port.
    pub port: u16,
    /// Target port number on the endpoints, when numeric.
    pub target_port: Option<u16>,
    /// Application protocol.
    pub protocol: Protocol,
}

/// Application protocol of a port, as Istio derives it from `appProtocol` or the port name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// HTTP/1.1.
    Http,
    /// HTTP/2 (h2c).
    Http2,
    /// gRPC.
    Grpc,
    /// gRPC-Web.
    GrpcWeb,
    /// TLS-wrapped HTTP (treated as opaque TLS by sidecars).
    Https,
    /// Opaque TLS.
    Tls,
    /// Opaque TCP (also mongo, redis, mysql).
    Tcp,
    /// UDP (not proxied).
    Udp,
    /// Unknown: Istio sniffs the protocol.
    Unsupported,
}

impl Protocol {
    /// Istio's `ConvertProtocol`: `appProtocol` first, else the port-name prefix before `-`;
    /// UDP ports are skipped; unnamed ports of well-known TCP services are TCP.
    pub fn detect(name: &str, app_protocol: Option<&str>, l4: &str, port: u16) -> Protocol {
        if l4.eq_ignore_ascii_case("UDP") {
            return Protocol::Udp;
        }
        if let Some(app) = app_protocol {
            match app {
                "kubernetes.io/h2c" => return Protocol::Http2,
                "kubernetes.io/ws" | "kubernetes.io/wss" => return Protocol::Http,
                other => {
                    if let Some(p) = Protocol::from_prefix(other) {
                        return p;
                    }
                }
            }
        }
        let prefix = name.split('-').next().unwrap_or(name);
        match Protocol::from_prefix(prefix) {
            Some(p) => p,
            None if matches!(port, 25 | 53 | 3306 | 27017) => Protocol::Tcp,
            None => Protocol::Unsupported,
        }
    }

    fn from_prefix(p: &str) -> Option<Protocol> {
        Some(match p.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" | "h2c" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" | "mongo" | "redis" | "mysql" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => return None,
        })
    }

    /// HTTP family: served by an HTTP connection manager with routes.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
        )
    }

    /// Upstream connections use HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

/// Where an endpoint runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locality {
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Sub-zone.
    pub subzone: String,
}

impl Locality {
    /// `region/zone/subzone`, as Istio prints localities.
    pub fn label(&self) -> String {
        format!("{}/{}/{}", self.region, self.zone, self.subzone)
    }

    /// Reads `region/zone/subzone` (missing parts empty).
    pub fn parse(text: &str) -> Locality {
        let mut parts = text.splitn(3, '/');
        let mut next = || parts.next().unwrap_or_default().to_owned();
        Locality {
            region: next(),
            zone: next(),
            subzone: next(),
        }
    }

    /// Nothing is known.
    pub fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty()
    }

    /// Whether this locality matches a DestinationRule locality pattern (`region/zone/subzone`,
    /// each part possibly `*`, missing trailing parts matching anything), as Istio's
    /// `LocalityMatch` does.
    pub fn matches(&self, pattern: &str) -> bool {
        let mut mine = [&self.region, &self.zone, &self.subzone].into_iter();
        for part in pattern.split('/') {
            let Some(own) = mine.next() else { return true };
            if part == "*" {
                return true;
            }
            if part != own {
                return false;
            }
        }
        true
    }
}

/// An east-west gateway: where proxies of other networks send traffic for this network's
/// endpoints (Istio's `NetworkGateway`), from a Service labelled `topology.istio.io/network`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetworkGateway {
    /// The network it leads into.
    pub network: String,
    /// The cluster whose Service declares it.
    pub cluster_id: String,
    /// Its address (load balancer ingress or external IP).
    pub address: IpAddr,
    /// Its mTLS port (15443, or the Service's `networking.istio.io/gatewayPort` label).
    pub port: u16,
}

/// Health of an endpoint, from EndpointSlice conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Health {
    /// Ready.
    Healthy,
    /// Not ready.
    Unhealthy,
    /// Terminating.
    Draining,
}

/// One workload address backing a service.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// Workload address (unspecified when `hostname` is set).
    pub address: IpAddr,
    /// A DNS name Envoy resolves instead of `address`: an endpoint of a DNS ServiceEntry
    /// (a host name endpoint, or the entry's host itself).
    pub hostname: Option<Arc<str>>,
    /// Load-balancing weight (at least 1).
    pub weight: u32,
    /// Port numbers by service port name (from the EndpointSlice).
    pub ports: Arc<Vec<(String, u16)>>,
    /// Labels of the workload (its Pod's labels).
    pub labels: Arc<BTreeMap<String, String>>,
    /// Service account of the workload.
    pub service_account: Option<String>,
    /// Locality.
    pub locality: Locality,
    /// Cluster the endpoint lives in.
    pub cluster_id: String,
    /// Network the endpoint is on (empty: the default network, reachable from everywhere).
    /// A proxy on another network reaches it through this network's gateways.
    pub network: String,
    /// Health.
    pub health: Health,
    /// Workload (Pod) name.
    pub workload: Option<String>,
    /// Namespace of the workload.
    pub namespace: String,
    /// The workload runs an Istio sidecar (label `security.istio.io/tlsMode: istio`).
    pub istio_mtls: bool,
}

impl Endpoint {
    /// The endpoint port for a service port, matched by name (unnamed single ports match).
    pub fn port_for(&self, port: &ServicePort) -> Option<u16> {
        self.ports
            .iter()
            .find(|(name, _)| *name == port.name)
            .or_else(|| (self.ports.len() == 1 && port.name.is_empty()).then(|| &self.ports[0]))
            .map(|(_, p)| *p)
    }

    /// Whether the endpoint's labels include every selector label.
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// A workload known from a Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Pod name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Labels.
    pub labels: Arc<BTreeMap<String, String>>,
    /// Pod IPs.
    pub ips: Vec<IpAddr>,
    /// Service account.
    pub service_account: Option<String>,
    /// Node name.
    pub node: Option<String>,
    /// Locality from the Pod's topology labels (`istio-locality`, `topology.kubernetes.io/*`).
    pub locality: Option<Locality>,
    /// Container ports (name, number).
    pub ports: Vec<(String, u16)>,
}
