//! Istio's `ProxyConfig`: the `proxy.istio.io/config` annotation (YAML or JSON, field names in
//! protobuf JSON form, camelCase or the proto's snake_case) and the mesh config's
//! `defaultConfig`, which lies under it. The fields a plain Envoy sidecar can honour are read;
//! the annotation's other `ProxyConfig` fields are accepted with a warning naming each, and a
//! field `ProxyConfig` does not have fails injection, as Istio's strict parse does.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{envoy, values};

/// Entries `proxyMetadata` may have (Istio's own use a handful).
pub const MAX_METADATA_ENTRIES: usize = 256;
/// Bytes one `proxyMetadata` value may have.
pub const MAX_METADATA_VALUE_BYTES: usize = 16 << 10;

/// The `ProxyConfig` fields the injector honours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Envoy worker threads (`--concurrency`); 0 is every core.
    pub concurrency: Option<u32>,
    /// Environment of the sidecar; `ISTIO_META_X` entries are also node metadata `X`.
    pub proxy_metadata: Vec<(String, String)>,
    /// The control plane's address, instead of the injector's.
    pub discovery_address: Option<values::Address>,
    /// `drainDuration`: Envoy's `--drain-time-s` (how long listeners drain when they change
    /// or are removed), in whole seconds rounded up.
    pub drain_seconds: Option<u64>,
    /// `terminationDrainDuration`: how long the sidecar keeps serving once the Pod is being
    /// deleted (its `preStop` sleep), in whole seconds rounded up.
    pub termination_drain_seconds: Option<u64>,
    /// Whether the sidecar goes first among the containers.
    pub hold_application_until_proxy_starts: Option<bool>,
    /// `REDIRECT`, `TPROXY` or `NONE`, below the `sidecar.istio.io/interceptionMode`
    /// annotation.
    pub interception_mode: Option<String>,
}

impl ProxyConfig {
    /// `self` (a Pod's annotation) laid over `defaults` (the mesh config's `defaultConfig`),
    /// as Istio merges them: each field set here wins, and `proxyMetadata` is merged entry by
    /// entry.
    pub fn over(self, defaults: &ProxyConfig) -> ProxyConfig {
        let mut metadata = defaults.proxy_metadata.clone();
        let mut index: HashMap<String, usize> = metadata
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        for (name, value) in self.proxy_metadata {
            match index.get(&name) {
                Some(&i) => metadata[i].1 = value,
                None => {
                    index.insert(name.clone(), metadata.len());
                    metadata.push((name, value));
                }
            }
        }
        ProxyConfig {
            concurrency: self.concurrency.or(defaults.concurrency),
            proxy_metadata: metadata,
            discovery_address: self
                .discovery_address
                .or_else(|| defaults.discovery_address.clone()),
            drain_seconds: self.drain_seconds.or(defaults.drain_seconds),
            termination_drain_seconds: self
                .termination_drain_seconds
                .or(defaults.termination_drain_seconds),
            hold_application_until_proxy_starts: self
                .hold_application_until_proxy_starts
                .or(defaults.hold_application_until_proxy_starts),
            interception_mode: self
                .interception_mode
                .or_else(|| defaults.interception_mode.clone()),
        }
    }
}

/// What reading the annotation found: the settings, and a warning per field not honoured.
#[derive(Debug, Default)]
pub struct Read {
    /// The honoured fields.
    pub config: ProxyConfig,
    /// One per field accepted but not honoured.
    pub warnings: Vec<String>,
}

/// Istio's `ProxyConfig` fields (`mesh/v1alpha1/proxy.proto`) this injector does not honour:
/// most configure istio-agent, which a plain Envoy sidecar does not run.
const NOT_HONOURED: &[&str] = &[
    "configPath",
    "binaryPath",
    "serviceCluster",
    "tracingServiceName",
    "discoveryRefreshDelay",
    "zipkinAddress",
    "statsdUdpAddress",
    "envoyMetricsServiceAddress",
    "proxyAdminPort",
    "availabilityZone",
    "controlPlaneAuthPolicy",
    "customConfigFile",
    "statNameLength",
    "proxyBootstrapTemplatePath",
    "tracing",
    "sds",
    "envoyAccessLogService",
    "envoyMetricsService",
    "runtimeValues",
    "statusPort",
    "extraStatTags",
    "gatewayTopology",
    "meshId",
    "readinessProbe",
    "proxyStatsMatcher",
    "caCertificatesPem",
    "image",
    "privateKeyProvider",
    "proxyHeaders",
    "fileFlushInterval",
    "fileFlushMinSizeKb",
    "statsCompression",
    "connectionSettings",
];

