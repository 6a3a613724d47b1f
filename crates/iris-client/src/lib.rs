//! iris-client: everything iris does from the *client's* side of a gateway.
//!
//! Layout:
//! - [`setup`]: pure generators of client configuration (Claude Code `settings.json`, Codex
//!   `config.toml`, Gemini CLI `.env`, OpenCode `opencode.json`, shell `export` lines) and a
//!   writer that merges them into a user's existing files, keeping everything else as written and
//!   backing the old file up first.
//! - [`unplug`]: `iris unplug`, the ts-unplug use case without Go or a tailnet node: a forwarder on
//!   `127.0.0.1` that sends every request to a gateway with an iris key, streaming both ways.
//! - [`gateway`]: [`gateway::GatewayClient`], the HTTP client behind `iris config`, `iris whoami`,
//!   `iris usage`, `iris logs` and `iris keys`, over TCP (http or https) or the break-glass unix
//!   socket, with errors a person can act on.
//! - `http` (private): the hyper client both of the networked parts share (rustls with webpki
//!   roots, `TCP_NODELAY`), and error-chain helpers.
//!
//! This crate never parses command lines (the `iris` binary does, and calls these functions), never
//! listens on anything but `127.0.0.1`, and never logs, prints or writes an iris key: keys travel
//! only in request headers marked sensitive. Config files it writes reference keys through an
//! environment variable or a key file, never by value.

pub mod gateway;
mod http;
pub mod setup;
pub mod unplug;

pub use gateway::{ClientError, Endpoint, GatewayClient, Whoami};
pub use setup::{MergeKind, Rendered, SetupError, SetupOptions, SetupTarget, WriteReport};
pub use unplug::{UnplugConfig, UnplugError, UnplugReady, UnplugReport, client_lines, run_unplug};
