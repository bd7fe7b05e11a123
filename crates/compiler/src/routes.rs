//! VirtualService HTTP rules to Envoy routes (Istio's `route.go`, `retry.go`).

use envoy_types::pb::envoy::{
    config::{
        core::v3::{
            DataSource, HeaderValue, HeaderValueOption, RuntimeFractionalPercent, data_source,
            header_value_option::HeaderAppendAction,
        },
        route::v3::{
            Decorator, DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction,
            RetryPolicy, Route, RouteAction, RouteMatch, WeightedCluster, header_matcher,
            query_parameter_matcher, redirect_action, retry_policy, route, route_action,
            route_match, weighted_cluster::ClusterWeight,
        },
    },
    extensions::{
        filters::{
            common::fault::v3::{FaultDelay, fault_delay},
            http::{
                cors::v3::CorsPolicy,
                fault::v3::{FaultAbort, HttpFault, fault_abort},
            },
        },
        retry::{
            host::previous_hosts::v3::PreviousHostsPredicate,
            priority::previous_priorities::v3::PreviousPrioritiesConfig,
        },
    },
    r#type::{
        matcher::v3::{RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher},
        v3::{FractionalPercent, fractional_percent::DenominatorType},
    },
};
use envoy_types::pb::google::protobuf::{Any, Value as ProtoValue, value::Kind as ProtoKind};
use sextant_model::{
    self as model, AbortError, HashKey, HeaderMatch, HttpAction, HttpMatch, HttpRoute, Percentage,
    RedirectPort, StringMatch, VirtualService,
};
use sextant_resources::wire;

use crate::{
    context::{Context, outbound_cluster},
    policy,
    proto::{any, boolv, duration, map, metadata, seconds, string_value, u32v},
};

/// Istio's default `retry_on` when a VirtualService sets no retries.
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// Routes of a VirtualService for one listener port, in order, stopping after a catch-all.
pub fn virtual_service_routes(ctx: &Context<'_>, vs: &VirtualService, port: u16) -> Vec<Route> {
    let mut out = Vec::new();
    for (rule, http) in vs.http.iter().enumerate() {
        if http.matches.is_empty() {
            if let Some(r) = translate(ctx, vs, http, (rule, None), port) {
                out.push(r);
            }
            return out;
        }
        for (i, m) in http.matches.iter().enumerate() {
            if !applies(ctx, m, port) {
                continue;
            }
            if let Some(r) = translate(ctx, vs, http, (rule, Some((i, m))), port) {
                out.push(r);
            }
            if is_catch_all(m) {
                return out;
            }
        }
    }
    out
}

/// Whether a match's generation-time conditions hold for this proxy and port.
fn applies(ctx: &Context<'_>, m: &HttpMatch, port: u16) -> bool {
    ctx.source_matches(
        m.port,
        &m.source_labels,
        m.source_namespace.as_ref(),
        &m.gateways,
        port,
    )
}

fn is_catch_all(m: &HttpMatch) -> bool {
    let uri_all = match &m.uri {
        None => true,
        Some(StringMatch::Prefix(p)) => p == "/" || p.is_empty(),
        Some(StringMatch::Regex(r)) => r == "*" || r == ".*",
        Some(StringMatch::Exact(_)) => false,
    };
    uri_all
        && m.headers.is_empty()
        && m.without_headers.is_empty()
        && m.query_params.is_empty()
        && m.method.is_none()
        && m.scheme.is_none()
        && m.authority.is_none()
}

