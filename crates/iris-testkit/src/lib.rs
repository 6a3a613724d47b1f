//! iris-testkit: the stand-ins iris is tested and benchmarked against.
//!
//! Layout:
//! - [`mock`]: [`mock::MockProvider`], one HTTP server that speaks the OpenAI (Chat Completions,
//!   Responses, legacy Completions, Embeddings, Models) and Anthropic (Messages, count_tokens,
//!   Models) wire formats, streaming and not, with deterministic text and usage, per-request
//!   knobs (`x-mock-*` headers), fault modes (`x-mock-fault`: resets, stalls, malformed JSON
//!   and SSE, oversized and byte-at-a-time answers) and a bounded in-memory record of every
//!   request it saw.
//! - [`tailscaled`]: [`tailscaled::FakeTailscaled`], an HTTP/1.1 server on a unix socket that
//!   answers the LocalAPI `GET /localapi/v0/whois` like tailscaled does, from JSON fixtures
//!   (`fixtures/whois.json` is the standard set), and counts the lookups.
//! - `server` (private): the fake tailscaled's accept loop and the HTTP helpers both servers
//!   share; the mock's own accept loop (`mock::conn`) adds the connection-level faults.
//! - Two binaries wrap them for the end-to-end suite and the load harness:
//!   `iris-mock-provider` and `iris-fake-tailscaled`; each prints one `listening: ...` line.
//!
//! This crate is for tests and benchmarks only: nothing in the gateway may depend on it outside
//! `[dev-dependencies]`. It must never listen on or connect to anything but loopback and unix
//! sockets, and it never logs request contents at info level (it is a benchmark target).

pub mod mock;
mod server;
pub mod tailscaled;

pub use mock::{MockOptions, MockProvider, MockUsage, RecordedRequest};
pub use tailscaled::{FakeTailscaled, Fixtures};
