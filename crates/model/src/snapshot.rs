//! An immutable, versioned view of the whole mesh, and Istio's lookup rules over it.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use crate::{
    Credential, DestinationRule, Endpoint, Gateway, MeshConfig, ObjectRef, PeerAuthentication,
    Service, ServiceEntry, Sidecar, VirtualService, Workload, WorkloadEntry,
};

/// The namespace whose DestinationRules and PeerAuthentications apply mesh-wide (Istio's root
/// namespace), unless `serve --root-namespace` names another.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Everything the compiler needs, frozen at one version. Cheap to clone (maps of `Arc`s).
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Increases with every published change.
    pub version: u64,
    /// DNS suffix of the cluster (`cluster.local`).
    pub domain_suffix: String,
    /// SPIFFE trust domain of workload identities (Istio's `trustDomain`, `cluster.local` by
    /// default; independent of the DNS suffix).
    pub trust_domain: String,
    /// Services by host name.
    pub services: BTreeMap<String, Arc<Service>>,
    /// Endpoints by service host name.
    pub endpoints: BTreeMap<String, Arc<Vec<Endpoint>>>,
    /// The config cluster's workloads by `(namespace, name)`.
    pub workloads: Arc<Workloads>,
    /// Each remote cluster's workloads, by cluster id.
    pub remote_workloads: Arc<BTreeMap<String, Workloads>>,
    /// VirtualServices with delegates merged in, ordered by creation time, name, namespace.
    pub virtual_services: Vec<Arc<VirtualService>>,
    /// DestinationRules ordered by creation time, name, namespace.
    pub destination_rules: Vec<Arc<DestinationRule>>,
    /// PeerAuthentications ordered by creation time, name, namespace.
    pub peer_authentications: Vec<Arc<PeerAuthentication>>,
    /// Gateways ordered by creation time, name, namespace.
    pub gateways: Vec<Arc<Gateway>>,
    /// Sidecars, selector ones first, each group by creation time, name, namespace (istiod's
    /// `initSidecarScopes`); `Snapshot::sidecar_for` picks a proxy's.
    pub sidecars: Vec<Arc<Sidecar>>,
    /// The mesh config (defaults when none is given). Its outbound traffic policy, root
    /// namespace and trust domain are in force as `outbound_traffic_policy`, `root_namespace`
    /// and `trust_domain`.
    pub mesh_config: Arc<MeshConfig>,
    /// Credentials Gateways may name, by Secret `(namespace, name)`.
    pub credentials: BTreeMap<(String, String), Arc<Credential>>,
    /// Istio's root namespace: its configuration without a selector applies mesh-wide. The
    /// `serve --root-namespace` flag when given, else the mesh config's `rootNamespace`.
    pub root_namespace: String,
    /// Objects skipped because they are invalid, with their errors.
    pub invalid: BTreeMap<ObjectRef, Vec<String>>,
    /// Warnings (unsupported fields) of accepted objects.
    pub warnings: BTreeMap<ObjectRef, Vec<String>>,
    /// DestinationRules by resolved host (wildcard hosts under their pattern), in order.
    pub rules_by_host: BTreeMap<String, Vec<Arc<DestinationRule>>>,
    /// VirtualServices by resolved host (wildcard hosts under their pattern), in precedence
    /// order. Delegates are not listed.
    pub routes_by_host: BTreeMap<String, Vec<Arc<VirtualService>>>,
    /// Label keys that configuration reads (VirtualService `sourceLabels`, DestinationRule
    /// `workloadSelector`, Gateway and Sidecar selectors): the only labels that make two
    /// proxies' outbound config differ.
    pub label_keys: BTreeSet<String>,
    /// Whether any DestinationRule / VirtualService host is a wildcard (lookups skip the scan
    /// when none is).
    pub wildcard_hosts: (bool, bool),
    /// ExternalName aliases by the host name of the service they name, chains followed to
    /// the end, sorted by namespace and host name (Istio's `resolveServiceAliases`).
    pub aliases: BTreeMap<String, Vec<Arc<Service>>>,
    /// What sidecars do with traffic for hosts no service declares (meshConfig
    /// `outboundTrafficPolicy.mode`).
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// ServiceEntries ordered by creation time, name, namespace (their hosts are in
    /// `services` and their endpoints in `endpoints`).
    pub service_entries: Vec<Arc<ServiceEntry>>,
    /// WorkloadEntries by `(namespace, name)`.
    pub workload_entries: BTreeMap<(String, String), Arc<WorkloadEntry>>,
    /// Addresses allocated to ServiceEntry hosts from `240.240.0.0/16`, by host.
    pub allocated_addresses: BTreeMap<String, std::net::IpAddr>,
    /// East-west gateways of every cluster, sorted (network, cluster, address, port).
    pub network_gateways: Vec<crate::NetworkGateway>,
    /// More than one network has endpoints: proxies' networks matter.
    pub multi_network: bool,
    /// Endpoints come from more than one cluster.
    pub multi_cluster: bool,
    /// Proxies' load assignments depend on their cluster: there are several clusters, and a
    /// `clusterLocal` host has endpoints (only its cluster's proxies see them), or a
    /// `failoverPriority` reads `topology.istio.io/cluster`.
    pub cluster_aware: bool,
    /// Some DestinationRule makes load assignments depend on the proxy's locality (outlier
    /// detection, which turns on locality failover, or a locality `distribute`).
    pub locality_aware: bool,
    /// Proxy labels `failoverPriority` compares (load assignments depend on their values).
    pub failover_label_keys: BTreeSet<String>,
}