/// Encoded [`default_route`], assembled from bytes shared by every service unless the
/// destination needs a hash policy.
pub fn default_route_bytes(ctx: &Context<'_>, host: &str, port: u16, out: &mut Vec<u8>) {
    use prost::Message;
    static SHARED: std::sync::LazyLock<(Vec<u8>, Vec<u8>)> = std::sync::LazyLock::new(|| {
        let mut head = Vec::new();
        wire::message_field(&mut head, 1, &prefix_match("/"));
        let action = RouteAction {
            timeout: Some(seconds(0)),
            retry_policy: Some(default_retry_policy(false)),
            ..Default::default()
        };
        (head, action.encode_to_vec())
    });
    if hash_policy(ctx, host, "", Some(port)).is_some() {
        default_route(ctx, host, port).encode_raw(out);
        return;
    }
    let (head, action_tail) = &*SHARED;
    let cluster = outbound_cluster(port, "", host);
    out.extend_from_slice(head);
    // action (2): RouteAction { cluster (1), shared tail }
    let cluster_field = 1 + varint_len(cluster.len()) + cluster.len();
    prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint((cluster_field + action_tail.len()) as u64, out);
    wire::string_field(out, 1, &cluster);
    out.extend_from_slice(action_tail);
    // decorator (5): Decorator { operation (1) }
    let operation = format!("{host}:{port}/*");
    prost::encoding::encode_key(5, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(
        (1 + varint_len(operation.len()) + operation.len()) as u64,
        out,
    );
    wire::string_field(out, 1, &operation);
    wire::string_field(out, 14, "default");
}

fn varint_len(n: usize) -> usize {
    prost::encoding::encoded_len_varint(n as u64)
}

/// The route of a service with no VirtualService.
pub fn default_route(ctx: &Context<'_>, host: &str, port: u16) -> Route {
    let cluster = outbound_cluster(port, "", host);
    Route {
        name: "default".to_owned(),
        r#match: Some(prefix_match("/")),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster)),
            timeout: Some(seconds(0)),
            retry_policy: Some(default_retry_policy(false)),
            hash_policy: hash_policy(ctx, host, "", Some(port)).into_iter().collect(),
            ..Default::default()
        })),
        decorator: Some(Decorator {
            operation: format!("{host}:{port}/*"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn prefix_match(p: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.to_owned())),
        ..Default::default()
    }
}

fn string_matcher(m: &StringMatch) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(match m {
            StringMatch::Exact(s) => string_matcher::MatchPattern::Exact(s.clone()),
            StringMatch::Prefix(s) => string_matcher::MatchPattern::Prefix(s.clone()),
            StringMatch::Regex(s) => string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                regex: s.clone(),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

fn header_matcher(name: &str, m: &HeaderMatch, invert: bool) -> HeaderMatcher {
    let specifier = match m {
        HeaderMatch::Present => header_matcher::HeaderMatchSpecifier::PresentMatch(true),
        HeaderMatch::Value(v) => {
            header_matcher::HeaderMatchSpecifier::StringMatch(string_matcher(v))
        }
    };
    HeaderMatcher {
        name: name.to_owned(),
        invert_match: invert,
        treat_missing_header_as_empty: invert && matches!(m, HeaderMatch::Value(_)),
        header_match_specifier: Some(specifier),
        ..Default::default()
    }
}

fn route_match(m: Option<&HttpMatch>) -> RouteMatch {
    let Some(m) = m else {
        return prefix_match("/");
    };
    let path = match &m.uri {
        None => route_match::PathSpecifier::Prefix("/".to_owned()),
        Some(StringMatch::Exact(p)) => route_match::PathSpecifier::Path(p.clone()),
        Some(StringMatch::Prefix(p)) => route_match::PathSpecifier::Prefix(p.clone()),
        Some(StringMatch::Regex(r)) => route_match::PathSpecifier::SafeRegex(RegexMatcher {
            regex: r.clone(),
            ..Default::default()
        }),
    };
    let mut headers = Vec::new();
    for (name, v) in [
        (":scheme", &m.scheme),
        (":method", &m.method),
        (":authority", &m.authority),
    ] {
        if let Some(v) = v {
            headers.push(header_matcher(name, &HeaderMatch::Value(v.clone()), false));
        }
    }
    headers.extend(m.headers.iter().map(|(k, v)| header_matcher(k, v, false)));
    headers.extend(
        m.without_headers
            .iter()
            .map(|(k, v)| header_matcher(k, v, true)),
    );
    RouteMatch {
        path_specifier: Some(path),
        case_sensitive: Some(boolv(!m.ignore_uri_case)),
        headers,
        query_parameters: m
            .query_params
            .iter()
            .map(|(k, v)| QueryParameterMatcher {
                name: k.clone(),
                query_parameter_match_specifier: Some(match v {
                    HeaderMatch::Present => {
                        query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true)
                    }
                    HeaderMatch::Value(s) => {
                        query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                            string_matcher(s),
                        )
                    }
                }),
            })
            .collect(),
        ..Default::default()
    }
}

