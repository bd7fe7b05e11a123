//! Invalid VirtualServices and DestinationRules drawn from Istio's validation rules
//! (`pkg/config/validation`): each is rejected, at the expected field, with a message that says
//! why.

use sextant_index::{check, manifest};
use sextant_model::Kind;

struct Case {
    name: &'static str,
    kind: Kind,
    spec: &'static str,
    path: &'static str,
    message: &'static str,
}

const fn vs(
    name: &'static str,
    spec: &'static str,
    path: &'static str,
    message: &'static str,
) -> Case {
    Case {
        name,
        kind: Kind::VirtualService,
        spec,
        path,
        message,
    }
}

const fn dr(
    name: &'static str,
    spec: &'static str,
    path: &'static str,
    message: &'static str,
) -> Case {
    Case {
        name,
        kind: Kind::DestinationRule,
        spec,
        path,
        message,
    }
}

const CASES: &[Case] = &[
    // --- VirtualService: hosts, gateways, rule presence
    vs(
        "no routes at all",
        "hosts: [reviews]",
        "spec",
        "http, tcp or tls must be provided",
    ),
    vs(
        "wildcard host on mesh",
        "hosts: ['*']\nhttp: [{route: [{destination: {host: a}}]}]",
        "spec.hosts[0]",
        "wildcard host * is not allowed",
    ),
    vs(
        "invalid host label",
        "hosts: [rev_iews]\nhttp: [{route: [{destination: {host: a}}]}]",
        "spec.hosts[0]",
        "invalid (label \"rev_iews\" invalid)",
    ),
    vs(
        "wildcard in the middle",
        "hosts: [foo.*.com]\nhttp: [{route: [{destination: {host: a}}]}]",
        "spec.hosts[0]",
        "invalid",
    ),
    vs(
        "all-numeric top level domain",
        "hosts: [foo.123]\nhttp: [{route: [{destination: {host: a}}]}]",
        "spec.hosts[0]",
        "cannot be all-numeric",
    ),
    vs(
        "duplicate hosts",
        "hosts: [a, a]\nhttp: [{route: [{destination: {host: a}}]}]",
        "spec.hosts[1]",
        "duplicate hosts in virtual service",
    ),
    vs(
        "bad gateway namespace",
        "hosts: [a]\ngateways: [Bad_NS/gw]\nhttp: [{route: [{destination: {host: a}}]}]",
        "spec.gateways[0]",
        "invalid value for namespace",
    ),
    vs(
        "empty gateway name",
        "hosts: [a]\ngateways: [ns/]\nhttp: [{route: [{destination: {host: a}}]}]",
        "spec.gateways[0]",
        "cannot be empty",
    ),
    vs(
        "delegate with gateways",
        "gateways: [gw]\nhttp: [{route: [{destination: {host: a}}]}]",
        "spec.gateways",
        "delegate virtual service must have no gateways",
    ),
    vs(
        "delegate with tcp",
        "tcp: [{route: [{destination: {host: a}}]}]",
        "spec.tcp",
        "delegate virtual service must have no tcp route",
    ),
    vs(
        "delegate containing delegate",
        "http: [{delegate: {name: b}}]",
        "spec.http[0].delegate",
        "delegate HTTP route cannot contain delegate",
    ),
    vs(
        "root delegate with route",
        "hosts: [a]\nhttp: [{name: r, delegate: {name: b}, route: [{destination: {host: a}}]}]",
        "spec.http[0]",
        "root HTTP route r must not specify redirect/route",
    ),
    // --- HTTP route conflicts
    vs(
        "route and redirect",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], redirect: {uri: /x}}]",
        "spec.http[0]",
        "cannot contain both route and redirect",
    ),
    vs(
        "fault and redirect",
        "hosts: [a]\nhttp: [{redirect: {uri: /x}, fault: {abort: {httpStatus: 500, percentage: {value: 1}}}}]",
        "spec.http[0]",
        "both fault and redirect",
    ),
    vs(
        "rewrite and redirect",
        "hosts: [a]\nhttp: [{redirect: {uri: /x}, rewrite: {uri: /y}}]",
        "spec.http[0]",
        "both rewrite and redirect",
    ),
    vs(
        "route and direct response",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], directResponse: {status: 200}}]",
        "spec.http[0]",
        "both route and direct_response",
    ),
    vs(
        "nothing to do",
        "hosts: [a]\nhttp: [{timeout: 1s}]",
        "spec.http[0]",
        "HTTP route, redirect or direct_response is required",
    ),
    vs(
        "mirror and mirrors",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], mirror: {host: b}, mirrors: [{destination: {host: c}}]}]",
        "spec.http[0]",
        "both mirror and mirrors",
    ),
    // --- destinations and weights
    vs(
        "negative weight",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}, weight: -1}, {destination: {host: b}, weight: 101}]}]",
        "spec.http[0].route[0].weight",
        "weight -1 < 0",
    ),
    vs(
        "total weight zero",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}, weight: 0}, {destination: {host: b}, weight: 0}]}]",
        "spec.http[0].route",
        "total destination weight = 0",
    ),
    vs(
        "wildcard destination",
        "hosts: [a]\nhttp: [{route: [{destination: {host: '*'}}]}]",
        "spec.http[0].route[0].destination.host",
        "invalid destination host *",
    ),
    vs(
        "invalid subset name",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a, subset: V_1}}]}]",
        "spec.http[0].route[0].destination.subset",
        "subset name is invalid",
    ),
    vs(
        "destination port out of range",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a, port: {number: 70000}}}]}]",
        "spec.http[0].route[0].destination.port.number",
        "must be in the range 1..65535",
    ),
    vs(
        "missing destination (schema)",
        "hosts: [a]\nhttp: [{route: [{weight: 1}]}]",
        "spec.http[0].route[0].destination",
        "Required value",
    ),
    // --- matches
    vs(
        "bad uri regex",
        "hosts: [a]\nhttp: [{match: [{uri: {regex: '(unclosed'}}], route: [{destination: {host: a}}]}]",
        "spec.http[0].match[0].uri.regex",
        "Istio uses RE2 style regex",
    ),
    vs(
        "empty header prefix",
        "hosts: [a]\nhttp: [{match: [{headers: {x-user: {prefix: ''}}}], route: [{destination: {host: a}}]}]",
        "spec.http[0].match[0].headers[x-user].prefix",
        "prefix string match should not be empty",
    ),
    vs(
        "bad header name",
        "hosts: [a]\nhttp: [{match: [{headers: {'bad header': {exact: v}}}], route: [{destination: {host: a}}]}]",
        "spec.http[0].match[0].headers[bad header]",
        "is not a valid header name",
    ),
    vs(
        "regex too large",
        "hosts: [a]\nhttp: [{match: [{uri: {regex: 'REGEX1025'}}], route: [{destination: {host: a}}]}]",
        "spec.http[0].match[0].uri.regex",
        "regex is too large",
    ),
    vs(
        "bad source namespace",
        "hosts: [a]\nhttp: [{match: [{sourceNamespace: Foo_Bar}], route: [{destination: {host: a}}]}]",
        "spec.http[0].match[0].sourceNamespace",
        "sourceNamespace match Foo_Bar is invalid",
    ),
    vs(
        "bad source label",
        "hosts: [a]\nhttp: [{match: [{sourceLabels: {'a b': x}}], route: [{destination: {host: a}}]}]",
        "spec.http[0].match[0].sourceLabels[a b]",
        "invalid label key",
    ),
    vs(
        "JWT claim routing on mesh",
        "hosts: [a]\nhttp: [{match: [{headers: {'@request.auth.claims.sub': {exact: x}}}], route: [{destination: {host: a}}]}]",
        "spec.http[0].match[0].headers[@request.auth.claims.sub]",
        "only supported for gateway",
    ),
    // --- redirect, direct response, rewrite
    vs(
        "redirect uri and prefix rewrite",
        "hosts: [a]\nhttp: [{redirect: {uri: /a, prefixRewrite: /b}}]",
        "spec.http[0].redirect",
        "only specify one of uri or prefix_rewrite",
    ),
    vs(
        "redirect code not 3xx",
        "hosts: [a]\nhttp: [{redirect: {uri: /a, redirectCode: 200}}]",
        "spec.http[0].redirect.redirectCode",
        "200 is not a valid redirect code",
    ),
    vs(
        "redirect bad scheme",
        "hosts: [a]\nhttp: [{redirect: {scheme: ftp}}]",
        "spec.http[0].redirect.scheme",
        "invalid redirect scheme",
    ),
    vs(
        "empty redirect",
        "hosts: [a]\nhttp: [{redirect: {}}]",
        "spec.http[0].redirect",
        "redirect must specify URI, authority, scheme, or port",
    ),
    vs(
        "direct response status",
        "hosts: [a]\nhttp: [{directResponse: {status: 100}}]",
        "spec.http[0].directResponse.status",
        "HTTP status 100 is not in range 200-599",
    ),
    vs(
        "rewrite uri and regex",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], rewrite: {uri: /x, uriRegexRewrite: {match: a, rewrite: b}}}]",
        "spec.http[0].rewrite",
        "only contain one of URI or UriRegexRewrite",
    ),
    vs(
        "regex rewrite without match",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], rewrite: {uriRegexRewrite: {rewrite: b}}}]",
        "spec.http[0].rewrite.uriRegexRewrite",
        "requires both Rewrite and Match",
    ),
    vs(
        "authority set twice",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], rewrite: {authority: x}, headers: {request: {set: {host: y}}}}]",
        "spec.http[0].headers.request",
        "authority header cannot be set multiple times",
    ),
    vs(
        "rewrite with a line break",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], rewrite: {uri: \"/a\\nb\"}}]",
        "spec.http[0].rewrite.uri",
        "holds a NUL, CR or LF",
    ),
    vs(
        "redirect with a line break",
        "hosts: [a]\nhttp: [{redirect: {authority: \"a\\r\\nb\"}}]",
        "spec.http[0].redirect.authority",
        "holds a NUL, CR or LF",
    ),
    // --- timeouts, retries, fault, mirror, cors, headers
    vs(
        "zero timeout (CEL)",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], timeout: 0s}]",
        "spec.http[0].timeout",
        "must be a valid duration greater than 1ms",
    ),
    vs(
        "sub-millisecond timeout",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], timeout: 1.0005s}]",
        "spec.http[0].timeout",
        "only durations to ms precision",
    ),
    vs(
        "negative retry attempts",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: -1}}]",
        "spec.http[0].retries.attempts",
        "attempts cannot be negative",
    ),
    vs(
        "retry policy with zero attempts",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: 0, retryOn: 5xx}}]",
        "spec.http[0].retries",
        "configured when attempts are set to 0",
    ),
    vs(
        "unknown retryOn",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], retries: {attempts: 2, retryOn: '5xx,sometimes'}}]",
        "spec.http[0].retries.retryOn",
        "\"sometimes\" is not a valid retryOn policy",
    ),
    vs(
        "empty fault",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {}}]",
        "spec.http[0].fault",
        "must have an abort and/or a delay",
    ),
    vs(
        "fault percentage over 100",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {httpStatus: 500, percentage: {value: 101}}}}]",
        "spec.http[0].fault.abort.percentage.value",
        "percentage 101 is neither 0.0, nor in range",
    ),
    vs(
        "unknown gRPC status",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {grpcStatus: NOPE}}}]",
        "spec.http[0].fault.abort.grpcStatus",
        "gRPC status \"NOPE\" is not supported",
    ),
    vs(
        "http2 abort",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {abort: {http2Error: x}}}]",
        "spec.http[0].fault.abort.http2Error",
        "HTTP/2 abort fault injection not supported yet",
    ),
    vs(
        "exponential delay",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], fault: {delay: {exponentialDelay: 1s}}}]",
        "spec.http[0].fault.delay.exponentialDelay",
        "exponentialDelay not supported yet",
    ),
    vs(
        "mirror percentage over 100",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], mirror: {host: b}, mirrorPercentage: {value: 120}}]",
        "spec.http[0].mirrorPercentage.value",
        "must have a max value of 100",
    ),
    vs(
        "cors bad method",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], corsPolicy: {allowMethods: [FETCH]}}]",
        "spec.http[0].corsPolicy.allowMethods[0]",
        "\"FETCH\" is not a supported HTTP method",
    ),
    vs(
        "cors max age precision",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], corsPolicy: {maxAge: 1500ms}}]",
        "spec.http[0].corsPolicy.maxAge",
        "accurate only to seconds precision",
    ),
    vs(
        "pseudo header set",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {response: {set: {':path': x}}}}]",
        "spec.http[0].headers.response.set[:path]",
        "header cannot have \":\" prefix",
    ),
    vs(
        "host header removed",
        "hosts: [a]\nhttp: [{route: [{destination: {host: a}}], headers: {request: {remove: [Host]}}}]",
        "spec.http[0].headers.request.remove[0]",
        "cannot remove Host header",
    ),
    vs(
        "oneof violated (schema)",
        "hosts: [a]\nhttp: [{match: [{uri: {exact: /a, prefix: /b}}], route: [{destination: {host: a}}]}]",
        "spec.http[0].match[0].uri",
        "only one of the fields",
    ),
    // --- TCP and TLS routes
    vs(
        "tcp route without destinations",
        "hosts: [a]\ntcp: [{match: [{port: 80}]}]",
        "spec.tcp[0].route",
        "TCP route is required",
    ),
    vs(
        "tcp bad subnet",
        "hosts: [a]\ntcp: [{match: [{destinationSubnets: [10.0.0.0/40]}], route: [{destination: {host: a}}]}]",
        "spec.tcp[0].match[0].destinationSubnets[0]",
        "not a valid IP address or CIDR",
    ),
    vs(
        "tls route without sni hosts",
        "hosts: [a.com]\ntls: [{match: [{sniHosts: []}], route: [{destination: {host: a}}]}]",
        "spec.tls[0].match[0].sniHosts",
        "at least one SNI host",
    ),
    vs(
        "tls sni not within hosts",
        "hosts: [a.com]\ntls: [{match: [{sniHosts: [b.com]}], route: [{destination: {host: a}}]}]",
        "spec.tls[0].match[0].sniHosts[0]",
        "not a compatible subset",
    ),
    // --- exportTo
    vs(
        "exportTo none",
        "hosts: [a]\nexportTo: ['~']\nhttp: [{route: [{destination: {host: a}}]}]",
        "spec.exportTo[0]",
        "exportTo ~ (none) is not allowed",
    ),
    vs(
        "exportTo public and private",
        "hosts: [a]\nexportTo: ['*', '.']\nhttp: [{route: [{destination: {host: a}}]}]",
        "spec.exportTo",
        "cannot have both public (*) and non-public",
    ),
    vs(
        "exportTo dot and own namespace",
        "hosts: [a]\nexportTo: ['.', 'default']\nhttp: [{route: [{destination: {host: a}}]}]",
        "spec.exportTo",
        "duplicate entries in exportTo: . and current namespace",
    ),
    // --- DestinationRule
    dr(
        "missing host (schema)",
        "subsets: [{name: v1}]",
        "spec.host",
        "Required value",
    ),
    dr("invalid host", "host: 'bad_host'", "spec.host", "invalid"),
    dr(
        "empty traffic policy",
        "host: a\ntrafficPolicy: {}",
        "spec.trafficPolicy",
        "traffic policy must have at least one field",
    ),
    dr(
        "duplicate subsets",
        "host: a\nsubsets: [{name: v1}, {name: v1}]",
        "spec.subsets[1].name",
        "duplicate subset names: v1",
    ),
    dr(
        "invalid subset name",
        "host: a\nsubsets: [{name: V1}]",
        "spec.subsets[0].name",
        "subset name is invalid",
    ),
    dr(
        "subset label value",
        "host: a\nsubsets: [{name: v1, labels: {version: 'v 1'}}]",
        "spec.subsets[0].labels[version]",
        "invalid label value",
    ),
    dr(
        "empty connection pool",
        "host: a\ntrafficPolicy: {connectionPool: {}}",
        "spec.trafficPolicy.connectionPool",
        "connection pool must have at least one field",
    ),
    dr(
        "negative max connections",
        "host: a\ntrafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}",
        "spec.trafficPolicy.connectionPool.tcp.maxConnections",
        "max connections must be non-negative",
    ),
    dr(
        "negative pending requests",
        "host: a\ntrafficPolicy: {connectionPool: {http: {http1MaxPendingRequests: -1}}}",
        "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests",
        "must be non-negative",
    ),
    dr(
        "upgrade with client protocol",
        "host: a\ntrafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}",
        "spec.trafficPolicy.connectionPool.http",
        "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
    ),
    dr(
        "keepalive without timeout",
        "host: a\ntrafficPolicy: {connectionPool: {http: {http2KeepAlive: {interval: 1s}}}}",
        "spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout",
        "http2 keepalive timeout is required",
    ),
    dr(
        "outlier ejection percent",
        "host: a\ntrafficPolicy: {outlierDetection: {maxEjectionPercent: 150}}",
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "percentage 150 is not in range 0..100",
    ),
    dr(
        "local origin without split",
        "host: a\ntrafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 3}}",
        "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
        "split external local origin errors is set to false",
    ),
    dr(
        "outlier interval zero (CEL)",
        "host: a\ntrafficPolicy: {outlierDetection: {interval: 0s}}",
        "spec.trafficPolicy.outlierDetection.interval",
        "greater than 1ms",
    ),
    dr(
        "maglev table not prime",
        "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
        "tableSize must be a prime number",
    ),
    dr(
        "ring size twice",
        "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 10, ringHash: {minimumRingSize: 20}}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "only one of MinimumRingSize or Maglev/Ringhash",
    ),
    dr(
        "cookie without name (schema)",
        "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {ttl: 1s}}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
        "Required value",
    ),
    dr(
        "simple and consistent hash (schema)",
        "host: a\ntrafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}",
        "spec.trafficPolicy.loadBalancer",
        "only one of the fields",
    ),
    dr(
        "distribute and failover",
        "host: a\ntrafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: r/z/*, to: {r/z/*: 100}}], failover: [{from: r1, to: r2}]}}}",
        "spec.trafficPolicy.loadBalancer.localityLbSetting",
        "can not simultaneously specify 'distribute' and 'failover'",
    ),
    dr(
        "locality weights not 100",
        "host: a\ntrafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: r/z/*, to: {r/z/*: 60, r2/z/*: 30}}]}}}",
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
        "total locality weight 90 != 100",
    ),
    dr(
        "failover same region",
        "host: a\ntrafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r1}]}}}",
        "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
        "must specify different regions",
    ),
    dr(
        "mutual without client cert",
        "host: a\ntrafficPolicy: {tls: {mode: MUTUAL, privateKey: /k}}",
        "spec.trafficPolicy.tls.clientCertificate",
        "client certificate required for mutual tls",
    ),
    dr(
        "credential name with files",
        "host: a\ntrafficPolicy: {tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca}}",
        "spec.trafficPolicy.tls",
        "If credentialName is set",
    ),
    dr(
        "insecure with SANs",
        "host: a\ntrafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [x]}}",
        "spec.trafficPolicy.tls",
        "when InsecureSkipVerify is set true",
    ),
    dr(
        "tunnel and proxy protocol",
        "host: a\ntrafficPolicy: {tunnel: {targetHost: h, targetPort: 80}, proxyProtocol: {version: V1}}",
        "spec.trafficPolicy",
        "tunnel and proxyProtocol must not be set together",
    ),
    dr(
        "tunnel protocol",
        "host: a\ntrafficPolicy: {tunnel: {protocol: GET, targetHost: h, targetPort: 80}}",
        "spec.trafficPolicy.tunnel.protocol",
        "tunnel protocol must be \"CONNECT\" or \"POST\"",
    ),
    dr(
        "port level without port",
        "host: a\ntrafficPolicy: {portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}",
        "spec.trafficPolicy.portLevelSettings[0]",
        "portTrafficPolicy must have valid port",
    ),
    dr(
        "port level without fields",
        "host: a\ntrafficPolicy: {portLevelSettings: [{port: {number: 80}}]}",
        "spec.trafficPolicy.portLevelSettings[0]",
        "port traffic policy must have at least one field",
    ),
    dr(
        "selector with wide exportTo",
        "host: a\nworkloadSelector: {matchLabels: {app: x}}\nexportTo: ['*']",
        "spec.exportTo",
        "cannot have exportTo beyond current namespace",
    ),
    dr(
        "selector wildcard label (CEL)",
        "host: a\nworkloadSelector: {matchLabels: {app: 'x*'}}",
        "spec.workloadSelector.matchLabels[app]",
        "wildcard not allowed in label value match",
    ),
    dr(
        "ring size over Envoy's limit",
        "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x, ringHash: {minimumRingSize: 9000000}}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "more than Envoy's limit of 8388608",
    ),
    dr(
        "cookie ttl beyond protobuf's Duration",
        "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: c, ttl: 315576000001s}}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.ttl",
        "at most 315576000000s",
    ),
    dr(
        "cookie attribute with a line break",
        "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: c, attributes: [{name: SameSite, value: \"Lax\\r\\nx: y\"}]}}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[0].value",
        "holds a NUL, CR or LF",
    ),
    dr(
        "warmup aggression (semantic)",
        "host: a\ntrafficPolicy: {loadBalancer: {warmup: {duration: 10s, aggression: 0}}}",
        "spec.trafficPolicy.loadBalancer.warmup.aggression",
        "aggression should be greater than 0",
    ),
];

