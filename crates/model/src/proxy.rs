//! Proxies: who is asking for configuration.

use std::{collections::BTreeMap, fmt, net::IpAddr};

/// A connected (or hypothetical) proxy, from its node id and metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Proxy {
    /// The node id as sent, `sidecar~10.1.2.3~reviews-v1-abc.default~default.svc.cluster.local`.
    pub id: String,
    /// Sidecar or gateway.
    pub kind: ProxyKind,
    /// Workload IPs (the first is the primary).
    pub ips: Vec<IpAddr>,
    /// The Pod's name, from the node id: the Pod the proxy's labels, identity and inbound
    /// listeners come from.
    pub workload_name: String,
    /// Config namespace.
    pub namespace: String,
    /// Workload labels.
    pub labels: BTreeMap<String, String>,
    /// Service account, if known (the node's `SERVICE_ACCOUNT`, else its Pod's).
    pub service_account: Option<String>,
    /// The service account of the Pod the node names, when that Pod is known.
    pub workload_service_account: Option<String>,
    /// The identity the proxy proved on an authenticated stream (its secrets are for it).
    pub identity: Option<crate::Identity>,
    /// Istio proxy (istio-proxy build, accepts `istio.*` extensions) or plain Envoy.
    pub flavor: ProxyFlavor,
    /// Whether the proxy holds a workload certificate, and so takes part in mutual TLS: an
    /// Istio proxy (its agent gets one) or one that proved an identity on the secure port. A
    /// proxy without one neither originates nor (unless STRICT) terminates mutual TLS.
    pub holds_certificate: bool,
    /// How traffic reaches the proxy.
    pub interception: Interception,
    /// Address outbound listeners bind to when `interception` is `None`.
    pub bind_address: Option<IpAddr>,
    /// Address the application listens on behind the inbound listeners when `interception`
    /// is `None` (default `127.0.0.1`), the host part of what a Sidecar `defaultEndpoint`
    /// names in Istio.
    pub app_address: Option<IpAddr>,
    /// Cluster the proxy runs in.
    pub cluster_id: String,
    /// Network the proxy is on (`NETWORK` metadata; empty: the default network).
    pub network: String,
    /// Where the proxy runs (the node's `locality`, else its Pod's), for locality-aware
    /// load balancing.
    pub locality: crate::Locality,
    /// A gRPC client or server without Envoy (node metadata `GENERATOR: grpc`): it gets the
    /// listener, route and cluster shapes gRPC's xDS client accepts.
    pub proxyless: bool,
}

/// Node metadata key naming the address outbound listeners bind to when the proxy runs without
/// interception (several proxies can then share one machine, each on its own loopback address).
pub const BIND_ADDRESS_KEY: &str = "SEXTANT_BIND_ADDRESS";

/// Node metadata key naming the address the application listens on behind a proxy without
/// interception (inbound traffic goes to it, on the service's target port).
pub const APP_ADDRESS_KEY: &str = "SEXTANT_APP_ADDRESS";

/// Sidecar or gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProxyKind {
    /// An application sidecar (`sidecar~...`).
    Sidecar,
    /// A gateway (`router~...`).
    Router,
}

/// Which Envoy build the proxy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProxyFlavor {
    /// Istio's proxy (metadata has `ISTIO_VERSION`).
    Istio,
    /// Stock Envoy.
    Envoy,
}

/// `INTERCEPTION_MODE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interception {
    /// iptables REDIRECT (Istio's default).
    Redirect,
    /// iptables TPROXY.
    Tproxy,
    /// No interception: listeners bind real addresses.
    None,
}

/// A node id that does not have Istio's four `~`-separated parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidNodeId(pub String);

impl fmt::Display for InvalidNodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid node id {:?}: expected TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local",
            self.0
        )
    }
}

impl std::error::Error for InvalidNodeId {}

impl Proxy {
    /// Parses an Istio node id; metadata refines it afterwards.
    pub fn from_node_id(id: &str) -> Result<Proxy, InvalidNodeId> {
        let parts: Vec<&str> = id.split('~').collect();
        let [kind, ip, workload, domain] = parts.as_slice() else {
            return Err(InvalidNodeId(id.to_owned()));
        };
        let kind = match *kind {
            "sidecar" => ProxyKind::Sidecar,
            "router" => ProxyKind::Router,
            _ => return Err(InvalidNodeId(id.to_owned())),
        };
        let ip: IpAddr = ip.parse().map_err(|_| InvalidNodeId(id.to_owned()))?;
        let (name, namespace) = match workload.rsplit_once('.') {
            Some((n, ns)) => (n.to_owned(), ns.to_owned()),
            None => (
                workload.to_string(),
                domain.split('.').next().unwrap_or("default").to_owned(),
            ),
        };
        if name.is_empty() || namespace.is_empty() {
            return Err(InvalidNodeId(id.to_owned()));
        }
        Ok(Proxy {
            id: id.to_owned(),
            kind,
            ips: vec![ip],
            workload_name: name,
            namespace,
            labels: BTreeMap::new(),
            service_account: None,
            workload_service_account: None,
            identity: None,
            flavor: ProxyFlavor::Envoy,
            holds_certificate: false,
            interception: Interception::Redirect,
            bind_address: None,
            app_address: None,
            cluster_id: "Kubernetes".to_owned(),
            network: String::new(),
            locality: crate::Locality::default(),
            proxyless: false,
        })
    }

