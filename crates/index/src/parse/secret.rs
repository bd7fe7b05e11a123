//! Secrets, read only as the TLS credentials a Gateway can name (`credentialName`), with the
//! keys Istio reads: `tls.crt`+`tls.key` (+`tls.ocsp-staple`, `ca.crt`, `ca.crl`) or
//! `cert`+`key` (+`cacert`, `crl`).
//!
//! Key material never appears in an error, a log line or a `Debug`: errors name the Secret and
//! the key only, and the raw object keeps nothing but the keys above.

use std::{collections::BTreeMap, fmt, sync::Arc};

use base64::Engine;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use sextant_model::{self as model, Kind};

use super::{Invalid, Parsed, Report, object_ref};

/// The keys a credential is read from.
pub const CREDENTIAL_KEYS: [&str; 9] = [
    "tls.crt",
    "tls.key",
    "tls.ocsp-staple",
    "ca.crt",
    "ca.crl",
    "cert",
    "key",
    "cacert",
    "crl",
];

/// Secret types that never hold a gateway credential and can be large (Istio skips them too).
const SKIPPED_TYPES: [&str; 2] = ["helm.sh/release.v1", "kubernetes.io/service-account-token"];

/// A core/v1 Secret as the index reads it: metadata, type, and the credential keys of `data`
/// (still base64) and `stringData`. Other keys are dropped on reading.
#[derive(Clone)]
pub struct Secret {
    /// name, namespace, ...
    pub metadata: ObjectMeta,
    /// `type`.
    pub type_: Option<String>,
    data: BTreeMap<String, String>,
    string_data: BTreeMap<String, String>,
}

impl fmt::Debug for Secret {
    // Names the keys present, never their values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("type", &self.type_)
            .field("data", &self.data.keys().collect::<Vec<_>>())
            .field("string_data", &self.string_data.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Secret {
    /// Reads a Secret object. Errors say which field has the wrong shape, never what it holds.
    pub fn from_json(value: &Value) -> Result<Secret, String> {
        let metadata = serde_json::from_value(value.get("metadata").cloned().unwrap_or_default())
            .map_err(|e| format!("metadata: {e}"))?;
        let type_ = match value.get("type") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => return Err("type: not a string".into()),
        };
        let entries = |field: &str| -> Result<BTreeMap<String, String>, String> {
            let map = match value.get(field) {
                None | Some(Value::Null) => return Ok(BTreeMap::new()),
                Some(Value::Object(map)) => map,
                Some(_) => return Err(format!("{field}: not a map")),
            };
            let mut out = BTreeMap::new();
            for key in CREDENTIAL_KEYS {
                match map.get(key) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(v)) => {
                        out.insert(key.to_owned(), v.clone());
                    }
                    Some(_) => return Err(format!("{field}[{key}]: not a string")),
                }
            }
            Ok(out)
        };
        Ok(Secret {
            metadata,
            type_,
            data: entries("data")?,
            string_data: entries("stringData")?,
        })
    }

    /// The bytes of `key`: `stringData` wins over `data` (as the API server merges them);
    /// `None` when absent or empty.
    fn value(&self, key: &str, r: &mut Report) -> Option<Arc<[u8]>> {
        if let Some(v) = self.string_data.get(key).filter(|v| !v.is_empty()) {
            return Some(Arc::from(v.as_bytes()));
        }
        let encoded = self.data.get(key)?;
        // Go's decoder, which the API server uses, skips line breaks.
        let compact: String = encoded
            .chars()
            .filter(|c| !matches!(c, '\r' | '\n'))
            .collect();
        match base64::engine::general_purpose::STANDARD.decode(compact) {
            Ok(bytes) if bytes.is_empty() => None,
            Ok(bytes) => Some(Arc::from(bytes)),
            Err(_) => {
                r.error(
                    format!("data[{key}]"),
                    format!("the value of key {key:?} is not valid base64"),
                );
                None
            }
        }
    }
}

/// The credential a Secret holds, or `None` when it holds none (no credential keys, or a type
/// that never does): such a Secret is not kept, and that is no error.
pub fn secret(obj: &Secret) -> Result<Parsed<Option<model::Credential>>, Invalid> {
    let id = object_ref(Kind::Secret, &obj.metadata);
    let mut r = Report::default();
    if obj
        .type_
        .as_deref()
        .is_some_and(|t| SKIPPED_TYPES.contains(&t))
    {
        return r.finish(id, None);
    }
    let values: BTreeMap<&str, Arc<[u8]>> = CREDENTIAL_KEYS
        .iter()
        .filter_map(|k| Some((*k, obj.value(k, &mut r)?)))
        .collect();
    let get = |k: &str| values.get(k).cloned();
    let (certificate_chain, private_key, ocsp_staple) =
        match (get("tls.crt"), get("tls.key"), get("cert"), get("key")) {
            (Some(chain), Some(key), ..) => (Some(chain), Some(key), get("tls.ocsp-staple")),
            (.., Some(chain), Some(key)) => (Some(chain), Some(key), None),
            _ => (None, None, None),
        };
    let (ca_certificate, crl) = match (get("ca.crt"), get("cacert")) {
        (Some(ca), _) => (Some(ca), get("ca.crl")),
        (None, Some(ca)) => (Some(ca), get("crl")),
        (None, None) => (None, None),
    };
    let value =
        (certificate_chain.is_some() || ca_certificate.is_some()).then(|| model::Credential {
            id: id.clone(),
            certificate_chain,
            private_key,
            ocsp_staple,
            ca_certificate,
            crl,
        });
    r.finish(id, value)
}
