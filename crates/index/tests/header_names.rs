//! Header names in VirtualServices and DestinationRules, rule by rule as Istio 1.25+ validates
//! them (`pkg/config/validation/validation.go` and `virtualservice.go`):
//! - match names (`headers`, `withoutHeaders`): `ValidateHTTPHeaderNameOrJwtClaimRoute`, a JWT
//!   claim (gateways only), one of `:method :scheme :authority :path :status`, or an RFC 7230
//!   token;
//! - request `set`/`add`: `ValidateHTTPHeaderWithAuthorityOperationName`, no `:` prefix except
//!   `:authority` (and `host`), which become the host rewrite; no character check;
//! - request `remove` and every response operation: `ValidateHTTPHeaderOperationName`, neither
//!   `host` nor a `:` prefix; no character check;
//! - CORS header lists: `*` or a token (`ValidateCORSHTTPHeaderName`);
//! - query parameter names and `consistentHash.httpHeaderName`: not checked by Istio.
//!
//! Where Istio checks nothing, Sextant refuses only what Envoy would reject (an empty name, a
//! NUL, CR or LF), so that no such route configuration is NACKed.

use sextant_index::{check, manifest};
use sextant_model::Kind;

fn check(kind: Kind, spec: &str) -> check::Checked {
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: {}\nmetadata:\n  name: case\n  namespace: default\nspec:\n{indented}",
        kind.as_str()
    );
    let docs = manifest::parse_documents(&text).expect("YAML");
    let value = docs.into_iter().next().expect("a document").value;
    check::check_istio_object(kind, &value)
}

fn route_with(field: &str) -> String {
    format!("hosts: [a]\nhttp: [{{{field}, route: [{{destination: {{host: a}}}}]}}]")
}

#[test]
fn names_istio_accepts_are_accepted() {
    let cases = [
        // The pseudo-headers, in matches and in negative matches.
        "match: [{headers: {':method': {exact: POST}}}]",
        "match: [{headers: {':authority': {prefix: api.}, ':path': {prefix: /v1}, ':scheme': {exact: http}}}]",
        "match: [{withoutHeaders: {':method': {exact: GET}}}]",
        // Any token, upper case included (Envoy lower-cases match names).
        "match: [{headers: {X-User: {exact: jason}, 'x.y': {exact: a}, 'a!b': {exact: c}}}]",
        // `regex: \"*\"` means \"present\" in withoutHeaders.
        "match: [{withoutHeaders: {x-debug: {regex: '*'}}}]",
        // Query parameter names are not checked.
        "match: [{queryParams: {'a b': {exact: c}}}]",
        // Operations check no characters; `Host` in a request becomes the host rewrite.
        "headers: {request: {set: {'x y': v, Host: example.com}, remove: ['x z']}, response: {add: {'X-Z': w}}}",
        // Substitutions as Envoy reads them, and `%%` for a percent sign.
        "headers: {request: {set: {x-a: '%DOWNSTREAM_REMOTE_ADDRESS%', x-b: '%REQ(x-user)%-%START_TIME(%s)%', x-c: '100%%', x-d: '%UPSTREAM_METADATA([\"istio\", \"x\"])%'}}}",
        // CORS lists: `*` or tokens.
        "corsPolicy: {allowOrigins: [{exact: 'https://a'}], allowHeaders: ['*', X-Custom], exposeHeaders: [x.y]}",
    ];
    for case in cases {
        let checked = check(Kind::VirtualService, &route_with(case));
        assert!(
            checked.errors.is_empty() && checked.config.is_some(),
            "{case}: {:?}",
            checked.errors
        );
    }
    // JWT claims route on gateways, in both of Istio's forms and any case of the prefix.
    for claim in [
        "@request.auth.claims.sub",
        "@Request.Auth.Claims[groups][0]",
    ] {
        let spec = format!(
            "hosts: [a]\ngateways: [ingress]\nhttp: [{{match: [{{headers: {{'{claim}': {{exact: x}}}}}}], route: [{{destination: {{host: a}}}}]}}]"
        );
        let checked = check(Kind::VirtualService, &spec);
        assert!(checked.errors.is_empty(), "{claim}: {:?}", checked.errors);
    }
    // Hash keys are not checked by Istio either.
    let checked = check(
        Kind::DestinationRule,
        "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: 'X User'}}}",
    );
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);
}

