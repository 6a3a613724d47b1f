//! `iris usage`: recent usage records from the local store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use iris_store::{SqliteStore, Store, UsageQuery, UsageRecord};

#[derive(clap::Args)]
pub struct UsageArgs {
    /// Data directory holding the store.
    #[arg(long, env = "IRIS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// How many records (newest first).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Ask a running gateway (its /api/logs) instead of reading the store directly.
    #[arg(long, env = "IRIS_GATEWAY")]
    gateway: Option<String>,
    #[arg(long, env = "IRIS_KEY", hide_env_values = true)]
    key: Option<String>,
}

pub async fn run(args: UsageArgs) -> Result<ExitCode> {
    if args.gateway.is_some() {
        let remote = crate::cli_remote::Remote {
            gateway: args.gateway,
            local: false,
            key: args.key,
            data_dir: args.data_dir,
        };
        return crate::cli_remote::logs(&remote, args.limit, args.json).await;
    }
    let dir = args.data_dir.unwrap_or_else(crate::default_data_dir);
    let db = crate::db_path(&dir);
    if !db.exists() {
        anyhow::bail!(
            "no store at {} (has `iris serve` run with this data directory?)",
            db.display()
        );
    }
    let store = SqliteStore::open(&db)
        .await
        .with_context(|| format!("cannot open {}", db.display()))?;
    let records = store
        .recent_usage(&UsageQuery {
            limit: args.limit,
            ..UsageQuery::default()
        })
        .await?;
    print(&records, args.json);
    Ok(ExitCode::SUCCESS)
}

pub fn print(records: &[UsageRecord], json: bool) {
    if json {
        for r in records {
            println!("{}", json_line(r));
        }
    } else {
        print_table(records);
    }
}

/// The JSON form: every field of the record, plus `model` (the requested model).
pub fn json_line(r: &UsageRecord) -> String {
    let mut v = serde_json::to_value(r).unwrap_or(serde_json::Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("model".into(), serde_json::json!(r.requested_model));
        o.insert(
            "time".into(),
            serde_json::json!(
                chrono::DateTime::from_timestamp_millis(r.ts_ms).map(|t| t.to_rfc3339())
            ),
        );
    }
    v.to_string()
}

fn who(r: &UsageRecord) -> String {
    if let Some(l) = &r.login {
        l.clone()
    } else if !r.tags.is_empty() {
        r.tags.join(",")
    } else if r.identity_source == "loopback" {
        "(loopback)".into()
    } else {
        "-".into()
    }
}

fn print_table(records: &[UsageRecord]) {
    println!(
        "{:<20} {:<26} {:<28} {:<10} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7}  ERROR",
        "TIME (UTC)", "WHO", "MODEL", "PROVIDER", "STATUS", "IN", "OUT", "CACHE_R", "CACHE_W", "MS"
    );
    for r in records {
        let t = chrono::DateTime::from_timestamp_millis(r.ts_ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        println!(
            "{:<20} {:<26} {:<28} {:<10} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7}  {}",
            t,
            trunc(&who(r), 26),
            trunc(r.requested_model.as_deref().unwrap_or("-"), 28),
            trunc(r.provider.as_deref().unwrap_or("-"), 10),
            r.status,
            r.input_tokens,
            r.output_tokens,
            r.cache_read_tokens,
            r.cache_write_tokens,
            r.duration_ms,
            r.error_class.as_deref().unwrap_or("")
        );
    }
    if records.is_empty() {
        println!("(no usage recorded yet)");
    }
}

fn trunc(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}
