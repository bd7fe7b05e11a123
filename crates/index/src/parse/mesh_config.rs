//! The mesh config: Istio's `MeshConfig` YAML (the `mesh` key of the `istio` ConfigMap, or a
//! file) read into the part Sextant uses. Fields Sextant does not use are ignored: Istio's own
//! are listed in `ignored` (for a debug log), others are warned about. A value of the wrong
//! shape is an error naming its field, and the caller keeps the last good config.

use std::collections::BTreeMap;

use serde_json::Value;
use sextant_model::{
    AccessLogEncoding, MeshConfig, OutboundTrafficPolicy, ProxyDefaults, ServiceSettings,
};

use super::{FieldError, fields};
use crate::manifest;

/// Top-level `MeshConfig` fields of Istio that Sextant reads nothing from.
const ISTIO_FIELDS: &[&str] = &[
    "proxyListenPort",
    "proxyInboundListenPort",
    "proxyHttpPort",
    "connectTimeout",
    "protocolDetectionTimeout",
    "tcpKeepalive",
    "ingressClass",
    "ingressService",
    "ingressControllerMode",
    "ingressSelector",
    "enableTracing",
    "enableEnvoyAccessLogService",
    "inboundTrafficPolicy",
    "configSources",
    "enableAutoMtls",
    "trustDomainAliases",
    "caCertificates",
    "localityLbSetting",
    "dnsRefreshRate",
    "h2UpgradePolicy",
    "inboundClusterStatName",
    "outboundClusterStatName",
    "certificates",
    "thriftConfig",
    "enablePrometheusMerge",
    "verifyCertificateAtClient",
    "ca",
    "extensionProviders",
    "defaultProviders",
    "discoverySelectors",
    "pathNormalization",
    "defaultHttpRetryPolicy",
    "meshMTLS",
    "tlsDefaults",
    "serviceScopeConfigs",
    "enableSdsTokenMount",
    "sdsUdsPath",
    "authPolicy",
    "rdsRefreshDelay",
    "mixerCheckServer",
    "mixerReportServer",
    "disablePolicyChecks",
    "policyCheckFailOpen",
    "sidecarToTelemetrySessionAffinity",
];

/// A mesh config that was read, with what was skipped.
#[derive(Clone, Debug)]
pub struct MeshConfigRead {
    /// The config, Istio's defaults for what it leaves out.
    pub config: MeshConfig,
    /// Fields that are not Istio's (misspelt, or from a newer Istio): ignored.
    pub warnings: Vec<FieldError>,
    /// Istio's fields that Sextant does not use (including `defaultConfig.*` ones): ignored.
    pub ignored: Vec<String>,
}

/// A mesh config that could not be read, with every error and its field.
#[derive(Clone, Debug, thiserror::Error)]
pub struct InvalidMeshConfig {
    /// What is wrong, by field path (`outboundTrafficPolicy.mode`).
    pub errors: Vec<FieldError>,
}

impl std::fmt::Display for InvalidMeshConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid mesh config: ")?;
        let errors: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        f.write_str(&errors.join("; "))
    }
}

/// Reads a mesh config from YAML (empty: every default), as Istio's `ApplyMeshConfig` layers
/// it over the defaults: fields given replace the default, fields left out keep it.
pub fn mesh_config(text: &str) -> Result<MeshConfigRead, InvalidMeshConfig> {
    let fail = |path: &str, message: String| InvalidMeshConfig {
        errors: vec![FieldError {
            path: path.to_owned(),
            message,
        }],
    };
    let docs = manifest::parse_documents(text).map_err(|e| fail("", e.to_string()))?;
    let value = match docs.as_slice() {
        [] => Value::Null,
        [doc] => doc.value.clone(),
        _ => return Err(fail("", "must be one YAML document".to_owned())),
    };
    let mut read = Reader {
        config: MeshConfig::default(),
        warnings: Vec::new(),
        ignored: Vec::new(),
        errors: Vec::new(),
    };
    match &value {
        Value::Null => {}
        Value::Object(map) => {
            read.top(map);
            read.check_json_format();
            read.check_access_log();
        }
        _ => read.error("", "must be a map of MeshConfig fields"),
    }
    if read.errors.is_empty() {
        Ok(MeshConfigRead {
            config: read.config,
            warnings: read.warnings,
            ignored: read.ignored,
        })
    } else {
        Err(InvalidMeshConfig {
            errors: read.errors,
        })
    }
}

