//! The validating admission webhook (HTTPS on `--webhook-port`, 15017): VirtualServices and
//! DestinationRules are judged by the same checks as every other path (`index::check`: the CRD
//! schema, then Istio's rules), and a denial lists every error with its field path. `/inject`
//! answers Pod creations with the sidecar (`crate::inject`). The Lease holder keeps the
//! `caBundle` of both webhook configurations current (`sextant_kube::leader::ca_bundle`).
//!
//! Anyone who can reach the port can send a review, so everything one costs is bounded
//! (`Budget`): the time its head and body take to arrive and its answer to be read
//! (`serve`), its size and the bytes all reviews hold at once (`body`), and the time and
//! concurrency of answering it, on blocking threads.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};
use sextant_index::{
    check::{self, ObjectKind},
    manifest::{Bound, Exceeded, Limits, check_value},
};
use tokio::sync::Semaphore;

use crate::{
    inject::{InjectConfig, Injector},
    metrics::Metrics,
};

mod args;
mod body;
mod serve;

pub use args::WebhookArgs;
pub use serve::{Deadlines, serve};

/// Default largest AdmissionReview accepted (`--webhook-max-bytes`).
pub const DEFAULT_MAX_BYTES: usize = 3 << 20;
/// Default time one review may take to answer (`--webhook-timeout-ms`).
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
/// Default reviews answered at once (`--webhook-concurrency`).
pub const DEFAULT_CONCURRENCY: usize = 2;
/// Default time a request's head may take to arrive (`--webhook-header-timeout-ms`).
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 5_000;
/// Default time a body may take beyond its size at the slowest pace
/// (`--webhook-body-grace-ms`).
pub const DEFAULT_BODY_GRACE_MS: u64 = 5_000;
/// Default slowest pace of a body (`--webhook-min-body-bytes-per-second`): the API server
/// sends a review at once; 3 MiB at this pace takes 6 s, within its 10 s call timeout.
pub const DEFAULT_MIN_BODY_BYTES_PER_SECOND: u64 = 512 << 10;

/// What one review may cost: the time to arrive, its size, the bytes all reviews hold at
/// once, its answering time, and how many are answered at once (on blocking threads, never
/// on the runtime's workers).
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Largest body, in bytes.
    pub max_bytes: usize,
    /// Answering time, from when the body has arrived (the wait for a turn included); past it
    /// the review is denied, naming the budget.
    pub time: Duration,
    /// Reviews answered at once; more wait up to `time` for a turn, then are refused.
    pub concurrency: usize,
    /// Bytes of reviews held at once, arriving or waiting for their answer.
    pub max_bytes_in_flight: usize,
    /// Time a request's head may take to arrive, a connection may sit idle, and an answer
    /// may wait for the peer to read it.
    pub header_timeout: Duration,
    /// Time a body may take to arrive beyond its size at `min_body_bytes_per_second`.
    pub body_grace: Duration,
    /// Slowest pace of a body.
    pub min_body_bytes_per_second: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_bytes: DEFAULT_MAX_BYTES,
            time: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            concurrency: DEFAULT_CONCURRENCY,
            max_bytes_in_flight: 4 * DEFAULT_MAX_BYTES,
            header_timeout: Duration::from_millis(DEFAULT_HEADER_TIMEOUT_MS),
            body_grace: Duration::from_millis(DEFAULT_BODY_GRACE_MS),
            min_body_bytes_per_second: DEFAULT_MIN_BODY_BYTES_PER_SECOND,
        }
    }
}

#[derive(Clone)]
struct Webhook {
    budget: Budget,
    turns: Arc<Semaphore>,
    in_flight: Arc<body::InFlight>,
    metrics: Arc<Metrics>,
    inject: Injector,
}

/// The webhook's routes: `POST /validate`, and `POST /inject` (sidecar injection by
/// `inject`), both within `budget` (shared: one concurrency bound and one budget of bytes
/// in flight for both); refusals are counted in `metrics`
/// (`sextant_xds_bounded_total{bound="webhook_bytes"|"webhook_time"|"webhook_concurrency"|
/// "webhook_body_deadline"|"webhook_bytes_in_flight"}`). [`serve`] bounds the connections.
pub fn router(budget: Budget, metrics: Arc<Metrics>, inject: Injector) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/inject", post(inject_sidecar))
        // The body is read (and bounded) by `review`, which says what was exceeded.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(Webhook {
            budget,
            turns: Arc::new(Semaphore::new(budget.concurrency.max(1))),
            in_flight: body::InFlight::new(budget.max_bytes_in_flight.max(budget.max_bytes)),
            metrics,
            inject,
        })
}

