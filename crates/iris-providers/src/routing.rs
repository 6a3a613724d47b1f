//! Which provider serves a requested model, where to send the request, with which credential and
//! which headers.
//!
//! Model names are compared byte for byte: no case folding, no Unicode normalisation, no path
//! resolution. `anthropic/../openai/x` is simply a model nobody lists, and a Cyrillic `о` in
//! `gpt-4о` is not the Latin `o`.

use std::collections::HashSet;

use iris_config::{AuthMode, AuthScheme, Compatibility, Config, Provider};
use serde::Serialize;
use thiserror::Error;

use crate::api::{ApiFamily, serves};
use crate::errors::ErrorKind;

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub provider_id: String,
    /// The model id the provider expects (the bare id from its `models` list).
    pub model: String,
    /// `provider/model`, the name grants match against.
    pub qualified: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteError {
    #[error("model `{0}` does not exist or is not available through this gateway")]
    UnknownModel(String),
    #[error("model `{model}` is not served on the {family} API by any provider")]
    WrongApi { model: String, family: ApiFamily },
}

impl RouteError {
    /// How the server answers this: an unknown model is 404 (as OpenAI and Anthropic answer),
    /// a model on the wrong API is a 400.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RouteError::UnknownModel(_) => ErrorKind::NotFound,
            RouteError::WrongApi { .. } => ErrorKind::BadRequest,
        }
    }
}

/// One line of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelEntry {
    /// The id to request this model by: see [`RouteTable::models`].
    pub id: String,
    pub provider_id: String,
    /// `provider/model`.
    pub qualified: String,
    /// The provider's display name, or its id when it has none.
    pub provider_name: String,
    /// Providers do not tell iris when a model was created: always 0.
    pub created_unix: u64,
}

#[derive(Debug, Clone)]
struct ProviderInfo {
    id: String,
    name: String,
    compatibility: Compatibility,
    models: Vec<String>,
}

/// The routing table, built once per config.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// Enabled providers, in config order.
    providers: Vec<ProviderInfo>,
    /// Model id -> indices into `providers`, best first: highest `preference`, then config order.
    by_model: foldhash::HashMap<String, Vec<usize>>,
    /// Provider id -> index into `providers`.
    by_provider: foldhash::HashMap<String, usize>,
}

impl RouteTable {
    /// Disabled providers are left out entirely: not routed to, not listed.
    pub fn new(cfg: &Config) -> RouteTable {
        let mut providers = Vec::new();
        let mut preference = Vec::new();
        for p in cfg.providers.iter().filter(|p| !p.disabled) {
            providers.push(ProviderInfo {
                id: p.id.clone(),
                name: if p.name.is_empty() {
                    p.id.clone()
                } else {
                    p.name.clone()
                },
                compatibility: p.compatibility,
                models: p.models.clone(),
            });
            preference.push(p.preference);
        }
        let mut by_model: foldhash::HashMap<String, Vec<usize>> = Default::default();
        let mut by_provider: foldhash::HashMap<String, usize> = Default::default();
        for (i, p) in providers.iter().enumerate() {
            by_provider.entry(p.id.clone()).or_insert(i);
            for m in &p.models {
                let list = by_model.entry(m.clone()).or_default();
                if !list.contains(&i) {
                    list.push(i);
                }
            }
        }
        for list in by_model.values_mut() {
            // Stable: equal preference keeps config order.
            list.sort_by_key(|&i| std::cmp::Reverse(preference.get(i).copied().unwrap_or(0)));
        }
        RouteTable {
            providers,
            by_model,
            by_provider,
        }
    }

