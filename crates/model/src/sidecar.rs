//! Validated Sidecars and Istio's rules for which Sidecar a sidecar proxy uses
//! (`initSidecarScopes`, `getSidecarScope`) and which hosts its egress listeners import
//! (`selectServices`, `SelectVirtualServices`).
//!
//! Only the model lives here; how a Sidecar shapes a proxy's listeners, clusters and routes is
//! the compiler's.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use crate::{ConnectionPool, ObjectRef, OutboundTrafficPolicy, Protocol, ServerTls, Snapshot};

/// A validated Sidecar.
#[derive(Clone, Debug, PartialEq)]
pub struct Sidecar {
    /// Which object this came from.
    pub id: ObjectRef,
    /// Creation time (RFC 3339): among Sidecars of equal rank the oldest is chosen.
    pub creation_timestamp: Option<String>,
    /// `workloadSelector.labels`: `None` when there is no `workloadSelector` (the namespace's
    /// default Sidecar); `Some` of an empty map when it has no labels, which selects every
    /// workload of the namespace but still ranks with the Sidecars that have a selector.
    pub selector: Option<BTreeMap<String, String>>,
    /// `egress`, in order: at most one listener without a port, and then it is the last.
    /// Empty when the Sidecar has none; it then imports as one catch-all `*/*` listener would
    /// (see [`Sidecar::imports_service`]).
    pub egress: Vec<EgressListener>,
    /// `ingress`, in order. When not empty these replace the inbound listeners a proxy would
    /// get from the Services that select it.
    pub ingress: Vec<IngressListener>,
    /// `outboundTrafficPolicy`: overrides the mesh config's for the proxies using this Sidecar.
    pub outbound_traffic_policy: Option<SidecarOutboundPolicy>,
    /// `inboundConnectionPool`: the inbound pool of every port without its own
    /// `ingress[].connectionPool` (it overrides, not merges with, DestinationRule settings).
    pub inbound_connection_pool: Option<ConnectionPool>,
}

/// One `egress[]` listener.
#[derive(Clone, Debug, PartialEq)]
pub struct EgressListener {
    /// `port`; `None` for the catch-all listener that covers every port no other listener
    /// names.
    pub port: Option<ListenerPort>,
    /// `bind`.
    pub bind: Option<Bind>,
    /// `captureMode`.
    pub capture_mode: CaptureMode,
    /// `hosts`, parsed; at least one.
    pub hosts: Vec<EgressHost>,
}

/// A `port` of a Sidecar listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerPort {
    /// `number`; 0 only for an egress listener bound to a Unix domain socket.
    pub number: u16,
    /// `protocol`, parsed; [`Protocol::Unsupported`] when empty (the protocol is sniffed).
    pub protocol: Protocol,
    /// `protocol: HTTP_PROXY`: an egress listener that is a generic HTTP proxy, which imports
    /// services on every port (`protocol` is then [`Protocol::Http`]).
    pub http_proxy: bool,
    /// `name`.
    pub name: Option<String>,
}

impl ListenerPort {
    /// Whether services imported by a listener on this port are trimmed to this port
    /// (istiod's `needsPortMatch`): a numbered port that is not an HTTP proxy.
    pub fn matches_service_ports(&self) -> bool {
        self.number != 0 && !self.http_proxy
    }
}

/// What a listener binds to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bind {
    /// An IP address.
    Ip(IpAddr),
    /// A Unix domain socket path (`unix://` stripped; may start with `@` for an abstract
    /// socket).
    Unix(String),
}

/// `captureMode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CaptureMode {
    /// Whatever the proxy's interception mode is (the default).
    #[default]
    Default,
    /// Traffic is captured with iptables: a virtual listener.
    Iptables,
    /// Not captured: the listener binds for real (to `bind`, or 127.0.0.1 when none).
    None,
}

/// One `egress[].hosts` entry, `namespace/dnsName`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressHost {
    /// The namespace part.
    pub namespace: HostNamespace,
    /// The dnsName part, as written: an FQDN, `*.suffix` or `*`.
    pub dns_name: String,
}

/// The namespace part of an egress host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostNamespace {
    /// `*`: services and VirtualServices of every namespace.
    Any,
    /// `.`: the namespace of the proxy using the Sidecar. That is the Sidecar's own namespace,
    /// except for the root namespace's default Sidecar, which istiod applies to a proxy of
    /// another namespace with `.` meaning that proxy's namespace; so `.` is resolved at
    /// lookup, not when parsed.
    Own,
    /// A namespace by name.
    Named(String),
    /// `~`: no namespace; the entry imports nothing (`~/*` makes a listener that imports no
    /// service). Istio refuses `~ns` forms.
    None,
}

impl EgressHost {
    /// Whether this entry's namespace part covers objects of `namespace` for a proxy in
    /// `proxy_namespace`.
    fn covers(&self, proxy_namespace: &str, namespace: &str) -> bool {
        match &self.namespace {
            HostNamespace::Any => true,
            HostNamespace::Own => namespace == proxy_namespace,
            HostNamespace::Named(ns) => namespace == ns,
            HostNamespace::None => false,
        }
    }
}

