//! ServiceEntries and WorkloadEntries, and the services and endpoints they make: one
//! [`Service`] per host, its endpoints under that host in `Snapshot::endpoints`, and the
//! WorkloadEntries Kubernetes Services select (Istio's `PILOT_ENABLE_K8S_SELECT_WORKLOAD_ENTRIES`).
//!
//! Hosts declared twice resolve as istiod's service index does for a default sidecar scope:
//! a Kubernetes Service keeps its host name, and ServiceEntries of its namespace add their
//! endpoints to it; otherwise the oldest ServiceEntry (creation time, name, namespace) declares
//! the service, and later ones of the same namespace add their endpoints (oldest first), while
//! those of other namespaces are left out. (Istio resolves a host per proxy namespace, preferring
//! the proxy's own; one service per host name is Sextant's simplification.)
//!
//! Addresses are allocated as istiod's IP allocator does, for every host that is not a wildcard
//! of an entry that asks for one (see `ServiceEntry::auto_allocate`), from `240.240.0.0/16`:
//! a host hashes (FNV-1a) to a slot, and a taken slot moves on to the next free one, hosts
//! taking theirs oldest entry first. So a host keeps its address while it exists, unless an
//! older entry brings a host that hashes to the same slot. IPv6 addresses are not allocated.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use sextant_model::{
    Endpoint, EntryAddress, EntryResolution, Health, Origin, Resolution, Service, ServiceEntry,
    ServicePort, Workload, WorkloadEntry,
};

use super::Key;

/// ServiceEntries and WorkloadEntries, with what they made at the last publish.
#[derive(Debug, Default)]
pub(super) struct Entries {
    pub(super) service_entries: BTreeMap<Key, Arc<ServiceEntry>>,
    pub(super) workload_entries: BTreeMap<Key, Arc<WorkloadEntry>>,
    /// Something they depend on changed since the last refresh.
    pub(super) dirty: bool,
    /// Services of ServiceEntry hosts that no Kubernetes Service has.
    pub(super) services: BTreeMap<String, Arc<Service>>,
    /// Endpoints by host: of ServiceEntry hosts, and WorkloadEntries of Kubernetes Services.
    pub(super) endpoints: BTreeMap<String, Arc<Vec<Endpoint>>>,
    /// Allocated addresses by host.
    pub(super) allocated: BTreeMap<String, IpAddr>,
}

/// What a refresh changed.
#[derive(Debug, Default)]
pub(super) struct Refreshed {
    pub(super) services: BTreeSet<String>,
    pub(super) endpoints: BTreeSet<String>,
}

impl Entries {
    /// Whether a change to Kubernetes Services can change what entries make.
    pub(super) fn watch_services(&self) -> bool {
        !self.service_entries.is_empty() || !self.workload_entries.is_empty()
    }

    /// Whether a change to a Pod of `namespace` can change what entries make.
    pub(super) fn watch_pods(&self, namespace: &str) -> bool {
        self.service_entries
            .values()
            .any(|se| se.id.namespace == namespace && se.workload_selector.is_some())
    }

    /// ServiceEntries oldest first (creation time, name, namespace), as Istio orders them.
    pub(super) fn ordered(&self) -> Vec<Arc<ServiceEntry>> {
        let mut entries: Vec<Arc<ServiceEntry>> = self.service_entries.values().cloned().collect();
        entries.sort_by_key(|se| {
            (
                se.creation_timestamp.clone().unwrap_or_default(),
                se.id.name.clone(),
                se.id.namespace.clone(),
            )
        });
        entries
    }