fn object(case: &Case) -> serde_json::Value {
    let kind = case.kind.as_str();
    let spec = case.spec.replace("REGEX1025", &"a".repeat(1025));
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata:\n  name: case\n  namespace: default\nspec:\n{indented}"
    );
    let docs = manifest::parse_documents(&text).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    docs.into_iter().next().expect("one document").value
}

#[test]
fn invalid_configs_are_rejected_with_the_expected_field_path() {
    assert!(CASES.len() >= 40);
    let mut failures = Vec::new();
    for case in CASES {
        let checked = check::check_istio_object(case.kind, &object(case));
        let hit = checked
            .errors
            .iter()
            .any(|e| e.path == case.path && e.message.contains(case.message));
        if !hit || checked.config.is_some() {
            failures.push(format!(
                "{}: expected `{}: ...{}...`, got {:?}",
                case.name, case.path, case.message, checked.errors
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn all_errors_of_an_object_are_reported_together() {
    let case = vs(
        "many",
        "hosts: ['*']\nhttp: [{route: [{destination: {host: a}, weight: -1}, {destination: {host: b}, weight: 1}], retries: {attempts: -2}}]",
        "",
        "",
    );
    let checked = check::check_istio_object(case.kind, &object(&case));
    let paths: Vec<&str> = checked.errors.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"spec.hosts[0]"), "{paths:?}");
    assert!(paths.contains(&"spec.http[0].route[0].weight"), "{paths:?}");
    assert!(
        paths.contains(&"spec.http[0].retries.attempts"),
        "{paths:?}"
    );
}