/// Workloads (Pods) by `(namespace, name)`.
pub type Workloads = BTreeMap<(String, String), Arc<Workload>>;

/// Istio's `outboundTrafficPolicy.mode`: where sidecars send traffic for unknown hosts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OutboundTrafficPolicy {
    /// `ALLOW_ANY` (Istio's default): to `PassthroughCluster`, virtual host `allow_any`.
    #[default]
    AllowAny,
    /// `REGISTRY_ONLY`: to `BlackHoleCluster`, virtual host `block_all` answering 502.
    RegistryOnly,
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot {
            version: 0,
            domain_suffix: String::new(),
            trust_domain: String::new(),
            services: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            workloads: Arc::default(),
            remote_workloads: Arc::default(),
            virtual_services: Vec::new(),
            destination_rules: Vec::new(),
            peer_authentications: Vec::new(),
            gateways: Vec::new(),
            sidecars: Vec::new(),
            mesh_config: Arc::default(),
            credentials: BTreeMap::new(),
            root_namespace: ROOT_NAMESPACE.to_owned(),
            invalid: BTreeMap::new(),
            warnings: BTreeMap::new(),
            rules_by_host: BTreeMap::new(),
            routes_by_host: BTreeMap::new(),
            label_keys: BTreeSet::new(),
            wildcard_hosts: (false, false),
            aliases: BTreeMap::new(),
            outbound_traffic_policy: OutboundTrafficPolicy::AllowAny,
            service_entries: Vec::new(),
            workload_entries: BTreeMap::new(),
            allocated_addresses: BTreeMap::new(),
            network_gateways: Vec::new(),
            multi_network: false,
            multi_cluster: false,
            cluster_aware: false,
            locality_aware: false,
            failover_label_keys: BTreeSet::new(),
        }
    }
}

/// Istio's short-name resolution: a host without dots names a Service in `namespace`; IP
/// addresses (IPv6 has no dots) stay as they are.
pub fn resolve_host(host: &str, namespace: &str, domain_suffix: &str) -> String {
    if host.contains('.') || host.contains('*') || host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.{domain_suffix}")
    }
}

/// Whether `pattern` (possibly `*.suffix` or `*`) matches host `name`.
pub fn host_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => name.ends_with(suffix) && name.len() > suffix.len(),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

