//! # iris-bench: the load harness
//!
//! Owns the performance measurements of the gateway as a whole: a load generator, the baseline
//! passthrough proxy iris is measured against, and the orchestrator that starts every target on
//! loopback, runs the scenarios of the performance issue interleaved and repeated, and writes
//! `docs/benchmarks.md` from what it measured. (Micro-benchmarks of the pure hot code live
//! next to that code, as criterion benches in `iris-providers`, `iris-policy` and `iris-capture`.)
//!
//! Layout:
//! - [`load`]: the load generator (closed loop, open loop without coordinated omission, SSE,
//!   many slow streams) over hyper's HTTP/1.1 client connections.
//! - [`proxy`]: the baseline, a minimal hyper passthrough proxy (binary `iris-bench-proxy`).
//! - [`stack`]: starts mock provider, fake tailscaled, baseline, nginx and iris; the targets.
//! - [`procs`], [`procfs`]: child processes; CPU time and RSS from `/proc`.
//! - [`scenarios`], [`store`]: the scenarios; [`losses`]: what iris dropped in each; [`profile`]: callgrind instruction profiles;
//!   [`micro`]: criterion results read back; [`stats`]: histograms and medians.
//! - [`report`]: the markdown report and the verdicts against the targets.
//!
//! It must never send a byte to anything but loopback addresses and unix sockets, never run an
//! unbounded loop (every loop ends on a count or a deadline), and never be a dependency of the
//! gateway. It measures iris from the outside: it does not link `iris-server`.

pub mod load;
pub mod losses;
pub mod micro;
pub mod procfs;
pub mod procs;
pub mod profile;
pub mod proxy;
pub mod report;
pub mod scenarios;
pub mod stack;
pub mod stats;
pub mod store;

/// Raise the soft limit on open files to the hard limit (the many-streams scenario needs
/// thousands of sockets in this process and in the servers it starts, which inherit the
/// limit). Returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    iris_server::net::raise_nofile_limit().unwrap_or(u64::MAX)
}