/// What is answered, for the words of a denial past the time budget.
#[derive(Clone, Copy)]
enum Route {
    Validate,
    Inject,
}

async fn validate(State(w): State<Webhook>, request: Request) -> Response {
    review(w, request, Route::Validate, answer).await
}

async fn inject_sidecar(State(w): State<Webhook>, request: Request) -> Response {
    let injector = w.inject.clone();
    review(w, request, Route::Inject, move |body| {
        inject_answer(body, &injector.current())
    })
    .await
}

/// Reads an AdmissionReview within the budget and answers it with `answer` on a blocking
/// thread, within the time budget: an answer that comes later is a denial naming it.
async fn review(
    w: Webhook,
    request: Request,
    route: Route,
    answer: impl FnOnce(&[u8]) -> Result<Value, String> + Send + 'static,
) -> Response {
    let arrived = match body::read(request.into_body(), &w.budget, &w.in_flight, &w.metrics).await {
        Ok(arrived) => arrived,
        Err(refused) => return refused,
    };
    let started = Instant::now();
    let turn = tokio::time::timeout(w.budget.time, w.turns.clone().acquire_owned()).await;
    let Ok(Ok(turn)) = turn else {
        w.metrics.bounded("webhook_concurrency");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "the webhook is busy: {} reviews are being answered (--webhook-concurrency) and none finished within {:?}",
                w.budget.concurrency, w.budget.time
            ),
        )
            .into_response();
    };
    let deadline = started + w.budget.time;
    let judged = tokio::task::spawn_blocking(move || {
        // The bytes stay held until the answer is made.
        let _turn = turn;
        let body::Arrived { bytes, held: _held } = arrived;
        let (answered, passed) =
            sextant_index::parse::with_deadline(deadline, move || answer(&bytes));
        (answered, passed || Instant::now() > deadline)
    })
    .await;
    match judged {
        Ok((Ok(mut review), passed)) => {
            if passed {
                w.metrics.bounded("webhook_time");
                deny_for_time(&mut review, route, w.budget.time);
            }
            Json(review).into_response()
        }
        Ok((Err(e), _)) => (
            StatusCode::BAD_REQUEST,
            format!("the request is not an AdmissionReview: {e}"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("validation failed: {e}"),
        )
            .into_response(),
    }
}

/// The answer to a webhook request body: the AdmissionReview response, or why the body is not
/// an AdmissionReview. A review passing the input [`Limits`] (the same bounds as manifest
/// files and watched objects) is denied, naming the bound, before anything else reads it.
pub fn answer(body: &[u8]) -> Result<Value, String> {
    let review = parse_review(body)?;
    if let Err(exceeded) = check_value(&review, &Limits::current()) {
        tracing::warn!(uid = %review["request"]["uid"], error = %exceeded, "refusing an admission review");
        return Ok(denied(
            &review,
            &format!("the object is refused: {exceeded}"),
        ));
    }
    Ok(review_response(&review))
}

/// The answer to a `/inject` request body: the AdmissionReview response (a JSON Patch adding
/// the sidecar, or none), or why the body is not an AdmissionReview. The input [`Limits`]
/// apply as to `/validate`.
pub fn inject_answer(body: &[u8], config: &InjectConfig) -> Result<Value, String> {
    let review = parse_review(body)?;
    if let Err(exceeded) = check_value(&review, &Limits::current()) {
        tracing::warn!(uid = %review["request"]["uid"], error = %exceeded, "refusing an admission review");
        return Ok(denied(
            &review,
            &format!("the object is refused: {exceeded}"),
        ));
    }
    Ok(crate::inject::review_response(&review, config))
}

