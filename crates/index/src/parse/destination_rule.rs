//! DestinationRule: Istio's `ValidateDestinationRule` and the model it yields.

use std::collections::BTreeSet;

use sextant_api as api;
use sextant_model::{self as model, Kind};

use super::{
    Invalid, Parsed, Report,
    fields::{self, check_port, duration, non_negative_duration},
    object_ref,
};

mod load_balancer;

use load_balancer::load_balancer;

/// Validates a DestinationRule and builds its model.
pub fn destination_rule(
    obj: &api::DestinationRule,
) -> Result<Parsed<model::DestinationRule>, Invalid> {
    let id = object_ref(Kind::DestinationRule, &obj.metadata);
    let mut r = Report::default();
    super::check_metadata(&obj.metadata, &mut r);
    let spec = &obj.spec;
    if let Err(e) = fields::check_wildcard_domain(&spec.host) {
        r.error("spec.host", e);
    }
    let top_policy = spec
        .traffic_policy
        .as_ref()
        .map(|p| traffic_policy(p, "spec.trafficPolicy", &mut r));
    let mut names = BTreeSet::new();
    let mut subsets = Vec::new();
    for (i, s) in spec.subsets.iter().flatten().enumerate() {
        let at = format!("spec.subsets[{i}]");
        if !names.insert(s.name.as_str()) {
            r.error(
                format!("{at}.name"),
                format!("duplicate subset names: {}", s.name),
            );
        }
        if !fields::is_dns1123_label(&s.name) {
            r.error(
                format!("{at}.name"),
                format!("subset name is invalid: {}", s.name),
            );
        }
        let labels = s.labels.clone().unwrap_or_default();
        fields::check_labels(&labels, &format!("{at}.labels"), &mut r);
        subsets.push(model::Subset {
            name: s.name.clone(),
            labels,
            traffic_policy: s
                .traffic_policy
                .as_ref()
                .map(|p| traffic_policy(p, &format!("{at}.trafficPolicy"), &mut r)),
        });
    }
    let workload_selector = spec.workload_selector.as_ref().map(|ws| {
        let labels = ws.match_labels.clone().unwrap_or_default();
        fields::check_labels(&labels, "spec.workloadSelector.matchLabels", &mut r);
        labels
    });
    if workload_selector.is_some()
        && let Some(export) = &spec.export_to
    {
        if export.len() > 1 {
            r.error(
                "spec.exportTo",
                "destination rule with workload selector cannot have multiple entries in exportTo",
            );
        } else if export
            .first()
            .is_some_and(|e| e != "." && *e != id.namespace)
        {
            r.error(
                "spec.exportTo",
                "destination rule with workload selector cannot have exportTo beyond current namespace",
            );
        }
    }
    let export_to = fields::export_to(
        spec.export_to.as_deref(),
        &id.namespace,
        "spec.exportTo",
        &mut r,
    );
    let value = model::DestinationRule {
        id: id.clone(),
        creation_timestamp: super::creation_timestamp(&obj.metadata),
        host: spec.host.clone(),
        traffic_policy: top_policy,
        subsets,
        export_to,
        workload_selector,
    };
    r.finish(id, value)
}