    /// Applies one node metadata entry given as text (Istio encodes lists as comma-joined
    /// strings). Unknown keys are ignored, as istiod ignores them.
    pub fn apply_metadata(&mut self, key: &str, value: &str) {
        match key {
            "NAMESPACE" if !value.is_empty() => self.namespace = value.to_owned(),
            "INTERCEPTION_MODE" => {
                self.interception = match value {
                    "NONE" => Interception::None,
                    "TPROXY" => Interception::Tproxy,
                    _ => Interception::Redirect,
                }
            }
            "ISTIO_VERSION" if !value.is_empty() => {
                self.flavor = ProxyFlavor::Istio;
                self.holds_certificate = true;
            }
            "SERVICE_ACCOUNT" if !value.is_empty() => self.service_account = Some(value.to_owned()),
            "CLUSTER_ID" if !value.is_empty() => self.cluster_id = value.to_owned(),
            "NETWORK" => self.network = value.to_owned(),
            // `WORKLOAD_NAME` is the workload's (Deployment's) name, for telemetry: the Pod is
            // the one the node id names, and a node cannot make Sextant look up another.
            "INSTANCE_IPS" => {
                let ips: Vec<IpAddr> = value
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect();
                if !ips.is_empty() {
                    self.ips = ips;
                }
            }
            "GENERATOR" => self.proxyless = value == "grpc",
            BIND_ADDRESS_KEY => self.bind_address = value.parse().ok(),
            APP_ADDRESS_KEY => self.app_address = value.parse().ok(),
            "LABELS" => {
                for pair in value.split(',') {
                    if let Some((k, v)) = pair.split_once('=') {
                        self.labels.insert(k.trim().to_owned(), v.trim().to_owned());
                    }
                }
            }
            _ => {}
        }
    }

    /// Fills in what the node's workload (Pod) says: its labels replace the node's `LABELS`
    /// (istiod's `SetWorkloadLabels`: metadata labels only stand in for an unknown Pod, so a
    /// proxy cannot claim labels its Pod does not carry), and its identity and locality fill
    /// what the node did not say.
    pub fn complete_from(&mut self, workload: &crate::Workload) {
        self.labels = (*workload.labels).clone();
        if self.service_account.is_none() {
            self.service_account = workload.service_account.clone();
        }
        self.workload_service_account = workload.service_account.clone();
        if self.locality.is_empty()
            && let Some(locality) = &workload.locality
        {
            self.locality = locality.clone();
        }
    }

    /// The primary IP.
    pub fn ip(&self) -> IpAddr {
        self.ips[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_node_ids() {
        let p = Proxy::from_node_id(
            "sidecar~10.1.2.3~reviews-v1-abc.default~default.svc.cluster.local",
        )
        .expect("valid");
        assert_eq!(p.kind, ProxyKind::Sidecar);
        assert_eq!(p.workload_name, "reviews-v1-abc");
        assert_eq!(p.namespace, "default");
        assert_eq!(p.ip().to_string(), "10.1.2.3");
        assert!(Proxy::from_node_id("sidecar~10.1.2.3~x").is_err());
        assert!(Proxy::from_node_id("waiter~10.1.2.3~a.b~b.svc.cluster.local").is_err());
        assert!(Proxy::from_node_id("sidecar~nope~a.b~b.svc.cluster.local").is_err());
    }

    #[test]
    fn the_pod_comes_from_the_node_id_and_its_labels_win() {
        let mut p = Proxy::from_node_id(
            "sidecar~10.1.2.3~reviews-v1-abc.default~default.svc.cluster.local",
        )
        .expect("valid");
        // A Deployment's Pod says its workload's name; the Pod is still the node id's.
        p.apply_metadata("WORKLOAD_NAME", "reviews-v1");
        p.apply_metadata("LABELS", "app=payments,extra=1");
        assert_eq!(p.workload_name, "reviews-v1-abc");
        let pod = crate::Workload {
            name: "reviews-v1-abc".into(),
            namespace: "default".into(),
            labels: std::sync::Arc::new(BTreeMap::from([("app".into(), "reviews".into())])),
            ips: vec![p.ip()],
            service_account: Some("bookinfo-reviews".into()),
            node: None,
            locality: None,
            ports: Vec::new(),
        };
        p.complete_from(&pod);
        assert_eq!(
            p.labels, *pod.labels,
            "the Pod's labels, not the node's claim"
        );
        assert_eq!(
            p.workload_service_account.as_deref(),
            Some("bookinfo-reviews")
        );
    }
}
