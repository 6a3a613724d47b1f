//! `tailscale serve` header decoding (`iris_identity::serve`): `Tailscale-User-Login` and
//! `Tailscale-User-Name`, RFC 2047 Q-encoded when not ASCII. Input: the login header value, then
//! optionally a `\n` and the name header value (bytes read as UTF-8, lossily: header values
//! reach the decoder as `&str`).
//!
//! Properties: a principal built from the headers has a non-empty login without control
//! characters, source `serve_headers`, and no tags; a value that is not an encoded word comes out
//! of the decoder unchanged.
#![no_main]

use iris_identity::IdentitySource;
use iris_identity::serve::{decode_rfc2047, principal_from_headers};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (login, name) = match text.split_once('\n') {
        Some((l, n)) => (l, Some(n)),
        None => (text.as_ref(), None),
    };
    for v in [Some(login), name].into_iter().flatten() {
        let decoded = decode_rfc2047(v);
        if !(v.starts_with("=?") && v.ends_with("?=")) {
            assert_eq!(decoded, v, "a plain value was changed");
        }
    }
    if let Some(p) = principal_from_headers(login, name) {
        assert_eq!(p.source, IdentitySource::ServeHeaders);
        let l = p.login.as_deref().unwrap_or_default();
        assert!(!l.is_empty(), "empty login accepted");
        assert!(
            !l.chars().any(char::is_control),
            "control character in login {l:?}"
        );
        assert!(p.tags.is_empty() && p.groups.is_empty() && p.key_id.is_none());
        assert!(p.display_name.as_deref() != Some(""));
    }
});
