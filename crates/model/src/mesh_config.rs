//! Mesh-wide settings: the part of Istio's `MeshConfig` (the `mesh` key of the `istio`
//! ConfigMap, or `sextant serve --mesh-config FILE`) that Sextant uses.

use std::collections::BTreeMap;

use crate::{OutboundTrafficPolicy, ROOT_NAMESPACE};

/// The mesh config, with Istio's defaults for what it leaves out.
///
/// `root_namespace` and `trust_domain` are what the mesh config says; the values in force are
/// `Snapshot::root_namespace` and `Snapshot::trust_domain`, where an explicit `sextant serve`
/// flag wins over the mesh config (flag > mesh config > default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    /// `outboundTrafficPolicy.mode`. In force as `Snapshot::outbound_traffic_policy`; a Sidecar
    /// may override it for its proxies (`Snapshot::outbound_traffic_policy_for`).
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// `rootNamespace` (`istio-system`).
    pub root_namespace: String,
    /// `trustDomain` (`cluster.local`).
    pub trust_domain: String,
    /// `defaultConfig`: proxy defaults.
    pub default_config: ProxyDefaults,
    /// `serviceSettings`, in order.
    pub service_settings: Vec<ServiceSettings>,
    /// `defaultServiceExportTo` (`*`, `.` or `~`; empty: `*`). Modelled only.
    pub default_service_export_to: Vec<String>,
    /// `defaultVirtualServiceExportTo` (`*` or `.`; empty: `*`). Modelled only.
    pub default_virtual_service_export_to: Vec<String>,
    /// `defaultDestinationRuleExportTo` (`*` or `.`; empty: `*`). Modelled only.
    pub default_destination_rule_export_to: Vec<String>,
    /// `accessLogFile`, `accessLogEncoding`, `accessLogFormat` and `disableEnvoyListenerLog`:
    /// the access log every sidecar and gateway writes.
    pub access_log: AccessLog,
}

/// The mesh config's access log: written by every HTTP connection manager and TCP proxy of
/// sidecars and gateways, as Istio's mesh-config access log (no Telemetry API).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessLog {
    /// `accessLogFile`: where Envoy writes it (`/dev/stdout`, a path); empty: no access log.
    pub file: String,
    /// `accessLogEncoding`.
    pub encoding: AccessLogEncoding,
    /// `accessLogFormat`: Envoy's format string (TEXT) or a JSON object of keys to format
    /// strings (JSON); empty: Istio's default of the encoding.
    pub format: String,
    /// `disableEnvoyListenerLog`: no listener-level log of connections no filter chain takes.
    pub disable_listener_log: bool,
}

/// `accessLogEncoding`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessLogEncoding {
    /// One line of text per request or connection (Istio's default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for MeshConfig {
    fn default() -> MeshConfig {
        MeshConfig {
            outbound_traffic_policy: OutboundTrafficPolicy::AllowAny,
            root_namespace: ROOT_NAMESPACE.to_owned(),
            trust_domain: "cluster.local".to_owned(),
            default_config: ProxyDefaults::default(),
            service_settings: Vec::new(),
            default_service_export_to: Vec::new(),
            default_virtual_service_export_to: Vec::new(),
            default_destination_rule_export_to: Vec::new(),
            access_log: AccessLog::default(),
        }
    }
}

/// The `defaultConfig` (ProxyConfig) fields Sextant uses; the others are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyDefaults {
    /// `discoveryAddress`: where proxies reach the control plane (`HOST:PORT`), when set.
    pub discovery_address: Option<String>,
    /// `proxyMetadata`: environment the proxies' agents run with (`ISTIO_META_DNS_CAPTURE`,
    /// ...).
    pub proxy_metadata: BTreeMap<String, String>,
    /// Every `defaultConfig` field as given, as the text of a JSON object (empty when there is
    /// no `defaultConfig`): the sidecar injector reads the fields it honours from it, with
    /// the parser of the `proxy.istio.io/config` annotation it lies under.
    pub json: String,
}

/// One `serviceSettings[]` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceSettings {
    /// `hosts`: FQDNs or wildcards the settings apply to.
    pub hosts: Vec<String>,
    /// `settings.clusterLocal`: the services' endpoints are reachable only from their own
    /// cluster.
    pub cluster_local: bool,
}

impl MeshConfig {
    /// Whether `host`'s endpoints stay in their cluster: the last `serviceSettings` entry
    /// naming it decides, as in Istio's `ClusterLocalProvider`; without one, `kubernetes.default`
    /// and every service of `kube-system` (Istio's defaults) are local to their cluster.
    pub fn is_cluster_local(&self, host: &str, domain_suffix: &str) -> bool {
        let mut local = None;
        for setting in &self.service_settings {
            if setting.hosts.iter().any(|h| host_matches(host, h)) {
                local = Some(setting.cluster_local);
            }
        }
        local.unwrap_or_else(|| {
            host == format!("kubernetes.default.svc.{domain_suffix}")
                || host.ends_with(&format!(".kube-system.svc.{domain_suffix}"))
        })
    }
}

/// `*.example.com` matches any name ending in `.example.com`; `*` matches everything.
fn host_matches(host: &str, pattern: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => host == pattern,
    }
}
