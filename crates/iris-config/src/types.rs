//! The validated configuration. Every value here has passed validation; consumers never re-check.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Providers in file order.
    pub providers: Vec<Provider>,
    /// Grants from `grants` (in order), then those converted from legacy `temp_grants`.
    pub grants: Vec<Grant>,
    /// iris's own settings (the `"iris"` section).
    pub iris: IrisSettings,
    /// Aperture's `database` section.
    pub database: DatabaseSettings,
    /// Aperture's `auto_cost_basis` (default true): infer a provider's cost basis from its
    /// compatibility flags when `cost_basis` is not set.
    pub auto_cost_basis: bool,
}

/// Aperture's `database` section: `retention.duration` (`"30d"`, `"720h"`, `""` = keep forever,
/// `"0"` = keep nothing) and `retention.purge` (what is purged; usage metrics are always kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseSettings {
    pub retention_duration: String,
    /// `captures` (default) and/or `tools`.
    pub purge: Vec<String>,
}

/// One `model_cost_map` rule: price models matching `pattern` as `as_model`, times `adjustment`.
#[derive(Debug, Clone, PartialEq)]
pub struct CostRule {
    pub pattern: String,
    pub as_model: String,
    pub adjustment: f64,
}

impl Config {
    /// The provider with this id.
    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.id == id)
    }
}

/// One upstream provider (`providers.<id>`).
#[derive(Debug, Clone)]
pub struct Provider {
    /// The key under `providers`: `[A-Za-z0-9._-]+`.
    pub id: String,
    /// Display name; empty when not configured.
    pub name: String,
    /// Display description; empty when not configured.
    pub description: String,
    /// `scheme://host[:port][/path]` without a trailing `/` and without a trailing `/v1`: iris
    /// appends the full API path (`/v1/messages`), so a configured `/v1` would double up.
    pub baseurl: String,
    /// The provider credential; `None` when absent, empty after substitution, or a `keyfile::`
    /// (not supported yet).
    pub apikey: Option<Secret>,
    /// How the credential is sent.
    pub authorization: AuthScheme,
    /// Whether iris injects its key or forwards the client's (`auth_mode`).
    pub auth_mode: AuthMode,
    /// Model ids this provider serves, in file order, without duplicates.
    pub models: Vec<String>,
    pub compatibility: Compatibility,
    /// A disabled provider is not routed to and not listed.
    pub disabled: bool,
    /// Extra headers sent upstream, `(name, value)` in file order. Names are HTTP tokens; values
    /// contain no CR, LF or NUL.
    pub add_headers: Vec<(String, String)>,
    /// When several providers serve a model, the highest preference wins.
    pub preference: i64,
    /// `cost_basis` as written (`anthropic`, `openai`, ...); `None` = inferred.
    pub cost_basis: Option<String>,
    /// `model_cost_map` rules, first match wins.
    pub model_cost_map: Vec<CostRule>,
}

/// How the provider credential is sent upstream (`authorization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AuthScheme {
    /// `Authorization: Bearer <key>` (`"bearer"`, the default).
    #[default]
    Bearer,
    /// `x-api-key: <key>` (`"x-api-key"`, Anthropic).
    XApiKey,
    /// `x-goog-api-key: <key>` (`"x-goog-api-key"`, Gemini).
    XGoogApiKey,
}

impl AuthScheme {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthScheme::Bearer => "bearer",
            AuthScheme::XApiKey => "x-api-key",
            AuthScheme::XGoogApiKey => "x-goog-api-key",
        }
    }

    /// The lower-case HTTP header that carries the credential.
    pub fn header_name(self) -> &'static str {
        match self {
            AuthScheme::Bearer => "authorization",
            AuthScheme::XApiKey => "x-api-key",
            AuthScheme::XGoogApiKey => "x-goog-api-key",
        }
    }
}

/// Which credential goes upstream (`auth_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AuthMode {
    /// `""` or `"override"` (default): replace the client's credential with the configured key.
    #[default]
    Override,
    /// `"passthrough"`: forward the client's own credential; use the configured key when the
    /// client sent none.
    Passthrough,
    /// `"none"`: send no credential at all.
    None,
}

