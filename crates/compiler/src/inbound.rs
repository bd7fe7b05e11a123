//! Inbound filter chains by PeerAuthentication mode, as Istio builds them
//! (`filterchain_options.go`, `listener_inbound.go`): STRICT accepts only mutual TLS,
//! PERMISSIVE tells mutual TLS and plaintext apart on the same port (TLS inspector, chains by
//! transport protocol and ALPN), DISABLE accepts plaintext. Istio's `istio.metadata_exchange`
//! filter exists only in istio-proxy and is left out.

use envoy_types::pb::envoy::{
    config::{
        core::v3::TransportSocket,
        listener::v3::{
            Filter, FilterChain, FilterChainMatch, ListenerFilter,
            ListenerFilterChainMatchPredicate, listener_filter_chain_match_predicate,
        },
    },
    extensions::{
        filters::listener::tls_inspector::v3::TlsInspector,
        transport_sockets::tls::v3::{
            CertificateValidationContext, CommonTlsContext, DownstreamTlsContext,
            SubjectAltNameMatcher, TlsParameters, common_tls_context, subject_alt_name_matcher,
            tls_parameters,
        },
    },
    r#type::{
        matcher::v3::{StringMatcher, string_matcher},
        v3::Int32Range,
    },
};
use sextant_model::MtlsMode;
use sextant_resources::secret;

use crate::{
    policy::sds,
    proto::{boolv, transport_socket, u32v},
};

/// What one inbound port accepts, for this proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accept {
    /// Mutual TLS only.
    Strict,
    /// Mutual TLS and plaintext.
    Permissive,
    /// Plaintext only.
    Plaintext,
    /// Nothing: STRICT on a proxy that holds no certificate to terminate mutual TLS with.
    Nothing,
}

impl Accept {
    /// The resolved `mode` on a proxy that does or does not hold a workload certificate. A
    /// proxy without one serves PERMISSIVE as plaintext, and refuses every connection under
    /// STRICT rather than accept plaintext.
    pub(crate) fn new(mode: MtlsMode, holds_certificate: bool) -> Accept {
        match (mode, holds_certificate) {
            (MtlsMode::Strict, true) => Accept::Strict,
            (MtlsMode::Strict, false) => Accept::Nothing,
            (MtlsMode::Permissive | MtlsMode::Unset, true) => Accept::Permissive,
            _ => Accept::Plaintext,
        }
    }

    /// Whether a chain matches on `transport_protocol: tls` (the TLS inspector must run).
    pub(crate) fn inspects_tls(self) -> bool {
        matches!(self, Accept::Strict | Accept::Permissive)
    }
}