/// The cluster a destination resolves to from a listener port (Istio's
/// `GetDestinationCluster`: the given port, else the service's only port, else the listener's).
pub(crate) fn destination_cluster(
    ctx: &Context<'_>,
    vs: &VirtualService,
    d: &model::Destination,
    port: u16,
) -> (String, String, u16) {
    let host = ctx.resolve(&d.host, &vs.id.namespace);
    let p = d.port.unwrap_or_else(|| match ctx.service(&host) {
        Some(svc) if svc.ports.len() == 1 => svc.ports[0].port,
        _ => port,
    });
    let host = ctx.destination_host(host, p);
    let subset = d.subset.clone().unwrap_or_default();
    (outbound_cluster(p, &subset, &host), host, p)
}

fn header_options(ops: &model::HeaderOperations) -> (Vec<HeaderValueOption>, Vec<String>) {
    let mut add = Vec::new();
    for (map, action) in [
        (&ops.set, HeaderAppendAction::OverwriteIfExistsOrAdd),
        (&ops.add, HeaderAppendAction::AppendIfExistsOrAdd),
    ] {
        for (k, v) in map {
            let lower = k.to_ascii_lowercase();
            if lower == ":authority" || lower == "host" {
                continue;
            }
            add.push(HeaderValueOption {
                header: Some(HeaderValue {
                    key: k.clone(),
                    value: v.clone(),
                    ..Default::default()
                }),
                append_action: action as i32,
                ..Default::default()
            });
        }
    }
    (add, ops.remove.clone())
}

fn fractional(p: Percentage) -> FractionalPercent {
    match p {
        Percentage::Hundred(n) => FractionalPercent {
            numerator: n,
            denominator: DenominatorType::Hundred as i32,
        },
        Percentage::Million(n) => FractionalPercent {
            numerator: n,
            denominator: DenominatorType::Million as i32,
        },
    }
}

fn default_retry_policy(consistent_hash: bool) -> RetryPolicy {
    RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.to_owned(),
        num_retries: Some(u32v(2)),
        retry_host_predicate: if consistent_hash {
            Vec::new()
        } else {
            vec![previous_hosts()]
        },
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    }
}

fn previous_hosts() -> retry_policy::RetryHostPredicate {
    retry_policy::RetryHostPredicate {
        name: "envoy.retry_host_predicates.previous_hosts".to_owned(),
        config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
            any(&PreviousHostsPredicate {}),
        )),
    }
}

fn retry_policy(r: Option<&model::RetryPolicy>, consistent_hash: bool) -> Option<RetryPolicy> {
    let Some(r) = r else {
        return Some(default_retry_policy(consistent_hash));
    };
    if r.attempts == 0 {
        return None;
    }
    let mut policy = default_retry_policy(consistent_hash);
    policy.num_retries = Some(u32v(r.attempts));
    if !r.retry_on.is_empty() {
        policy.retry_on = r.retry_on.join(",");
    }
    policy.retriable_status_codes = r.retriable_status_codes.clone();
    policy.per_try_timeout = r.per_try_timeout.map(duration);
    if r.retry_ignore_previous_hosts == Some(false) {
        policy.retry_host_predicate.clear();
    }
    if r.retry_remote_localities == Some(true) {
        policy.retry_priority = Some(retry_policy::RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".to_owned(),
            config_type: Some(retry_policy::retry_priority::ConfigType::TypedConfig(any(
                &PreviousPrioritiesConfig {
                    update_frequency: 2,
                },
            ))),
        });
    }
    if let Some(b) = r.backoff {
        policy.retry_back_off = Some(retry_policy::RetryBackOff {
            base_interval: Some(duration(b)),
            ..Default::default()
        });
    }
    Some(policy)
}