impl Snapshot {
    /// Computes the host indexes from `services`, `virtual_services` and
    /// `destination_rules`; call after filling them.
    pub fn index_hosts(&mut self) {
        self.index_aliases();
        let suffix = self.domain_suffix.clone();
        self.rules_by_host.clear();
        for dr in &self.destination_rules {
            let host = resolve_host(&dr.host, &dr.id.namespace, &suffix);
            self.rules_by_host.entry(host).or_default().push(dr.clone());
        }
        self.routes_by_host.clear();
        for vs in self.virtual_services.iter().filter(|vs| !vs.is_delegate()) {
            for host in &vs.hosts {
                let host = resolve_host(host, &vs.id.namespace, &suffix);
                let list = self.routes_by_host.entry(host).or_default();
                if !list.iter().any(|v| Arc::ptr_eq(v, vs)) {
                    list.push(vs.clone());
                }
            }
        }
        self.label_keys = self
            .destination_rules
            .iter()
            .filter_map(|d| d.workload_selector.as_ref())
            .flat_map(|s| s.keys().cloned())
            .chain(self.virtual_services.iter().flat_map(|vs| {
                let http = vs
                    .http
                    .iter()
                    .flat_map(|r| r.matches.iter().flat_map(|m| m.source_labels.keys()));
                let l4 = vs
                    .tcp
                    .iter()
                    .flat_map(|r| r.matches.iter())
                    .chain(vs.tls.iter().flat_map(|r| r.matches.iter()))
                    .flat_map(|m| m.source_labels.keys());
                http.chain(l4).cloned().collect::<Vec<_>>()
            }))
            .chain(
                self.gateways
                    .iter()
                    .flat_map(|g| g.selector.keys().cloned()),
            )
            .chain(
                self.sidecars
                    .iter()
                    .filter_map(|s| s.selector.as_ref())
                    .flat_map(|s| s.keys().cloned()),
            )
            // Which Sidecar a proxy uses depends on these.
            .chain(
                self.sidecars
                    .iter()
                    .filter_map(|s| s.selector.as_ref())
                    .flat_map(|s| s.keys().cloned()),
            )
            .collect();
        // Failover priorities compare endpoint labels with the proxy's (a `KEY=VALUE` entry
        // names its value: the proxy's label does not matter).
        self.failover_label_keys = self
            .destination_rules
            .iter()
            .flat_map(|d| d.policies())
            .filter_map(|p| p.load_balancer.as_ref()?.locality.as_ref())
            .flat_map(|l| l.failover_priority.iter())
            .filter(|k| !k.contains('='))
            .cloned()
            .collect();
        self.label_keys
            .extend(self.failover_label_keys.iter().cloned());
        self.cluster_aware = self.multi_cluster
            && (self
                .failover_label_keys
                .contains("topology.istio.io/cluster")
                || self.endpoints.iter().any(|(host, eps)| {
                    !eps.is_empty() && self.mesh_config.is_cluster_local(host, &self.domain_suffix)
                }));
        self.locality_aware = self.destination_rules.iter().any(|d| {
            d.policies().any(|p| {
                p.outlier_detection.is_some()
                    || p.load_balancer
                        .as_ref()
                        .and_then(|lb| lb.locality.as_ref())
                        .is_some_and(|l| !l.distribute.is_empty())
            })
        });
        self.wildcard_hosts = (
            self.rules_by_host.keys().any(|h| h.starts_with('*')),
            self.routes_by_host.keys().any(|h| h.starts_with('*')),
        );
    }

    /// Fills `aliases`. An ExternalName names its target by exact host name (as written, not
    /// resolved as a short name); an alias of an alias counts for the last target, and aliases
    /// that loop back name nothing.
    fn index_aliases(&mut self) {
        self.aliases.clear();
        // The end of each alias's chain, found once for every alias on it (`None`: it ends
        // outside the mesh or loops).
        let mut ends: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        for alias in self.services.values().filter(|s| s.is_alias()) {
            let mut path: Vec<&str> = Vec::new();
            let mut on_path: std::collections::HashSet<&str> = std::collections::HashSet::new();
            let mut at = alias.as_ref();
            let end = loop {
                if let Some(known) = ends.get(at.hostname.as_str()) {
                    break *known;
                }
                if !on_path.insert(&at.hostname) {
                    break None;
                }
                path.push(&at.hostname);
                let Some(target) = at.alias_target() else {
                    break Some(at.hostname.as_str());
                };
                match self.services.get(target) {
                    Some(next) if next.is_alias() => at = next,
                    Some(next) => break Some(next.hostname.as_str()),
                    None => break None,
                }
            };
            for host in path {
                ends.insert(host, end);
            }
        }
        let mut aliases: BTreeMap<String, Vec<Arc<Service>>> = BTreeMap::new();
        for (alias, end) in ends {
            if let (Some(end), Some(svc)) = (end, self.services.get(alias)) {
                aliases.entry(end.to_owned()).or_default().push(svc.clone());
            }
        }
        for list in aliases.values_mut() {
            list.sort_by(|a, b| (&a.namespace, &a.hostname).cmp(&(&b.namespace, &b.hostname)));
        }
        self.aliases = aliases;
    }