fn traffic_policy(p: &api::TrafficPolicy, path: &str, r: &mut Report) -> model::TrafficPolicy {
    if p == &api::TrafficPolicy::default() {
        r.error(path, "traffic policy must have at least one field");
    }
    if p.tunnel.is_some() && p.proxy_protocol.is_some() {
        r.error(path, "tunnel and proxyProtocol must not be set together");
    }
    let mut out = components(
        p.load_balancer.as_ref(),
        p.connection_pool.as_ref(),
        p.outlier_detection.as_ref(),
        p.tls.as_ref(),
        path,
        r,
    );
    let mut ports = BTreeSet::new();
    for (i, pl) in p.port_level_settings.iter().flatten().enumerate() {
        let at = format!("{path}.portLevelSettings[{i}]");
        let Some(number) = pl.port.as_ref().and_then(api::PortSelector::port) else {
            r.error(&at, "portTrafficPolicy must have valid port");
            continue;
        };
        if pl.load_balancer.is_none()
            && pl.connection_pool.is_none()
            && pl.outlier_detection.is_none()
            && pl.tls.is_none()
        {
            r.error(&at, "port traffic policy must have at least one field");
        }
        let Some(port) = check_port(number, &format!("{at}.port.number"), r) else {
            continue;
        };
        if !ports.insert(port) {
            r.warn(
                &at,
                format!("duplicate port level settings for port {port}; the first one wins"),
            );
        }
        let policy = components(
            pl.load_balancer.as_ref(),
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
            pl.tls.as_ref(),
            &at,
            r,
        );
        out.port_level.push((port, policy));
    }
    if let Some(t) = &p.tunnel {
        let at = format!("{path}.tunnel");
        r.unsupported(&at, "trafficPolicy.tunnel");
        let protocol = t.protocol.clone().unwrap_or_else(|| "CONNECT".into());
        if protocol != "CONNECT" && protocol != "POST" {
            r.error(
                format!("{at}.protocol"),
                "tunnel protocol must be \"CONNECT\" or \"POST\"",
            );
        }
        if let Err(e) = fields::check_host_or_ip(&t.target_host) {
            r.error(format!("{at}.targetHost"), e);
        }
        if let Some(port) = check_port(t.target_port, &format!("{at}.targetPort"), r) {
            out.tunnel = Some(model::Tunnel {
                protocol,
                target_host: t.target_host.clone(),
                target_port: port,
            });
        }
    }
    if let Some(pp) = &p.proxy_protocol {
        out.proxy_protocol = match pp.version {
            Some(api::ProxyProtocolVersion::V2) => Some(2),
            _ => Some(1),
        };
    }
    if let Some(rb) = &p.retry_budget {
        if rb.budget_interval.is_some() {
            r.unsupported(
                format!("{path}.retryBudget.budgetInterval"),
                "retryBudget.budgetInterval",
            );
        }
        out.retry_budget = Some(model::RetryBudget {
            percent: rb.percent,
            min_retry_concurrency: rb.min_retry_concurrency,
        });
    }
    out
}

fn components(
    lb: Option<&api::LoadBalancerSettings>,
    cp: Option<&api::ConnectionPoolSettings>,
    od: Option<&api::OutlierDetection>,
    tls: Option<&api::ClientTlsSettings>,
    path: &str,
    r: &mut Report,
) -> model::TrafficPolicy {
    // Envoy never leaves priority 0 without outlier detection (Istio's
    // `validateLocalityLbSetting` warns the same).
    let failover = lb
        .and_then(|lb| lb.locality_lb_setting.as_ref())
        .is_some_and(|l| {
            l.failover.as_ref().is_some_and(|f| !f.is_empty())
                || l.failover_priority.as_ref().is_some_and(|f| !f.is_empty())
        });
    if failover && od.is_none() {
        r.warn(
            format!("{path}.loadBalancer.localityLbSetting"),
            "outlier detection policy must be provided for failover",
        );
    }
    model::TrafficPolicy {
        load_balancer: lb.map(|lb| load_balancer(lb, &format!("{path}.loadBalancer"), r)),
        connection_pool: cp.map(|cp| connection_pool(cp, &format!("{path}.connectionPool"), r)),
        outlier_detection: od
            .map(|od| outlier_detection(od, &format!("{path}.outlierDetection"), r)),
        tls: tls.map(|t| client_tls(t, &format!("{path}.tls"), r)),
        ..Default::default()
    }
}

fn non_negative(v: Option<i32>, path: &str, what: &str, r: &mut Report) -> Option<u32> {
    match v {
        Some(n) if n < 0 => {
            r.error(path, format!("{what} must be non-negative"));
            None
        }
        Some(n) => Some(n.unsigned_abs()),
        None => None,
    }
}