/// Denies `review` (an answer) because answering it ran past the `budget`.
fn deny_for_time(review: &mut Value, route: Route, budget: Duration) {
    let response = &mut review["response"];
    response["allowed"] = json!(false);
    // The patch of an injection too slow to make is not applied.
    if let Some(response) = response.as_object_mut() {
        response.remove("patch");
        response.remove("patchType");
    }
    let message = match route {
        Route::Validate => format!(
            "validation ran past the webhook's time budget of {budget:?} (--webhook-timeout-ms); the object was not fully checked, split it or simplify its regexes"
        ),
        Route::Inject => format!(
            "sidecar injection ran past the webhook's time budget of {budget:?} (--webhook-timeout-ms); the Pod is refused, retry it"
        ),
    };
    response["status"] = json!({"code": 400, "reason": "Invalid", "message": message});
}

/// Errors listed in a denial; the rest are counted.
const MAX_ERRORS_SHOWN: usize = 100;

/// Levels of nesting serde_json reads before it refuses.
const JSON_DEPTH: usize = 128;

/// The body as an AdmissionReview with a request to answer: JSON, `kind: AdmissionReview`,
/// and a `request` whose `uid` the answer must carry.
fn parse_review(body: &[u8]) -> Result<Value, String> {
    let review: Value = serde_json::from_slice(body).map_err(|e| {
        // serde_json stops at 128 levels before the input bounds can judge the object: that
        // is the depth bound too, whatever --max-input-depth says.
        if e.to_string().starts_with("recursion limit exceeded") {
            let limit = JSON_DEPTH.min(Limits::current().depth);
            format!(
                "{}; the JSON reader stops at {JSON_DEPTH} levels in any case",
                Exceeded::new(Bound::Depth, limit)
            )
        } else {
            e.to_string()
        }
    })?;
    if review["kind"] != "AdmissionReview" {
        return Err("kind is not AdmissionReview".to_owned());
    }
    if !review["request"]["uid"].is_string() {
        return Err("request.uid is missing".to_owned());
    }
    Ok(review)
}

