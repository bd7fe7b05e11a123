//! What injection adds to a Pod's spec: the `istio-init` container that captures traffic with
//! `sextant iptables`, the `istio-proxy` container (Envoy alone), and their volumes. Names,
//! ports, probes and security contexts are Istio's (`injection-template.yaml`).

use serde_json::{Map, Value, json};
use sextant_compiler::bootstrap::{PROMETHEUS_PORT, READINESS_PORT};

use super::{
    InjectConfig, Resources,
    annotations::{self, Settings},
    envoy::{
        self, INSTANCE_IP, POD_NAME, POD_NAMESPACE, ROOT_CERT_DIR, SERVICE_ACCOUNT, TOKEN_DIR,
    },
};

/// The init container's name.
pub const INIT: &str = "istio-init";
/// The sidecar's name.
pub const PROXY: &str = "istio-proxy";
/// The projected service-account token's volume.
pub const TOKEN_VOLUME: &str = "istio-token";
/// The volume of the mesh's root certificate (ConfigMap `istio-ca-root-cert`).
pub const ROOT_CERT_VOLUME: &str = "istiod-ca-cert";

/// The token's audience, as Istio's CA and Sextant's secure port expect it.
const TOKEN_AUDIENCE: &str = "istio-ca";
/// The token's lifetime, as Istio's template asks for it (the kubelet renews it at 80%).
const TOKEN_SECONDS: u64 = 43_200;

/// One flag `istio-init` gives `sextant iptables`, and the annotation its value comes from.
pub struct InitFlag {
    /// The short flag (`-b`).
    pub flag: &'static str,
    /// Its value.
    pub value: String,
    /// The annotation that set it, if one did.
    pub annotation: Option<&'static str>,
}

/// The flags of `istio-init`'s `sextant iptables`, in Istio's order.
pub fn init_flags(config: &InjectConfig, settings: &Settings) -> Vec<InitFlag> {
    let uid = if settings.interception == "TPROXY" {
        // Istio's template: TPROXY's sidecar runs as root; its traffic is still marked 1337.
        "1337".to_owned()
    } else {
        config.uid.to_string()
    };
    let flag = |flag, value: &str, annotation| InitFlag {
        flag,
        value: value.to_owned(),
        annotation,
    };
    let mut flags = vec![
        flag("-p", "15001", None),
        flag("-z", "15006", None),
        flag("-u", &uid, None),
        flag(
            "-m",
            &settings.interception,
            Some(annotations::INTERCEPTION_MODE),
        ),
        flag(
            "-i",
            &settings.include_outbound_ip_ranges,
            Some(annotations::INCLUDE_OUTBOUND_IP_RANGES),
        ),
        flag(
            "-x",
            &settings.exclude_outbound_ip_ranges,
            Some(annotations::EXCLUDE_OUTBOUND_IP_RANGES),
        ),
        flag(
            "-b",
            &settings.include_inbound_ports,
            Some(annotations::INCLUDE_INBOUND_PORTS),
        ),
        flag(
            "-d",
            &settings.exclude_inbound_ports,
            Some(annotations::EXCLUDE_INBOUND_PORTS),
        ),
    ];
    for (short, value, annotation) in [
        (
            "-q",
            &settings.include_outbound_ports,
            annotations::INCLUDE_OUTBOUND_PORTS,
        ),
        (
            "-o",
            &settings.exclude_outbound_ports,
            annotations::EXCLUDE_OUTBOUND_PORTS,
        ),
        (
            "-c",
            &settings.exclude_interfaces,
            annotations::EXCLUDE_INTERFACES,
        ),
        (
            "-k",
            &settings.reroute_interfaces,
            annotations::REROUTE_VIRTUAL_INTERFACES,
        ),
    ] {
        if let Some(value) = value {
            flags.push(flag(short, value, Some(annotation)));
        }
    }
    flags
}

/// `istio-init`: `sextant iptables` with Istio's istio-iptables flags, as root with
/// `NET_ADMIN` and `NET_RAW` and nothing else.
pub fn init_container(config: &InjectConfig, settings: &Settings) -> Value {
    let mut args = vec!["iptables".to_owned()];
    for InitFlag { flag, value, .. } in init_flags(config, settings) {
        args.extend([flag.to_owned(), value]);
    }
    let mut container = json!({
        "name": INIT,
        "image": config.init_image,
        "command": ["sextant"],
        "args": args,
    });
    let env = metadata_env(settings);
    if !env.is_empty() {
        container["env"] = Value::Array(env);
    }
    container["resources"] = resources(&settings.resources);
    container["securityContext"] = json!({
        "allowPrivilegeEscalation": false,
        "privileged": false,
        "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        "readOnlyRootFilesystem": false,
        "runAsGroup": 0,
        "runAsNonRoot": false,
        "runAsUser": 0,
    });
    container
}

