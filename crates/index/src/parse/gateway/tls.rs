//! A Gateway server's `tls`: Istio's `validateTLSOptions` and the model's `ServerTls`.

use std::collections::BTreeSet;

use sextant_api as api;
use sextant_model as model;

use crate::parse::Report;

/// The cipher names Istio accepts (BoringSSL's, without PSK), besides `ALL` and expressions
/// that start with an operator.
const CIPHER_SUITES: [&str; 15] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

/// Protobuf treats an empty string as unset.
pub(in crate::parse) fn set(field: &Option<String>) -> bool {
    field.as_deref().is_some_and(|s| !s.is_empty())
}

fn is_valid_cipher(name: &str) -> bool {
    name.is_empty()
        || name == "ALL"
        || name.chars().next().is_some_and(|c| !c.is_alphanumeric())
        || CIPHER_SUITES.contains(&name)
}

/// The ciphers Envoy is given: invalid and repeated names dropped.
fn ciphers(names: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    names
        .iter()
        .filter(|c| !c.is_empty() && is_valid_cipher(c) && seen.insert(c.as_str()))
        .cloned()
        .collect()
}

/// A Go `%v` of a sorted string list: `[a b]`.
fn go_list(names: &BTreeSet<&str>) -> String {
    let list: Vec<&str> = names.iter().copied().collect();
    format!("[{}]", list.join(" "))
}

/// The ECDH curves Envoy 1.40 (BoringSSL) knows.
const CURVES: [&str; 6] = [
    "X25519",
    "P-256",
    "P-384",
    "P-521",
    "X25519MLKEM768",
    "X25519Kyber768Draft00",
];

/// What Istio passes on and Envoy refuses, refused here with the field (beyond Istio's
/// validation, so that a Gateway cannot make a shared listener rejected): SPKI pins must be
/// base64 SHA-256 digests, certificate hashes hex SHA-256 digests (colons allowed), curves
/// ones Envoy knows.
fn check_pins_and_curves(tls: &api::ServerTlsSettings, path: &str, r: &mut Report) {
    use base64::Engine;
    for (i, pin) in tls.verify_certificate_spki.iter().flatten().enumerate() {
        let ok = base64::engine::general_purpose::STANDARD
            .decode(pin)
            .is_ok_and(|d| d.len() == 32);
        if !ok {
            r.error(
                format!("{path}.verifyCertificateSpki[{i}]"),
                format!("{pin:?} is not a base64-encoded SHA-256 digest"),
            );
        }
    }
    for (i, hash) in tls.verify_certificate_hash.iter().flatten().enumerate() {
        let hex: String = hash.chars().filter(|c| *c != ':').collect();
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            r.error(
                format!("{path}.verifyCertificateHash[{i}]"),
                format!("{hash:?} is not a hex-encoded SHA-256 digest"),
            );
        }
    }
    for (i, curve) in tls.ecdh_curves.iter().flatten().enumerate() {
        if !CURVES.contains(&curve.as_str()) {
            r.error(
                format!("{path}.ecdhCurves[{i}]"),
                format!("unknown ECDH curve {curve:?}: one of {}", CURVES.join(", ")),
            );
        }
    }
}

/// Istio's `validateTLSOptions`, its checks in its order.
pub(in crate::parse) fn check(tls: &api::ServerTlsSettings, path: &str, r: &mut Report) {
    use api::ServerTlsMode as M;
    let mode = tls.mode.unwrap_or(M::PASSTHROUGH);
    let suites = tls.cipher_suites.as_deref().unwrap_or_default();
    if matches!(
        tls.min_protocol_version,
        Some(api::TlsProtocol::TLSV1_0 | api::TlsProtocol::TLSV1_1)
    ) && suites.is_empty()
    {
        r.warn(
            format!("{path}.minProtocolVersion"),
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.",
        );
    }
    let (mut invalid, mut valid, mut duplicate) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for cs in suites {
        if !is_valid_cipher(cs) {
            invalid.insert(cs.as_str());
        } else if !valid.insert(cs.as_str()) {
            duplicate.insert(cs.as_str());
        }
    }
    if !invalid.is_empty() {
        r.warn(
            format!("{path}.cipherSuites"),
            format!("ignoring invalid cipher suites: {}", go_list(&invalid)),
        );
    }
    if !duplicate.is_empty() {
        r.warn(
            format!("{path}.cipherSuites"),
            format!("ignoring duplicate cipher suites: {}", go_list(&duplicate)),
        );
    }
    check_pins_and_curves(tls, path, r);
    let tls_certificates = tls.tls_certificates.as_deref().unwrap_or_default();
    let credential_names = tls.credential_names.as_deref().unwrap_or_default();
    if mode == M::ISTIO_MUTUAL {
        let fields = [
            (
                set(&tls.server_certificate),
                "serverCertificate",
                "server certificate",
            ),
            (set(&tls.private_key), "privateKey", "private key"),
            (set(&tls.ca_certificates), "caCertificates", "CA bundle"),
            (
                !tls_certificates.is_empty(),
                "tlsCertificates",
                "tlsCertificates",
            ),
            (
                set(&tls.credential_name),
                "credentialName",
                "credentialName",
            ),
            (
                !credential_names.is_empty(),
                "credentialNames",
                "credentialNames",
            ),
        ];
        for (present, field, what) in fields {
            if present {
                r.error(
                    format!("{path}.{field}"),
                    format!("ISTIO_MUTUAL TLS cannot have associated {what}"),
                );
            }
        }
        return;
    }
    if matches!(mode, M::PASSTHROUGH | M::AUTO_PASSTHROUGH)
        && (set(&tls.ca_crl)
            || set(&tls.server_certificate)
            || set(&tls.private_key)
            || set(&tls.ca_certificates)
            || !tls_certificates.is_empty()
            || set(&tls.credential_name)
            || !credential_names.is_empty())
    {
        r.warn(
            path,
            format!(
                "{} mode does not use certificates, they will be ignored",
                mode_name(mode)
            ),
        );
    }
    let sources = [
        set(&tls.server_certificate) && set(&tls.private_key),
        set(&tls.credential_name),
        !credential_names.is_empty(),
        !tls_certificates.is_empty(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        r.error(
            path,
            "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified",
        );
    }
    let terminates = matches!(mode, M::SIMPLE | M::MUTUAL | M::OPTIONAL_MUTUAL);
    if terminates && (set(&tls.credential_name) || !credential_names.is_empty()) {
        // The certificates come from Secrets; no files are needed.
        return;
    }
    if terminates {
        let prefix = if mode == M::SIMPLE {
            "SIMPLE TLS"
        } else {
            if !set(&tls.ca_certificates) {
                r.error(
                    format!("{path}.caCertificates"),
                    "MUTUAL TLS requires a client CA bundle",
                );
            }
            "MUTUAL TLS"
        };
        if tls_certificates.len() > 2 {
            r.warn(
                format!("{path}.tlsCertificates"),
                format!("{prefix} can support up to 2 server certificates"),
            );
        }
        let files: Vec<(String, &Option<String>, &Option<String>)> = if tls_certificates.is_empty()
        {
            vec![(path.to_owned(), &tls.server_certificate, &tls.private_key)]
        } else {
            tls_certificates
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    (
                        format!("{path}.tlsCertificates[{k}]"),
                        &c.server_certificate,
                        &c.private_key,
                    )
                })
                .collect()
        };
        for (at, certificate, key) in files {
            if !set(certificate) {
                r.error(
                    format!("{at}.serverCertificate"),
                    format!("{prefix} requires a server certificate"),
                );
            }
            if !set(key) {
                r.error(
                    format!("{at}.privateKey"),
                    format!("{prefix} requires a private key"),
                );
            }
        }
    }
    if set(&tls.ca_crl) {
        if set(&tls.credential_name) {
            r.error(
                format!("{path}.caCrl"),
                "CRL is not supported with credentialName. CRL has to be specified in the credential",
            );
        }
        if mode == M::SIMPLE {
            r.error(
                format!("{path}.caCrl"),
                "CRL is not supported with SIMPLE TLS",
            );
        }
    }
}