/// Which API dialects a provider speaks (`compatibility`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Compatibility {
    /// True by default, unless another flag is set to true and `openai_chat` is not listed.
    pub openai_chat: bool,
    pub openai_responses: bool,
    pub anthropic_messages: bool,
    pub gemini_generate_content: bool,
    /// Vertex Gemini.
    pub google_generate_content: bool,
    /// Vertex Anthropic.
    pub google_raw_predict: bool,
    pub bedrock_model_invoke: bool,
    pub bedrock_converse: bool,
    pub experimental_gemini_cli_vertex_compat: bool,
}

impl Default for Compatibility {
    /// No `compatibility` block: OpenAI chat only.
    fn default() -> Self {
        Compatibility {
            openai_chat: true,
            openai_responses: false,
            anthropic_messages: false,
            gemini_generate_content: false,
            google_generate_content: false,
            google_raw_predict: false,
            bedrock_model_invoke: false,
            bedrock_converse: false,
            experimental_gemini_cli_vertex_compat: false,
        }
    }
}

impl Compatibility {
    /// True when at least one flag is set.
    pub fn any(&self) -> bool {
        let Compatibility {
            openai_chat,
            openai_responses,
            anthropic_messages,
            gemini_generate_content,
            google_generate_content,
            google_raw_predict,
            bedrock_model_invoke,
            bedrock_converse,
            experimental_gemini_cli_vertex_compat,
        } = *self;
        openai_chat
            || openai_responses
            || anthropic_messages
            || gemini_generate_content
            || google_generate_content
            || google_raw_predict
            || bedrock_model_invoke
            || bedrock_converse
            || experimental_gemini_cli_vertex_compat
    }
}

/// A secret string (a provider API key). `Debug` and `Display` print `[redacted]`; the only way to
/// read it is [`Secret::expose`], so a key never lands in a log line by accident.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(SecretString::from(value.into()))
    }

    /// The secret value. Call this only where the value is sent upstream.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// An Aperture role. `Admin` includes everything `User` may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// One element of `app["tailscale.com/cap/aperture"]`: what iris uses of an Aperture capability.
/// Other Aperture cap fields (quotas, send_hooks, add_headers, enable_chat_ui, read_metrics,
/// set_cors, cors_paths, mcp_*, connectors) are accepted and ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cap {
    pub role: Option<Role>,
    /// A glob over `provider/model`: `*` matches within one `/` segment, `**` across segments.
    /// Already checked to compile with [`crate::compile_model_pattern`].
    pub models: Option<String>,
}

/// Where a grant came from in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantOrigin {
    /// `grants[index]`.
    Grants { index: usize },
    /// `temp_grants[index]` (legacy format, converted).
    TempGrants { index: usize },
}

/// One grant: who (`src`) gets which capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `"*"`, a login name, `group:x`, `tag:x`, `tag:a,tag:b` or `(loopback)`; never empty.
    pub src: Vec<String>,
    pub caps: Vec<Cap>,
    pub origin: GrantOrigin,
}

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4747";

/// iris's own settings: the `"iris"` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrisSettings {
    /// `iris.listen`, default [`DEFAULT_LISTEN`].
    pub listen: SocketAddr,
    /// `iris.data_dir`; `None` lets the binary choose.
    pub data_dir: Option<PathBuf>,
    pub identity: IdentitySettings,
    /// `iris.limits.max_body_bytes`: the largest request body iris accepts. Default 32 MiB.
    pub max_body_bytes: usize,
    /// `iris.limits.max_connections`: client connections served at once; more wait in the
    /// listen backlog. Default 10000.
    pub max_connections: usize,
    /// `iris.limits.key_failures_per_minute`: failed iris-key attempts one client address may make
    /// per minute before it gets 429. Default 30.
    pub key_failures_per_minute: usize,
    pub timeouts: Timeouts,
    pub usage: UsageSettings,
    pub captures: CaptureSettings,
    /// `iris.browser_hosts`: more host names (besides IP literals, `localhost`, single-label
    /// names and `*.ts.net`) under which browsers may use the dashboard and the API, e.g. a
    /// reverse proxy's `ai.example.com`. Lowercase, without port. Default none.
    pub browser_hosts: Vec<String>,
}