    /// Resolve a requested model for `family`:
    /// 1. the whole string as a model id listed by some provider that serves `family` (the best
    ///    by preference, then config order) — so a self-hosted `Qwen/Qwen3-8B` works as is;
    /// 2. else `provider/model`: split at the first `/`, the provider must list the model and
    ///    serve `family`.
    ///
    /// When the model exists only on providers that do not serve `family`: `WrongApi`.
    pub fn resolve(&self, requested: &str, family: ApiFamily) -> Result<Route, RouteError> {
        let mut wrong_api = false;
        if let Some(candidates) = self.by_model.get(requested) {
            for &i in candidates {
                if let Some(p) = self.providers.get(i)
                    && serves(&p.compatibility, family)
                {
                    return Ok(route(p, requested));
                }
            }
            wrong_api = true;
        }
        if let Some((provider_id, model)) = requested.split_once('/')
            && let Some(&i) = self.by_provider.get(provider_id)
            && let Some(p) = self.providers.get(i)
            && self.by_model.get(model).is_some_and(|c| c.contains(&i))
        {
            if serves(&p.compatibility, family) {
                return Ok(route(p, model));
            }
            wrong_api = true;
        }
        if wrong_api {
            Err(RouteError::WrongApi {
                model: requested.to_owned(),
                family,
            })
        } else {
            Err(RouteError::UnknownModel(requested.to_owned()))
        }
    }

    /// Every (enabled provider, model) pair once, in config order, each with an id that routes
    /// back to exactly that pair:
    /// - the provider a bare-id request reaches (highest preference, then config order,
    ///   regardless of API family) lists the model under its bare id;
    /// - every other provider listing the same model lists it as `provider/model`, unless that
    ///   string is itself some provider's model id (requesting it would reach that model
    ///   instead), in which case the pair is left out rather than listed under a misleading id.
    ///
    /// So ids are unique and each one, requested back, reaches the provider shown.
    pub fn models(&self) -> Vec<ModelEntry> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            for m in &p.models {
                let qualified = format!("{}/{}", p.id, m);
                let preferred = self
                    .by_model
                    .get(m)
                    .and_then(|c| c.first())
                    .is_some_and(|&best| best == i);
                let id = if preferred {
                    m.clone()
                } else if self.by_model.contains_key(&qualified) {
                    continue;
                } else {
                    qualified.clone()
                };
                if !seen.insert(id.clone()) {
                    continue;
                }
                out.push(ModelEntry {
                    id,
                    provider_id: p.id.clone(),
                    qualified,
                    provider_name: p.name.clone(),
                    created_unix: 0,
                });
            }
        }
        out
    }
}

fn route(p: &ProviderInfo, model: &str) -> Route {
    // Concatenated, not `format!`ed: this runs for every request.
    let mut qualified = String::with_capacity(p.id.len() + 1 + model.len());
    qualified.push_str(&p.id);
    qualified.push('/');
    qualified.push_str(model);
    Route {
        provider_id: p.id.clone(),
        model: model.to_owned(),
        qualified,
    }
}

/// The upstream URL: base URL + the family's path + `?query` when there is a non-empty one.
pub fn upstream_url(p: &Provider, family: ApiFamily, query: Option<&str>) -> String {
    let path = family.upstream_path();
    let mut url =
        String::with_capacity(p.baseurl.len() + path.len() + 1 + query.map_or(0, str::len));
    url.push_str(&p.baseurl);
    url.push_str(path);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// The credential header iris sends upstream: `("authorization", "Bearer KEY")`,
/// `("x-api-key", KEY)` or `("x-goog-api-key", KEY)` by the provider's scheme. `None` when the
/// provider has no key or its `auth_mode` is `none`. With `auth_mode: passthrough` this is the
/// fallback for a client that sent no credential of its own; forwarding the client's is the
/// server's decision.
pub fn auth_header(p: &Provider) -> Option<(&'static str, String)> {
    if p.auth_mode == AuthMode::None {
        return None;
    }
    let key = p.apikey.as_ref()?.expose();
    let value = match p.authorization {
        AuthScheme::Bearer => format!("Bearer {key}"),
        AuthScheme::XApiKey | AuthScheme::XGoogApiKey => key.to_owned(),
    };
    Some((p.authorization.header_name(), value))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction. Headers listed in
/// a `Connection` header are hop-by-hop too; the server drops those by reading it.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "http2-settings"
    ) || name.starts_with("proxy-")
}

