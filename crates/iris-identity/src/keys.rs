//! iris-issued keys: format, generation and hashing at rest.
//!
//! A key is `iris_sk_` followed by 43 characters of URL-safe base64 (32 random bytes). Only the
//! SHA-256 of the whole token is stored; since tokens carry 256 bits of entropy a plain hash is
//! enough (no salt or slow hash is needed: there is nothing to brute-force). The lookup is by
//! hash, so the comparison of secrets never happens byte by byte on the request path; where two
//! hashes are compared, [`hashes_equal`] does it in constant time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The prefix every iris key starts with. Anything else in a credential header is ignored.
pub const KEY_PREFIX: &str = "iris_sk_";
const TOKEN_BODY_LEN: usize = 43;

/// A freshly generated key: the token (shown once) and what is stored.
#[derive(Clone)]
pub struct NewKey {
    pub token: String,
    pub token_hash: String,
    pub id: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.id)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// Generate a new random key.
pub fn generate() -> NewKey {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let mut id_bytes = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut id_bytes);
    NewKey {
        token_hash: hash_token(&token),
        token,
        id: format!("key_{}", hex::encode(id_bytes)),
    }
}

/// The hex SHA-256 of a token, as stored.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time comparison of two hex hashes.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Whether a credential value is meant to be an iris key (has the prefix). A value with the prefix
/// but the wrong shape is still "meant to be" one: it is refused, not ignored.
pub fn is_iris_key(value: &str) -> bool {
    value.starts_with(KEY_PREFIX)
}

/// Whether a token has the exact shape of a generated key.
pub fn well_formed(token: &str) -> bool {
    token.strip_prefix(KEY_PREFIX).is_some_and(|body| {
        body.len() == TOKEN_BODY_LEN
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Find an iris key among the credential headers a client sent: `Authorization: Bearer <key>` or
/// `x-api-key: <key>`. Values without the iris prefix are placeholders and are ignored.
pub fn find_key<'a>(authorization: Option<&'a str>, x_api_key: Option<&'a str>) -> Option<&'a str> {
    let bearer = authorization.and_then(|v| {
        let v = v.trim();
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    [bearer, x_api_key.map(str::trim)]
        .into_iter()
        .flatten()
        .find(|v| is_iris_key(v))
}

/// Parse a `--for` subject: a login, or `tag:` names separated by commas.
pub fn parse_subject(subject: &str) -> Result<(Option<String>, Vec<String>), String> {
    let s = subject.trim();
    if s.is_empty() {
        return Err("the key's subject is empty: give a login name or tag:NAME".into());
    }
    if s.starts_with("tag:") {
        let tags: Vec<String> = s.split(',').map(|t| t.trim().to_owned()).collect();
        if let Some(bad) = tags
            .iter()
            .find(|t| !t.starts_with("tag:") || t.len() <= 4 || t.contains(char::is_whitespace))
        {
            return Err(format!("{bad:?} is not a tag (tags look like tag:ci)"));
        }
        return Ok((None, crate::normalize_tags(tags)));
    }
    if s.starts_with("group:") || s == "*" || s == "(loopback)" || s.contains(',') {
        return Err(format!(
            "{s:?} cannot hold a key: give one login name (alice@example.com) or tag:NAME"
        ));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?} is not a login name"));
    }
    Ok((Some(s.to_owned()), Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_unique() {
        let a = generate();
        let b = generate();
        assert!(well_formed(&a.token), "{}", a.token);
        assert_ne!(a.token, b.token);
        assert_ne!(a.id, b.id);
        assert_eq!(a.token_hash, hash_token(&a.token));
        assert_eq!(a.token_hash.len(), 64);
        assert!(!format!("{a:?}").contains(&a.token));
    }

    #[test]
    fn finds_keys_only_with_prefix() {
        let k = "iris_sk_abc";
        assert_eq!(find_key(Some("Bearer iris_sk_abc"), None), Some(k));
        assert_eq!(find_key(Some("bearer   iris_sk_abc "), None), Some(k));
        assert_eq!(find_key(None, Some("iris_sk_abc")), Some(k));
        assert_eq!(
            find_key(Some("Bearer not-needed"), Some("iris_sk_abc")),
            Some(k)
        );
        assert_eq!(find_key(Some("Bearer sk-ant-xyz"), Some("-")), None);
        assert_eq!(find_key(Some("Basic iris_sk_abc"), None), None);
        assert_eq!(find_key(None, None), None);
    }

    #[test]
    fn hash_compare() {
        let h = hash_token("x");
        assert!(hashes_equal(&h, &hash_token("x")));
        assert!(!hashes_equal(&h, &hash_token("y")));
        assert!(!hashes_equal(&h, "short"));
    }

    #[test]
    fn subjects() {
        assert_eq!(
            parse_subject("alice@example.com").unwrap(),
            (Some("alice@example.com".into()), vec![])
        );
        assert_eq!(
            parse_subject("tag:prod,tag:ci").unwrap(),
            (None, vec!["tag:ci".into(), "tag:prod".into()])
        );
        for bad in ["", "group:x", "*", "(loopback)", "tag:", "tag:a,bob", "a b"] {
            assert!(parse_subject(bad).is_err(), "{bad}");
        }
    }
}
