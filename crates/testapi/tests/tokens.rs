//! Service-account tokens over real HTTP: TokenRequest issues them, TokenReview accepts them
//! for their service account and audiences, and refuses them once tampered with or once the
//! account is gone.

use serde_json::{Value, json};
use sextant_testapi::{Options, start};

#[path = "support/call.rs"]
mod support;
use support::call;

#[tokio::test]
async fn issued_tokens_authenticate_as_their_service_account_for_their_audiences() {
    let api = start(Options::default()).await.expect("starts");
    let sa = "/api/v1/namespaces/default/serviceaccounts";
    let (code, _) = call(
        api.addr,
        "POST",
        sa,
        "application/json",
        &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}}),
    )
    .await;
    assert_eq!(code, 201);
    let request = |spec: Value| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let token_path = format!("{sa}/reader/token");

    // No audiences: the server's own; a year, as create-remote-secret asks.
    let (code, granted) = call(
        api.addr,
        "POST",
        &token_path,
        "application/json",
        &request(json!({"expirationSeconds": 31_536_000})),
    )
    .await;
    assert_eq!(code, 201, "{granted}");
    assert_eq!(granted["kind"], "TokenRequest");
    assert_eq!(
        granted["spec"]["audiences"],
        json!([sextant_testapi::tokens::ISSUER])
    );
    let expires = granted["status"]["expirationTimestamp"]
        .as_str()
        .and_then(sextant_testapi::store::parse_rfc3339)
        .expect("an expiry");
    let now = sextant_testapi::tokens::now();
    assert!(
        (now + 31_536_000 - 5..=now + 31_536_000 + 5).contains(&expires),
        "{granted}"
    );
    let api_token = granted["status"]["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let (_, for_ca) = call(
        api.addr,
        "POST",
        &token_path,
        "application/json",
        &request(json!({"audiences": ["istio-ca"]})),
    )
    .await;
    let ca_token = for_ca["status"]["token"]
        .as_str()
        .expect("a token")
        .to_owned();

    let reviews = "/apis/authentication.k8s.io/v1/tokenreviews";
    let addr = api.addr;
    let review = |token: &str, audiences: Value| {
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                          "spec": {"token": token, "audiences": audiences}});
        async move {
            let (code, r) = call(addr, "POST", reviews, "application/json", &body).await;
            assert_eq!(code, 201, "{r}");
            r["status"].clone()
        }
    };
    let ok = review(&api_token, json!([])).await;
    assert_eq!(ok["authenticated"], true, "{ok}");
    assert_eq!(
        ok["user"]["username"],
        "system:serviceaccount:default:reader"
    );
    assert_eq!(ok["audiences"], json!([sextant_testapi::tokens::ISSUER]));
    assert!(
        ok["user"]["groups"]
            .as_array()
            .expect("groups")
            .contains(&json!("system:serviceaccounts:default"))
    );
    // Audiences: the token's and the review's must meet.
    let ca = review(&ca_token, json!(["istio-ca", "other"])).await;
    assert_eq!(ca["authenticated"], true, "{ca}");
    assert_eq!(ca["audiences"], json!(["istio-ca"]));
    let wrong = review(&ca_token, json!([])).await;
    assert_eq!(wrong["authenticated"], false, "{wrong}");
    let wrong = review(&api_token, json!(["istio-ca"])).await;
    assert_eq!(wrong["authenticated"], false, "{wrong}");
    // A tampered token is nobody's.
    let tampered = format!("{}x", &api_token[..api_token.len() - 1]);
    assert_eq!(review(&tampered, json!([])).await["authenticated"], false);

    // Refusals as the API server's: too short, a missing account, another verb.
    let (code, short) = call(
        api.addr,
        "POST",
        &token_path,
        "application/json",
        &request(json!({"expirationSeconds": 60})),
    )
    .await;
    assert_eq!(code, 422, "{short}");
    assert!(
        short["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.expirationSeconds")),
        "{short}"
    );
    let (code, _) = call(
        api.addr,
        "POST",
        &format!("{sa}/nobody/token"),
        "application/json",
        &request(json!({})),
    )
    .await;
    assert_eq!(code, 404);
    let (code, _) = call(api.addr, "GET", &token_path, "", &Value::Null).await;
    assert_eq!(code, 405);

    // Discovery names the subresource, as kubectl and client-go look for it.
    let (_, core) = call(api.addr, "GET", "/api/v1", "", &Value::Null).await;
    let token = core["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "serviceaccounts/token")
        .expect("serviceaccounts/token")
        .clone();
    assert_eq!(token["kind"], "TokenRequest");
    assert_eq!(token["verbs"], json!(["create"]));

    // The account deleted (and made again: another UID), its tokens stop working.
    let (code, _) = call(
        api.addr,
        "DELETE",
        &format!("{sa}/reader"),
        "",
        &Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    let gone = review(&api_token, json!([])).await;
    assert_eq!(gone["authenticated"], false, "{gone}");
    call(
        api.addr,
        "POST",
        sa,
        "application/json",
        &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}}),
    )
    .await;
    let again = review(&api_token, json!([])).await;
    assert_eq!(again["authenticated"], false, "{again}");
    api.stop();
}
