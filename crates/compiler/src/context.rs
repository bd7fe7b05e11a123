//! What one proxy sees of the snapshot: its visible services and the DestinationRule that
//! applies to each, computed once per compilation.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use sextant_model::{
    DestinationRule, Interception, OutboundTrafficPolicy, Proxy, ProxyKind, Service, ServicePort,
    Sidecar, Snapshot, VirtualService, resolve_host,
};

/// Which part of a proxy's configuration to build: the outbound part depends only on the
/// proxy's scope (namespace, flavor, interception, bind address and the labels configuration
/// reads) and is shared; the inbound part depends on its workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Everything.
    All,
    /// Outbound clusters, endpoints, listeners and routes, and Istio's static clusters.
    Outbound,
    /// The workload's inbound clusters and listeners.
    Inbound,
}

/// The per-proxy view the xDS modules read.
pub struct Context<'a> {
    /// What to build.
    pub part: Part,
    /// The whole mesh.
    pub snapshot: &'a Snapshot,
    /// Who is asking.
    pub proxy: &'a Proxy,
    services: BTreeMap<&'a str, &'a Arc<Service>>,
    /// Visible ExternalName aliases by host name: not services of their own (no clusters or
    /// listeners), only names (see `Resolution::Alias`).
    aliases: BTreeMap<&'a str, &'a Arc<Service>>,
    rules: BTreeMap<&'a str, DestinationRule>,
    /// The Gateway (`namespace/name`) whose routes are being built for a router, `None` for
    /// the mesh: rules bound to other gateways do not apply.
    gateway: std::cell::RefCell<Option<String>>,
    /// The Sidecar resource limiting what a sidecar proxy imports (never a gateway's).
    sidecar: Option<&'a Arc<Sidecar>>,
    /// Services imported only by the Sidecar's egress listeners on given ports, with those
    /// ports: the proxy sees only these ports of them (istiod's `needsPortMatch`).
    trimmed: BTreeMap<&'a str, Vec<u16>>,
}

/// `outbound|PORT|SUBSET|HOST`.
pub fn outbound_cluster(port: u16, subset: &str, host: &str) -> String {
    // Built by hand: this runs for every cluster, load assignment and route of every proxy.
    let mut s = String::with_capacity(16 + subset.len() + host.len());
    s.push_str("outbound|");
    push_u16(&mut s, port);
    s.push('|');
    s.push_str(subset);
    s.push('|');
    s.push_str(host);
    s
}

/// Appends a port number in decimal.
pub fn push_u16(s: &mut String, n: u16) {
    let mut digits = [0u8; 5];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for d in &digits[i..] {
        s.push(char::from(*d));
    }
}

/// `inbound|PORT||`.
pub fn inbound_cluster(port: u16) -> String {
    format!("inbound|{port}||")
}

