//! Headers added by `tailscale serve` in HTTP proxy mode.
//!
//! `tailscale serve` strips any client-sent `Tailscale-User-*` headers and sets
//! `Tailscale-User-Login` / `Tailscale-User-Name` for user-owned nodes only (none for tagged
//! nodes). Non-ASCII names are RFC 2047 Q-encoded (`=?utf-8?q?...?=`). These headers are only
//! meaningful on a connection from loopback, and only when the operator switched the source on:
//! the server enforces that; this module only decodes.

use crate::{IdentitySource, Principal};

pub const LOGIN_HEADER: &str = "tailscale-user-login";
pub const NAME_HEADER: &str = "tailscale-user-name";

/// Build the principal for a request proxied by `tailscale serve` from a user-owned node.
pub fn principal_from_headers(login: &str, name: Option<&str>) -> Option<Principal> {
    let login = decode_rfc2047(login.trim());
    if login.is_empty() || login.chars().any(char::is_control) {
        return None;
    }
    Some(Principal {
        source: IdentitySource::ServeHeaders,
        display_name: name.map(decode_rfc2047).filter(|n| !n.is_empty()),
        login: Some(login),
        ..Principal::loopback()
    })
}

/// Decode an RFC 2047 `=?utf-8?q?...?=` encoded word (the only form tailscale emits). Anything
/// else is returned unchanged.
pub fn decode_rfc2047(value: &str) -> String {
    let Some(inner) = value.strip_prefix("=?").and_then(|v| v.strip_suffix("?=")) else {
        return value.to_owned();
    };
    let mut parts = inner.splitn(3, '?');
    let (Some(charset), Some(enc), Some(text)) = (parts.next(), parts.next(), parts.next()) else {
        return value.to_owned();
    };
    if !charset.eq_ignore_ascii_case("utf-8") || !enc.eq_ignore_ascii_case("q") {
        return value.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => {
                out.push(b' ');
                i += 1;
            }
            b'=' => match (hex_val(bytes.get(i + 1)), hex_val(bytes.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'=');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_owned())
}

fn hex_val(b: Option<&u8>) -> Option<u8> {
    let b = *b?;
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_q_words() {
        assert_eq!(decode_rfc2047("Alice Example"), "Alice Example");
        assert_eq!(decode_rfc2047("=?utf-8?q?Ren=C3=A9e_Z?="), "Renée Z");
        assert_eq!(decode_rfc2047("=?utf-8?q?bad=ZZ?="), "bad=ZZ");
        assert_eq!(decode_rfc2047("=?utf-8?q?end=?="), "end=");
        assert_eq!(decode_rfc2047("=?iso-8859-1?q?x?="), "=?iso-8859-1?q?x?=");
    }

    #[test]
    fn builds_principal() {
        let p =
            principal_from_headers("alice@example.com", Some("=?utf-8?q?Al=C3=AFce?=")).unwrap();
        assert_eq!(p.login.as_deref(), Some("alice@example.com"));
        assert_eq!(p.display_name.as_deref(), Some("Alïce"));
        assert_eq!(p.source, IdentitySource::ServeHeaders);
        assert!(principal_from_headers("  ", None).is_none());
        assert!(principal_from_headers("a\u{7}b", None).is_none());
    }
}