/// Reads the annotation's value, or says what is wrong with it.
pub fn read(text: &str) -> Result<Read, String> {
    // JSON is read as JSON: the YAML reader refuses the surrogate pairs (`"\ud83d\ude00"`)
    // JSON spells characters past U+FFFF with.
    let json = text
        .trim_start()
        .starts_with('{')
        .then(|| serde_json::from_str::<Value>(text).ok())
        .flatten();
    let docs;
    let value = match &json {
        Some(value) => value,
        None => {
            docs = sextant_index::manifest::parse_documents(text).map_err(|e| e.to_string())?;
            match docs.as_slice() {
                [] => return Ok(Read::default()),
                [doc] => &doc.value,
                _ => return Err("expected one document".to_owned()),
            }
        }
    };
    let fields = match value {
        Value::Null => return Ok(Read::default()),
        Value::Object(fields) => fields,
        _ => return Err("expected a mapping of ProxyConfig fields".to_owned()),
    };
    let mut read = Read::default();
    for (key, value) in fields {
        match read_field(&mut read.config, key, value)? {
            Field::Honoured => {}
            Field::NotHonoured => read.warnings.push(format!(
                "proxy.istio.io/config: field {key} is not honoured by Sextant's sidecar injector (a plain Envoy sidecar, no istio-agent)"
            )),
            Field::Unknown => {
                return Err(format!(
                    "unknown field {:?} in ProxyConfig",
                    values::shown(key)
                ));
            }
        }
    }
    Ok(read)
}

/// Reads the mesh config's `defaultConfig` (its fields as given): the honoured fields that are
/// well formed, and why each field that is not was left out. Fields injection does not
/// honour are left out silently: the mesh config's reader already lists them.
pub fn defaults(fields: &Map<String, Value>) -> (ProxyConfig, Vec<String>) {
    let mut config = ProxyConfig::default();
    let mut skipped = Vec::new();
    for (key, value) in fields {
        match read_field(&mut config, key, value) {
            Ok(Field::Honoured | Field::NotHonoured) => {}
            Ok(Field::Unknown) => skipped.push(format!("unknown field {key:?} in ProxyConfig")),
            Err(error) => skipped.push(error),
        }
    }
    (config, skipped)
}

/// The mesh config's `defaultConfig` as [`defaults`] reads it; from its typed fields when it
/// carries no JSON (a mesh config made in code).
pub fn mesh_defaults(defaults: &sextant_model::ProxyDefaults) -> (ProxyConfig, Vec<String>) {
    if defaults.json.is_empty() {
        let mut fields = Map::new();
        if let Some(address) = &defaults.discovery_address {
            fields.insert("discoveryAddress".to_owned(), Value::from(address.as_str()));
        }
        if !defaults.proxy_metadata.is_empty() {
            let metadata = defaults.proxy_metadata.iter();
            let entries = metadata.map(|(k, v)| (k.clone(), Value::from(v.as_str())));
            fields.insert("proxyMetadata".to_owned(), Value::Object(entries.collect()));
        }
        return self::defaults(&fields);
    }
    match serde_json::from_str::<Map<String, Value>>(&defaults.json) {
        Ok(fields) => self::defaults(&fields),
        Err(error) => (ProxyConfig::default(), vec![error.to_string()]),
    }
}

/// What a field is to the injector.
enum Field {
    /// Read into the config.
    Honoured,
    /// One of Istio's, not honoured.
    NotHonoured,
    /// Not a `ProxyConfig` field.
    Unknown,
}

