//! The `iris` binary: parses flags, loads the config, wires the library crates together, and
//! handles shutdown. No gateway logic lives here.

mod cli_keys;
mod cli_remote;
mod cli_usage;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use iris_config::{Config, Diagnostic, ProcessEnv, Severity};
use iris_store::{SqliteStore, Store, UsageWriterConfig};

#[derive(Parser)]
#[command(
    name = "iris",
    version,
    about = "An identity-aware, self-hosted AI gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Work with config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Show recent usage records from the local store.
    Usage(cli_usage::UsageArgs),
    /// Issue, list and revoke iris keys (for devices outside the tailnet).
    Keys {
        #[command(subcommand)]
        command: cli_keys::KeysCommand,
    },
    /// What a running gateway sees of you: identity, grants, role, models.
    Whoami {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: cli_remote::Remote,
    },
    /// Print (or write) the configuration a client needs to go through iris.
    Setup(cli_remote::SetupArgs),
    /// Forward a local port to a gateway with an iris key (devices outside the tailnet).
    Unplug(cli_remote::UnplugArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Config file (HuJSON). Default: iris.hujson in the data directory, created on first run.
    #[arg(long, env = "IRIS_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides iris.listen).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory for the store and the default config (overrides iris.data_dir).
    #[arg(long, env = "IRIS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// tailscaled's LocalAPI socket (overrides iris.identity.tailscale_socket).
    #[arg(long)]
    tailscale_socket: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a config file and print every problem with its path; exit 1 on errors. With
    /// --gateway or --local, the running gateway checks it (as a save would).
    Validate {
        file: PathBuf,
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long)]
        local: bool,
        #[arg(long, env = "IRIS_KEY", hide_env_values = true)]
        key: Option<String>,
        #[arg(long, env = "IRIS_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Print the commented default config.
    Default,
    #[command(flatten)]
    Remote(cli_remote::RemoteConfig),
}

/// The data directory when neither a flag nor the config names one.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("iris");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/share/iris");
    }
    PathBuf::from("iris-data")
}

/// The break-glass admin socket, in the data directory.
pub const ADMIN_SOCKET: &str = "iris-admin.sock";

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("iris.db")
}

#[cfg(all(target_os = "linux", not(target_env = "musl"), feature = "jemalloc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's built-in options (`_RJEM_MALLOC_CONF` in the environment still overrides them).
/// Freed pages go back to the kernel after about a second, from jemalloc's own background thread
/// rather than from whichever request thread frees next: with the default ten seconds, 5,000
/// streams that end and 5,000 that begin at once held both rounds' memory (about 420 MB instead
/// of 300 MB, measured with `iris-bench --scenarios streams`), and RSS stayed high long after a
/// burst. A thin pointer to a NUL-terminated string, as jemalloc reads it. The one `unsafe` in
/// the workspace (which otherwise denies it): exporting a symbol jemalloc looks up by name.
#[cfg(all(target_os = "linux", not(target_env = "musl"), feature = "jemalloc"))]
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static JEMALLOC_CONF: &[u8; 85] =
    b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config {
            command:
                ConfigCommand::Validate {
                    file,
                    gateway: None,
                    local: false,
                    ..
                },
        } => validate(&file),
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", iris_config::default_config_text());
            Ok(ExitCode::SUCCESS)
        }
        other => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("iris: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async move {
                match other {
                    Command::Serve(args) => serve(args).await,
                    Command::Usage(args) => cli_usage::run(args).await,
                    Command::Keys { command } => cli_keys::run(command).await,
                    Command::Whoami { json, remote } => cli_remote::whoami(remote, json).await,
                    Command::Setup(a) => cli_remote::setup(a).await,
                    Command::Unplug(a) => cli_remote::unplug(a).await,
                    Command::Config {
                        command: ConfigCommand::Remote(c),
                    } => cli_remote::config(c).await,
                    Command::Config {
                        command:
                            ConfigCommand::Validate {
                                file,
                                gateway,
                                local,
                                key,
                                data_dir,
                            },
                    } => {
                        let text = std::fs::read_to_string(&file)
                            .with_context(|| format!("cannot read {}", file.display()))?;
                        let remote = cli_remote::Remote {
                            gateway,
                            local,
                            key,
                            data_dir,
                        };
                        cli_remote::validate_remote(&remote, &text).await
                    }
                    Command::Config {
                        command: ConfigCommand::Default,
                    } => Ok(ExitCode::SUCCESS),
                }
            })
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("iris: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_diagnostics(diags: &[Diagnostic]) -> (usize, usize) {
    let mut errors = 0;
    let mut warnings = 0;
    for d in diags {
        match d.severity {
            Severity::Error => errors += 1,
            Severity::Warning => warnings += 1,
        }
        println!("{d}");
    }
    (errors, warnings)
}

