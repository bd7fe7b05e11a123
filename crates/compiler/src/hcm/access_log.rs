//! The mesh config's access log (`accessLogFile`, `accessLogEncoding`, `accessLogFormat`), as
//! istiod writes it: Envoy's file logger on every HTTP connection manager and TCP proxy of a
//! sidecar's or gateway's listeners, in Istio's default TEXT line or JSON keys unless the mesh
//! config gives a format, and on each listener a log of the connections no filter chain took
//! (response flag `NR`) unless `disableEnvoyListenerLog`.
//!
//! It is added in one pass over the built listeners rather than where each filter is made:
//! connection managers and TCP proxies come from a dozen places (sidecar, inbound, egress,
//! gateway and AUTO_PASSTHROUGH chains), and one pass cannot miss a new one. With no
//! `accessLogFile` (the default) nothing is decoded.

use envoy_types::pb::{
    envoy::{
        config::{
            accesslog::v3::{AccessLog, AccessLogFilter, ResponseFlagFilter, access_log_filter},
            core::v3::{
                DataSource, SubstitutionFormatString, data_source, substitution_format_string,
            },
            listener::v3::{Listener, filter},
        },
        extensions::{
            access_loggers::file::v3::{FileAccessLog, file_access_log},
            filters::network::{
                http_connection_manager::v3::HttpConnectionManager, tcp_proxy::v3::TcpProxy,
            },
        },
    },
    google::protobuf::Struct,
};
use prost::{Message, Name};
use sextant_model::{AccessLogEncoding, MeshConfig};

use crate::proto::{any, map_of, string_value};

/// Istio's default TEXT access log line (Istio 1.9 onwards, `EnvoyTextLogFormat`): Envoy's
/// default line plus the response code details, the connection termination details, the
/// upstream transport failure, the upstream cluster (its raw name), the addresses on both
/// sides, the requested server name and the route name.
pub const DEFAULT_TEXT_FORMAT: &str = concat!(
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" ",
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% ",
    "\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ",
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" ",
    "\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% ",
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% ",
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n",
);

/// Istio's default JSON access log keys and what each holds (`EnvoyJSONLogFormatIstio`).
pub const DEFAULT_JSON_FORMAT: &[(&str, &str)] = &[
    ("authority", "%REQ(:AUTHORITY)%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("duration", "%DURATION%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("route_name", "%ROUTE_NAME%"),
    ("start_time", "%START_TIME%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
];

/// Envoy's file access logger.
const FILE_LOGGER: &str = "envoy.access_loggers.file";

/// The access logs of one mesh config, built once per compilation.
pub(crate) struct AccessLogs {
    /// On each HTTP connection manager and TCP proxy.
    filters: Vec<AccessLog>,
    /// On each listener: connections that no filter chain took.
    listener: Vec<AccessLog>,
}

impl AccessLogs {
    /// The access logs `mesh` asks for; `None` without an `accessLogFile`.
    pub(crate) fn of(mesh: &MeshConfig) -> Option<AccessLogs> {
        let config = &mesh.access_log;
        if config.file.is_empty() {
            return None;
        }
        let format = match config.encoding {
            AccessLogEncoding::Text => {
                let mut text = if config.format.is_empty() {
                    DEFAULT_TEXT_FORMAT.to_owned()
                } else {
                    config.format.clone()
                };
                // Istio ends every format with a newline (its mesh config's documented rule).
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                substitution_format_string::Format::TextFormatSource(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(text)),
                    ..Default::default()
                })
            }
            AccessLogEncoding::Json => {
                substitution_format_string::Format::JsonFormat(json_keys(&config.format))
            }
        };
        let log = AccessLog {
            name: FILE_LOGGER.to_owned(),
            filter: None,
            config_type: Some(
                envoy_types::pb::envoy::config::accesslog::v3::access_log::ConfigType::TypedConfig(
                    any(&FileAccessLog {
                        path: config.file.clone(),
                        access_log_format: Some(file_access_log::AccessLogFormat::LogFormat(
                            SubstitutionFormatString {
                                format: Some(format),
                                ..Default::default()
                            },
                        )),
                    }),
                ),
            ),
        };
        let listener = if config.disable_listener_log {
            Vec::new()
        } else {
            vec![AccessLog {
                filter: Some(AccessLogFilter {
                    filter_specifier: Some(access_log_filter::FilterSpecifier::ResponseFlagFilter(
                        ResponseFlagFilter {
                            flags: vec!["NR".to_owned()],
                        },
                    )),
                }),
                ..log.clone()
            }]
        };
        Some(AccessLogs {
            filters: vec![log],
            listener,
        })
    }

    /// Adds the access logs to `listeners`: to each listener, and to each HTTP connection
    /// manager and TCP proxy of its filter chains (the default chain included).
    pub(crate) fn add_to(&self, listeners: &mut [Listener]) {
        for listener in listeners {
            listener.access_log.clone_from(&self.listener);
            let chains = listener
                .filter_chains
                .iter_mut()
                .chain(listener.default_filter_chain.as_mut());
            for f in chains.flat_map(|c| c.filters.iter_mut()) {
                let Some(filter::ConfigType::TypedConfig(config)) = &mut f.config_type else {
                    continue;
                };
                if config.type_url == HttpConnectionManager::type_url() {
                    if let Ok(mut hcm) = HttpConnectionManager::decode(config.value.as_slice()) {
                        hcm.access_log.clone_from(&self.filters);
                        config.value = hcm.encode_to_vec();
                    }
                } else if config.type_url == TcpProxy::type_url()
                    && let Ok(mut tcp) = TcpProxy::decode(config.value.as_slice())
                {
                    tcp.access_log.clone_from(&self.filters);
                    config.value = tcp.encode_to_vec();
                }
            }
        }
    }
}