impl<'a> Context<'a> {
    /// Builds the view of `proxy`.
    pub fn new(snapshot: &'a Snapshot, proxy: &'a Proxy, part: Part) -> Context<'a> {
        Context::restricted(snapshot, proxy, part, None)
    }

    /// The view of `proxy` limited to the services of `hosts` (for rebuilding the resources
    /// of a few services).
    pub fn restricted(
        snapshot: &'a Snapshot,
        proxy: &'a Proxy,
        part: Part,
        hosts: Option<&std::collections::BTreeSet<String>>,
    ) -> Context<'a> {
        let sidecar = match proxy.kind {
            ProxyKind::Sidecar => snapshot.sidecar_for(&proxy.namespace, &proxy.labels),
            ProxyKind::Router => None,
        };
        if part == Part::Inbound {
            return Context {
                part,
                snapshot,
                proxy,
                services: BTreeMap::new(),
                aliases: BTreeMap::new(),
                rules: BTreeMap::new(),
                gateway: Default::default(),
                sidecar,
                trimmed: BTreeMap::new(),
            };
        }
        // Under a Sidecar: the services its egress hosts import, and those the routes of the
        // VirtualServices it imports lead to (istiod adds them even when no host lists them).
        let destinations = sidecar.map(|sc| imported_destinations(snapshot, &proxy.namespace, sc));
        let (aliases, services): (BTreeMap<&str, &Arc<Service>>, _) = snapshot
            .visible_services(&proxy.namespace)
            .filter(|s| hosts.is_none_or(|h| h.contains(&s.hostname)))
            .filter(|s| match (sidecar, &destinations) {
                (Some(sc), Some(dests)) => {
                    sc.imports_service(&proxy.namespace, &s.namespace, &s.hostname)
                        || dests.contains(s.hostname.as_str())
                }
                _ => true,
            })
            .map(|s| (s.hostname.as_str(), s))
            .partition(|(_, s)| s.is_alias());
        let rules = services
            .iter()
            .filter_map(|(host, svc)| {
                snapshot
                    .destination_rule(&proxy.namespace, &proxy.labels, svc)
                    .map(|dr| (*host, dr))
            })
            .collect();
        let trimmed = sidecar
            .map(|sc| trimmed_ports(sc, &proxy.namespace, &services, destinations.as_ref()))
            .unwrap_or_default();
        Context {
            part,
            snapshot,
            proxy,
            services,
            trimmed,
            aliases,
            rules,
            gateway: Default::default(),
            sidecar,
        }
    }

    /// The ports of `svc` the proxy sees: all of them, unless its Sidecar imports the service
    /// only through egress listeners on given ports.
    pub fn ports_of<'s>(&'s self, svc: &'s Service) -> impl Iterator<Item = &'s ServicePort> + 's {
        let only = self.trimmed.get(svc.hostname.as_str());
        svc.ports
            .iter()
            .filter(move |p| only.is_none_or(|ports| ports.contains(&p.port)))
    }

    /// Services whose ports the Sidecar trims, with the ports kept (for cache keys).
    pub fn trimmed_ports(&self) -> &BTreeMap<&'a str, Vec<u16>> {
        &self.trimmed
    }

    /// What the proxy does with traffic for hosts it does not know: its Sidecar's
    /// `outboundTrafficPolicy`, else the mesh config's.
    pub fn outbound_traffic_policy(&self) -> OutboundTrafficPolicy {
        self.snapshot
            .outbound_traffic_policy_for(self.sidecar.map(|s| s.as_ref()))
    }

    /// Whether the proxy has a Sidecar that imports none of `hosts` (`(namespace, host)` of
    /// changed VirtualServices; `("", "")` stands for unknown ones, which it may import).
    pub fn ignores_virtual_service_hosts(
        &self,
        hosts: &std::collections::BTreeSet<(String, String)>,
    ) -> bool {
        self.sidecar
            .is_some_and(|sidecar| sidecar_ignores(sidecar, &self.proxy.namespace, hosts))
    }

    /// Whether the proxy's Sidecar (if any) imports `vs` (one of its hosts matches an egress
    /// host of the VirtualService's namespace).
    pub fn imports(&self, vs: &VirtualService) -> bool {
        self.sidecar.is_none_or(|sc| {
            vs.hosts.iter().any(|h| {
                let host = self.resolve(h, &vs.id.namespace);
                sc.imports_virtual_service_host(&self.proxy.namespace, &vs.id.namespace, &host)
            })
        })
    }

    /// Builds rules for `gateway` (`namespace/name`) from now on, or for the mesh (`None`).
    pub fn bind(&self, gateway: Option<String>) {
        *self.gateway.borrow_mut() = gateway;
    }

    /// Whether a rule bound to `gateways` (normalised `namespace/name`, or `mesh`; empty: all
    /// of its VirtualService's) applies where rules are being built.
    pub fn bound(&self, gateways: &[String]) -> bool {
        let current = self.gateway.borrow();
        let here = current.as_deref().unwrap_or("mesh");
        gateways.is_empty() || gateways.iter().any(|g| g == here)
    }

    /// The visible ExternalName aliases of a service, in Istio's order (namespace, host name).
    pub fn aliases_of(&self, hostname: &str) -> impl Iterator<Item = &'a Arc<Service>> + '_ {
        self.snapshot
            .aliases
            .get(hostname)
            .into_iter()
            .flatten()
            .filter(|a| self.aliases.contains_key(a.hostname.as_str()))
    }

    /// Visible ExternalName aliases, in host-name order.
    pub fn aliases(&self) -> impl Iterator<Item = &'a Arc<Service>> + '_ {
        self.aliases.values().copied()
    }

    /// The host a destination `host` on `port` reaches: an ExternalName alias with that port
    /// stands for the service it names (one step, as Istio's `GetDestinationCluster` takes
    /// it); any other host is itself.
    pub fn destination_host(&self, host: String, port: u16) -> String {
        self.alias(&host)
            .filter(|alias| alias.port(port).is_some())
            .and_then(|alias| alias.alias_target())
            .map_or(host, str::to_owned)
    }

    /// A visible ExternalName alias by host name.
    pub fn alias(&self, hostname: &str) -> Option<&'a Arc<Service>> {
        self.aliases.get(hostname).copied()
    }

    /// Visible services in host-name order.
    pub fn services(&self) -> impl Iterator<Item = &'a Arc<Service>> + '_ {
        self.services.values().copied()
    }

    /// A visible service by host name.
    pub fn service(&self, hostname: &str) -> Option<&'a Arc<Service>> {
        self.services.get(hostname).copied()
    }

    /// The DestinationRule for a service, if any.
    pub fn rule(&self, hostname: &str) -> Option<&DestinationRule> {
        self.rules.get(hostname)
    }

    /// The VirtualService routing a service host for this proxy (one its Sidecar imports).
    pub fn virtual_service(&self, hostname: &str) -> Option<&'a Arc<VirtualService>> {
        // Without wildcard hosts only an exact host can match: `virtual_service_for` would
        // otherwise scan every VirtualService host for each service without one, which made
        // routes quadratic (W-L: 9,000 services times 1,000 hosts per scope).
        let snapshot = self.snapshot;
        if !snapshot.wildcard_hosts.1 && !snapshot.routes_by_host.contains_key(hostname) {
            return None;
        }
        snapshot
            .virtual_service_for(&self.proxy.namespace, hostname)
            .filter(|vs| self.imports(vs))
    }

    /// Resolves a host written in a config of `namespace`.
    pub fn resolve(&self, host: &str, namespace: &str) -> String {
        resolve_host(host, namespace, &self.snapshot.domain_suffix)
    }

    /// Whether listeners bind real addresses (no iptables).
    pub fn bound_listeners(&self) -> bool {
        self.proxy.interception == Interception::None
    }

    /// Address outbound listeners bind to without interception.
    pub fn bind_address(&self) -> IpAddr {
        self.proxy
            .bind_address
            .unwrap_or(IpAddr::from([127, 0, 0, 1]))
    }

    /// Whether a rule's generation-time conditions (port, source labels, source namespace,
    /// gateways) hold for this sidecar on `listener_port`. Shared by HTTP and TCP/TLS matches.
    pub fn source_matches(
        &self,
        port: Option<u16>,
        source_labels: &std::collections::BTreeMap<String, String>,
        source_namespace: Option<&String>,
        gateways: &[String],
        listener_port: u16,
    ) -> bool {
        port.is_none_or(|p| p == listener_port)
            && source_labels
                .iter()
                .all(|(k, v)| self.proxy.labels.get(k) == Some(v))
            && source_namespace.is_none_or(|ns| *ns == self.proxy.namespace)
            && self.bound(gateways)
    }

    /// Whether the outbound part is built.
    pub fn outbound(&self) -> bool {
        self.part != Part::Inbound
    }

    /// The mutual TLS modes the proxy's workload accepts (its PeerAuthentications).
    pub fn workload_mtls(&self) -> sextant_model::WorkloadMtls {
        self.snapshot
            .workload_mtls(&self.proxy.namespace, &self.proxy.labels)
    }

    /// Whether the inbound part is built (never for a gateway: it has no workload behind it).
    pub fn inbound(&self) -> bool {
        self.part != Part::Outbound && !self.is_router()
    }

    /// Whether the proxy is a gateway (`router~`).
    pub fn is_router(&self) -> bool {
        self.proxy.kind == sextant_model::ProxyKind::Router
    }

    /// The ports the proxy's workload is reached on, as `(port, target port)`, deduplicated
    /// by target port: its Sidecar's `ingress` listeners when it has any (each on its own
    /// port), else the ports of the services selecting its workload.
    pub fn inbound_ports(&self) -> Vec<(ServicePort, u16)> {
        let mut out: Vec<(ServicePort, u16)> = Vec::new();
        if let Some(sidecar) = self.sidecar.filter(|s| !s.ingress.is_empty()) {
            for i in &sidecar.ingress {
                let number = i.port.number;
                if !out.iter().any(|(_, t)| *t == number) {
                    let port = ServicePort {
                        name: i.port.name.clone().unwrap_or_default(),
                        port: number,
                        target_port: Some(number),
                        protocol: i.port.protocol,
                    };
                    out.push((port, number));
                }
            }
        } else {
            for svc in self
                .snapshot
                .services_selecting(&self.proxy.namespace, &self.proxy.labels)
            {
                for port in svc
                    .ports
                    .iter()
                    .filter(|p| p.protocol != sextant_model::Protocol::Udp)
                {
                    let target = port.target_port.unwrap_or(port.port);
                    if !out.iter().any(|(_, t)| *t == target) {
                        out.push((port.clone(), target));
                    }
                }
            }
        }
        out.sort_by_key(|(_, t)| *t);
        out
    }

    /// Where the inbound cluster of `port` sends connections when the proxy's Sidecar says
    /// (an `ingress` listener's `defaultEndpoint`); `None` when it does not say.
    pub fn inbound_endpoint(&self, port: u16) -> Option<InboundEndpoint> {
        use sextant_model::DefaultEndpoint;
        let listener = self
            .sidecar?
            .ingress
            .iter()
            .find(|i| i.port.number == port)?;
        let loopback = |ipv6: bool| -> IpAddr {
            if ipv6 {
                std::net::Ipv6Addr::LOCALHOST.into()
            } else {
                std::net::Ipv4Addr::LOCALHOST.into()
            }
        };
        match &listener.default_endpoint {
            DefaultEndpoint::Loopback { port, ipv6 } => {
                Some(InboundEndpoint::Ip(loopback(*ipv6), *port))
            }
            DefaultEndpoint::PodIp { port, ipv6 } => {
                let ip = self
                    .proxy
                    .ips
                    .iter()
                    .copied()
                    .find(|ip| ip.is_ipv6() == *ipv6 && !ip.is_unspecified())
                    .unwrap_or_else(|| loopback(*ipv6));
                Some(InboundEndpoint::Ip(ip, *port))
            }
            DefaultEndpoint::Unix(path) => Some(InboundEndpoint::Unix(path.clone())),
            DefaultEndpoint::None => None,
        }
    }
}