/// Whether a client request header (lower-case name) goes upstream.
///
/// Dropped: hop-by-hop; `host` and `content-length` (set for the upstream request); `expect`
/// (the body is already read); every credential (`authorization`, `x-api-key`,
/// `x-goog-api-key`, `api-key`, `cookie`), since iris adds the provider's own; what identifies
/// the caller to iris and must not leak or be spoofed upstream (`tailscale-*`, `x-forwarded-*`,
/// `forwarded`, `x-real-ip`, `x-iris-*`). Everything else passes: `anthropic-version`,
/// `anthropic-beta`, `openai-*`, `user-agent`, `accept`, `accept-encoding`, `content-type`,
/// `x-stainless-*`, session headers.
pub fn forward_request_header(name: &str) -> bool {
    if hop_by_hop(name) {
        return false;
    }
    let dropped = matches!(
        name,
        "host"
            | "content-length"
            | "expect"
            | "authorization"
            | "x-api-key"
            | "x-goog-api-key"
            | "api-key"
            | "cookie"
            | "forwarded"
            | "x-real-ip"
    );
    !dropped
        && !name.starts_with("tailscale-")
        && !name.starts_with("x-forwarded-")
        && !name.starts_with("x-iris-")
}

/// Whether an upstream response header (lower-case name) goes back to the client.
///
/// Dropped: hop-by-hop; `content-length` (the server frames the body it sends); `set-cookie`
/// (the provider's cookies belong to its domain, not iris's); `alt-svc` (would point the client
/// at the provider's HTTP/3 endpoint for iris's host); `strict-transport-security` (the
/// provider's HSTS policy must not pin iris's host). Kept: `content-type`, `content-encoding`,
/// `request-id`, `x-request-id`, `anthropic-*`, `openai-*`, rate-limit headers, `retry-after`.
pub fn forward_response_header(name: &str) -> bool {
    if hop_by_hop(name) {
        return false;
    }
    !matches!(
        name,
        "content-length" | "set-cookie" | "alt-svc" | "strict-transport-security"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_header_policy() {
        for h in [
            "connection",
            "keep-alive",
            "proxy-authorization",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "host",
            "content-length",
            "authorization",
            "x-api-key",
            "x-goog-api-key",
            "api-key",
            "cookie",
            "tailscale-user-login",
            "tailscale-user-name",
            "tailscale-user-profile-pic",
            "tailscale-app-capabilities",
            "x-forwarded-for",
            "x-forwarded-proto",
            "forwarded",
            "x-real-ip",
            "x-iris-key",
        ] {
            assert!(!forward_request_header(h), "{h} must not be forwarded");
        }
        for h in [
            "anthropic-version",
            "anthropic-beta",
            "anthropic-dangerous-direct-browser-access",
            "openai-beta",
            "openai-organization",
            "user-agent",
            "accept",
            "accept-encoding",
            "content-type",
            "x-stainless-lang",
            "x-stainless-retry-count",
            "x-claude-code-session-id",
            "x-app",
            "session-id",
            "originator",
            "x-client-request-id",
        ] {
            assert!(forward_request_header(h), "{h} must be forwarded");
        }
    }

    #[test]
    fn response_header_policy() {
        for h in [
            "connection",
            "transfer-encoding",
            "keep-alive",
            "upgrade",
            "proxy-authenticate",
            "content-length",
            "set-cookie",
            "alt-svc",
            "strict-transport-security",
        ] {
            assert!(!forward_response_header(h), "{h} must not be forwarded");
        }
        for h in [
            "content-type",
            "content-encoding",
            "request-id",
            "x-request-id",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-organization-id",
            "openai-processing-ms",
            "openai-version",
            "x-ratelimit-remaining-tokens",
            "retry-after",
            "cache-control",
        ] {
            assert!(forward_response_header(h), "{h} must be forwarded");
        }
    }
}
