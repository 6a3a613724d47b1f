//! `iris-bench-proxy`: the baseline passthrough proxy as a process. Prints one line,
//! `listening: http://IP:PORT`, once ready, and runs until SIGTERM or SIGINT.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Minimal hyper passthrough proxy: the baseline iris is benchmarked against")]
struct Args {
    /// Loopback address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The upstream `IP:PORT` (loopback), e.g. the mock provider's.
    #[arg(long)]
    upstream: String,
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
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "the baseline proxy only listens on loopback, not {}",
        args.listen
    );
    let upstream: SocketAddr = args
        .upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("--upstream {:?} is not IP:PORT", args.upstream))?;
    iris_bench::raise_nofile_limit();
    // iris's own listener, so a burst of connections is queued alike.
    let listener = iris_server::net::bind(args.listen)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening: http://{}", listener.local_addr()?)?;
        out.flush()?;
    }
    iris_bench::proxy::serve(listener, upstream, wait_for_signal()).await?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
