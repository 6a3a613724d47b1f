//! `iris-fake-tailscaled`: the fake LocalAPI WhoIs server as a process. Prints exactly one
//! line, `listening: PATH`, once the socket accepts connections, and runs until SIGTERM or
//! SIGINT (then removes the socket).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use iris_testkit::{FakeTailscaled, Fixtures};

#[derive(Debug, Parser)]
#[command(about = "Fake tailscaled LocalAPI (WhoIs) on a unix socket, for iris tests")]
struct Args {
    /// Unix socket path to listen on (a stale socket there is replaced).
    #[arg(long)]
    socket: PathBuf,
    /// JSON fixtures `{ "<IP or IP:PORT>": <WhoIsResponse>, ... }`; default: the bundled
    /// standard set (crates/iris-testkit/fixtures/whois.json).
    #[arg(long)]
    fixtures: Option<PathBuf>,
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
    let fixtures = match &args.fixtures {
        Some(path) => Fixtures::from_file(path)?,
        None => Fixtures::standard(),
    };
    let fake = FakeTailscaled::start_at(&args.socket, fixtures).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening: {}", fake.socket_path().display())?;
        out.flush()?;
    }
    wait_for_signal().await?;
    drop(fake);
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
