//! The Pod annotations that shape its sidecar, read and checked at once: every malformed one
//! is reported (Istio fails injection on the first pass over all of them, naming each).

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::{
    InjectConfig, Resources,
    proxy_config::{self, ProxyConfig},
    values, warnings,
};

/// `sidecar.istio.io/interceptionMode`.
pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
/// `traffic.sidecar.istio.io/includeOutboundIPRanges`.
pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
/// `traffic.sidecar.istio.io/excludeOutboundIPRanges`.
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
/// `traffic.sidecar.istio.io/includeInboundPorts`.
pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
/// `traffic.sidecar.istio.io/excludeInboundPorts`.
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
/// `traffic.sidecar.istio.io/includeOutboundPorts`.
pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
/// `traffic.sidecar.istio.io/excludeOutboundPorts`.
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
/// `traffic.sidecar.istio.io/excludeInterfaces`.
pub const EXCLUDE_INTERFACES: &str = "traffic.sidecar.istio.io/excludeInterfaces";
/// `istio.io/reroute-virtual-interfaces`: interfaces whose inbound traffic is treated as
/// outbound (virtual machines in the Pod).
pub const REROUTE_VIRTUAL_INTERFACES: &str = "istio.io/reroute-virtual-interfaces";
/// `traffic.sidecar.istio.io/kubevirtInterfaces`: the older name of
/// [`REROUTE_VIRTUAL_INTERFACES`], which wins over it as in Istio.
pub const KUBEVIRT_INTERFACES: &str = "traffic.sidecar.istio.io/kubevirtInterfaces";
/// `sidecar.istio.io/nativeSidecar`: `"true"` makes the sidecar a Kubernetes native sidecar.
pub const NATIVE_SIDECAR: &str = "sidecar.istio.io/nativeSidecar";
/// `proxy.istio.io/config`.
pub const PROXY_CONFIG: &str = "proxy.istio.io/config";
/// `sidecar.istio.io/proxyCPU`.
pub const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
/// `sidecar.istio.io/proxyMemory`.
pub const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
/// `sidecar.istio.io/proxyCPULimit`.
pub const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
/// `sidecar.istio.io/proxyMemoryLimit`.
pub const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";
/// `sidecar.istio.io/proxyImage`.
pub const PROXY_IMAGE: &str = "sidecar.istio.io/proxyImage";
/// `sidecar.istio.io/logLevel`.
pub const LOG_LEVEL: &str = "sidecar.istio.io/logLevel";
/// `sidecar.istio.io/componentLogLevel`.
pub const COMPONENT_LOG_LEVEL: &str = "sidecar.istio.io/componentLogLevel";

/// Istio's status port: not served by a plain Envoy, but excluded from inbound capture as
/// Istio's template does, so the two are interchangeable on a node.
const STATUS_PORT: &str = "15020";

/// Bytes a Pod's annotations may hold, keys and values together: the API server's own limit
/// (`TotalAnnotationSizeLimitB`), applied before any annotation is read, so that what a
/// review sent straight to the webhook port costs to read is no more than a real Pod's.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 << 10;

/// One malformed annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The annotation's name.
    pub annotation: String,
    /// Its value as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The sidecar's settings: each annotation if present and valid, else the injector's
/// configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `REDIRECT`, `TPROXY` or `NONE`.
    pub interception: String,
    /// `-i`: outbound destinations captured.
    pub include_outbound_ip_ranges: String,
    /// `-x`: outbound destinations not captured.
    pub exclude_outbound_ip_ranges: String,
    /// `-b`: inbound ports captured.
    pub include_inbound_ports: String,
    /// `-d`: inbound ports not captured (the sidecar's own ports first).
    pub exclude_inbound_ports: String,
    /// `-q`: outbound ports captured, when annotated.
    pub include_outbound_ports: Option<String>,
    /// `-o`: outbound ports not captured, when annotated.
    pub exclude_outbound_ports: Option<String>,
    /// `-c`: interfaces whose traffic is not captured, when annotated.
    pub exclude_interfaces: Option<String>,
    /// `-k`: interfaces whose inbound traffic is treated as outbound, when annotated.
    pub reroute_interfaces: Option<String>,
    /// Whether the sidecar is a native sidecar (an init container that keeps running).
    pub native: bool,
    /// The sidecar's (and init container's) resources.
    pub resources: Resources,
    /// The Envoy image.
    pub proxy_image: String,
    /// Envoy's `-l`.
    pub log_level: String,
    /// Envoy's `--component-log-level`.
    pub component_log_level: String,
    /// What `proxy.istio.io/config` says, laid over the mesh config's `defaultConfig`.
    pub proxy_config: ProxyConfig,
    /// The `proxyMetadata` names `proxy.istio.io/config` sets (the others are the mesh
    /// config's).
    pub pod_metadata: HashSet<String>,
    /// Annotations accepted but not (wholly) honoured.
    pub warnings: Vec<String>,
}

/// Reads the annotations one by one, keeping every problem found.
struct Reader<'a> {
    annotations: &'a Map<String, Value>,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    /// The annotation `name` read by `parse`, if present and valid.
    fn parse<T>(&mut self, name: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let value = self.annotations.get(name)?;
        let (text, outcome) = match value.as_str() {
            Some(text) => (text.to_owned(), parse(text)),
            None => (
                value.to_string(),
                Err("annotation values are strings".to_owned()),
            ),
        };
        outcome
            .map_err(|reason| {
                self.problems.push(Problem {
                    annotation: name.to_owned(),
                    value: text,
                    reason,
                });
            })
            .ok()
    }

    /// The annotation `name`'s text, if present and accepted by `check`.
    fn get(&mut self, name: &str, check: values::Check) -> Option<String> {
        self.parse(name, |text| check(text).map(|()| text.to_owned()))
    }
}