    /// Recomputes services, endpoints and addresses.
    pub(super) fn refresh(
        &mut self,
        kube: &BTreeMap<Key, Arc<Service>>,
        pods: &BTreeMap<Key, Arc<Workload>>,
        cluster_id: &str,
    ) -> Refreshed {
        self.dirty = false;
        let ordered = self.ordered();
        let entries: Vec<&Arc<ServiceEntry>> = ordered.iter().collect();
        let allocated = allocate(&entries);
        let kube_hosts: BTreeMap<&str, &Arc<Service>> =
            kube.values().map(|s| (s.hostname.as_str(), s)).collect();
        let mut services: BTreeMap<String, Arc<Service>> = BTreeMap::new();
        let mut endpoints: BTreeMap<String, Vec<Endpoint>> = BTreeMap::new();
        let build = Build {
            pods,
            workload_entries: &self.workload_entries,
            cluster_id,
        };
        for se in &entries {
            if se.resolution == EntryResolution::DynamicDns {
                continue;
            }
            for host in &se.hosts {
                let owner = match kube_hosts.get(host.as_str()) {
                    Some(k) => k.namespace.as_str(),
                    None => {
                        let svc = services
                            .entry(host.clone())
                            .or_insert_with(|| Arc::new(service(se, host, allocated.get(host))));
                        svc.namespace.as_str()
                    }
                };
                if owner == se.id.namespace {
                    let eps = build.service_entry(se, host);
                    endpoints.entry(host.clone()).or_default().extend(eps);
                }
            }
        }
        for svc in kube.values() {
            if svc.selector.is_empty() || svc.is_alias() {
                continue;
            }
            let eps: Vec<Endpoint> = self
                .workload_entries
                .values()
                .filter(|we| we.namespace == svc.namespace && we.matches(&svc.selector))
                .filter(|we| matches!(we.address, EntryAddress::Ip(_)))
                .filter_map(|we| build.workload_entry(we, &svc.ports))
                .collect();
            if !eps.is_empty() {
                endpoints
                    .entry(svc.hostname.clone())
                    .or_default()
                    .extend(eps);
            }
        }
        let endpoints: BTreeMap<String, Arc<Vec<Endpoint>>> = endpoints
            .into_iter()
            .filter(|(_, e)| !e.is_empty())
            .map(|(h, e)| (h, Arc::new(e)))
            .collect();
        let refreshed = Refreshed {
            services: changed(&self.services, &services),
            endpoints: changed(&self.endpoints, &endpoints),
        };
        self.services = services;
        self.endpoints = endpoints;
        self.allocated = allocated;
        refreshed
    }
}

/// Keys whose values differ between two maps.
fn changed<V: PartialEq>(old: &BTreeMap<String, V>, new: &BTreeMap<String, V>) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(
        new.iter()
            .filter(|(k, v)| old.get(*k) != Some(v))
            .map(|(k, _)| k.clone()),
    );
    out
}

/// The service of one host of an entry.
fn service(se: &ServiceEntry, host: &str, allocated: Option<&IpAddr>) -> Service {
    // One plain address (or a /32, /128) is the VIP; CIDR blocks and several addresses are
    // matched by destination, not listened on.
    let vip = match se.addresses.as_slice() {
        [one] => one
            .strip_suffix("/32")
            .or_else(|| one.strip_suffix("/128"))
            .unwrap_or(one)
            .parse::<IpAddr>()
            .ok(),
        _ => None,
    };
    Service {
        hostname: host.to_owned(),
        name: host.to_owned(),
        namespace: se.id.namespace.clone(),
        ports: se.ports.clone(),
        cluster_ip: vip.or(allocated.copied()),
        labels: BTreeMap::new(),
        selector: se.workload_selector.clone().unwrap_or_default(),
        export_to: se.export_to.clone(),
        resolution: match se.resolution {
            EntryResolution::None | EntryResolution::DynamicDns => Resolution::Passthrough,
            EntryResolution::Static => Resolution::ClientSideLb,
            EntryResolution::Dns => Resolution::Dns,
            EntryResolution::DnsRoundRobin => Resolution::DnsRoundRobin,
        },
        creation_timestamp: se.creation_timestamp.clone(),
        origin: Origin::ServiceEntry {
            entry: se.id.clone(),
            location: se.location,
            subject_alt_names: se.subject_alt_names.clone(),
        },
    }
}