/// The route hash policy of a destination whose DestinationRule asks for consistent hashing
/// (see `policy::http_hash` for which settings count).
fn hash_policy(
    ctx: &Context<'_>,
    host: &str,
    subset: &str,
    port: Option<u16>,
) -> Option<route_action::HashPolicy> {
    let ch = policy::http_hash(ctx.rule(host), (!subset.is_empty()).then_some(subset), port)?;
    use route_action::hash_policy::{self as hp, PolicySpecifier};
    let specifier = match &ch.key {
        HashKey::Header(name) => PolicySpecifier::Header(hp::Header {
            header_name: name.clone(),
            ..Default::default()
        }),
        HashKey::Cookie {
            name,
            path,
            ttl,
            attributes,
        } => PolicySpecifier::Cookie(hp::Cookie {
            name: name.clone(),
            path: path.clone().unwrap_or_default(),
            ttl: ttl.map(duration),
            attributes: attributes
                .iter()
                .map(|(name, value)| hp::CookieAttribute {
                    name: name.clone(),
                    value: value.clone().unwrap_or_default(),
                })
                .collect(),
        }),
        HashKey::SourceIp => {
            PolicySpecifier::ConnectionProperties(hp::ConnectionProperties { source_ip: true })
        }
        HashKey::QueryParameter(name) => {
            PolicySpecifier::QueryParameter(hp::QueryParameter { name: name.clone() })
        }
        HashKey::None => return None,
    };
    Some(route_action::HashPolicy {
        policy_specifier: Some(specifier),
        ..Default::default()
    })
}