/// One `ingress[]` listener.
#[derive(Clone, Debug, PartialEq)]
pub struct IngressListener {
    /// `port`.
    pub port: ListenerPort,
    /// `bind`: the IP address the listener binds instead of the wildcard.
    pub bind: Option<IpAddr>,
    /// `captureMode`.
    pub capture_mode: CaptureMode,
    /// `defaultEndpoint`, parsed.
    pub default_endpoint: DefaultEndpoint,
    /// `tls`: terminate TLS with files in the pod (Istio honours it only behind
    /// `ENABLE_TLS_ON_SIDECAR_INGRESS`).
    pub tls: Option<ServerTls>,
    /// `connectionPool`.
    pub connection_pool: Option<ConnectionPool>,
}

/// Where an ingress listener forwards to (its `inbound|PORT||` cluster's endpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultEndpoint {
    /// `127.0.0.1:PORT`, `[::1]:PORT` or `:PORT`: the loopback address (`ipv6` for `[::1]`).
    Loopback {
        /// The application's port.
        port: u16,
        /// `[::1]` rather than 127.0.0.1.
        ipv6: bool,
    },
    /// `0.0.0.0:PORT` or `[::]:PORT`: the pod's own IP address of that family (istiod falls
    /// back to the loopback address when the proxy has none).
    PodIp {
        /// The application's port.
        port: u16,
        /// The pod's IPv6 address (`[::]`) rather than its IPv4 one.
        ipv6: bool,
    },
    /// `unix://PATH`: a Unix domain socket (`unix://` stripped).
    Unix(String),
    /// Not set: the connection goes to its original destination (an `ORIGINAL_DST` cluster).
    None,
}

/// A Sidecar's `outboundTrafficPolicy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarOutboundPolicy {
    /// `mode` (`ALLOW_ANY` when not set).
    pub mode: OutboundTrafficPolicy,
    /// `egressProxy`: where `ALLOW_ANY` traffic for unknown hosts goes instead of its original
    /// destination (only with `ALLOW_ANY`).
    pub egress_proxy: Option<EgressProxy>,
}

/// `outboundTrafficPolicy.egressProxy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressProxy {
    /// `host`, an FQDN.
    pub host: String,
    /// `subset`.
    pub subset: Option<String>,
    /// `port.number`.
    pub port: u16,
}

/// Istio's `host.Name.SubsetOf`: every name `name` matches is matched by `pattern` (exact
/// names only by themselves; `*` covers everything; `*.a.com` covers `b.a.com` and `*.b.a.com`).
pub fn host_subset_of(name: &str, pattern: &str) -> bool {
    if name == pattern {
        return true;
    }
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    match name.strip_prefix('*') {
        Some(rest) => rest.ends_with(suffix),
        None => name.ends_with(suffix),
    }
}

/// Istio's `host.Name.Matches`: whether two names, either of which may be a wildcard, have a
/// name in common (`*.a.com` and `*.b.a.com` do, `*.a.com` and `a.com` do not).
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(x), Some(y)) => x.ends_with(y) || y.ends_with(x),
        (Some(x), None) => b.ends_with(x),
        (None, Some(y)) => a.ends_with(y),
        (None, None) => a == b,
    }
}

impl EgressListener {
    /// Whether this listener imports the service `hostname` defined in `namespace`, for a
    /// proxy in `proxy_namespace` (istiod's `selectServices` with `hostClassification.Matches`):
    /// some host entry covers `namespace` (`ns/`, `./` as the proxy's namespace, or `*/`) and
    /// its dnsName is `hostname` or a wildcard `hostname` is a subset of (a wildcard service
    /// host must be a subset too: `*.a.com` imports `*.b.a.com`, not the reverse).
    ///
    /// The caller applies what this does not: the service must be exported to
    /// `proxy_namespace`; a listener with a port (see [`ListenerPort::matches_service_ports`])
    /// keeps only that port of it; a host imported from several namespaces resolves to the
    /// proxy's namespace, else to a Kubernetes Service over a ServiceEntry, else the first.
    pub fn imports_service(&self, proxy_namespace: &str, namespace: &str, hostname: &str) -> bool {
        self.hosts
            .iter()
            .any(|h| h.covers(proxy_namespace, namespace) && host_subset_of(hostname, &h.dns_name))
    }

    /// Whether this listener imports a VirtualService of `namespace` that has host `host`, for a
    /// proxy in `proxy_namespace` (istiod's `SelectVirtualServices`): as
    /// [`EgressListener::imports_service`], except that wildcards match in both directions
    /// (an import of `a.example.com` takes a VirtualService for `*.example.com`, and an import
    /// of `*.example.com` one for `a.example.com`). `host` is the VirtualService host with short
    /// names already resolved. The caller checks the VirtualService is exported to
    /// `proxy_namespace` and bound to the mesh; istiod then also imports the services its routes
    /// name, even when no host entry lists them.
    pub fn imports_virtual_service_host(
        &self,
        proxy_namespace: &str,
        namespace: &str,
        host: &str,
    ) -> bool {
        self.hosts
            .iter()
            .any(|h| h.covers(proxy_namespace, namespace) && hosts_overlap(host, &h.dns_name))
    }
}