/// Reads the sidecar's settings from a Pod's `annotations`.
pub fn read(
    annotations: &Map<String, Value>,
    config: &InjectConfig,
) -> Result<Settings, Vec<Problem>> {
    let total: usize = annotations
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or_else(|| v.to_string().len(), str::len))
        .sum();
    if total > MAX_ANNOTATIONS_BYTES {
        let (name, value) = annotations
            .iter()
            .max_by_key(|(_, v)| v.as_str().map_or(0, str::len))
            .expect("annotations past the bound are not empty");
        return Err(vec![Problem {
            annotation: name.clone(),
            value: value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned),
            reason: format!(
                "the Pod's annotations hold {total} bytes, more than the {MAX_ANNOTATIONS_BYTES} the API server allows; this is the largest"
            ),
        }]);
    }
    let mut r = Reader {
        annotations,
        problems: Vec::new(),
    };
    let interception = r.get(INTERCEPTION_MODE, values::interception_mode);
    let include_outbound_ip_ranges = r.get(INCLUDE_OUTBOUND_IP_RANGES, values::cidr_list_or_all);
    let exclude_outbound_ip_ranges = r.get(EXCLUDE_OUTBOUND_IP_RANGES, values::cidr_list);
    let include_inbound_ports = r.get(INCLUDE_INBOUND_PORTS, values::port_list_or_all);
    let exclude_inbound_ports = r.get(EXCLUDE_INBOUND_PORTS, values::port_list);
    let include_outbound_ports = r.get(INCLUDE_OUTBOUND_PORTS, values::port_list);
    let exclude_outbound_ports = r.get(EXCLUDE_OUTBOUND_PORTS, values::port_list);
    let exclude_interfaces = r.get(EXCLUDE_INTERFACES, values::interface_list);
    let reroute_interfaces = r.get(REROUTE_VIRTUAL_INTERFACES, values::interface_list);
    let kubevirt_interfaces = r.get(KUBEVIRT_INTERFACES, values::interface_list);
    let native = r.parse(NATIVE_SIDECAR, values::true_or_false);
    let cpu = r.get(PROXY_CPU, values::quantity);
    let memory = r.get(PROXY_MEMORY, values::quantity);
    let cpu_limit = r.get(PROXY_CPU_LIMIT, values::quantity);
    let memory_limit = r.get(PROXY_MEMORY_LIMIT, values::quantity);
    let proxy_image = r.get(PROXY_IMAGE, values::image);
    let log_level = r.get(LOG_LEVEL, values::log_level);
    let component_log_level = r.get(COMPONENT_LOG_LEVEL, values::component_log_level);
    let read = r
        .parse(PROXY_CONFIG, proxy_config::read)
        .unwrap_or_default();
    if !r.problems.is_empty() {
        return Err(r.problems);
    }
    let resource_annotated =
        cpu.is_some() || memory.is_some() || cpu_limit.is_some() || memory_limit.is_some();
    // As Istio: any resource annotation replaces the configured resources as a whole.
    let resources = if resource_annotated {
        Resources {
            cpu_request: cpu,
            memory_request: memory,
            cpu_limit,
            memory_limit,
        }
    } else {
        config.resources.clone()
    };
    let native = native.unwrap_or(config.native_sidecar);
    let proxy_config = read.config.clone().over(&config.mesh_defaults);
    let mut warnings = warnings::annotations(annotations);
    warnings.extend(read.warnings);
    warnings.extend(warnings::proxy_config(&read.config, &proxy_config, native));
    let interception = match (interception, &read.config.interception_mode) {
        (Some(mode), _) => (mode, INTERCEPTION_MODE),
        (None, Some(mode)) => (mode.clone(), "proxy.istio.io/config interceptionMode"),
        (None, None) => match &proxy_config.interception_mode {
            Some(mode) => (mode.clone(), "meshConfig.defaultConfig interceptionMode"),
            None => ("REDIRECT".to_owned(), ""),
        },
    };
    if interception.0 == "NONE" {
        warnings.push(warnings::no_interception(interception.1));
    }
    Ok(Settings {
        interception: interception.0,
        include_outbound_ip_ranges: include_outbound_ip_ranges.unwrap_or_else(|| "*".to_owned()),
        exclude_outbound_ip_ranges: exclude_outbound_ip_ranges.unwrap_or_default(),
        include_inbound_ports: include_inbound_ports.unwrap_or_else(|| "*".to_owned()),
        exclude_inbound_ports: excluded_inbound_ports(exclude_inbound_ports.as_deref()),
        include_outbound_ports,
        exclude_outbound_ports,
        exclude_interfaces,
        reroute_interfaces: reroute_interfaces.or(kubevirt_interfaces),
        native,
        resources,
        proxy_image: proxy_image.unwrap_or_else(|| config.proxy_image.clone()),
        log_level: log_level.unwrap_or_else(|| config.log_level.clone()),
        component_log_level: component_log_level
            .unwrap_or_else(|| config.component_log_level.clone()),
        pod_metadata: read
            .config
            .proxy_metadata
            .into_iter()
            .map(|(name, _)| name)
            .collect(),
        proxy_config,
        warnings,
    })
}

/// Istio's `-d`: its Prometheus and readiness ports, then the annotated ports, then the status
/// port unless annotated already.
fn excluded_inbound_ports(annotated: Option<&str>) -> String {
    let mut ports: Vec<&str> = vec!["15090", "15021"];
    let annotated: Vec<&str> = annotated
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    ports.extend(&annotated);
    if !annotated.contains(&STATUS_PORT) {
        ports.push(STATUS_PORT);
    }
    ports.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_inbound_ports_keep_istios_order() {
        assert_eq!(excluded_inbound_ports(None), "15090,15021,15020");
        assert_eq!(
            excluded_inbound_ports(Some("8080, 9090")),
            "15090,15021,8080,9090,15020"
        );
        assert_eq!(
            excluded_inbound_ports(Some("15020,8080")),
            "15090,15021,15020,8080"
        );
    }
}