/// [`Context::ignores_virtual_service_hosts`] without building the proxy's view.
pub(crate) fn ignores_virtual_service_hosts(
    snapshot: &Snapshot,
    proxy: &Proxy,
    hosts: &std::collections::BTreeSet<(String, String)>,
) -> bool {
    proxy.kind == ProxyKind::Sidecar
        && snapshot
            .sidecar_for(&proxy.namespace, &proxy.labels)
            .is_some_and(|sidecar| sidecar_ignores(sidecar, &proxy.namespace, hosts))
}

/// Whether `sidecar`, used by a proxy in `namespace`, imports none of `hosts`.
fn sidecar_ignores(
    sidecar: &Sidecar,
    namespace: &str,
    hosts: &std::collections::BTreeSet<(String, String)>,
) -> bool {
    !hosts.is_empty()
        && hosts.iter().all(|(vs_namespace, host)| {
            !vs_namespace.is_empty()
                && !sidecar.imports_virtual_service_host(namespace, vs_namespace, host)
        })
}

/// Where a Sidecar `ingress` listener forwards to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundEndpoint {
    /// An address and port.
    Ip(IpAddr, u16),
    /// A Unix domain socket.
    Unix(String),
}

/// The hosts the routes of the VirtualServices a Sidecar imports lead to (resolved).
fn imported_destinations(
    snapshot: &Snapshot,
    namespace: &str,
    sidecar: &Sidecar,
) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    for vs in snapshot.mesh_virtual_services(namespace) {
        let imported = vs.hosts.iter().any(|h| {
            let host = resolve_host(h, &vs.id.namespace, &snapshot.domain_suffix);
            sidecar.imports_virtual_service_host(namespace, &vs.id.namespace, &host)
        });
        if !imported {
            continue;
        }
        let mut add = |host: &str| {
            out.insert(resolve_host(
                host,
                &vs.id.namespace,
                &snapshot.domain_suffix,
            ));
        };
        for r in &vs.http {
            if let sextant_model::HttpAction::Route(dests) = &r.action {
                dests.iter().for_each(|d| add(&d.destination.host));
            }
            r.mirrors.iter().for_each(|m| add(&m.destination.host));
        }
        for r in &vs.tcp {
            r.route.iter().for_each(|d| add(&d.destination.host));
        }
        for r in &vs.tls {
            r.route.iter().for_each(|d| add(&d.destination.host));
        }
    }
    out
}

/// The services of `services` that `sidecar` imports only through egress listeners with a
/// port (not the catch-all, not an HTTP proxy), with the ports of those listeners. Services a
/// VirtualService it imports leads to keep every port.
fn trimmed_ports<'a>(
    sidecar: &Sidecar,
    namespace: &str,
    services: &BTreeMap<&'a str, &'a Arc<Service>>,
    destinations: Option<&std::collections::HashSet<String>>,
) -> BTreeMap<&'a str, Vec<u16>> {
    let mut out = BTreeMap::new();
    if sidecar.egress.iter().all(|l| l.port.is_none()) {
        return out;
    }
    for (host, svc) in services {
        if destinations.is_some_and(|d| d.contains(*host)) {
            continue;
        }
        let mut ports = Vec::new();
        let mut all = false;
        for l in &sidecar.egress {
            if !l.imports_service(namespace, &svc.namespace, &svc.hostname) {
                continue;
            }
            match &l.port {
                Some(p) if p.matches_service_ports() => ports.push(p.number),
                _ => all = true,
            }
        }
        if !all {
            out.insert(*host, ports);
        }
    }
    out
}
