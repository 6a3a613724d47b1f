//! Commands that talk to a running gateway (`--gateway URL`, or `--local` for the break-glass admin
//! socket), plus `iris setup` and `iris unplug`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use iris_client::gateway::{ConfigDoc, LogsQuery};
use iris_client::{Endpoint, GatewayClient, SetupOptions, SetupTarget};

/// Where the gateway is.
#[derive(clap::Args, Clone)]
pub struct Remote {
    /// The gateway's URL. Default: http://127.0.0.1:4747.
    #[arg(long, env = "IRIS_GATEWAY")]
    pub gateway: Option<String>,
    /// Use the break-glass admin socket in the data directory (works whatever the grants say).
    #[arg(long, conflicts_with = "gateway")]
    pub local: bool,
    /// An iris key to authenticate with (for devices outside the tailnet).
    #[arg(long, env = "IRIS_KEY", hide_env_values = true)]
    pub key: Option<String>,
    #[arg(long, env = "IRIS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:4747";

impl Remote {
    pub fn socket(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(crate::default_data_dir)
            .join(crate::ADMIN_SOCKET)
    }

    pub fn client(&self) -> Result<GatewayClient> {
        let endpoint = if self.local {
            Endpoint::Unix(self.socket())
        } else {
            Endpoint::parse(self.gateway.as_deref().unwrap_or(DEFAULT_GATEWAY))?
        };
        Ok(GatewayClient::new(endpoint, self.key.clone())?)
    }
}

#[derive(clap::Subcommand)]
pub enum RemoteConfig {
    /// Print the running config (text on stdout, its hash on stderr).
    Get {
        #[command(flatten)]
        remote: Remote,
    },
    /// Save a config file through the gateway (validated; warnings count as errors).
    Put {
        file: PathBuf,
        /// The hash printed by `iris config get` (optimistic concurrency). Without it, the
        /// current hash is used: last writer wins.
        #[arg(long)]
        hash: Option<String>,
        /// With --local: also works when no gateway is running (validates and writes the file).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List saved config versions.
    History {
        #[command(flatten)]
        remote: Remote,
    },
    /// Restore a saved version (same checks as put).
    Rollback {
        id: i64,
        #[arg(long)]
        hash: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

fn problems_out(v: &iris_client::gateway::Validation) {
    for p in &v.problems {
        println!("{p}");
    }
}

pub async fn config(cmd: RemoteConfig) -> Result<ExitCode> {
    match cmd {
        RemoteConfig::Get { remote } => {
            let doc: ConfigDoc = remote.client()?.config_get().await?;
            print!("{}", doc.config);
            eprintln!("hash: {}", doc.hash);
            Ok(ExitCode::SUCCESS)
        }
        RemoteConfig::Put {
            file,
            hash,
            config,
            remote,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            if remote.local && !remote.socket().exists() {
                return offline_put(&remote, config, &text).await;
            }
            let client = remote.client()?;
            let hash = match hash {
                Some(h) => h,
                None => {
                    let cur = client.config_get().await?;
                    eprintln!(
                        "note: no --hash given; saving over the current version {}",
                        cur.hash
                    );
                    cur.hash
                }
            };
            let saved = client.config_put(&text, &hash).await?;
            println!("saved; hash: {}", saved.hash);
            Ok(ExitCode::SUCCESS)
        }
        RemoteConfig::History { remote } => {
            for v in remote.client()?.config_history().await? {
                let when = v
                    .saved_at_ms
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default();
                println!(
                    "{:>5}  {}  {:<25} {:<9} {}",
                    v.id,
                    when,
                    v.saved_by.as_deref().unwrap_or("-"),
                    v.source.as_deref().unwrap_or("-"),
                    &v.hash[..v.hash.len().min(16)]
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        RemoteConfig::Rollback { id, hash, remote } => {
            let client = remote.client()?;
            let hash = match hash {
                Some(h) => h,
                None => client.config_get().await?.hash,
            };
            let saved = client.config_rollback(id, &hash).await?;
            println!("restored version {id}; hash: {}", saved.hash);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `iris config put --local FILE` with no gateway running: the same validation (warnings are
/// errors), then an atomic write of the config file and a history entry.
async fn offline_put(remote: &Remote, config: Option<PathBuf>, text: &str) -> Result<ExitCode> {
    let dir = remote
        .data_dir
        .clone()
        .unwrap_or_else(crate::default_data_dir);
    let target = config.unwrap_or_else(|| dir.join("iris.hujson"));
    if text.trim().is_empty() {
        bail!("refused: the config is empty");
    }
    let problems = iris_config::check(text, &iris_config::ProcessEnv);
    if !problems.is_empty() {
        for p in &problems {
            println!("{p}");
        }
        bail!(
            "refused: saving treats warnings as errors ({} problem(s))",
            problems.len()
        );
    }
    iris_server::config_file::write_atomically(&target, text)
        .with_context(|| format!("cannot write {}", target.display()))?;
    let store = iris_store::SqliteStore::open(&crate::db_path(&dir)).await?;
    use iris_store::Store;
    store
        .insert_config_version(&iris_store::ConfigVersion {
            id: 0,
            hash: iris_server::config_file::hash_text(text),
            saved_by: "(local-admin)".into(),
            saved_at_ms: iris_store::now_ms(),
            source: "local".into(),
            bytes: text.len() as u64,
            text: text.to_owned(),
        })
        .await?;
    println!(
        "no gateway is running; wrote {} (it is used at the next start)",
        target.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn validate_remote(remote: &Remote, text: &str) -> Result<ExitCode> {
    let v = remote.client()?.config_validate(text).await?;
    problems_out(&v);
    println!("{}", if v.valid { "valid" } else { "not valid" });
    Ok(if v.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn whoami(remote: Remote, json: bool) -> Result<ExitCode> {
    let w = remote.client()?.whoami().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&w)?);
    } else {
        println!("{}", w.describe());
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(remote: &Remote, limit: u32, json: bool) -> Result<ExitCode> {
    let v = remote
        .client()?
        .logs(&LogsQuery {
            limit: Some(limit),
            ..LogsQuery::default()
        })
        .await?;
    let records: Vec<iris_store::UsageRecord> =
        serde_json::from_value(v.get("records").cloned().unwrap_or_default())
            .context("unexpected answer from /api/logs")?;
    crate::cli_usage::print(&records, json);
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct SetupArgs {
    /// claude-code, codex, gemini, opencode or env
    target: SetupTarget,
    /// The gateway's URL as the client should reach it.
    #[arg(long, default_value = DEFAULT_GATEWAY)]
    gateway: String,
    /// Write the file (keeping a backup of the old one) instead of printing it.
    #[arg(long)]
    write: bool,
    /// An environment variable holding an iris key, for clients outside the tailnet.
    #[arg(long)]
    key_env: Option<String>,
    /// A file holding an iris key.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// The default model to configure.
    #[arg(long)]
    model: Option<String>,
}

pub async fn setup(a: SetupArgs) -> Result<ExitCode> {
    let key_file = match a.key_file {
        Some(p) => Some(std::path::absolute(expand_home(&p)).context("cannot resolve --key-file")?),
        None => None,
    };
    let mut opts = SetupOptions {
        key_env: a.key_env,
        key_file,
        model: a.model,
        ..SetupOptions::default()
    };
    // Best effort: the models the gateway offers, for clients that list them (OpenCode).
    if let Ok(client) = GatewayClient::new(Endpoint::parse(&a.gateway)?, None) {
        let client = client.with_timeout(std::time::Duration::from_secs(3));
        if let Ok(w) = client.whoami().await {
            opts.models = iris_client::setup::models_from_api(&serde_json::json!(w.models));
        }
    }
    let rendered = iris_client::setup::render(a.target, &a.gateway, &opts)?;
    if !a.write || rendered.path.is_none() {
        if let Some(p) = rendered.display_path() {
            eprintln!("# {p}");
        }
        print!("{}", rendered.contents);
        for n in &rendered.notes {
            eprintln!("note: {n}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")?;
    let report = match (
        a.target,
        std::env::var_os("CODEX_HOME"),
        std::env::var_os("XDG_CONFIG_HOME"),
    ) {
        (SetupTarget::Codex, Some(dir), _) => iris_client::setup::write_to(
            &rendered,
            &PathBuf::from(dir).join("config.toml"),
            unix_now(),
        )?,
        (SetupTarget::OpenCode, _, Some(dir)) => iris_client::setup::write_to(
            &rendered,
            &PathBuf::from(dir).join("opencode/opencode.json"),
            unix_now(),
        )?,
        _ => iris_client::setup::write(&rendered, &home)?,
    };
    if !report.changed {
        println!(
            "{} already says this; nothing written",
            report.path.display()
        );
    } else {
        println!("wrote {}", report.path.display());
        if let Some(b) = &report.backup {
            println!("the previous version is kept in {}", b.display());
        }
    }
    for n in rendered.notes.iter().chain(&report.notes) {
        println!("note: {n}");
    }
    Ok(ExitCode::SUCCESS)
}

fn unix_now() -> u64 {
    u64::try_from(iris_store::now_ms() / 1000).unwrap_or(0)
}

fn expand_home(p: &std::path::Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(h)) => PathBuf::from(h).join(rest),
        _ => p.to_path_buf(),
    }
}

#[derive(clap::Args)]
pub struct UnplugArgs {
    /// The gateway's URL (http or https).
    #[arg(long)]
    gateway: String,
    /// A file holding the iris key (otherwise IRIS_KEY).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Local port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
}

pub async fn unplug(a: UnplugArgs) -> Result<ExitCode> {
    let key = match &a.key_file {
        Some(f) => std::fs::read_to_string(expand_home(f))
            .with_context(|| format!("cannot read the key file {}", f.display()))?
            .trim()
            .to_owned(),
        None => std::env::var("IRIS_KEY")
            .context("give the key with --key-file FILE or the IRIS_KEY environment variable")?,
    };
    let cfg = iris_client::UnplugConfig {
        gateway: a.gateway,
        key,
        port: a.port,
    };
    let report = iris_client::run_unplug(
        cfg,
        |ready| {
            println!("{}", ready.summary());
            for w in &ready.warnings {
                println!("warning: {w}");
            }
            println!("listening: http://{}", ready.addr);
            println!("{}", iris_client::client_lines(ready.addr));
            use std::io::Write;
            let _ = std::io::stdout().flush();
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await?;
    eprintln!(
        "iris unplug: {} request(s), {} gateway error(s)",
        report.requests, report.gateway_errors
    );
    Ok(ExitCode::SUCCESS)
}