struct Reader {
    config: MeshConfig,
    warnings: Vec<FieldError>,
    ignored: Vec<String>,
    errors: Vec<FieldError>,
}

impl Reader {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(FieldError {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn string(&mut self, path: &str, value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            _ => {
                self.error(path, "must be a string");
                None
            }
        }
    }

    fn strings(&mut self, path: &str, value: &Value) -> Vec<String> {
        match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| self.string(&format!("{path}[{i}]"), v))
                .collect(),
            Value::Null => Vec::new(),
            _ => {
                self.error(path, "must be a list of strings");
                Vec::new()
            }
        }
    }

    fn object<'v>(
        &mut self,
        path: &str,
        value: &'v Value,
    ) -> Option<&'v serde_json::Map<String, Value>> {
        match value {
            Value::Object(map) => Some(map),
            Value::Null => None,
            _ => {
                self.error(path, "must be a map");
                None
            }
        }
    }

    fn top(&mut self, map: &serde_json::Map<String, Value>) {
        for (key, value) in map {
            match key.as_str() {
                "outboundTrafficPolicy" => self.outbound(value),
                "rootNamespace" => {
                    if let Some(ns) = self.string(key, value) {
                        if fields::is_dns1123_label(&ns) {
                            self.config.root_namespace = ns;
                        } else {
                            self.error(key, format!("{ns:?} is not a valid namespace name"));
                        }
                    }
                }
                "trustDomain" => {
                    if let Some(td) = self.string(key, value) {
                        let valid = !td.is_empty()
                            && td.len() <= 255
                            && td.bytes().all(|b| {
                                b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)
                            });
                        if valid {
                            self.config.trust_domain = td;
                        } else {
                            self.error(key, format!("{td:?} is not a valid trust domain"));
                        }
                    }
                }
                "defaultConfig" => self.default_config(value),
                "serviceSettings" => self.service_settings(value),
                "defaultServiceExportTo" => {
                    self.config.default_service_export_to = self.export_to(key, value, true);
                }
                "defaultVirtualServiceExportTo" => {
                    self.config.default_virtual_service_export_to =
                        self.export_to(key, value, false);
                }
                "defaultDestinationRuleExportTo" => {
                    self.config.default_destination_rule_export_to =
                        self.export_to(key, value, false);
                }
                "accessLogFile" => {
                    self.config.access_log.file = self.string(key, value).unwrap_or_default();
                }
                "accessLogFormat" => {
                    self.config.access_log.format = self.string(key, value).unwrap_or_default();
                }
                "accessLogEncoding" => self.access_log_encoding(value),
                "disableEnvoyListenerLog" => match value {
                    Value::Bool(b) => self.config.access_log.disable_listener_log = *b,
                    Value::Null => {}
                    _ => self.error(key, "must be a boolean"),
                },
                k if ISTIO_FIELDS.contains(&k) => self.ignored.push(k.to_owned()),
                k => self.warn(k, "unknown field, ignored"),
            }
        }
    }

    fn outbound(&mut self, value: &Value) {
        let path = "outboundTrafficPolicy";
        let Some(map) = self.object(path, value) else {
            return;
        };
        for (key, value) in map {
            let at = format!("{path}.{key}");
            match key.as_str() {
                // Protobuf JSON takes an enum by name or number.
                "mode" => match value {
                    Value::String(m) if m == "ALLOW_ANY" => {
                        self.config.outbound_traffic_policy = OutboundTrafficPolicy::AllowAny;
                    }
                    Value::String(m) if m == "REGISTRY_ONLY" => {
                        self.config.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly;
                    }
                    Value::Number(n) if n.as_u64() == Some(1) => {
                        self.config.outbound_traffic_policy = OutboundTrafficPolicy::AllowAny;
                    }
                    Value::Number(n) if n.as_u64() == Some(0) => {
                        self.config.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly;
                    }
                    Value::String(m) if m == "ALLOW_ANY_DYNAMIC_DNS" => {
                        self.warn(
                            &at,
                            "ALLOW_ANY_DYNAMIC_DNS is not supported by Sextant; ALLOW_ANY applies",
                        );
                        self.config.outbound_traffic_policy = OutboundTrafficPolicy::AllowAny;
                    }
                    other => self.error(
                        &at,
                        format!("unknown mode {other}: ALLOW_ANY or REGISTRY_ONLY"),
                    ),
                },
                "egressProxy" => self.ignored.push(at),
                _ => self.warn(&at, "unknown field, ignored"),
            }
        }
    }

    /// `accessLogEncoding`: TEXT or JSON, by name or number as protobuf JSON takes an enum.
    fn access_log_encoding(&mut self, value: &Value) {
        let encoding = match value {
            Value::String(e) if e == "TEXT" => AccessLogEncoding::Text,
            Value::String(e) if e == "JSON" => AccessLogEncoding::Json,
            Value::Number(n) if n.as_u64() == Some(0) => AccessLogEncoding::Text,
            Value::Number(n) if n.as_u64() == Some(1) => AccessLogEncoding::Json,
            Value::Null => return,
            other => {
                return self.error(
                    "accessLogEncoding",
                    format!("unknown encoding {other}: TEXT or JSON"),
                );
            }
        };
        self.config.access_log.encoding = encoding;
    }

    /// A JSON `accessLogFormat` must be a JSON object of string values (Envoy's `json_format`).
    /// Istio logs a bad one and writes its default keys instead; here it is a warning, with the
    /// same outcome.
    fn check_json_format(&mut self) {
        let log = &self.config.access_log;
        if log.encoding != AccessLogEncoding::Json || log.format.is_empty() {
            return;
        }
        let fits = match serde_json::from_str::<Value>(&log.format) {
            Ok(Value::Object(map)) => map.values().all(|v| v.is_string()),
            _ => false,
        };
        if !fits {
            self.warn(
                "accessLogFormat",
                "with accessLogEncoding JSON, must be a JSON object of strings; Istio's default keys apply",
            );
            self.config.access_log.format.clear();
        }
    }

    /// What Envoy would refuse in the access log's file or format, as errors naming the
    /// field (see `access_log`), so that the last good mesh config stays in force.
    fn check_access_log(&mut self) {
        use super::access_log::{check_file, check_format};
        let log = &self.config.access_log;
        let file = (!log.file.is_empty())
            .then(|| check_file(&log.file))
            .and_then(Result::err);
        let format = if log.encoding == AccessLogEncoding::Json {
            // A JSON format that is not an object of strings was already replaced by Istio's
            // keys (a warning); each value of one that is, is a format of its own.
            serde_json::from_str::<serde_json::Map<String, Value>>(&log.format)
                .ok()
                .and_then(|map| {
                    map.iter().find_map(|(key, v)| {
                        check_format(v.as_str().unwrap_or_default())
                            .err()
                            .map(|e| format!("key {key:?}: {e}"))
                    })
                })
        } else {
            check_format(&log.format).err()
        };
        if let Some(e) = file {
            self.error("accessLogFile", e);
        }
        if let Some(e) = format {
            self.error("accessLogFormat", e);
        }
    }

    fn default_config(&mut self, value: &Value) {
        let Some(map) = self.object("defaultConfig", value) else {
            return;
        };
        let mut defaults = ProxyDefaults {
            json: Value::Object(map.clone()).to_string(),
            ..ProxyDefaults::default()
        };
        for (key, value) in map {
            let at = format!("defaultConfig.{key}");
            match key.as_str() {
                "discoveryAddress" => defaults.discovery_address = self.string(&at, value),
                "proxyMetadata" => {
                    let Some(meta) = self.object(&at, value) else {
                        continue;
                    };
                    let mut out = BTreeMap::new();
                    for (k, v) in meta {
                        if let Some(v) = self.string(&format!("{at}.{k}"), v) {
                            out.insert(k.clone(), v);
                        }
                    }
                    defaults.proxy_metadata = out;
                }
                // ProxyConfig has some sixty fields, all about the proxies themselves.
                _ => self.ignored.push(at),
            }
        }
        self.config.default_config = defaults;
    }

    fn service_settings(&mut self, value: &Value) {
        let path = "serviceSettings";
        let items = match value {
            Value::Array(items) => items,
            Value::Null => return,
            _ => return self.error(path, "must be a list"),
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let Some(map) = self.object(&at, item) else {
                continue;
            };
            let mut entry = ServiceSettings::default();
            for (key, value) in map {
                let field = format!("{at}.{key}");
                match key.as_str() {
                    "hosts" => entry.hosts = self.strings(&field, value),
                    "settings" => {
                        let Some(settings) = self.object(&field, value) else {
                            continue;
                        };
                        for (k, v) in settings {
                            match (k.as_str(), v) {
                                ("clusterLocal", Value::Bool(b)) => entry.cluster_local = *b,
                                ("clusterLocal", _) => self
                                    .error(&format!("{field}.clusterLocal"), "must be a boolean"),
                                _ => self.ignored.push(format!("{field}.{k}")),
                            }
                        }
                    }
                    _ => self.warn(&field, "unknown field, ignored"),
                }
            }
            out.push(entry);
        }
        self.config.service_settings = out;
    }

    /// A default `exportTo`: `*` or `.` (and `~` for services), as Istio's mesh validation.
    fn export_to(&mut self, path: &str, value: &Value, none_allowed: bool) -> Vec<String> {
        let values = self.strings(path, value);
        for (i, v) in values.iter().enumerate() {
            let ok = v == "*" || v == "." || (none_allowed && v == "~");
            if !ok {
                self.error(
                    &format!("{path}[{i}]"),
                    format!(
                        "only {} are allowed, not {v:?}",
                        if none_allowed {
                            "`.`, `*` and `~`"
                        } else {
                            "`.` and `*`"
                        }
                    ),
                );
            }
        }
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_settings_are_read() {
        let read = mesh_config(
            "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n\
             accessLogFormat: '{\"code\": \"%RESPONSE_CODE%\"}'\ndisableEnvoyListenerLog: true\n",
        )
        .expect("valid");
        let log = &read.config.access_log;
        assert_eq!(log.file, "/dev/stdout");
        assert_eq!(log.encoding, AccessLogEncoding::Json);
        assert_eq!(log.format, r#"{"code": "%RESPONSE_CODE%"}"#);
        assert!(log.disable_listener_log);
        assert!(read.warnings.is_empty(), "{:?}", read.warnings);
        assert_eq!(
            mesh_config("accessLogEncoding: 1")
                .expect("valid")
                .config
                .access_log
                .encoding,
            AccessLogEncoding::Json,
            "protobuf JSON takes an enum by number"
        );
        let default = mesh_config("").expect("valid").config.access_log;
        assert!(default.file.is_empty(), "no access log by default");
        assert_eq!(default.encoding, AccessLogEncoding::Text);
    }

    #[test]
    fn a_bad_access_log_setting_names_its_field() {
        for (text, field) in [
            ("accessLogEncoding: XML", "accessLogEncoding"),
            ("accessLogFile: [a]", "accessLogFile"),
            (
                "disableEnvoyListenerLog: yes-please",
                "disableEnvoyListenerLog",
            ),
        ] {
            let error = mesh_config(text).expect_err(text);
            assert_eq!(error.errors[0].path, field, "{text}");
        }
    }

    #[test]
    fn a_json_format_that_is_no_object_of_strings_falls_back_to_istios_keys() {
        let read = mesh_config(
            "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\naccessLogFormat: '%START_TIME%'",
        )
        .expect("Istio accepts it and logs");
        assert!(read.config.access_log.format.is_empty());
        assert_eq!(read.warnings[0].path, "accessLogFormat");
        let text = mesh_config("accessLogFormat: '%START_TIME% %PROTOCOL%'").expect("valid");
        assert_eq!(
            text.config.access_log.format, "%START_TIME% %PROTOCOL%",
            "a TEXT format is any string"
        );
    }
}