fn mode_name(mode: api::ServerTlsMode) -> &'static str {
    model_mode(Some(mode)).as_str()
}

fn model_mode(mode: Option<api::ServerTlsMode>) -> model::ServerTlsMode {
    use api::ServerTlsMode as M;
    match mode {
        None | Some(M::PASSTHROUGH) => model::ServerTlsMode::Passthrough,
        Some(M::SIMPLE) => model::ServerTlsMode::Simple,
        Some(M::MUTUAL) => model::ServerTlsMode::Mutual,
        Some(M::AUTO_PASSTHROUGH) => model::ServerTlsMode::AutoPassthrough,
        Some(M::ISTIO_MUTUAL) => model::ServerTlsMode::IstioMutual,
        Some(M::OPTIONAL_MUTUAL) => model::ServerTlsMode::OptionalMutual,
    }
}

fn version(v: Option<api::TlsProtocol>) -> model::TlsVersion {
    use api::TlsProtocol as P;
    match v {
        None | Some(P::TLS_AUTO) => model::TlsVersion::Auto,
        Some(P::TLSV1_0) => model::TlsVersion::V1_0,
        Some(P::TLSV1_1) => model::TlsVersion::V1_1,
        Some(P::TLSV1_2) => model::TlsVersion::V1_2,
        Some(P::TLSV1_3) => model::TlsVersion::V1_3,
    }
}

fn non_empty(field: &Option<String>) -> Option<String> {
    field.clone().filter(|s| !s.is_empty())
}

fn list(field: &Option<Vec<String>>) -> Vec<String> {
    field.clone().unwrap_or_default()
}

/// The model of validated settings: `credentialName` then `credentialNames`; the
/// `serverCertificate`/`privateKey` pair then `tlsCertificates`.
pub(in crate::parse) fn model(tls: &api::ServerTlsSettings) -> model::ServerTls {
    let pair = |certificate: &Option<String>, key: &Option<String>| {
        Some(model::CertificateFiles {
            certificate: non_empty(certificate)?,
            private_key: non_empty(key)?,
        })
    };
    let files = std::iter::once(pair(&tls.server_certificate, &tls.private_key))
        .chain(
            tls.tls_certificates
                .iter()
                .flatten()
                .map(|c| pair(&c.server_certificate, &c.private_key)),
        )
        .flatten()
        .collect();
    model::ServerTls {
        https_redirect: tls.https_redirect.unwrap_or(false),
        mode: model_mode(tls.mode),
        credential_names: non_empty(&tls.credential_name)
            .into_iter()
            .chain(list(&tls.credential_names))
            .filter(|n| !n.is_empty())
            .collect(),
        ca_credential_name: non_empty(&tls.ca_cert_credential_name),
        files,
        ca_certificates: non_empty(&tls.ca_certificates),
        ca_crl: non_empty(&tls.ca_crl),
        subject_alt_names: list(&tls.subject_alt_names),
        verify_certificate_spki: list(&tls.verify_certificate_spki),
        verify_certificate_hash: list(&tls.verify_certificate_hash),
        min_protocol_version: version(tls.min_protocol_version),
        max_protocol_version: version(tls.max_protocol_version),
        cipher_suites: ciphers(tls.cipher_suites.as_deref().unwrap_or_default()),
        ecdh_curves: list(&tls.ecdh_curves),
        insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
    }
}
