//! Secrets as the credentials a Gateway names: the two key forms, `stringData`, Secrets that
//! are not credentials, invalid base64 (reported without the value) and `Changes::credentials`.

use serde_json::{Value, json};
use sextant_index::{Index, Object};
use sextant_model::Kind;

fn secret(name: &str, body: Value) -> Object {
    let mut value = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "edge"}});
    if let (Some(v), Some(b)) = (value.as_object_mut(), body.as_object()) {
        v.extend(b.clone());
    }
    Object::from_json(value, "default").expect("readable")
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn secrets_become_credentials_in_either_form_with_string_data_winning() {
    let mut index = Index::default();
    index.apply(secret(
        "tls",
        json!({"type": "kubernetes.io/tls", "data": {"tls.crt": b64("CHAIN"), "tls.key": b64("KEY"),
            "ca.crt": b64("CA"), "ca.crl": b64("CRL"), "tls.ocsp-staple": b64("OCSP"), "other": "not base64!"}}),
    ));
    index.apply(secret(
        "generic",
        json!({"data": {"cert": b64("OLD"), "key": b64("KEY2"), "cacert": b64("CA2")},
               "stringData": {"cert": "NEW"}}),
    ));
    index.apply(secret(
        "front-cacert",
        json!({"data": {"ca.crt": b64("CLIENTS")}}),
    ));
    // Not credentials: no key of a credential, a certificate without its key, or a type that
    // never holds one.
    index.apply(secret("password", json!({"data": {"password": b64("p")}})));
    index.apply(secret("half", json!({"data": {"tls.crt": b64("C")}})));
    index.apply(secret(
        "release",
        json!({"type": "helm.sh/release.v1", "data": {"cert": b64("C"), "key": b64("K")}}),
    ));
    let (snapshot, changes) = index.publish();
    assert!(snapshot.invalid.is_empty(), "{:?}", snapshot.invalid);
    let keys: Vec<(&str, &str)> = snapshot
        .credentials
        .keys()
        .map(|(ns, n)| (ns.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("edge", "front-cacert"),
            ("edge", "generic"),
            ("edge", "tls")
        ]
    );
    assert_eq!(changes.credentials.len(), 3);
    assert!(changes.configs.is_empty());
    let bytes = |b: &Option<std::sync::Arc<[u8]>>| {
        b.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    let tls = snapshot.credential("edge", "tls").expect("tls");
    assert_eq!(bytes(&tls.certificate_chain).as_deref(), Some("CHAIN"));
    assert_eq!(bytes(&tls.private_key).as_deref(), Some("KEY"));
    assert_eq!(bytes(&tls.ocsp_staple).as_deref(), Some("OCSP"));
    assert_eq!(bytes(&tls.ca_certificate).as_deref(), Some("CA"));
    assert_eq!(bytes(&tls.crl).as_deref(), Some("CRL"));
    let generic = snapshot.credential("edge", "generic").expect("generic");
    assert_eq!(bytes(&generic.certificate_chain).as_deref(), Some("NEW"));
    assert_eq!(bytes(&generic.ca_certificate).as_deref(), Some("CA2"));
    // NAME-cacert falls back to the CA of NAME when there is no such Secret.
    let ca = snapshot
        .credential("edge", "generic-cacert")
        .expect("CA of generic");
    assert_eq!(
        (bytes(&ca.ca_certificate).as_deref(), ca.private_key),
        (Some("CA2"), None)
    );
    // Nothing of a key reaches Debug.
    let shown = format!(
        "{tls:?} {:?}",
        secret("tls", json!({"stringData": {"tls.key": "SECRETKEY"}}))
    );
    assert!(
        !shown.contains("KEY\"") && !shown.contains("SECRETKEY"),
        "{shown}"
    );
}

#[test]
fn invalid_base64_names_the_secret_and_the_key_never_the_value() {
    let mut index = Index::default();
    index.apply(secret(
        "good",
        json!({"data": {"cert": b64("C"), "key": b64("K")}}),
    ));
    index.publish();
    index.apply(secret(
        "good",
        json!({"data": {"cert": b64("C"), "key": "TOPSECRET!!"}}),
    ));
    let (snapshot, changes) = index.publish();
    let id = sextant_model::ObjectRef {
        kind: Kind::Secret,
        namespace: "edge".into(),
        name: "good".into(),
    };
    let errors = snapshot.invalid.get(&id).expect("reported").join("; ");
    assert!(
        errors.contains("data[key]") && errors.contains("not valid base64"),
        "{errors}"
    );
    assert!(!errors.contains("TOPSECRET"), "{errors}");
    assert_eq!(id.to_string(), "Secret edge/good");
    // The last good version stays.
    assert!(snapshot.credential("edge", "good").is_some());
    assert!(changes.credentials.is_empty());
    // Malformed shapes are refused without quoting values either.
    let value = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"},
        "data": {"tls.key": ["TOPSECRET"]}});
    let err = Object::from_json(value, "default")
        .expect_err("malformed")
        .to_string();
    assert!(
        err.contains("data[tls.key]") && !err.contains("TOPSECRET"),
        "{err}"
    );
}

#[test]
fn credential_changes_are_recorded_only_when_the_credential_changes() {
    let mut index = Index::default();
    let cert = |chain: &str| {
        secret(
            "cert",
            json!({"data": {"tls.crt": b64(chain), "tls.key": b64("K")}}),
        )
    };
    index.apply(cert("A"));
    let (_, changes) = index.publish();
    assert_eq!(
        changes.credentials.iter().collect::<Vec<_>>(),
        [&("edge".to_owned(), "cert".to_owned())]
    );
    assert!(changes.credentials_only());
    index.apply(cert("A"));
    let (_, changes) = index.publish();
    assert!(changes.is_empty(), "{changes:?}");
    index.apply(cert("B"));
    assert_eq!(index.publish().1.credentials.len(), 1);
    // A Secret that stops holding a credential is forgotten; one that never did changes nothing.
    index.apply(secret("cert", json!({"data": {"password": b64("p")}})));
    let (snapshot, changes) = index.publish();
    assert!(snapshot.credentials.is_empty());
    assert_eq!(changes.credentials.len(), 1);
    index.apply(secret("other", json!({"data": {"password": b64("p")}})));
    assert!(index.publish().1.is_empty());
    index.apply(cert("C"));
    index.publish();
    index.reset(Kind::Secret, vec![]);
    let (snapshot, changes) = index.publish();
    assert!(snapshot.credentials.is_empty());
    assert_eq!(changes.credentials.len(), 1);
    index.apply(cert("D"));
    index.publish();
    index.delete(Kind::Secret, "edge", "cert");
    assert_eq!(index.publish().1.credentials.len(), 1);
}
