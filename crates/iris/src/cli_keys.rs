//! `iris keys`: issue, list and revoke iris keys in the local store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use iris_store::{KeyRecord, SqliteStore, Store};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Issue a key. The token is printed once, on stdout; only its hash is stored.
    Create {
        /// Whose identity the key carries: a login (alice@example.com) or tag:NAME[,tag:OTHER].
        #[arg(long = "for")]
        subject: String,
        /// Lifetime, e.g. 10m, 12h, 30d. Default: no expiry.
        #[arg(long)]
        expires: Option<String>,
        #[arg(long)]
        note: Option<String>,
        #[arg(long, env = "IRIS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Issue the key through a running gateway's API instead of the local store.
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long, env = "IRIS_KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// List keys (never the tokens).
    List {
        #[arg(long)]
        json: bool,
        #[arg(long, env = "IRIS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long, env = "IRIS_KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// Revoke a key by id; it is refused from the next request on.
    Revoke {
        id: String,
        #[arg(long, env = "IRIS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long, env = "IRIS_KEY", hide_env_values = true)]
        key: Option<String>,
    },
}

/// Parse a lifetime: a number followed by s, m, h or d.
pub fn parse_lifetime(s: &str) -> Result<i64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a lifetime like 10m, 12h or 30d"))?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("{s:?} is not a lifetime like 10m, 12h or 30d"),
    };
    if n <= 0 {
        bail!("a key's lifetime must be positive");
    }
    n.checked_mul(ms).context("lifetime too long")
}

async fn open(data_dir: Option<PathBuf>) -> Result<SqliteStore> {
    let dir = data_dir.unwrap_or_else(crate::default_data_dir);
    let db = crate::db_path(&dir);
    SqliteStore::open(&db)
        .await
        .with_context(|| format!("cannot open the store at {}", db.display()))
}

fn remote(
    gateway: String,
    key: Option<String>,
    data_dir: Option<PathBuf>,
) -> crate::cli_remote::Remote {
    crate::cli_remote::Remote {
        gateway: Some(gateway),
        local: false,
        key,
        data_dir,
    }
}

pub async fn run(cmd: KeysCommand) -> Result<ExitCode> {
    match cmd {
        KeysCommand::Create {
            subject,
            expires,
            note,
            data_dir,
            gateway: Some(gw),
            key,
        } => {
            let client = remote(gw, key, data_dir).client()?;
            let k = client
                .keys_create(&subject, expires.as_deref(), note.as_deref())
                .await?;
            println!("{}", k.token);
            eprintln!(
                "created key {} for {subject}. The token above is shown only once.",
                k.id
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List {
            json,
            data_dir,
            gateway: Some(gw),
            key,
        } => {
            let keys = remote(gw, key, data_dir).client()?.keys_list().await?;
            for k in &keys {
                if json {
                    println!("{}", serde_json::to_string(k)?);
                } else {
                    let who = k.login.clone().unwrap_or_else(|| k.tags.join(","));
                    let state = if k.revoked_ms.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{}  {:<30} {:<8} {}",
                        k.id,
                        who,
                        state,
                        k.note.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke {
            id,
            data_dir,
            gateway: Some(gw),
            key,
        } => {
            remote(gw, key, data_dir).client()?.keys_revoke(&id).await?;
            eprintln!("revoked {id}");
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Create {
            subject,
            expires,
            note,
            data_dir,
            ..
        } => {
            let (login, tags) =
                iris_identity::keys::parse_subject(&subject).map_err(anyhow::Error::msg)?;
            let now = iris_store::now_ms();
            let expires_ms = expires
                .as_deref()
                .map(parse_lifetime)
                .transpose()?
                .map(|d| now + d);
            let store = open(data_dir).await?;
            let k = iris_identity::keys::generate();
            store
                .insert_key(&KeyRecord {
                    id: k.id.clone(),
                    token_hash: k.token_hash.clone(),
                    login,
                    tags,
                    note,
                    created_ms: now,
                    expires_ms,
                    revoked_ms: None,
                    last_used_ms: None,
                    created_by: Some("cli".into()),
                })
                .await?;
            println!("{}", k.token);
            eprintln!(
                "created key {} for {subject}{}. The token above is shown only once.",
                k.id,
                expires_ms
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| format!(", expires {}", t.to_rfc3339()))
                    .unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { json, data_dir, .. } => {
            let store = open(data_dir).await?;
            let keys = store.list_keys().await?;
            for k in &keys {
                if json {
                    let mut v = serde_json::to_value(k)?;
                    if let Some(o) = v.as_object_mut() {
                        o.remove("token_hash");
                    }
                    println!("{v}");
                } else {
                    let who = k.login.clone().unwrap_or_else(|| k.tags.join(","));
                    let state = if k.revoked_ms.is_some() {
                        "revoked"
                    } else if k.expires_ms.is_some_and(|e| e <= iris_store::now_ms()) {
                        "expired"
                    } else {
                        "active"
                    };
                    println!(
                        "{}  {:<30} {:<8} {}",
                        k.id,
                        who,
                        state,
                        k.note.as_deref().unwrap_or("")
                    );
                }
            }
            if keys.is_empty() && !json {
                println!("(no keys)");
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { id, data_dir, .. } => {
            // A gateway running on this data directory caches key lookups for a second:
            // revoking through its break-glass socket takes effect on its very next request.
            let local = crate::cli_remote::Remote {
                gateway: None,
                local: true,
                key: None,
                data_dir: data_dir.clone(),
            };
            if local.socket().exists() {
                match local.client()?.keys_revoke(&id).await {
                    Ok(()) => {
                        eprintln!("revoked {id} (through the running gateway)");
                        return Ok(ExitCode::SUCCESS);
                    }
                    // A socket left behind by a gateway that is gone: write the store.
                    Err(iris_client::gateway::ClientError::NoSocket { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let store = open(data_dir).await?;
            if store.revoke_key(&id, iris_store::now_ms()).await? {
                eprintln!("revoked {id}");
                Ok(ExitCode::SUCCESS)
            } else {
                bail!("no key with id {id}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("10m").unwrap(), 600_000);
        assert_eq!(parse_lifetime("30d").unwrap(), 30 * 86_400_000);
        for bad in ["", "10", "m", "-1d", "0s", "5w", "1.5h"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }
}