/// An AdmissionReview denying `review`'s request with `message`.
fn denied(review: &Value, message: &str) -> Value {
    let response = json!({
        "uid": review["request"]["uid"].clone(),
        "allowed": false,
        "status": {"code": 400, "reason": "Invalid", "message": message},
    });
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// The AdmissionReview answering `review`.
pub fn review_response(review: &Value) -> Value {
    let request = &review["request"];
    let uid = request["uid"].clone();
    let object = &request["object"];
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let mut response = json!({"uid": uid, "allowed": true});
    // Deletions carry no object; other kinds are not ours to judge.
    if let ObjectKind::Istio(k) = check::classify(api_version, kind) {
        let checked = check::check_istio_object(k, object);
        if !checked.warnings.is_empty() {
            response["warnings"] = json!(
                checked
                    .warnings
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            );
        }
        if !checked.errors.is_empty() {
            // The API server shows the message to the user; past a hundred errors more help
            // no one, and a hostile review could otherwise make the answer megabytes long.
            let mut errors: Vec<String> = checked
                .errors
                .iter()
                .take(MAX_ERRORS_SHOWN)
                .map(ToString::to_string)
                .collect();
            if checked.errors.len() > MAX_ERRORS_SHOWN {
                errors.push(format!(
                    "and {} more errors",
                    checked.errors.len() - MAX_ERRORS_SHOWN
                ));
            }
            response["allowed"] = json!(false);
            response["status"] = json!({
                "code": 400, "reason": "Invalid",
                "message": format!("configuration is invalid: {}", errors.join("; ")),
            });
        }
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_injection_answered_past_the_time_budget_is_a_denial_naming_it() {
        let metrics = Arc::new(Metrics::new());
        let budget = Budget {
            time: Duration::from_millis(50),
            ..Budget::default()
        };
        let mesh = Arc::new(sextant_model::MeshConfig::default());
        let w = Webhook {
            budget,
            turns: Arc::new(Semaphore::new(1)),
            in_flight: body::InFlight::new(budget.max_bytes_in_flight),
            metrics: metrics.clone(),
            inject: Injector::new(InjectConfig::default(), Arc::new(move || mesh.clone())),
        };
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "app"}]}});
        let body = serde_json::to_vec(&review(pod)).expect("JSON");
        let slow = |body: &[u8]| {
            std::thread::sleep(Duration::from_millis(100));
            inject_answer(body, &InjectConfig::default())
        };
        let request = Request::new(axum::body::Body::from(body));
        let answer = super::review(w, request, Route::Inject, slow).await;
        assert_eq!(answer.status(), StatusCode::OK);
        let answer = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .expect("the answer");
        let answer: Value = serde_json::from_slice(&answer).expect("JSON");
        let response = &answer["response"];
        assert_eq!(response["allowed"], false, "{answer}");
        assert!(response.get("patch").is_none(), "{answer}");
        let message = response["status"]["message"].as_str().expect("message");
        assert!(message.contains("--webhook-timeout-ms"), "{message}");
        let counted = metrics
            .bounded
            .get_or_create(&crate::metrics::BoundLabels {
                bound: "webhook_time".to_owned(),
            })
            .get();
        assert_eq!(counted, 1);
    }

    #[test]
    fn a_denial_lists_at_most_a_hundred_errors() {
        let routes: Vec<Value> = (0..300)
            .map(|_| json!({"route": [{"destination": {"host": "r"}, "weight": -1}]}))
            .collect();
        let bad = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "r", "namespace": "default"},
            "spec": {"hosts": ["r"], "http": routes}});
        let out = review_response(&review(bad));
        let message = out["response"]["status"]["message"]
            .as_str()
            .expect("message");
        assert!(message.ends_with("more errors"), "{message}");
        assert!(
            message.matches("; ").count() <= MAX_ERRORS_SHOWN,
            "{message}"
        );
    }

    #[test]
    fn objects_nested_past_the_json_reader_name_the_depth_bound() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let body = format!(
            r#"{{"kind": "AdmissionReview", "request": {{"uid": "u", "object": {deep}}}}}"#
        );
        let before = Bound::Depth.refusals();
        let refused = answer(body.as_bytes()).expect_err("too deep to read");
        assert!(refused.contains("bound input_depth"), "{refused}");
        assert!(Bound::Depth.refusals() > before);
    }

    #[test]
    fn bodies_that_are_not_admission_reviews_are_refused() {
        for (body, why) in [
            (&b"[1,2,3]"[..], "kind is not AdmissionReview"),
            (b"\"str\"", "kind is not AdmissionReview"),
            (
                br#"{"kind": "AdmissionReview", "request": {}}"#,
                "request.uid is missing",
            ),
        ] {
            assert_eq!(parse_review(body).expect_err("refused"), why);
        }
        assert!(parse_review(b"{").is_err());
        let ok = br#"{"kind": "AdmissionReview", "request": {"uid": "u"}}"#;
        assert!(parse_review(ok).is_ok());
    }

    fn review(object: Value) -> Value {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "request": {"uid": "u1", "operation": "CREATE", "object": object}})
    }

    #[test]
    fn invalid_configuration_is_denied_with_every_error() {
        let bad = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "r", "namespace": "default"},
            "spec": {"hosts": ["r"], "http": [
                {"match": [{"uri": {"regex": "("}}], "route": [{"destination": {"host": "r"}}]},
                {"route": [{"destination": {"host": "r"}, "weight": -1}]}]}});
        let out = review_response(&review(bad));
        let response = &out["response"];
        assert_eq!(response["uid"], "u1");
        assert_eq!(response["allowed"], false);
        let message = response["status"]["message"].as_str().expect("message");
        assert!(
            message.contains("spec.http[0].match[0].uri.regex"),
            "{message}"
        );
        assert!(
            message.contains("spec.http[1].route[0].weight"),
            "{message}"
        );
    }

    #[test]
    fn objects_past_the_input_bounds_are_denied_naming_the_bound() {
        // 100 levels under 3,000-byte keys, 100 siblings each: 330 KB of JSON whose fields
        // would be named by 1.5 GB of paths.
        let key = "k".repeat(3000);
        let mut object = json!({"a": 1});
        for _ in 0..100 {
            let mut level: serde_json::Map<String, Value> =
                (0..100).map(|i| (format!("s{i}"), json!(i))).collect();
            level.insert(key.clone(), object);
            object = Value::Object(level);
        }
        let body = serde_json::to_vec(&review(object)).expect("JSON");
        let out = answer(&body).expect("an AdmissionReview");
        let response = &out["response"];
        assert_eq!(response["uid"], "u1");
        assert_eq!(response["allowed"], false);
        let message = response["status"]["message"].as_str().expect("message");
        assert!(message.contains("--max-input-expanded-bytes"), "{message}");
    }

    #[test]
    fn peer_authentications_are_judged_too() {
        for (spec, expected) in [
            (json!({"mtls": {"mode": "SOMETIMES"}}), "spec.mtls.mode"),
            (
                json!({"portLevelMtls": {"8080": {"mode": "STRICT"}}}),
                "portLevelMtls requires selector",
            ),
        ] {
            let bad = json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                "metadata": {"name": "p", "namespace": "default"}, "spec": spec});
            let out = review_response(&review(bad));
            assert_eq!(out["response"]["allowed"], false);
            let message = out["response"]["status"]["message"]
                .as_str()
                .expect("message");
            assert!(message.contains(expected), "{message}");
        }
        let good = json!({"apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "a"}}, "mtls": {"mode": "STRICT"},
                     "portLevelMtls": {"8080": {"mode": "DISABLE"}}}});
        assert_eq!(review_response(&review(good))["response"]["allowed"], true);
    }

    #[test]
    fn gateways_are_judged_too() {
        let gateway = |tls: Value| {
            json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "Gateway",
                "metadata": {"name": "gw", "namespace": "edge"},
                "spec": {"selector": {"istio": "ingressgateway"}, "servers": [{
                    "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                    "hosts": ["shop.example.com"], "tls": tls}]}})
        };
        for (tls, expected) in [
            (
                json!({"mode": "SIMPLE"}),
                "spec.servers[0].tls.serverCertificate: SIMPLE TLS requires a server certificate",
            ),
            (
                json!({"mode": "SIMPLE", "credentialName": "a", "credentialNames": ["b"]}),
                "only one of credentialName or credentialNames can be set",
            ),
        ] {
            let out = review_response(&review(gateway(tls)));
            assert_eq!(out["response"]["allowed"], false);
            let message = out["response"]["status"]["message"]
                .as_str()
                .expect("message");
            assert!(message.contains(expected), "{message}");
        }
        let good = review_response(&review(gateway(json!({
            "mode": "SIMPLE", "credentialName": "shop-cert",
            "cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256", "BOGUS"]}))));
        assert_eq!(good["response"]["allowed"], true);
        assert_eq!(
            good["response"]["warnings"],
            json!(["spec.servers[0].tls.cipherSuites: ignoring invalid cipher suites: [BOGUS]"])
        );
        // Secrets are not the webhook's to judge.
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"tls.key": "not base64"}});
        assert_eq!(
            review_response(&review(secret))["response"]["allowed"],
            true
        );
    }

    #[test]
    fn sidecars_are_judged_too() {
        let sidecar = |hosts: Value| {
            json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "Sidecar",
                "metadata": {"name": "default", "namespace": "prod"},
                "spec": {"egress": [{"hosts": hosts}]}})
        };
        let out = review_response(&review(sidecar(json!(["reviews"]))));
        assert_eq!(out["response"]["allowed"], false);
        let message = out["response"]["status"]["message"]
            .as_str()
            .expect("message");
        assert!(
            message.contains("spec.egress[0].hosts[0]: host must be of form namespace/dnsName"),
            "{message}"
        );
        let good = review_response(&review(sidecar(json!(["./*", "*/*"]))));
        assert_eq!(good["response"]["allowed"], true);
        assert_eq!(
            good["response"]["warnings"],
            json!([
                "spec.egress[0].hosts: `*/*` host select all resources, no other hosts can be added"
            ])
        );
    }

    #[test]
    fn valid_configuration_and_other_kinds_are_allowed() {
        let good = json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
            "metadata": {"name": "r"}, "spec": {"host": "r"}});
        assert_eq!(review_response(&review(good))["response"]["allowed"], true);
        let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        assert_eq!(review_response(&review(other))["response"]["allowed"], true);
        assert_eq!(review_response(&json!({}))["response"]["allowed"], true);
    }
}