fn translate(
    ctx: &Context<'_>,
    vs: &VirtualService,
    http: &HttpRoute,
    (rule, matched): (usize, Option<(usize, &HttpMatch)>),
    port: u16,
) -> Option<Route> {
    let m = matched.map(|(_, m)| m);
    let name = match (&http.name, m.and_then(|m| m.name.as_ref())) {
        (Some(r), Some(mn)) => format!("{r}.{mn}"),
        (Some(r), None) => r.clone(),
        (None, Some(mn)) => mn.clone(),
        (None, None) => String::new(),
    };
    let (mut request_add, mut request_remove) = header_options(&http.headers.request);
    let (mut response_add, mut response_remove) = header_options(&http.headers.response);
    let mut typed_per_filter_config = map::<String, Any>();
    let mut operation = String::new();
    let action = match &http.action {
        HttpAction::Route(dests) => {
            let mut action = RouteAction::default();
            let mut consistent_hash = false;
            if let [single] = dests.as_slice() {
                let (cluster, host, p) = destination_cluster(ctx, vs, &single.destination, port);
                operation = format!("{host}:{p}/*");
                let subset = single.destination.subset.as_deref().unwrap_or_default();
                if let Some(h) = hash_policy(ctx, &host, subset, single.destination.port) {
                    consistent_hash = true;
                    action.hash_policy.push(h);
                }
                action.cluster_specifier = Some(route_action::ClusterSpecifier::Cluster(cluster));
                let (a, r) = header_options(&single.headers.request);
                request_add.extend(a);
                request_remove.extend(r);
                let (a, r) = header_options(&single.headers.response);
                response_add.extend(a);
                response_remove.extend(r);
                if let Some(authority) = authority(&single.headers) {
                    action.host_rewrite_specifier = Some(
                        route_action::HostRewriteSpecifier::HostRewriteLiteral(authority),
                    );
                }
            } else {
                operation = format!("{}:{port}/*", vs.id.name);
                let clusters = dests
                    .iter()
                    .filter(|d| d.weight > 0)
                    .map(|d| {
                        let (cluster, host, _) = destination_cluster(ctx, vs, &d.destination, port);
                        // Istio lists every destination's hash policy, in route order.
                        let subset = d.destination.subset.as_deref().unwrap_or_default();
                        action.hash_policy.extend(hash_policy(ctx, &host, subset, d.destination.port));
                        let (req_add, req_remove) = header_options(&d.headers.request);
                        let (resp_add, resp_remove) = header_options(&d.headers.response);
                        ClusterWeight {
                            name: cluster,
                            weight: Some(u32v(d.weight)),
                            request_headers_to_add: req_add,
                            request_headers_to_remove: req_remove,
                            response_headers_to_add: resp_add,
                            response_headers_to_remove: resp_remove,
                            host_rewrite_specifier: authority(&d.headers)
                                .map(envoy_types::pb::envoy::config::route::v3::weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral),
                            ..Default::default()
                        }
                    })
                    .collect();
                action.cluster_specifier = Some(route_action::ClusterSpecifier::WeightedClusters(
                    WeightedCluster {
                        clusters,
                        ..Default::default()
                    },
                ));
            }
            action.timeout = Some(http.timeout.map(duration).unwrap_or_else(|| seconds(0)));
            action.retry_policy = retry_policy(http.retries.as_ref(), consistent_hash);
            if let Some(rw) = &http.rewrite {
                if let Some((pattern, substitution)) = &rw.uri_regex {
                    action.regex_rewrite = Some(RegexMatchAndSubstitute {
                        pattern: Some(RegexMatcher {
                            regex: pattern.clone(),
                            ..Default::default()
                        }),
                        substitution: substitution.clone(),
                    });
                } else if let Some(uri) = &rw.uri {
                    action.prefix_rewrite = uri.clone();
                }
                if let Some(a) = &rw.authority {
                    action.host_rewrite_specifier = Some(
                        route_action::HostRewriteSpecifier::HostRewriteLiteral(a.clone()),
                    );
                }
            }
            if let Some(a) = authority(&http.headers) {
                action.host_rewrite_specifier =
                    Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(a));
            }
            action.request_mirror_policies = http
                .mirrors
                .iter()
                .map(|mirror| {
                    let (cluster, _, _) = destination_cluster(ctx, vs, &mirror.destination, port);
                    route_action::RequestMirrorPolicy {
                        cluster,
                        runtime_fraction: Some(RuntimeFractionalPercent {
                            default_value: Some(fractional(mirror.percentage)),
                            runtime_key: String::new(),
                        }),
                        trace_sampled: Some(boolv(false)),
                        ..Default::default()
                    }
                })
                .collect();
            route::Action::Route(action)
        }
        HttpAction::Redirect(r) => route::Action::Redirect(redirect(r, port)),
        HttpAction::DirectResponse(d) => route::Action::DirectResponse(DirectResponseAction {
            status: u32::from(d.status),
            body: d.body.as_ref().map(|b| DataSource {
                specifier: Some(match b {
                    model::Body::String(s) => data_source::Specifier::InlineString(s.clone()),
                    model::Body::Bytes(b) => data_source::Specifier::InlineBytes(b.clone()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        HttpAction::Delegate { .. } => return None,
    };
    if let Some(fault) = &http.fault {
        typed_per_filter_config.insert(
            "envoy.filters.http.fault".to_owned(),
            any(&fault_config(fault)),
        );
    }
    if let Some(cors) = &http.cors {
        typed_per_filter_config.insert(
            "envoy.filters.http.cors".to_owned(),
            any(&cors_policy(cors)),
        );
    }
    Some(Route {
        name,
        r#match: Some(route_match(m)),
        action: Some(action),
        // `sextant`: which http rule and match produced the route (`sextant explain`).
        metadata: Some(metadata(vec![
            (
                "istio",
                vec![(
                    "config",
                    string_value(&format!(
                        "/apis/networking.istio.io/v1/namespaces/{}/virtual-service/{}",
                        vs.id.namespace, vs.id.name
                    )),
                )],
            ),
            ("sextant", origin(rule, matched.map(|(i, _)| i))),
        ])),
        decorator: (!operation.is_empty()).then(|| Decorator {
            operation,
            ..Default::default()
        }),
        typed_per_filter_config,
        request_headers_to_add: request_add,
        request_headers_to_remove: request_remove,
        response_headers_to_add: response_add,
        response_headers_to_remove: response_remove,
        stat_prefix: m.and_then(|m| m.stat_prefix.clone()).unwrap_or_default(),
        ..Default::default()
    })
}

/// A route's `sextant` metadata: the index of its http rule and of the match in that rule.
fn origin(rule: usize, matched: Option<usize>) -> Vec<(&'static str, ProtoValue)> {
    let number = |n: usize| ProtoValue {
        kind: Some(ProtoKind::NumberValue(n as f64)),
    };
    let mut fields = vec![("http_rule", number(rule))];
    fields.extend(matched.map(|i| ("match", number(i))));
    fields
}

/// `:authority` or `host` set through request headers becomes a host rewrite.
fn authority(h: &model::Headers) -> Option<String> {
    h.request
        .set
        .iter()
        .chain(&h.request.add)
        .find(|(k, _)| k.eq_ignore_ascii_case(":authority") || k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone())
}

fn redirect(r: &model::Redirect, listener_port: u16) -> RedirectAction {
    use redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier};
    let code = match r.code {
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => RedirectResponseCode::MovedPermanently,
    };
    let port = match r.port {
        Some(RedirectPort::Port(p)) => u32::from(p),
        Some(RedirectPort::FromRequest) => {
            let default = matches!(
                (r.scheme.as_deref(), listener_port),
                (Some("http") | None, 80) | (Some("https"), 443)
            );
            if default { 0 } else { u32::from(listener_port) }
        }
        Some(RedirectPort::FromProtocolDefault) | None => 0,
    };
    RedirectAction {
        host_redirect: r.authority.clone().unwrap_or_default(),
        port_redirect: port,
        response_code: code as i32,
        scheme_rewrite_specifier: r.scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
        path_rewrite_specifier: match (&r.uri, &r.prefix_rewrite) {
            (Some(uri), _) => Some(PathRewriteSpecifier::PathRedirect(uri.clone())),
            (None, Some(prefix)) => Some(PathRewriteSpecifier::PrefixRewrite(prefix.clone())),
            (None, None) => None,
        },
        ..Default::default()
    }
}

fn fault_config(f: &model::Fault) -> HttpFault {
    HttpFault {
        delay: f.delay.as_ref().map(|d| FaultDelay {
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(duration(
                d.fixed_delay,
            ))),
            percentage: Some(fractional(d.percentage)),
            ..Default::default()
        }),
        abort: f.abort.as_ref().map(|a| FaultAbort {
            error_type: Some(match a.error {
                AbortError::Http(s) => fault_abort::ErrorType::HttpStatus(u32::from(s)),
                AbortError::Grpc(c) => fault_abort::ErrorType::GrpcStatus(c),
            }),
            percentage: Some(fractional(a.percentage)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn cors_policy(c: &model::CorsPolicy) -> CorsPolicy {
    CorsPolicy {
        allow_origin_string_match: c.allow_origins.iter().map(string_matcher).collect(),
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(boolv),
        filter_enabled: Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: 100,
                denominator: DenominatorType::Hundred as i32,
            }),
            runtime_key: String::new(),
        }),
        forward_not_matching_preflights: Some(boolv(c.forward_not_matching_preflights)),
        ..Default::default()
    }
}