/// Istio's ALPNs of mutual TLS from a sidecar (`allIstioMtlsALPNs`).
const ISTIO_MTLS_ALPNS: [&str; 5] = [
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

/// Istio's mesh cipher suites (`SupportedCiphers`).
const CIPHER_SUITES: [&str; 6] = [
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
];

/// The filter chains of one inbound port (`port`: the destination port to match, `None` for
/// a listener of its own or the port-less passthrough chains), each ending in `filter`.
pub(crate) fn chains(
    name: &str,
    port: Option<u16>,
    http: bool,
    accept: Accept,
    filter: &Filter,
    refuse: impl FnOnce() -> Filter,
    trust_domain: &str,
) -> Vec<FilterChain> {
    let chain = |transport: &str, alpns: &[&str], tls: bool| FilterChain {
        name: name.to_owned(),
        filter_chain_match: Some(FilterChainMatch {
            destination_port: port.map(|p| u32v(u32::from(p))),
            transport_protocol: transport.to_owned(),
            application_protocols: alpns.iter().map(|a| (*a).to_owned()).collect(),
            ..Default::default()
        }),
        filters: vec![filter.clone()],
        transport_socket: tls.then(|| terminate(http, trust_domain)),
        ..Default::default()
    };
    match (accept, http) {
        (Accept::Strict, _) => vec![chain("tls", &[], true)],
        (Accept::Permissive, true) => vec![
            chain("tls", &ISTIO_MTLS_ALPNS, true),
            chain("raw_buffer", &[], false),
        ],
        // The application's own TLS (no Istio ALPN) passes through untouched.
        (Accept::Permissive, false) => vec![
            chain("tls", &ISTIO_MTLS_ALPNS, true),
            chain("tls", &[], false),
            chain("raw_buffer", &[], false),
        ],
        (Accept::Plaintext, _) => vec![chain("raw_buffer", &[], false)],
        (Accept::Nothing, _) => vec![FilterChain {
            filters: vec![refuse()],
            ..chain("raw_buffer", &[], false)
        }],
    }
}

/// The TLS inspector, run only where a chain matches on TLS: `tls_ports` need it,
/// `plain_ports` do not, and `elsewhere` says whether every other port (the port-less
/// chains) does. `None` when no chain matches on TLS.
pub(crate) fn tls_inspector(
    tls_ports: &[u16],
    plain_ports: &[u16],
    elsewhere: bool,
) -> Option<ListenerFilter> {
    if tls_ports.is_empty() && !elsewhere {
        return None;
    }
    let disabled = if elsewhere {
        any_port(plain_ports)
    } else {
        any_port(tls_ports).map(|p| ListenerFilterChainMatchPredicate {
            rule: Some(listener_filter_chain_match_predicate::Rule::NotMatch(
                Box::new(p),
            )),
        })
    };
    let mut filter = crate::lds::listener_filter(
        "envoy.filters.listener.tls_inspector",
        &TlsInspector {
            initial_read_buffer_size: Some(u32v(512)),
            ..Default::default()
        },
    );
    filter.filter_disabled = disabled;
    Some(filter)
}

/// A predicate matching connections to any of `ports` (`None` for no ports).
fn any_port(ports: &[u16]) -> Option<ListenerFilterChainMatchPredicate> {
    use listener_filter_chain_match_predicate::{MatchSet, Rule};
    let mut rules: Vec<ListenerFilterChainMatchPredicate> = ports
        .iter()
        .map(|p| ListenerFilterChainMatchPredicate {
            rule: Some(Rule::DestinationPortRange(Int32Range {
                start: i32::from(*p),
                end: i32::from(*p) + 1,
            })),
        })
        .collect();
    match rules.len() {
        0 => None,
        1 => rules.pop(),
        _ => Some(ListenerFilterChainMatchPredicate {
            rule: Some(Rule::OrMatch(MatchSet { rules })),
        }),
    }
}

/// Istio's inbound mutual TLS (`BuildInboundTLS`): the workload certificate and the mesh
/// root over SDS, a client certificate required, and the peer's URI SAN in the trust domain.
fn terminate(http: bool, trust_domain: &str) -> TransportSocket {
    let alpn: &[&str] = if http {
        &["h2", "http/1.1"]
    } else {
        &["istio-peer-exchange", "h2", "http/1.1"]
    };
    let context = DownstreamTlsContext {
        require_client_certificate: Some(boolv(true)),
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(TlsParameters {
                tls_minimum_protocol_version: tls_parameters::TlsProtocol::TlSv12 as i32,
                tls_maximum_protocol_version: tls_parameters::TlsProtocol::TlSv13 as i32,
                cipher_suites: CIPHER_SUITES.iter().map(|c| (*c).to_owned()).collect(),
                ..Default::default()
            }),
            alpn_protocols: alpn.iter().map(|a| (*a).to_owned()).collect(),
            tls_certificate_sds_secret_configs: vec![sds(secret::WORKLOAD)],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                                san_type: subject_alt_name_matcher::SanType::Uri as i32,
                                matcher: Some(StringMatcher {
                                    match_pattern: Some(string_matcher::MatchPattern::Prefix(
                                        format!("spiffe://{trust_domain}/"),
                                    )),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                        validation_context_sds_secret_config: Some(sds(secret::ROOT)),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    transport_socket("envoy.transport_sockets.tls", &context)
}
