//! Service-account tokens this server issues (TokenRequest) and recognises (TokenReview).
//! They are JWTs with the claims a real API server writes (`iss`, `sub`, `aud`, `exp`, and
//! `kubernetes.io` naming the service account and its UID), signed with HMAC-SHA256 under a
//! key of the server's. With a data directory the key is kept there, so tokens issued before
//! a restart stay valid, as a cluster's signing key does.

use std::path::Path;

use base64::Engine;
use ring::hmac;
use serde_json::{Value, json};

/// The issuer, and what a real API server's `--api-audiences` defaults to.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The audiences a token gets when its request names none, and that a review asking for none
/// checks against.
pub fn api_audiences() -> Vec<String> {
    vec![ISSUER.to_owned()]
}

/// Bytes of the signing key.
const KEY_BYTES: usize = 32;

/// The file in the data directory that holds the key.
const KEY_FILE: &str = "token-signing-key";

/// Signs and verifies this server's tokens.
pub struct Signer {
    key: hmac::Key,
}

/// What a token says: whose it is, for which audiences, and when it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account's name.
    pub service_account: String,
    /// The service account's UID when the token was issued: a service account deleted and
    /// created again under the same name does not inherit the tokens of the first.
    pub uid: String,
    /// Audiences the token is valid for.
    pub audiences: Vec<String>,
    /// Issued at, in seconds since the epoch.
    pub issued: u64,
    /// Expires at, in seconds since the epoch.
    pub expires: u64,
}

impl Claims {
    /// `system:serviceaccount:NAMESPACE:NAME`, the user the token authenticates as.
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
}

impl Signer {
    /// A signer with the key kept in `data_dir` (created there on first use), or with a key
    /// of its own that ends with the process.
    pub fn open(data_dir: Option<&Path>) -> anyhow::Result<Signer> {
        let Some(dir) = data_dir else {
            return Signer::generate();
        };
        let path = dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == KEY_BYTES => Ok(Signer::from_bytes(&bytes)),
            Ok(bytes) => anyhow::bail!(
                "{}: {} bytes, expected {KEY_BYTES}",
                path.display(),
                bytes.len()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = random_key()?;
                std::fs::write(&path, bytes)
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
                Ok(Signer::from_bytes(&bytes))
            }
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        }
    }

    /// A signer with a fresh key.
    pub fn generate() -> anyhow::Result<Signer> {
        Ok(Signer::from_bytes(&random_key()?))
    }

    fn from_bytes(bytes: &[u8]) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// The token for `claims`.
    pub fn issue(&self, claims: &Claims) -> String {
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let body = json!({
            "iss": ISSUER,
            "sub": claims.username(),
            "aud": claims.audiences,
            "iat": claims.issued,
            "nbf": claims.issued,
            "exp": claims.expires,
            "kubernetes.io": {
                "namespace": claims.namespace,
                "serviceaccount": {"name": claims.service_account, "uid": claims.uid},
            },
        });
        let signed = format!("{}.{}", encode(&header), encode(&body));
        let signature = hmac::sign(&self.key, signed.as_bytes());
        format!(
            "{signed}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }

    /// The claims of a token this signer issued, whether or not it has expired; `None` for
    /// any other string.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (signed, signature) = token.rsplit_once('.')?;
        let (_, body) = signed.split_once('.')?;
        hmac::verify(&self.key, signed.as_bytes(), &b64.decode(signature).ok()?).ok()?;
        let body: Value = serde_json::from_slice(&b64.decode(body).ok()?).ok()?;
        let k8s = &body["kubernetes.io"];
        Some(Claims {
            namespace: k8s["namespace"].as_str()?.to_owned(),
            service_account: k8s["serviceaccount"]["name"].as_str()?.to_owned(),
            uid: k8s["serviceaccount"]["uid"].as_str()?.to_owned(),
            audiences: body["aud"]
                .as_array()?
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            issued: body["iat"].as_u64()?,
            expires: body["exp"].as_u64()?,
        })
    }
}

fn encode(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

fn random_key() -> anyhow::Result<[u8; KEY_BYTES]> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; KEY_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no random bytes for the token signing key"))?;
    Ok(bytes)
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            namespace: "istio-system".into(),
            service_account: "reader".into(),
            uid: "u-1".into(),
            audiences: vec!["istio-ca".into()],
            issued: 1_700_000_000,
            expires: 1_700_003_600,
        }
    }

    #[test]
    fn issued_tokens_verify_and_tampered_or_foreign_ones_do_not() {
        let signer = Signer::generate().expect("key");
        let token = signer.issue(&claims());
        assert_eq!(signer.verify(&token), Some(claims()));
        assert_eq!(
            claims().username(),
            "system:serviceaccount:istio-system:reader"
        );

        let other = Signer::generate().expect("key");
        assert_eq!(other.verify(&token), None);
        let (head, rest) = token.split_once('.').expect("a JWT");
        let (_, signature) = rest.split_once('.').expect("a JWT");
        let forged = format!(
            "{head}.{}.{signature}",
            encode(&json!({"kubernetes.io": {"namespace": "kube-system"}}))
        );
        assert_eq!(signer.verify(&forged), None);
        for junk in ["", "a.b", "a.b.c", "t0k3n", "..."] {
            assert_eq!(signer.verify(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn the_key_in_a_data_directory_outlives_the_signer() {
        let dir = std::env::temp_dir().join(format!("sextant-testapi-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let token = Signer::open(Some(&dir)).expect("key").issue(&claims());
        let again = Signer::open(Some(&dir)).expect("key");
        assert_eq!(again.verify(&token), Some(claims()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