fn validate(file: &Path) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let diags = iris_config::check(&text, &ProcessEnv);
    let (errors, warnings) = print_diagnostics(&diags);
    println!(
        "{}: {errors} error(s), {warnings} warning(s)",
        file.display()
    );
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Find or create the config file and load it.
fn load_config(args: &ServeArgs) -> Result<(PathBuf, bool, String, Config)> {
    let (path, created) = match &args.config {
        Some(p) => (p.clone(), false),
        None => {
            let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
            let p = dir.join("iris.hujson");
            if p.exists() {
                (p, false)
            } else {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                std::fs::write(&p, iris_config::default_config_text())
                    .with_context(|| format!("cannot write {}", p.display()))?;
                (p, true)
            }
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    match iris_config::load(&text, &ProcessEnv) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                tracing::warn!("{}: {w}", path.display());
            }
            Ok((path, created, text, loaded.config))
        }
        Err(diags) => {
            eprintln!("{}:", path.display());
            for d in &diags {
                eprintln!("  {d}");
            }
            bail!("the config has errors; nothing was started")
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    init_logging();
    let (config_path, created, config_text, mut config) = load_config(&args)?;
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| config.iris.data_dir.clone())
        .unwrap_or_else(default_data_dir);
    // Flags override the file, now and on every reload.
    let overrides: iris_server::config_file::Overrides = {
        let (listen, socket, dir) = (args.listen, args.tailscale_socket.clone(), data_dir.clone());
        Arc::new(move |c: &mut Config| {
            if let Some(l) = listen {
                c.iris.listen = l;
            }
            if let Some(s) = &socket {
                c.iris.identity.tailscale_socket = Some(s.clone());
            }
            c.iris.data_dir = Some(dir.clone());
        })
    };
    overrides(&mut config);

    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&db_path(&data_dir))
            .await
            .with_context(|| format!("cannot open the store in {}", data_dir.display()))?,
    );
    // Store writes (the usage writer's task, the capture writes) run on a runtime of their own:
    // a batch is milliseconds of SQLite work, which runs on this runtime's blocking threads, so
    // neither it nor the tasks around it ever hold up one of the request path's workers and the
    // requests queued behind it (the fixed-rate p99).
    let store_rt = StoreRuntime::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("iris-store")
            .enable_all()
            .build()
            .context("cannot start the store writes' runtime")?,
    );
    let u = &config.iris.usage;
    let (sink, writer) = {
        let _on = store_rt.handle().enter();
        iris_store::spawn_usage_writer(
            store.clone(),
            UsageWriterConfig {
                queue_capacity: u.queue_capacity,
                batch_size: u.batch_size,
                flush_interval: u.flush_interval,
            },
        )
    };
    match iris_server::net::raise_nofile_limit() {
        // Two descriptors per proxied stream (client and upstream) plus the store's.
        Some(n) if n < 4096 => tracing::warn!(
            open_files = n,
            "the open-file limit allows about {} concurrent streams; raise the hard limit (LimitNOFILE=) for more",
            n / 2
        ),
        Some(n) => tracing::debug!(open_files = n, "open-file limit"),
        None => {}
    }
    let listener = iris_server::net::bind(config.iris.listen)
        .with_context(|| format!("cannot listen on {}", config.iris.listen))?;
    let addr = listener.local_addr().context("listener has no address")?;

    let admin_socket = data_dir.join(ADMIN_SOCKET);
    if tokio::net::UnixStream::connect(&admin_socket).await.is_ok() {
        bail!(
            "another iris is already serving the data directory {} (its admin socket answers)",
            data_dir.display()
        );
    }

    let banner = Banner::new(&config, &config_path, created, &data_dir);
    let file = iris_server::config_file::ConfigFile::new(
        Some(config_path.clone()),
        config_text,
        Arc::new(ProcessEnv),
        overrides,
    );
    let gateway = Arc::new(
        iris_server::Gateway::with_store_runtime(config, store, sink, store_rt.handle())
            .with_config_file(file),
    );
    gateway.config_file.record_initial(&gateway).await;
    let tailscaled = gateway.probe_tailscaled().await;

    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(gateway.config_file.clone().watch(
        gateway.clone(),
        Duration::from_secs(1),
        stop.clone(),
    ));
    let retention = tokio::spawn(iris_server::retention_loop(
        gateway.clone(),
        Duration::from_secs(600),
        stop.clone(),
    ));
    let admin = {
        let (gw, stop, path) = (gateway.clone(), stop.clone(), admin_socket.clone());
        tokio::spawn(async move {
            if let Err(e) = iris_server::serve_local_admin(&path, gw, stop.cancelled_owned()).await
            {
                tracing::error!(error = %e, path = %path.display(), "the break-glass admin socket is unavailable");
            }
        })
    };
    banner.print(
        addr,
        &tailscaled,
        gateway.whois_client().map(|w| w.socket().to_path_buf()),
    );
    println!("  break-glass admin socket: {}", admin_socket.display());

    let drain = gateway.runtime().config.iris.timeouts.shutdown_drain;
    iris_server::serve(listener, gateway.clone(), shutdown_signal(), drain).await?;
    stop.cancel();
    let _ = watcher.await;
    let _ = admin.await;
    let _ = retention.await;
    gateway.finish().await;
    drop(gateway);
    let stats = writer.shutdown().await;
    tracing::info!(?stats, "usage records flushed; bye");
    drop(store_rt);
    Ok(ExitCode::SUCCESS)
}