#[test]
fn names_istio_or_envoy_refuse_are_refused_at_their_field() {
    let cases = [
        (
            "match: [{headers: {':protocol': {exact: h2}}}]",
            "spec.http[0].match[0].headers[:protocol]",
            "is not a valid header name",
        ),
        // The pseudo-header set is matched exactly, in lower case.
        (
            "match: [{headers: {':METHOD': {exact: GET}}}]",
            "spec.http[0].match[0].headers[:METHOD]",
            "is not a valid header name",
        ),
        (
            "match: [{headers: {'bad header': {exact: v}}}]",
            "spec.http[0].match[0].headers[bad header]",
            "is not a valid header name",
        ),
        // Not a claim in either form: an invalid name.
        (
            "match: [{headers: {'@request.auth.claimsX': {exact: v}}}]",
            "spec.http[0].match[0].headers[@request.auth.claimsX]",
            "is not a valid header name",
        ),
        // Claims need a gateway.
        (
            "match: [{headers: {'@request.auth.claims.sub': {exact: v}}}]",
            "spec.http[0].match[0].headers[@request.auth.claims.sub]",
            "only supported for gateway",
        ),
        // `*` is no regex where a value is matched.
        (
            "match: [{headers: {x-debug: {regex: '*'}}}]",
            "spec.http[0].match[0].headers[x-debug].regex",
            "Istio uses RE2 style regex-based match",
        ),
        (
            "headers: {request: {set: {':path': /x}}}",
            "spec.http[0].headers.request.set[:path]",
            "header cannot have \":\" prefix",
        ),
        (
            "headers: {response: {set: {HOST: x}}}",
            "spec.http[0].headers.response.set[HOST]",
            "cannot set Host header",
        ),
        (
            "headers: {request: {remove: [':authority']}}",
            "spec.http[0].headers.request.remove[0]",
            "header cannot have \":\" prefix",
        ),
        (
            "headers: {request: {add: {\"x\\ny\": v}}}",
            "spec.http[0].headers.request.add[x\ny]",
            "NUL, CR or LF",
        ),
        (
            "headers: {response: {set: {x-a: \"v\\r\\nx-b: w\"}}}",
            "spec.http[0].headers.response.set[x-a]",
            "control characters",
        ),
        (
            "headers: {request: {set: {x-share: '10% or 20%'}}}",
            "spec.http[0].headers.request.set[x-share]",
            "un-escaped % at position 2",
        ),
        (
            "corsPolicy: {allowOrigins: [{exact: 'https://a'}], allowHeaders: ['a b']}",
            "spec.http[0].corsPolicy.allowHeaders[0]",
            "is not a valid header name",
        ),
        (
            "match: [{queryParams: {'': {exact: c}}}]",
            "spec.http[0].match[0].queryParams[]",
            "query parameter name must be 1 to 1024 bytes",
        ),
    ];
    let mut failures = Vec::new();
    for (field, path, message) in cases {
        let checked = check(Kind::VirtualService, &route_with(field));
        let hit = checked
            .errors
            .iter()
            .any(|e| e.path == path && e.message.contains(message));
        if !hit || checked.config.is_some() {
            failures.push(format!(
                "{field}: expected `{path}: ...{message}...`, got {:?}",
                checked.errors
            ));
        }
    }
    let checked = check(
        Kind::DestinationRule,
        "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: ''}}}",
    );
    if !checked
        .errors
        .iter()
        .any(|e| e.path == "spec.trafficPolicy.loadBalancer.consistentHash.httpHeaderName")
    {
        failures.push(format!("empty hash header: {:?}", checked.errors));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
