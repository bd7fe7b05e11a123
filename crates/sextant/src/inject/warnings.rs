//! What the user is told, as the AdmissionResponse's `warnings`, about what Istio's injector
//! would do with a Pod and Sextant's does not: annotations Istio knows that a plain Envoy
//! sidecar cannot honour, `ProxyConfig` settings only istio-agent acts on, and where Sextant's
//! sidecar differs. Silence would let a user believe the setting took effect.

use serde_json::{Map, Value};

use super::proxy_config::ProxyConfig;

/// Why the stats annotations are not honoured.
const STATS: &str = "Envoy's stats are not configured per Pod (no istio-agent)";

/// Istio's Pod annotations (`annotation/annotations.yaml` in istio/api) that shape Istio's
/// sidecar but not Sextant's, with why; a name ending in `/` is a prefix.
const NOT_HONOURED: &[(&str, &str)] = &[
    (
        "status.sidecar.istio.io/port",
        "a plain Envoy sidecar has no status port; the kubelet probes Envoy's :15021/healthz/ready",
    ),
    (
        "readiness.status.sidecar.istio.io/",
        "the sidecar's probes are fixed: :15021/healthz/ready, every second until ready, then every 15 s",
    ),
    (
        "sidecar.istio.io/userVolume",
        "no volumes are added for the sidecar",
    ),
    (
        "sidecar.istio.io/userVolumeMount",
        "no volumes are mounted into the sidecar",
    ),
    (
        "sidecar.istio.io/bootstrapOverride",
        "the sidecar's bootstrap is Sextant's, inline in its arguments",
    ),
    (
        "sidecar.istio.io/rewriteAppHTTPProbers",
        "application probes are not rewritten (no istio-agent); under STRICT mTLS, exclude the probed ports with traffic.sidecar.istio.io/excludeInboundPorts",
    ),
    (
        "sidecar.istio.io/agentLogLevel",
        "there is no istio-agent; sidecar.istio.io/logLevel sets Envoy's",
    ),
    (
        "sidecar.istio.io/discoveryAddress",
        "Istio deprecated it; discoveryAddress in proxy.istio.io/config is honoured",
    ),
    (
        "sidecar.istio.io/proxyImageType",
        "the sidecar's image is --sidecar-image or sidecar.istio.io/proxyImage, as given",
    ),
    (
        "prometheus.istio.io/merge-metrics",
        "no istio-agent merges the application's metrics; Prometheus scrapes Envoy's on :15090",
    ),
    (
        "proxy.istio.io/overrides",
        "a Pod's own istio-proxy container is not merged with the injected one (such a Pod is not injected)",
    ),
    (
        "inject.istio.io/templates",
        "custom injection templates are not applied; every Pod gets the sidecar template",
    ),
    ("sidecar.istio.io/statsInclusionPrefixes", STATS),
    ("sidecar.istio.io/statsInclusionSuffixes", STATS),
    ("sidecar.istio.io/statsInclusionRegexps", STATS),
    ("sidecar.istio.io/statsHistogramBuckets", STATS),
    ("sidecar.istio.io/statsFlushInterval", STATS),
    ("sidecar.istio.io/statsEvictionInterval", STATS),
    ("sidecar.istio.io/statsHistogramBins", STATS),
    ("sidecar.istio.io/statsCompression", STATS),
    ("sidecar.istio.io/extraStatTags", STATS),
];

/// `proxyMetadata` entries that turn on istio-agent's DNS proxy.
const DNS_METADATA: &[&str] = &["ISTIO_META_DNS_CAPTURE", "ISTIO_META_DNS_AUTO_ALLOCATE"];

/// One warning per annotation of the Pod in [`NOT_HONOURED`], naming it.
pub fn annotations(annotations: &Map<String, Value>) -> Vec<String> {
    annotations
        .keys()
        .filter_map(|name| {
            let (_, why) = NOT_HONOURED.iter().find(|(known, _)| {
                name == known || known.ends_with('/') && name.starts_with(known)
            })?;
            Some(format!(
                "annotation {name} is not honoured by Sextant's sidecar injector: {why}"
            ))
        })
        .collect()
}

/// Warnings about the `ProxyConfig` in force (`merged`: the Pod's, `pod`, over the mesh
/// config's), each naming where its setting came from.
pub fn proxy_config(pod: &ProxyConfig, merged: &ProxyConfig, native: bool) -> Vec<String> {
    let origin = |in_pod: bool| {
        if in_pod {
            "proxy.istio.io/config"
        } else {
            "meshConfig.defaultConfig"
        }
    };
    let mut out = Vec::new();
    let in_pod: std::collections::HashSet<&str> =
        pod.proxy_metadata.iter().map(|(n, _)| n.as_str()).collect();
    for (name, value) in &merged.proxy_metadata {
        let from = origin(in_pod.contains(name.as_str()));
        if !name.starts_with("ISTIO_META_") {
            out.push(format!(
                "{from}: proxyMetadata {name} is set in the sidecar's environment only; a plain Envoy sidecar has no istio-agent to read it"
            ));
        } else if DNS_METADATA.contains(&name.as_str()) && go_true(value) {
            out.push(format!(
                "{from}: proxyMetadata {name} is true, but Sextant's sidecar does not capture or proxy DNS (no istio-agent): the application resolves names with the cluster's DNS"
            ));
        }
    }
    if merged.hold_application_until_proxy_starts == Some(true) && !native {
        let from = origin(pod.hold_application_until_proxy_starts.is_some());
        out.push(format!(
            "{from}: holdApplicationUntilProxyStarts puts the sidecar first; without istio-agent nothing holds the application until Envoy is ready (a native sidecar does: sidecar.istio.io/nativeSidecar: \"true\")"
        ));
    }
    out
}

/// The warning for interception mode `NONE`, set by `source`.
pub fn no_interception(source: &str) -> String {
    format!(
        "{source}: NONE differs from Istio's: without iptables Sextant's sidecar still has an inbound listener, bound to the Pod's IP at each Service target port and forwarding to the application on 127.0.0.1 (node metadata SEXTANT_APP_ADDRESS); the application must listen on 127.0.0.1 only, since one listening on 0.0.0.0 at that port conflicts with Envoy's listener"
    )
}

/// Go's `strconv.ParseBool` true, as istio-agent reads these variables.
fn go_true(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istios_annotations_not_honoured_are_named() {
        let annotations = serde_json::json!({
            "readiness.status.sidecar.istio.io/periodSeconds": "5",
            "sidecar.istio.io/userVolume": "[]",
            "sidecar.istio.io/logLevel": "debug",
            "readiness.status.sidecar.istio.io": "x",
        });
        let out = super::annotations(annotations.as_object().expect("a map"));
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].contains("readiness.status.sidecar.istio.io/periodSeconds"));
        assert!(out[1].contains("sidecar.istio.io/userVolume"));
    }

    #[test]
    fn dns_capture_warns_only_when_true() {
        let config = |value: &str| ProxyConfig {
            proxy_metadata: vec![("ISTIO_META_DNS_CAPTURE".to_owned(), value.to_owned())],
            ..ProxyConfig::default()
        };
        let mesh = proxy_config(&ProxyConfig::default(), &config("True"), false);
        assert_eq!(mesh.len(), 1, "{mesh:?}");
        assert!(
            mesh[0].starts_with("meshConfig.defaultConfig: proxyMetadata ISTIO_META_DNS_CAPTURE")
        );
        assert!(proxy_config(&config("false"), &config("false"), false).is_empty());
    }
}