impl Sidecar {
    /// Whether the Sidecar selects a workload with `labels` (of its own namespace): no
    /// selector, or every selector label present with its value.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector
            .as_ref()
            .is_none_or(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }

    /// Whether any egress listener imports the service `hostname` of `namespace` for a proxy
    /// in `proxy_namespace` ([`EgressListener::imports_service`]); a Sidecar without `egress`
    /// imports every service, as istiod's default `*/*` listener does.
    pub fn imports_service(&self, proxy_namespace: &str, namespace: &str, hostname: &str) -> bool {
        self.egress.is_empty()
            || self
                .egress
                .iter()
                .any(|l| l.imports_service(proxy_namespace, namespace, hostname))
    }

    /// Whether any egress listener imports a VirtualService host
    /// ([`EgressListener::imports_virtual_service_host`]); everything without `egress`.
    pub fn imports_virtual_service_host(
        &self,
        proxy_namespace: &str,
        namespace: &str,
        host: &str,
    ) -> bool {
        self.egress.is_empty()
            || self
                .egress
                .iter()
                .any(|l| l.imports_virtual_service_host(proxy_namespace, namespace, host))
    }

    /// The egress listener traffic to `port` uses: the one on that port, else the catch-all
    /// (istiod's `GetEgressListenerForRDS` for IP listeners). `None` when the Sidecar has no
    /// `egress`, or only listeners on other ports.
    pub fn egress_for_port(&self, port: u16) -> Option<&EgressListener> {
        self.egress.iter().find(|l| match &l.port {
            None => true,
            Some(p) => p.number == port && port != 0,
        })
    }

    /// The ingress connection pool of `port`: its listener's own, else
    /// `inboundConnectionPool` (istiod's `InboundConnectionPoolForPort`).
    pub fn inbound_connection_pool_for(&self, port: u16) -> Option<&ConnectionPool> {
        self.ingress
            .iter()
            .find(|i| i.port.number == port && i.connection_pool.is_some())
            .and_then(|i| i.connection_pool.as_ref())
            .or(self.inbound_connection_pool.as_ref())
    }
}

impl Snapshot {
    /// The Sidecar a sidecar proxy in `namespace` with workload `labels` uses (istiod's
    /// `getSidecarScope`), from `sidecars` in their order: the first Sidecar of `namespace`
    /// with a selector that `labels` satisfy; else the first of `namespace` without a
    /// selector; else the first without a selector in the root namespace (applied with `.`
    /// meaning `namespace`); else `None`, istiod's default scope: every service and
    /// VirtualService exported to `namespace`, the mesh config's outbound traffic policy and
    /// inbound listeners from Services.
    ///
    /// Routers (gateways) never use a Sidecar: do not call this for them.
    pub fn sidecar_for(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<&Arc<Sidecar>> {
        let in_namespace = || self.sidecars.iter().filter(|s| s.id.namespace == namespace);
        in_namespace()
            .find(|s| s.selector.is_some() && s.selects(labels))
            .or_else(|| in_namespace().find(|s| s.selector.is_none()))
            .or_else(|| {
                self.sidecars
                    .iter()
                    .find(|s| s.id.namespace == self.root_namespace && s.selector.is_none())
            })
    }

    /// The outbound traffic policy for a proxy using `sidecar` (from [`Snapshot::sidecar_for`]):
    /// the Sidecar's `outboundTrafficPolicy.mode` when it sets one, else the mesh-wide
    /// `outbound_traffic_policy`.
    pub fn outbound_traffic_policy_for(&self, sidecar: Option<&Sidecar>) -> OutboundTrafficPolicy {
        sidecar
            .and_then(|s| s.outbound_traffic_policy.as_ref())
            .map(|p| p.mode)
            .unwrap_or(self.outbound_traffic_policy)
    }
}

/// The order of `Snapshot::sidecars` (istiod's `initSidecarScopes`): Sidecars with a
/// selector first, then those without; each by creation time, name, namespace.
pub fn sidecar_order(sidecar: &Sidecar) -> (bool, String, String, String) {
    (
        sidecar.selector.is_none(),
        sidecar.creation_timestamp.clone().unwrap_or_default(),
        sidecar.id.name.clone(),
        sidecar.id.namespace.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_follow_istio_host_names() {
        assert!(host_subset_of("a.example.com", "*.example.com"));
        assert!(host_subset_of("*.b.example.com", "*.example.com"));
        assert!(host_subset_of("anything", "*"));
        assert!(!host_subset_of("*.example.com", "a.example.com"));
        assert!(!host_subset_of("example.com", "*.example.com"));
        assert!(host_subset_of("a.com", "a.com"));
    }

    #[test]
    fn overlaps_go_both_ways() {
        assert!(hosts_overlap("*.example.com", "a.example.com"));
        assert!(hosts_overlap("a.example.com", "*.example.com"));
        assert!(hosts_overlap("*.b.example.com", "*.example.com"));
        assert!(!hosts_overlap("a.com", "b.com"));
        assert!(!hosts_overlap("*.a.com", "a.com"));
    }
}