/// `istio-proxy`: Envoy with its bootstrap inline, as the unprivileged proxy user (root with
/// `NET_ADMIN` under TPROXY, as Istio's), started when Envoy has its first configuration. A
/// native sidecar (`restartPolicy: Always`, among the init containers) holds the containers
/// after it until then; a regular one sleeps `sleep_seconds` before it is stopped, so that
/// it outlives the application (`drain`).
pub fn proxy_container(
    config: &InjectConfig,
    settings: &Settings,
    node: &envoy::Node<'_>,
    sleep_seconds: Option<u64>,
) -> Value {
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let mut env = vec![
        json!({"name": INSTANCE_IP, "valueFrom": field("status.podIP")}),
        json!({"name": POD_NAME, "valueFrom": field("metadata.name")}),
        json!({"name": POD_NAMESPACE, "valueFrom": field("metadata.namespace")}),
        json!({"name": SERVICE_ACCOUNT, "valueFrom": field("spec.serviceAccountName")}),
    ];
    env.extend(metadata_env(settings));
    let ready = json!({"path": "/healthz/ready", "port": READINESS_PORT});
    let security = if settings.interception == "TPROXY" {
        json!({
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
            "runAsGroup": config.uid,
            "runAsNonRoot": false,
            "runAsUser": 0,
        })
    } else {
        json!({
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
            "runAsGroup": config.uid,
            "runAsNonRoot": true,
            "runAsUser": config.uid,
        })
    };
    let mut container = json!({
        "name": PROXY,
        "image": settings.proxy_image,
        "command": ["envoy"],
        "args": envoy::args(config, settings, node),
        "ports": [{"containerPort": PROMETHEUS_PORT, "protocol": "TCP", "name": "http-envoy-prom"}],
        "env": env,
        "resources": resources(&settings.resources),
        "startupProbe": {
            "httpGet": ready, "initialDelaySeconds": 0, "periodSeconds": 1,
            "timeoutSeconds": 3, "failureThreshold": 600,
        },
        "readinessProbe": {
            "httpGet": ready, "initialDelaySeconds": 0, "periodSeconds": 15,
            "timeoutSeconds": 3, "failureThreshold": 4,
        },
        "securityContext": security,
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR},
            {"name": ROOT_CERT_VOLUME, "mountPath": ROOT_CERT_DIR},
        ],
    });
    if settings.native {
        container["restartPolicy"] = json!("Always");
    }
    if let Some(seconds) = sleep_seconds {
        container["lifecycle"] = json!({"preStop": {"sleep": {"seconds": seconds}}});
    }
    container
}

/// The token (audience `istio-ca`, 12 hours) and the mesh's root certificate.
pub fn volumes() -> Vec<Value> {
    vec![
        json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "path": "istio-token", "expirationSeconds": TOKEN_SECONDS, "audience": TOKEN_AUDIENCE,
        }}]}}),
        json!({"name": ROOT_CERT_VOLUME, "configMap": {"name": "istio-ca-root-cert"}}),
    ]
}

/// `proxyMetadata` as environment variables, as Istio's template sets them on both
/// containers.
fn metadata_env(settings: &Settings) -> Vec<Value> {
    settings
        .proxy_config
        .proxy_metadata
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect()
}

/// Kubernetes' `resources` from what is set.
fn resources(r: &Resources) -> Value {
    let section = |cpu: &Option<String>, memory: &Option<String>| {
        let mut m = Map::new();
        if let Some(cpu) = cpu {
            m.insert("cpu".to_owned(), json!(cpu));
        }
        if let Some(memory) = memory {
            m.insert("memory".to_owned(), json!(memory));
        }
        m
    };
    let mut out = Map::new();
    let requests = section(&r.cpu_request, &r.memory_request);
    if !requests.is_empty() {
        out.insert("requests".to_owned(), Value::Object(requests));
    }
    let limits = section(&r.cpu_limit, &r.memory_limit);
    if !limits.is_empty() {
        out.insert("limits".to_owned(), Value::Object(limits));
    }
    Value::Object(out)
}