    /// The VirtualService that routes `hostname` for sidecars in `namespace`: exact hosts
    /// before wildcards, then precedence order (creation time, name, namespace).
    pub fn virtual_service_for(
        &self,
        namespace: &str,
        hostname: &str,
    ) -> Option<&Arc<VirtualService>> {
        let applies = |vs: &&Arc<VirtualService>| {
            (vs.id.namespace == namespace || vs.export_to.allows(namespace))
                && (vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh"))
        };
        if let Some(vs) = self
            .routes_by_host
            .get(hostname)
            .and_then(|l| l.iter().find(applies))
        {
            return Some(vs);
        }
        // Most meshes have no wildcard host: no scan of every host for each service.
        if !self.wildcard_hosts.1 {
            return None;
        }
        self.routes_by_host
            .iter()
            .filter(|(pattern, _)| pattern.starts_with('*') && host_matches(pattern, hostname))
            .max_by_key(|(pattern, _)| pattern.len())
            .and_then(|(_, l)| l.iter().find(applies))
    }

    /// Services visible to proxies in `namespace`, in host-name order.
    pub fn visible_services<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Service>> {
        self.services.values().filter(move |s| {
            (s.namespace == namespace && s.export_to != crate::Visibility::Hidden)
                || s.export_to.allows(namespace)
        })
    }

    /// Endpoints of a service.
    pub fn endpoints(&self, hostname: &str) -> &[Endpoint] {
        self.endpoints
            .get(hostname)
            .map(|e| e.as_slice())
            .unwrap_or_default()
    }

    /// VirtualServices that apply to sidecars in `namespace`: exported there, bound to the mesh,
    /// not delegates; in precedence order (creation time, name, namespace).
    pub fn mesh_virtual_services<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Arc<VirtualService>> {
        self.virtual_services.iter().filter(move |vs| {
            !vs.is_delegate()
                && (vs.id.namespace == namespace || vs.export_to.allows(namespace))
                && (vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh"))
        })
    }

    /// The DestinationRule a proxy in `proxy_namespace` with `labels` uses for `hostname`:
    /// first the proxy's namespace, then the service's, then the root namespace; within one,
    /// the most specific host wins, and rules for the same host are merged (the first rule's
    /// traffic policy, every rule's subsets), as Istio does.
    pub fn destination_rule(
        &self,
        proxy_namespace: &str,
        labels: &BTreeMap<String, String>,
        service: &Service,
    ) -> Option<DestinationRule> {
        if !self.wildcard_hosts.0 && !self.rules_by_host.contains_key(&service.hostname) {
            return None;
        }
        let candidates = |ns: &str| -> Vec<&Arc<DestinationRule>> {
            let mut best: Option<(usize, Vec<&Arc<DestinationRule>>)> = None;
            let exact = self
                .rules_by_host
                .get(&service.hostname)
                .map(|l| (usize::MAX, l));
            // Scanned only when some host is a wildcard: quadratic in DestinationRules else.
            let wildcards = self
                .wildcard_hosts
                .0
                .then(|| self.rules_by_host.iter())
                .into_iter()
                .flatten()
                .filter(|(h, _)| h.starts_with('*') && host_matches(h, &service.hostname))
                .map(|(h, l)| (h.len(), l));
            for (rank, list) in exact.into_iter().chain(wildcards) {
                for dr in list.iter().filter(|dr| dr.id.namespace == ns) {
                    let visible = ns == proxy_namespace || dr.export_to.allows(proxy_namespace);
                    let selected = match &dr.workload_selector {
                        None => true,
                        Some(sel) => {
                            ns == proxy_namespace
                                && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                        }
                    };
                    if !visible || !selected {
                        continue;
                    }
                    // Exact hosts beat wildcards; longer wildcards beat shorter ones.
                    match &mut best {
                        Some((r, l)) if *r == rank => l.push(dr),
                        Some((r, _)) if *r > rank => {}
                        _ => best = Some((rank, vec![dr])),
                    }
                }
            }
            best.map(|(_, l)| l).unwrap_or_default()
        };
        let mut order = vec![proxy_namespace];
        if service.namespace != proxy_namespace {
            order.push(&service.namespace);
        }
        let root = self.root_namespace.as_str();
        if proxy_namespace != root && service.namespace != root {
            order.push(root);
        }
        for ns in order {
            let found = candidates(ns);
            let Some((first, rest)) = found.split_first() else {
                continue;
            };
            let mut merged = DestinationRule::clone(first);
            let mut names: BTreeSet<String> =
                merged.subsets.iter().map(|s| s.name.clone()).collect();
            for other in rest {
                if merged.traffic_policy.is_none() {
                    merged.traffic_policy = other.traffic_policy.clone();
                }
                for s in &other.subsets {
                    if names.insert(s.name.clone()) {
                        merged.subsets.push(s.clone());
                    }
                }
            }
            return Some(merged);
        }
        None
    }

    /// The workload behind a proxy, by pod name and namespace: the config cluster's Pod, else
    /// the first remote cluster's (by id) of that name.
    pub fn workload(&self, namespace: &str, name: &str) -> Option<&Arc<Workload>> {
        let key = (namespace.to_owned(), name.to_owned());
        self.workloads.get(&key).or_else(|| {
            self.remote_workloads
                .values()
                .find_map(|pods| pods.get(&key))
        })
    }

    /// The workload behind a proxy of cluster `cluster`: that cluster's Pod when it is a
    /// remote cluster that has one (Pod names repeat across clusters), else as
    /// [`Snapshot::workload`].
    pub fn workload_in(
        &self,
        cluster: &str,
        namespace: &str,
        name: &str,
    ) -> Option<&Arc<Workload>> {
        self.remote_workloads
            .get(cluster)
            .and_then(|pods| pods.get(&(namespace.to_owned(), name.to_owned())))
            .or_else(|| self.workload(namespace, name))
    }

    /// Services whose selector picks a workload with these labels in this namespace.
    pub fn services_selecting<'a>(
        &'a self,
        namespace: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a Arc<Service>> {
        self.services.values().filter(move |s| {
            s.namespace == namespace
                && !s.is_alias()
                && !s.selector.is_empty()
                && s.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_in_the_config_namespace() {
        assert_eq!(
            resolve_host("reviews", "prod", "cluster.local"),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(
            resolve_host("reviews.prod", "x", "cluster.local"),
            "reviews.prod"
        );
        assert_eq!(
            resolve_host("*.example.com", "x", "cluster.local"),
            "*.example.com"
        );
    }

    fn service(name: &str, resolution: crate::Resolution) -> Arc<Service> {
        Arc::new(Service {
            hostname: format!("{name}.default.svc.cluster.local"),
            name: name.to_owned(),
            namespace: "default".to_owned(),
            ports: Vec::new(),
            cluster_ip: None,
            labels: BTreeMap::new(),
            selector: BTreeMap::new(),
            export_to: crate::Visibility::Public,
            resolution,
            creation_timestamp: None,
            origin: crate::Origin::Kubernetes,
        })
    }

    /// Istio's `resolveServiceAliases`: an ExternalName names its target by exact host name,
    /// chains end at the last target, and loops name nothing.
    #[test]
    fn external_names_alias_the_service_they_name() {
        use crate::Resolution::{Alias, ClientSideLb};
        let alias = |name: &str, target: &str| service(name, Alias(target.to_owned()));
        let mut snapshot = Snapshot::default();
        for s in [
            service("reviews", ClientSideLb),
            alias("b", "reviews.default.svc.cluster.local"),
            alias("a", "b.default.svc.cluster.local"),
            alias("short", "reviews"),
            alias("outside", "example.com"),
            alias("loop1", "loop2.default.svc.cluster.local"),
            alias("loop2", "loop1.default.svc.cluster.local"),
        ] {
            snapshot.services.insert(s.hostname.clone(), s);
        }
        snapshot.index_hosts();
        let names: BTreeMap<&str, Vec<&str>> = snapshot
            .aliases
            .iter()
            .map(|(k, v)| (k.as_str(), v.iter().map(|s| s.name.as_str()).collect()))
            .collect();
        assert_eq!(
            names,
            BTreeMap::from([("reviews.default.svc.cluster.local", vec!["a", "b"])])
        );
    }

    #[test]
    fn wildcards_match_suffixes() {
        assert!(host_matches("*.svc.cluster.local", "a.b.svc.cluster.local"));
        assert!(host_matches("*", "anything"));
        assert!(!host_matches("*.b.com", "b.com"));
        assert!(host_matches("A.com", "a.com"));
    }
}