/// Reads field `key` into `config`, or says why its value is wrong.
fn read_field(config: &mut ProxyConfig, key: &str, value: &Value) -> Result<Field, String> {
    let name = camel_case(key);
    match name.as_str() {
        "concurrency" => config.concurrency = Some(concurrency(value)?),
        "proxyMetadata" => config.proxy_metadata = metadata(value)?,
        "discoveryAddress" => {
            let address = values::host_port(&string(&name, value)?)
                .map_err(|e| format!("discoveryAddress: {e}"))?;
            config.discovery_address = Some(address);
        }
        "drainDuration" => config.drain_seconds = Some(seconds(&name, &string(&name, value)?)?),
        "terminationDrainDuration" => {
            config.termination_drain_seconds = Some(seconds(&name, &string(&name, value)?)?);
        }
        "holdApplicationUntilProxyStarts" => {
            config.hold_application_until_proxy_starts = Some(boolean(&name, value)?);
        }
        "interceptionMode" => {
            let mode = string(&name, value)?;
            values::interception_mode(&mode)?;
            config.interception_mode = Some(mode);
        }
        other if NOT_HONOURED.contains(&other) => return Ok(Field::NotHonoured),
        _ => return Ok(Field::Unknown),
    }
    Ok(Field::Honoured)
}

/// `drain_duration` and `drainDuration` alike.
fn camel_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn string(name: &str, value: &Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{name}: expected a string"))
}

fn boolean(name: &str, value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
        _ => Err(format!("{name}: expected true or false")),
    }
}

fn concurrency(value: &Value) -> Result<u32, String> {
    let n = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    n.and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n <= 1024)
        .ok_or_else(|| "concurrency: expected a whole number from 0 to 1024".to_owned())
}

/// `proxyMetadata`: environment variables of both injected containers, and node metadata
/// for `ISTIO_META_` names. Bounded ([`MAX_METADATA_ENTRIES`], [`MAX_METADATA_VALUE_BYTES`])
/// so that what a Pod costs to inject and what its answer holds stay small; the names the
/// injector sets itself ([`envoy::DOWNWARD_API`]) and characters no process environment can
/// hold are refused.
fn metadata(value: &Value) -> Result<Vec<(String, String)>, String> {
    let Value::Object(entries) = value else {
        return Err("proxyMetadata: expected a mapping of names to strings".to_owned());
    };
    if entries.len() > MAX_METADATA_ENTRIES {
        return Err(format!(
            "proxyMetadata: {} entries, more than the injector's bound of {MAX_METADATA_ENTRIES}",
            entries.len()
        ));
    }
    entries
        .iter()
        .map(|(name, value)| {
            let valid_name = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
            if !valid_name {
                return Err(format!(
                    "proxyMetadata: {:?} is not an environment variable name",
                    values::shown(name)
                ));
            }
            if envoy::DOWNWARD_API.contains(&name.as_str()) {
                return Err(format!(
                    "proxyMetadata: {name} is set by the injector from the Pod (downward API) and its value is pasted into the sidecar's bootstrap; it cannot be set here"
                ));
            }
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(format!("proxyMetadata.{name}: expected a string")),
            };
            if text.len() > MAX_METADATA_VALUE_BYTES {
                return Err(format!(
                    "proxyMetadata.{name}: {} bytes, more than the injector's bound of {MAX_METADATA_VALUE_BYTES} bytes per value",
                    text.len()
                ));
            }
            // An environment variable is a C string: no NUL; other control characters
            // (but tab, newline and carriage return) are no one's setting.
            if let Some(c) = text
                .chars()
                .find(|c| c.is_ascii_control() && !"\t\n\r".contains(*c))
            {
                return Err(format!(
                    "proxyMetadata.{name}: control character {c:?} in the value"
                ));
            }
            Ok((name.clone(), text))
        })
        .collect()
}