/// Allocates an address for every non-wildcard host of the entries that ask for one, oldest
/// entry first.
fn allocate(entries: &[&Arc<ServiceEntry>]) -> BTreeMap<String, IpAddr> {
    const SLOTS: u32 = 65534;
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    let mut out = BTreeMap::new();
    for se in entries.iter().filter(|se| se.auto_allocate) {
        for host in se.hosts.iter().filter(|h| !h.contains('*')) {
            if out.contains_key(host) || taken.len() as u32 >= SLOTS {
                continue;
            }
            let mut slot = fnv1a(host.as_bytes()) % SLOTS;
            while !taken.insert(slot) {
                slot = (slot + 1) % SLOTS;
            }
            // Slots 1..=65534: neither the network nor the broadcast address.
            let n = slot + 1;
            let ip = Ipv4Addr::new(240, 240, (n >> 8) as u8, (n & 0xff) as u8);
            out.insert(host.clone(), IpAddr::V4(ip));
        }
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

struct Build<'a> {
    pods: &'a BTreeMap<Key, Arc<Workload>>,
    workload_entries: &'a BTreeMap<Key, Arc<WorkloadEntry>>,
    cluster_id: &'a str,
}

impl Build<'_> {
    /// The endpoints one entry gives one of its hosts: its inline endpoints, or the Pods and
    /// WorkloadEntries its selector picks in its namespace; a DNS entry with neither is the
    /// host itself.
    fn service_entry(&self, se: &ServiceEntry, host: &str) -> Vec<Endpoint> {
        let dns = matches!(
            se.resolution,
            EntryResolution::Dns | EntryResolution::DnsRoundRobin
        );
        match &se.workload_selector {
            _ if se.resolution == EntryResolution::None => Vec::new(),
            Some(selector) => {
                let pods = self
                    .pods
                    .values()
                    .filter(|p| p.namespace == se.id.namespace)
                    .filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
                    .filter_map(|p| self.pod(p, &se.ports));
                let entries = self
                    .workload_entries
                    .values()
                    .filter(|we| we.namespace == se.id.namespace && we.matches(selector))
                    .filter(|we| dns || matches!(we.address, EntryAddress::Ip(_)))
                    .filter_map(|we| self.workload_entry(we, &se.ports));
                pods.chain(entries).collect()
            }
            None if se.endpoints.is_empty() && dns && !host.contains('*') => {
                let ports = se
                    .ports
                    .iter()
                    .map(|p| (p.name.clone(), p.target_port.unwrap_or(p.port)))
                    .collect();
                vec![Endpoint {
                    hostname: Some(Arc::from(host)),
                    ..self.endpoint(IpAddr::from([0, 0, 0, 0]), ports, &se.id.namespace)
                }]
            }
            None => se
                .endpoints
                .iter()
                .filter_map(|we| self.workload_entry(we, &se.ports))
                .collect(),
        }
    }

    fn endpoint(&self, address: IpAddr, ports: Vec<(String, u16)>, namespace: &str) -> Endpoint {
        Endpoint {
            address,
            hostname: None,
            weight: 1,
            ports: Arc::new(ports),
            labels: Arc::default(),
            service_account: None,
            locality: Default::default(),
            cluster_id: self.cluster_id.to_owned(),
            network: String::new(),
            health: Health::Healthy,
            workload: None,
            namespace: namespace.to_owned(),
            istio_mtls: false,
        }
    }

    /// A WorkloadEntry as an endpoint of `ports`: its port of the same name, else the target
    /// port, else the port itself. Unix sockets and entries without an address are skipped.
    fn workload_entry(&self, we: &WorkloadEntry, ports: &[ServicePort]) -> Option<Endpoint> {
        let (address, hostname) = match &we.address {
            EntryAddress::Ip(ip) => (*ip, None),
            EntryAddress::Dns(name) => (IpAddr::from([0, 0, 0, 0]), Some(Arc::from(name.as_str()))),
            EntryAddress::Unix(_) | EntryAddress::Unset => return None,
        };
        let ports = ports
            .iter()
            .map(|p| {
                let number = we
                    .ports
                    .get(&p.name)
                    .copied()
                    .or(p.target_port)
                    .unwrap_or(p.port);
                (p.name.clone(), number)
            })
            .collect();
        Some(Endpoint {
            hostname,
            weight: we.weight.max(1),
            labels: Arc::new(we.labels.clone()),
            service_account: we.service_account.clone(),
            locality: we.locality.clone().unwrap_or_default(),
            workload: Some(we.name.clone()),
            istio_mtls: we.istio_mtls(),
            network: we.network.clone().unwrap_or_default(),
            ..self.endpoint(address, ports, &we.namespace)
        })
    }

    /// A Pod a ServiceEntry selects, on each port's target port (else the port itself).
    fn pod(&self, pod: &Workload, ports: &[ServicePort]) -> Option<Endpoint> {
        let address = *pod.ips.first()?;
        let ports = ports
            .iter()
            .map(|p| (p.name.clone(), p.target_port.unwrap_or(p.port)))
            .collect();
        Some(Endpoint {
            labels: pod.labels.clone(),
            service_account: pod.service_account.clone(),
            locality: pod.locality.clone().unwrap_or_default(),
            workload: Some(pod.name.clone()),
            istio_mtls: pod
                .labels
                .get("security.istio.io/tlsMode")
                .map(String::as_str)
                == Some("istio"),
            ..self.endpoint(address, ports, &pod.namespace)
        })
    }
}
