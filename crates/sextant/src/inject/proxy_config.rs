//! The `proxy.istio.io/config` annotation: Istio's `ProxyConfig` (YAML or JSON, field names in
//! protobuf JSON form, camelCase or the proto's snake_case). The fields a plain Envoy sidecar
//! can honour are read; the other `ProxyConfig` fields are accepted with a warning naming
//! each, and a field `ProxyConfig` does not have fails injection, as Istio's strict parse does.

use serde_json::Value;

use super::values;

/// The `ProxyConfig` fields the injector honours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Envoy worker threads (`--concurrency`); 0 is every core.
    pub concurrency: Option<u32>,
    /// Environment of the sidecar; `ISTIO_META_X` entries are also node metadata `X`.
    pub proxy_metadata: Vec<(String, String)>,
    /// The control plane's address, instead of the injector's.
    pub discovery_address: Option<values::Address>,
    /// Envoy's drain time (`--drain-time-s`), in whole seconds rounded up.
    pub termination_drain_seconds: Option<u64>,
    /// Whether the sidecar goes first among the containers.
    pub hold_application_until_proxy_starts: Option<bool>,
    /// `REDIRECT`, `TPROXY` or `NONE`, below the `sidecar.istio.io/interceptionMode`
    /// annotation.
    pub interception_mode: Option<String>,
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
    "drainDuration",
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
    let docs = sextant_index::manifest::parse_documents(text).map_err(|e| e.to_string())?;
    let value = match docs.as_slice() {
        [] => return Ok(Read::default()),
        [doc] => &doc.value,
        _ => return Err("expected one document".to_owned()),
    };
    let fields = match value {
        Value::Null => return Ok(Read::default()),
        Value::Object(fields) => fields,
        _ => return Err("expected a mapping of ProxyConfig fields".to_owned()),
    };
    let mut read = Read::default();
    for (key, value) in fields {
        let name = camel_case(key);
        let config = &mut read.config;
        match name.as_str() {
            "concurrency" => config.concurrency = Some(concurrency(value)?),
            "proxyMetadata" => config.proxy_metadata = metadata(value)?,
            "discoveryAddress" => {
                let address = values::host_port(&string(&name, value)?)
                    .map_err(|e| format!("discoveryAddress: {e}"))?;
                config.discovery_address = Some(address);
            }
            "terminationDrainDuration" => {
                config.termination_drain_seconds = Some(seconds(&string(&name, value)?)?);
            }
            "holdApplicationUntilProxyStarts" => {
                config.hold_application_until_proxy_starts = Some(boolean(&name, value)?);
            }
            "interceptionMode" => {
                let mode = string(&name, value)?;
                values::interception_mode(&mode)?;
                config.interception_mode = Some(mode);
            }
            other if NOT_HONOURED.contains(&other) => read.warnings.push(format!(
                "proxy.istio.io/config: field {key} is not honoured by Sextant's sidecar injector (a plain Envoy sidecar, no istio-agent)"
            )),
            _ => return Err(format!("unknown field {key:?} in ProxyConfig")),
        }
    }
    Ok(read)
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

fn metadata(value: &Value) -> Result<Vec<(String, String)>, String> {
    let Value::Object(entries) = value else {
        return Err("proxyMetadata: expected a mapping of names to strings".to_owned());
    };
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
                    "proxyMetadata: {name:?} is not an environment variable name"
                ));
            }
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(format!("proxyMetadata.{name}: expected a string")),
            };
            Ok((name.clone(), text))
        })
        .collect()
}

/// A protobuf JSON duration (`5s`, `0.5s`), in whole seconds rounded up.
fn seconds(text: &str) -> Result<u64, String> {
    let invalid = || format!("terminationDrainDuration: {text:?} is not a duration such as 5s");
    let number = text.strip_suffix('s').ok_or_else(invalid)?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 9 {
        return Err(invalid());
    }
    let whole: u64 = whole.parse().map_err(|_| invalid())?;
    let round_up = u64::from(fraction.bytes().any(|b| b != b'0'));
    Ok(whole.saturating_add(round_up))
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
            "discoveryAddress: nowhere",
            "proxyMetadata: [a]",
            "holdApplicationUntilProxyStarts: maybe",
            "[1, 2]",
            "{",
        ] {
            assert!(super::read(bad).is_err(), "{bad}");
        }
    }
}
