//! # iris-identity: who is calling
//!
//! Layout: [`Principal`] is the resolved caller; [`whois`] is the client for tailscaled's LocalAPI
//! (`/localapi/v0/whois`) and the decoder of its answer; [`serve`] reads the headers that
//! `tailscale serve` adds; [`keys`] is the format and hashing of iris-issued keys.
//!
//! This crate owns the *facts* about a caller. It never decides what a caller may do (that is
//! `iris-policy`), never touches the store (key lookup is done by the server through the store
//! trait, with the hash computed here), and never trusts a header on its own: which source is
//! consulted from which connection is the server's resolution order, documented in ARCHITECTURE.md.

pub mod keys;
pub mod serve;
pub mod whois;

use serde::Serialize;

/// Where a principal's identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySource {
    /// tailscaled's WhoIs on the peer address (or on the forwarded address behind `tailscale serve`).
    Whois,
    /// `Tailscale-User-Login` set by `tailscale serve` on a trusted loopback connection.
    ServeHeaders,
    /// An iris-issued key.
    Key,
    /// A direct connection from the gateway's own host with no other identity.
    Loopback,
    /// The break-glass admin socket in the data directory (only the owning OS user can open it).
    LocalAdmin,
}

impl IdentitySource {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentitySource::Whois => "whois",
            IdentitySource::ServeHeaders => "serve_headers",
            IdentitySource::Key => "key",
            IdentitySource::Loopback => "loopback",
            IdentitySource::LocalAdmin => "local_admin",
        }
    }
}

/// The resolved caller of one request.
///
/// Invariant: a tagged node has `tags` non-empty and `login == None` — the synthetic
/// `tagged-devices` login that tailscaled reports for tagged nodes is never an identity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Principal {
    pub source: IdentitySource,
    /// The user's login name (`alice@example.com`); `None` for tagged nodes and `(loopback)`.
    pub login: Option<String>,
    pub display_name: Option<String>,
    /// Sorted, deduplicated `tag:x` names of a tagged node (or of a key issued for tags).
    pub tags: Vec<String>,
    /// Groups reported by WhoIs (`group:x`), only when the tailnet makes them visible.
    pub groups: Vec<String>,
    pub node_name: Option<String>,
    pub node_id: Option<String>,
    /// Raw values of the `tailscale.com/cap/aperture` capability from the tailnet policy (WhoIs
    /// CapMap). Interpreted by the policy crate.
    pub cap_grants: Vec<serde_json::Value>,
    /// The iris key id when the identity came from a key.
    pub key_id: Option<String>,
}

/// The capability name Aperture uses in grants and in the tailnet policy file.
pub const APERTURE_CAP: &str = "tailscale.com/cap/aperture";

impl Principal {
    /// The `(loopback)` principal: a process on the gateway's own host.
    pub fn loopback() -> Principal {
        Principal {
            source: IdentitySource::Loopback,
            login: None,
            display_name: None,
            tags: Vec::new(),
            groups: Vec::new(),
            node_name: None,
            node_id: None,
            cap_grants: Vec::new(),
            key_id: None,
        }
    }

    /// A principal for an iris key issued for `subject`: a login, or one or more `tag:` names
    /// (comma-separated).
    pub fn for_key(key_id: &str, login: Option<&str>, tags: &[String]) -> Principal {
        Principal {
            source: IdentitySource::Key,
            login: login.map(str::to_owned),
            tags: normalize_tags(tags.iter().cloned()),
            key_id: Some(key_id.to_owned()),
            ..Principal::loopback()
        }
    }

    /// The break-glass admin: the OS user that runs iris, on its local admin socket.
    pub fn local_admin() -> Principal {
        Principal {
            source: IdentitySource::LocalAdmin,
            ..Principal::loopback()
        }
    }

    pub fn is_loopback(&self) -> bool {
        self.source == IdentitySource::Loopback
    }

    /// A short human label: the login, the joined tags, or `(loopback)`.
    pub fn label(&self) -> String {
        if let Some(login) = &self.login {
            login.clone()
        } else if !self.tags.is_empty() {
            self.tags.join(",")
        } else if self.is_loopback() {
            "(loopback)".to_owned()
        } else if self.source == IdentitySource::LocalAdmin {
            "(local-admin)".to_owned()
        } else {
            "(unknown)".to_owned()
        }
    }
}

/// Sort and deduplicate tag names, dropping empty ones.
pub fn normalize_tags(tags: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = tags
        .into_iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(Principal::loopback().label(), "(loopback)");
        let k = Principal::for_key("key_1", None, &["tag:prod".into(), "tag:ci".into()]);
        assert_eq!(k.tags, vec!["tag:ci", "tag:prod"]);
        assert_eq!(k.label(), "tag:ci,tag:prod");
        let u = Principal::for_key("key_2", Some("a@b.c"), &[]);
        assert_eq!(u.label(), "a@b.c");
        assert_eq!(u.source.as_str(), "key");
    }
}
