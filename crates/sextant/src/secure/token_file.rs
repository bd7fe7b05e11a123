//! Service-account tokens without a cluster: in directory mode there is no API server to ask
//! (TokenReview), so `serve --token-file` names the tokens callers may present. One token a
//! line: `TOKEN NAMESPACE/SERVICE_ACCOUNT [AUDIENCE,...]`; without audiences a token is valid
//! for any. Blank lines and lines starting with `#` are skipped.

use std::{collections::HashMap, path::Path};

use anyhow::Context;

/// The tokens of a token file.
#[derive(Debug, Default)]
pub struct TokenFile {
    tokens: HashMap<String, Entry>,
}

#[derive(Debug)]
struct Entry {
    namespace: String,
    service_account: String,
    /// Empty: any audience.
    audiences: Vec<String>,
}

impl TokenFile {
    /// Reads `path`; a malformed line is an error naming it.
    pub fn read(path: &Path) -> anyhow::Result<TokenFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        TokenFile::parse(&text).with_context(|| format!("the token file {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<TokenFile> {
        let mut tokens = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (token, account, audiences) = match fields.as_slice() {
                [t, a] => (*t, *a, ""),
                [t, a, aud] => (*t, *a, *aud),
                _ => anyhow::bail!(
                    "line {}: expected `TOKEN NAMESPACE/SERVICE_ACCOUNT [AUDIENCE,...]`",
                    n + 1
                ),
            };
            let Some((namespace, service_account)) = account
                .split_once('/')
                .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains('/'))
            else {
                anyhow::bail!(
                    "line {}: {account:?} is not NAMESPACE/SERVICE_ACCOUNT",
                    n + 1
                );
            };
            let entry = Entry {
                namespace: namespace.to_owned(),
                service_account: service_account.to_owned(),
                audiences: audiences
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect(),
            };
            if tokens.insert(token.to_owned(), entry).is_some() {
                anyhow::bail!("line {}: a token given twice", n + 1);
            }
        }
        Ok(TokenFile { tokens })
    }

    /// Whose `token` is, for one of `audiences`: its namespace and service account, or why
    /// it is refused.
    pub fn review(&self, token: &str, audiences: &[String]) -> Result<(String, String), String> {
        let entry = self
            .tokens
            .get(token)
            .ok_or_else(|| "the token was not accepted: it is not in the token file".to_owned())?;
        if !entry.audiences.is_empty() && !audiences.iter().any(|a| entry.audiences.contains(a)) {
            return Err(format!(
                "the token is not for audience {}",
                audiences.join(" or ")
            ));
        }
        Ok((entry.namespace.clone(), entry.service_account.clone()))
    }

    /// How many tokens the file holds.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the file holds no token.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_account_and_audiences() {
        let file = TokenFile::parse(
            "# comment\n\nabc default/reviews istio-ca,other\nxyz ns/any\nold ns/old kubernetes\n",
        )
        .expect("valid");
        let aud = vec!["istio-ca".to_owned()];
        assert_eq!(file.len(), 3);
        assert_eq!(
            file.review("abc", &aud),
            Ok(("default".into(), "reviews".into()))
        );
        assert_eq!(file.review("xyz", &aud), Ok(("ns".into(), "any".into())));
        assert!(
            file.review("old", &aud)
                .expect_err("refused")
                .contains("not for audience istio-ca")
        );
        assert!(
            file.review("nope", &aud)
                .expect_err("refused")
                .contains("not in the token file")
        );
        for bad in ["a", "a b", "a b/ c", "a /b", "a b/c d e", "a b/c\na d/e"] {
            assert!(TokenFile::parse(bad).is_err(), "{bad:?}");
        }
    }
}