/// A protobuf JSON duration (`5s`, `0.5s`), in whole seconds rounded up, under 2^32 s:
/// Envoy's `--drain-time-s` and the kubelet's sleep take no more.
fn seconds(name: &str, text: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "{name}: {:?} is not a duration such as 5s",
            values::shown(text)
        )
    };
    let number = text.strip_suffix('s').ok_or_else(invalid)?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 9 {
        return Err(invalid());
    }
    let too_long = || {
        format!(
            "{name}: {} is 2^32 seconds or more, longer than Envoy and Kubernetes take",
            values::shown(text)
        )
    };
    let whole: u64 = whole.parse().map_err(|_| too_long())?;
    let round_up = u64::from(fraction.bytes().any(|b| b != b'0'));
    let seconds = whole.saturating_add(round_up);
    if seconds > u64::from(u32::MAX) {
        return Err(too_long());
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honoured_fields_are_read_from_yaml_or_json() {
        let yaml = read(
            "concurrency: 4\nholdApplicationUntilProxyStarts: true\nterminationDrainDuration: 1.5s\nproxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n",
        )
        .expect("valid");
        assert_eq!(yaml.config.concurrency, Some(4));
        assert_eq!(yaml.config.hold_application_until_proxy_starts, Some(true));
        assert_eq!(yaml.config.termination_drain_seconds, Some(2));
        assert_eq!(
            yaml.config.proxy_metadata,
            vec![("ISTIO_META_DNS_CAPTURE".to_owned(), "true".to_owned())]
        );
        let drains = read("drainDuration: 30s\nterminationDrainDuration: 0s").expect("valid");
        assert_eq!(drains.config.drain_seconds, Some(30));
        assert_eq!(drains.config.termination_drain_seconds, Some(0));
        let json = read(r#"{"discovery_address": "sextant.mesh.svc:15012"}"#).expect("valid");
        let address = json.config.discovery_address.expect("an address");
        assert_eq!(address.to_string(), "sextant.mesh.svc:15012");
        assert!(json.warnings.is_empty());
    }

    #[test]
    fn fields_not_honoured_warn_and_unknown_fields_fail() {
        let read = read("tracing: {sampling: 10}\nconcurrency: 1").expect("valid");
        assert_eq!(read.warnings.len(), 1);
        assert!(
            read.warnings[0].contains("field tracing"),
            "{:?}",
            read.warnings
        );
        let unknown = super::read("concurency: 1").expect_err("unknown field");
        assert!(unknown.contains("\"concurency\""), "{unknown}");
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "concurrency: many",
            "concurrency: -1",
            "terminationDrainDuration: 5",
            "terminationDrainDuration: 1m",
            "drainDuration: soon",
            "discoveryAddress: nowhere",
            "proxyMetadata: [a]",
            "holdApplicationUntilProxyStarts: maybe",
            "[1, 2]",
            "{",
        ] {
            assert!(super::read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_pods_fields_win_over_the_mesh_defaults_and_metadata_merges() {
        let mesh = read(
            "concurrency: 1\ndrainDuration: 10s\nholdApplicationUntilProxyStarts: true\nproxyMetadata: {A: mesh, B: mesh}",
        )
        .expect("valid")
        .config;
        let pod = read("concurrency: 3\nproxyMetadata: {B: pod, C: pod}")
            .expect("valid")
            .config;
        let merged = pod.over(&mesh);
        assert_eq!(merged.concurrency, Some(3));
        assert_eq!(merged.drain_seconds, Some(10));
        assert_eq!(merged.hold_application_until_proxy_starts, Some(true));
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect()
        };
        assert_eq!(
            merged.proxy_metadata,
            pairs(&[("A", "mesh"), ("B", "pod"), ("C", "pod")])
        );
    }

    #[test]
    fn mesh_defaults_keep_what_is_well_formed_and_say_what_is_not() {
        let fields = serde_json::json!({
            "concurrency": "lots", "terminationDrainDuration": "7s", "tracing": {},
            "newerIstioField": true,
        });
        let (config, skipped) = defaults(fields.as_object().expect("a map"));
        assert_eq!(config.termination_drain_seconds, Some(7));
        assert_eq!(config.concurrency, None);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(
            skipped.iter().any(|s| s.contains("newerIstioField")),
            "{skipped:?}"
        );
    }
}