/// The runtime the store writes run on (see `serve`). It is dropped inside the main runtime, on
/// every path out of `serve` (an early error too), where a blocking shutdown would panic; by then
/// every write has finished or will never be awaited, so it is shut down without waiting.
struct StoreRuntime {
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl StoreRuntime {
    fn new(rt: tokio::runtime::Runtime) -> StoreRuntime {
        StoreRuntime {
            handle: rt.handle().clone(),
            rt: Some(rt),
        }
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.handle.clone()
    }
}

impl Drop for StoreRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

struct Banner {
    lines: Vec<String>,
    sources: String,
    sample_model: Option<(String, bool)>,
}

impl Banner {
    fn new(config: &Config, path: &Path, created: bool, data_dir: &Path) -> Banner {
        let mut lines = vec![format!("iris {}", env!("CARGO_PKG_VERSION"))];
        lines.push(format!(
            "  config:    {}{}",
            path.display(),
            if created {
                " (created with the defaults: providers read ANTHROPIC_API_KEY / OPENAI_API_KEY)"
            } else {
                ""
            }
        ));
        lines.push(format!("  data:      {}", data_dir.display()));
        let enabled: Vec<_> = config.providers.iter().filter(|p| !p.disabled).collect();
        let models: usize = enabled.iter().map(|p| p.models.len()).sum();
        lines.push(format!(
            "  providers: {} ({} models): {}",
            enabled.len(),
            models,
            enabled
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let sample_model = enabled
            .iter()
            .find(|p| p.compatibility.anthropic_messages)
            .and_then(|p| p.models.first().map(|m| (m.clone(), true)))
            .or_else(|| {
                enabled
                    .iter()
                    .find(|p| p.compatibility.openai_chat)
                    .and_then(|p| p.models.first().map(|m| (m.clone(), false)))
            });
        let id = &config.iris.identity;
        let mut sources = Vec::new();
        if id.serve_headers {
            sources.push("tailscale serve headers (from loopback)");
        }
        if id.keys {
            sources.push("iris keys");
        }
        if id.loopback {
            sources.push("(loopback)");
        }
        Banner {
            lines,
            sources: sources.join(", "),
            sample_model,
        }
    }

    fn print(
        &self,
        addr: std::net::SocketAddr,
        tailscaled: &Result<bool, String>,
        socket: Option<PathBuf>,
    ) {
        for l in &self.lines {
            println!("{l}");
        }
        let whois = match (tailscaled, socket) {
            (Ok(false), _) | (_, None) => "whois off".to_owned(),
            (Ok(true), Some(s)) => format!("whois (tailscaled at {})", s.display()),
            (Err(e), Some(s)) => format!(
                "whois (tailscaled at {}: not reachable now: {e})",
                s.display()
            ),
        };
        println!("  identity:  {whois}; {}", self.sources);
        println!("listening: http://{addr}");
        if let Some((model, anthropic)) = &self.sample_model {
            let line = if *anthropic {
                format!(
                    "curl -s http://{addr}/v1/messages -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' -d '{{\"model\":\"{model}\",\"max_tokens\":64,\"messages\":[{{\"role\":\"user\",\"content\":\"Say hello\"}}]}}'"
                )
            } else {
                format!(
                    "curl -s http://{addr}/v1/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Say hello\"}}]}}'"
                )
            };
            println!("try it:\n  {line}");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
}