pub(super) fn connection_pool(
    cp: &api::ConnectionPoolSettings,
    path: &str,
    r: &mut Report,
) -> model::ConnectionPool {
    let mut out = model::ConnectionPool::default();
    if cp.http.is_none() && cp.tcp.is_none() {
        r.error(path, "connection pool must have at least one field");
    }
    if let Some(tcp) = &cp.tcp {
        let at = format!("{path}.tcp");
        out.max_connections = non_negative(
            tcp.max_connections,
            &format!("{at}.maxConnections"),
            "max connections",
            r,
        );
        out.connect_timeout = tcp
            .connect_timeout
            .as_ref()
            .and_then(|d| duration(d.as_str(), &format!("{at}.connectTimeout"), r));
        out.max_connection_duration = tcp
            .max_connection_duration
            .as_ref()
            .and_then(|d| duration(d.as_str(), &format!("{at}.maxConnectionDuration"), r));
        out.tcp_idle_timeout = tcp
            .idle_timeout
            .as_deref()
            .and_then(|d| non_negative_duration(d, &format!("{at}.idleTimeout"), r));
        out.tcp_keepalive = tcp.tcp_keepalive.as_ref().map(|k| {
            (
                k.probes,
                k.time
                    .as_ref()
                    .and_then(|d| duration(d.as_str(), &format!("{at}.tcpKeepalive.time"), r)),
                k.interval
                    .as_ref()
                    .and_then(|d| duration(d.as_str(), &format!("{at}.tcpKeepalive.interval"), r)),
            )
        });
    }
    if let Some(http) = &cp.http {
        let at = format!("{path}.http");
        out.http1_max_pending_requests = non_negative(
            http.http1_max_pending_requests,
            &format!("{at}.http1MaxPendingRequests"),
            "http1 max pending requests",
            r,
        );
        out.http2_max_requests = non_negative(
            http.http2_max_requests,
            &format!("{at}.http2MaxRequests"),
            "http2 max requests",
            r,
        );
        out.max_requests_per_connection = non_negative(
            http.max_requests_per_connection,
            &format!("{at}.maxRequestsPerConnection"),
            "max requests per connection",
            r,
        );
        out.max_retries = non_negative(
            http.max_retries,
            &format!("{at}.maxRetries"),
            "max retries",
            r,
        );
        out.max_concurrent_streams = non_negative(
            http.max_concurrent_streams,
            &format!("{at}.maxConcurrentStreams"),
            "max concurrent streams",
            r,
        );
        out.http_idle_timeout = http
            .idle_timeout
            .as_ref()
            .and_then(|d| duration(d.as_str(), &format!("{at}.idleTimeout"), r));
        out.use_client_protocol = http.use_client_protocol.unwrap_or(false);
        out.h2_upgrade = match http.h2_upgrade_policy {
            Some(api::H2UpgradePolicy::UPGRADE) => Some(true),
            Some(api::H2UpgradePolicy::DO_NOT_UPGRADE) => Some(false),
            _ => None,
        };
        if out.h2_upgrade == Some(true) && out.use_client_protocol {
            r.error(
                &at,
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
        if let Some(ka) = &http.http2_keep_alive {
            let kat = format!("{at}.http2KeepAlive");
            let interval = match &ka.interval {
                Some(d) => duration(d.as_str(), &format!("{kat}.interval"), r),
                None => {
                    r.error(
                        format!("{kat}.interval"),
                        "http2 keepalive interval is required",
                    );
                    None
                }
            };
            let timeout = match &ka.timeout {
                Some(d) => duration(d.as_str(), &format!("{kat}.timeout"), r),
                None => {
                    r.error(
                        format!("{kat}.timeout"),
                        "http2 keepalive timeout is required",
                    );
                    None
                }
            };
            out.http2_keepalive = interval.zip(timeout);
        }
    }
    out
}

fn outlier_detection(
    od: &api::OutlierDetection,
    path: &str,
    r: &mut Report,
) -> model::OutlierDetection {
    if od.consecutive_errors.is_some_and(|n| n != 0) {
        r.warn(
            format!("{path}.consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    let split = od.split_external_local_origin_errors.unwrap_or(false);
    if !split && od.consecutive_local_origin_failures.is_some_and(|n| n > 0) {
        r.error(
            format!("{path}.consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    let percent = |v: Option<i32>, field: &str, r: &mut Report| match v {
        Some(p) if !(0..=100).contains(&p) => {
            r.error(
                format!("{path}.{field}"),
                format!("percentage {p} is not in range 0..100"),
            );
            None
        }
        other => other.map(i32::unsigned_abs),
    };
    if od
        .outlier_detection_http_error_codes
        .as_ref()
        .is_some_and(|c| !c.is_empty())
    {
        r.unsupported(
            format!("{path}.outlierDetectionHttpErrorCodes"),
            "outlierDetection.outlierDetectionHttpErrorCodes",
        );
    }
    model::OutlierDetection {
        consecutive_5xx_errors: od.consecutive_5xx_errors,
        consecutive_gateway_errors: od.consecutive_gateway_errors,
        split_external_local_origin_errors: split,
        consecutive_local_origin_failures: od.consecutive_local_origin_failures,
        interval: od
            .interval
            .as_ref()
            .and_then(|d| duration(d.as_str(), &format!("{path}.interval"), r)),
        base_ejection_time: od
            .base_ejection_time
            .as_ref()
            .and_then(|d| duration(d.as_str(), &format!("{path}.baseEjectionTime"), r)),
        max_ejection_percent: percent(od.max_ejection_percent, "maxEjectionPercent", r),
        min_health_percent: percent(od.min_health_percent, "minHealthPercent", r),
        http_error_codes: od
            .outlier_detection_http_error_codes
            .clone()
            .unwrap_or_default(),
    }
}

fn client_tls(t: &api::ClientTlsSettings, path: &str, r: &mut Report) -> model::ClientTls {
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    let mode = match t.mode.unwrap_or(api::TlsMode::DISABLE) {
        api::TlsMode::DISABLE => model::TlsMode::Disable,
        api::TlsMode::SIMPLE => model::TlsMode::Simple,
        api::TlsMode::MUTUAL => model::TlsMode::Mutual,
        api::TlsMode::ISTIO_MUTUAL => model::TlsMode::IstioMutual,
    };
    let credential = nonempty(&t.credential_name);
    let client_cert = nonempty(&t.client_certificate);
    let key = nonempty(&t.private_key);
    let ca = nonempty(&t.ca_certificates);
    let crl = nonempty(&t.ca_crl);
    let sans = t.subject_alt_names.clone().unwrap_or_default();
    let insecure = t.insecure_skip_verify.unwrap_or(false);
    if mode == model::TlsMode::Mutual && credential.is_none() {
        if client_cert.is_none() {
            r.error(
                format!("{path}.clientCertificate"),
                "client certificate required for mutual tls",
            );
        }
        if key.is_none() {
            r.error(
                format!("{path}.privateKey"),
                "private key required for mutual tls",
            );
        }
    }
    if credential.is_some()
        && (client_cert.is_some() || key.is_some() || ca.is_some() || crl.is_some())
    {
        r.error(
            path,
            "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
        );
    }
    if insecure && (ca.is_some() || credential.is_some() || !sans.is_empty()) {
        r.error(
            path,
            "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true",
        );
    }
    if crl.is_some() {
        r.unsupported(format!("{path}.caCrl"), "tls.caCrl");
    }
    model::ClientTls {
        mode,
        client_certificate: client_cert,
        private_key: key,
        ca_certificates: ca,
        credential_name: credential,
        subject_alt_names: sans,
        sni: nonempty(&t.sni),
        insecure_skip_verify: insecure,
        ca_crl: crl,
    }
}