/// `iris.captures`: what is stored of each request and response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSettings {
    /// Store captures at all. Default true.
    pub enabled: bool,
    /// Per body (request, response), after decompression. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Raw SSE events kept beside the reassembled answer. Default 4 MiB.
    pub max_raw_events_bytes: usize,
    /// Response bytes that all requests in flight together may hold for their captures until
    /// their exchange is processed; beyond it, captures are stored truncated. Bounds memory
    /// however many streams are open. Default 64 MiB.
    pub max_in_flight_bytes: usize,
    /// More header names whose values are redacted (beyond the built-in credential headers).
    pub redact_headers: Vec<String>,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        CaptureSettings {
            enabled: true,
            max_body_bytes: 1 << 20,
            max_raw_events_bytes: 4 << 20,
            max_in_flight_bytes: 64 << 20,
            redact_headers: Vec::new(),
        }
    }
}

impl Default for IrisSettings {
    fn default() -> Self {
        IrisSettings {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 4747)),
            data_dir: None,
            identity: IdentitySettings::default(),
            max_body_bytes: 32 * 1024 * 1024,
            max_connections: 10_000,
            key_failures_per_minute: 30,
            timeouts: Timeouts::default(),
            usage: UsageSettings::default(),
            captures: CaptureSettings::default(),
            browser_hosts: Vec::new(),
        }
    }
}

/// `iris.identity`: which ways of telling who is calling are enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySettings {
    /// Ask the local tailscaled who owns the peer address. Default true.
    pub whois: bool,
    /// The tailscaled LocalAPI socket; `None` means the platform default.
    pub tailscale_socket: Option<PathBuf>,
    /// Trust `Tailscale-User-*` headers set by `tailscale serve`. Default false.
    pub serve_headers: bool,
    /// Accept iris-issued keys. Default true.
    pub keys: bool,
    /// Treat connections from loopback addresses as `(loopback)`. Default true.
    pub loopback: bool,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            whois: true,
            tailscale_socket: None,
            serve_headers: false,
            keys: true,
            loopback: true,
        }
    }
}

/// `iris.timeouts` for upstream requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting to the provider. Default 10s.
    pub connect: Duration,
    /// From sending the request to the first response byte. Default 300s.
    pub first_byte: Duration,
    /// Longest silence inside a streaming response. Default 300s.
    pub idle: Duration,
    /// A client's time to send its request headers. Default 30s.
    pub client_header: Duration,
    /// A client's time to send its whole request body. Default 60s.
    pub request_body: Duration,
    /// On shutdown, how long requests in flight may take to finish. Default 30s.
    pub shutdown_drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(300),
            idle: Duration::from_secs(300),
            client_header: Duration::from_secs(30),
            request_body: Duration::from_secs(60),
            shutdown_drain: Duration::from_secs(30),
        }
    }
}

/// `iris.usage`: the batched usage writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSettings {
    /// How often queued records are written. Default 1s.
    pub flush_interval: Duration,
    /// Records that may wait in memory before back-pressure. Default 65536.
    pub queue_capacity: usize,
    /// Largest write batch. Default 1000.
    pub batch_size: usize,
}

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            flush_interval: Duration::from_secs(1),
            queue_capacity: 65536,
            batch_size: 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("sk-ant-very-secret");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some([redacted])");
        assert_eq!(s.expose(), "sk-ant-very-secret");
    }

    #[test]
    fn default_listen_matches_constant() {
        assert_eq!(
            IrisSettings::default().listen,
            DEFAULT_LISTEN.parse::<SocketAddr>().unwrap()
        );
    }
}