/// The keys of a JSON access log: the mesh config's JSON object (the parser has checked it is
/// one of strings), else Istio's default keys. Keys go in sorted, for identical bytes.
fn json_keys(format: &str) -> Struct {
    let given: Option<std::collections::BTreeMap<String, String>> = (!format.is_empty())
        .then(|| serde_json::from_str(format).ok())
        .flatten();
    let fields = match given {
        Some(keys) => map_of(keys.iter().map(|(k, v)| (k.clone(), string_value(v)))),
        None => map_of(
            DEFAULT_JSON_FORMAT
                .iter()
                .map(|(k, v)| ((*k).to_owned(), string_value(v))),
        ),
    };
    Struct { fields }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::listener::v3::FilterChain;
    use sextant_model::AccessLog as MeshAccessLog;

    fn mesh(file: &str, encoding: AccessLogEncoding, format: &str) -> MeshConfig {
        MeshConfig {
            access_log: MeshAccessLog {
                file: file.to_owned(),
                encoding,
                format: format.to_owned(),
                disable_listener_log: false,
            },
            ..MeshConfig::default()
        }
    }

    fn file_log(log: &AccessLog) -> FileAccessLog {
        let Some(
            envoy_types::pb::envoy::config::accesslog::v3::access_log::ConfigType::TypedConfig(
                config,
            ),
        ) = &log.config_type
        else {
            panic!("typed config");
        };
        FileAccessLog::decode(config.value.as_slice()).expect("a FileAccessLog")
    }

    fn format_of(log: &AccessLog) -> substitution_format_string::Format {
        match file_log(log).access_log_format {
            Some(file_access_log::AccessLogFormat::LogFormat(f)) => f.format.expect("a format"),
            other => panic!("log_format expected, got {other:?}"),
        }
    }

    #[test]
    fn no_access_log_file_means_no_access_log() {
        assert!(AccessLogs::of(&MeshConfig::default()).is_none());
    }

    #[test]
    fn text_is_istios_default_line_and_custom_formats_end_with_a_newline() {
        let logs =
            AccessLogs::of(&mesh("/dev/stdout", AccessLogEncoding::Text, "")).expect("access logs");
        assert_eq!(file_log(&logs.filters[0]).path, "/dev/stdout");
        let substitution_format_string::Format::TextFormatSource(source) =
            format_of(&logs.filters[0])
        else {
            panic!("text format");
        };
        assert_eq!(
            source.specifier,
            Some(data_source::Specifier::InlineString(
                DEFAULT_TEXT_FORMAT.to_owned()
            ))
        );
        let custom = AccessLogs::of(&mesh("/tmp/a.log", AccessLogEncoding::Text, "%PROTOCOL%"))
            .expect("access logs");
        let substitution_format_string::Format::TextFormatSource(source) =
            format_of(&custom.filters[0])
        else {
            panic!("text format");
        };
        assert_eq!(
            source.specifier,
            Some(data_source::Specifier::InlineString(
                "%PROTOCOL%\n".to_owned()
            ))
        );
    }

    #[test]
    fn json_takes_the_given_keys_or_istios() {
        let logs =
            AccessLogs::of(&mesh("/dev/stdout", AccessLogEncoding::Json, "")).expect("access logs");
        let substitution_format_string::Format::JsonFormat(keys) = format_of(&logs.filters[0])
        else {
            panic!("json format");
        };
        assert_eq!(keys.fields.len(), DEFAULT_JSON_FORMAT.len());
        assert_eq!(
            keys.fields["upstream_cluster"],
            string_value("%UPSTREAM_CLUSTER_RAW%")
        );
        let given = AccessLogs::of(&mesh(
            "/dev/stdout",
            AccessLogEncoding::Json,
            r#"{"code": "%RESPONSE_CODE%"}"#,
        ))
        .expect("access logs");
        let substitution_format_string::Format::JsonFormat(keys) = format_of(&given.filters[0])
        else {
            panic!("json format");
        };
        assert_eq!(keys.fields.keys().collect::<Vec<_>>(), ["code"]);
    }

    #[test]
    fn every_connection_manager_and_tcp_proxy_gets_the_log_and_listeners_log_nr() {
        let hcm = crate::hcm::outbound_hcm(9080);
        let tcp = crate::lds::tcp_proxy("x", vec![("x".to_owned(), 1)]);
        let mut listeners = vec![Listener {
            name: "l".to_owned(),
            filter_chains: vec![FilterChain {
                filters: vec![hcm],
                ..Default::default()
            }],
            default_filter_chain: Some(FilterChain {
                filters: vec![tcp],
                ..Default::default()
            }),
            ..Default::default()
        }];
        let logs =
            AccessLogs::of(&mesh("/dev/stdout", AccessLogEncoding::Text, "")).expect("access logs");
        logs.add_to(&mut listeners);
        let l = &listeners[0];
        let Some(filter::ConfigType::TypedConfig(config)) =
            &l.filter_chains[0].filters[0].config_type
        else {
            panic!("typed config");
        };
        let hcm = HttpConnectionManager::decode(config.value.as_slice()).expect("hcm");
        assert_eq!(hcm.access_log, logs.filters);
        assert_eq!(hcm.stat_prefix, "outbound_0.0.0.0_9080", "the rest is kept");
        let default = l.default_filter_chain.as_ref().expect("default chain");
        let Some(filter::ConfigType::TypedConfig(config)) = &default.filters[0].config_type else {
            panic!("typed config");
        };
        let tcp = TcpProxy::decode(config.value.as_slice()).expect("tcp proxy");
        assert_eq!(tcp.access_log, logs.filters);
        assert_eq!(l.access_log.len(), 1);
        assert!(matches!(
            l.access_log[0].filter.as_ref().and_then(|f| f.filter_specifier.as_ref()),
            Some(access_log_filter::FilterSpecifier::ResponseFlagFilter(f)) if f.flags == ["NR"]
        ));
    }

    #[test]
    fn disable_envoy_listener_log_keeps_listeners_quiet() {
        let mut config = mesh("/dev/stdout", AccessLogEncoding::Text, "");
        config.access_log.disable_listener_log = true;
        let logs = AccessLogs::of(&config).expect("access logs");
        assert!(logs.listener.is_empty());
        assert_eq!(logs.filters.len(), 1);
    }
}
