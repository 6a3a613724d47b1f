//! iris key parsing (`iris_identity::keys`): finding a key among the credential headers
//! (`Authorization: Bearer …`, `x-api-key`), its shape check, hashing, and the `--for` subject of
//! `iris keys create`. Input: up to three `\n`-separated values: Authorization, x-api-key,
//! subject (bytes read as UTF-8, lossily).
//!
//! Properties: a found key carries the prefix and is a slice of one of the header values (never
//! built or altered); only the `Bearer` scheme is read from Authorization; a well-formed key is
//! exactly `iris_sk_` + 43 URL-safe base64 characters; its hash is 64 lowercase hex digits and
//! compares equal only to itself; a parsed subject is one login or a sorted set of `tag:` names.
#![no_main]

use iris_identity::keys::{
    KEY_PREFIX, find_key, hash_token, hashes_equal, is_iris_key, parse_subject, well_formed,
};
use libfuzzer_sys::fuzz_target;

fn within(part: &str, whole: &str) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let authorization = parts.next();
    let x_api_key = parts.next();
    let subject = parts.next();

    if let Some(key) = find_key(authorization, x_api_key) {
        assert!(is_iris_key(key) && key.starts_with(KEY_PREFIX));
        assert_eq!(key, key.trim());
        let from_auth = authorization.is_some_and(|a| {
            within(key, a)
                && a.trim()
                    .split_once(' ')
                    .is_some_and(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        });
        let from_x = x_api_key.is_some_and(|x| within(key, x));
        assert!(
            from_auth || from_x,
            "key {key:?} is not from a header it may come from"
        );
        let h = hash_token(key);
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert!(hashes_equal(&h, &hash_token(key)));
        if well_formed(key) {
            assert_eq!(key.len(), KEY_PREFIX.len() + 43);
            assert!(
                key[KEY_PREFIX.len()..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
        let mut other = key.to_owned();
        other.push('x');
        assert!(!hashes_equal(&h, &hash_token(&other)));
    }
    for v in [authorization, x_api_key].into_iter().flatten() {
        if well_formed(v) {
            assert!(is_iris_key(v));
        }
    }

    if let Some(s) = subject {
        match parse_subject(s) {
            Ok((Some(login), tags)) => {
                assert!(tags.is_empty());
                assert!(!login.is_empty());
                assert!(!login.chars().any(|c| c.is_whitespace() || c.is_control()));
                assert!(!login.contains(',') && !login.starts_with("tag:"));
            }
            Ok((None, tags)) => {
                assert!(!tags.is_empty(), "a subject with neither login nor tags");
                assert!(tags.windows(2).all(|w| w[0] < w[1]));
                assert!(tags.iter().all(|t| t.starts_with("tag:")
                    && t.len() > 4
                    && !t.contains(char::is_whitespace)));
            }
            Err(msg) => assert!(!msg.is_empty()),
        }
    }
});
