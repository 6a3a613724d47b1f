//! `iris-mock-provider`: the mock OpenAI/Anthropic provider as a process, for the end-to-end
//! suite and the load harness. Prints exactly one line, `listening: http://IP:PORT`, once ready,
//! and runs until SIGTERM or SIGINT.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use iris_testkit::{MockOptions, MockProvider};

#[derive(Debug, Parser)]
#[command(about = "Mock OpenAI/Anthropic provider for iris tests and benchmarks")]
struct Args {
    /// Loopback address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Default content chunks per reply (= output tokens); `x-mock-chunks` overrides.
    #[arg(long, default_value_t = 5)]
    chunks: usize,
    /// Pad each chunk's text to this many bytes (0 = no padding); `x-mock-chunk-size` overrides.
    #[arg(long, default_value_t = 0)]
    chunk_size: usize,
    /// Default delay before the response head; `x-mock-latency-ms` overrides.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Default delay before each streamed content chunk; `x-mock-chunk-delay-ms` overrides.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Do not record requests (for load tests).
    #[arg(long)]
    no_record: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let options = MockOptions {
        chunks: args.chunks.max(1),
        chunk_size: args.chunk_size,
        latency_ms: args.latency_ms,
        chunk_delay_ms: args.chunk_delay_ms,
        record: !args.no_record,
    };
    let mock = MockProvider::try_start(options, args.listen).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening: {}", mock.url())?;
        out.flush()?;
    }
    wait_for_signal().await?;
    drop(mock);
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
