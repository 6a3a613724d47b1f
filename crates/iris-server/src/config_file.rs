//! The live config: the text on disk, its hash, saves through the API with optimistic
//! concurrency and the lockout check, history in the store, and reloads when the file changes.
//!
//! Saving (API or break-glass): same hash as read → every diagnostic is an error (Aperture's save
//! rule) → the saver must keep admin → the file is replaced atomically (temp file, fsync, rename,
//! fsync of the directory) → the version is kept in the store → the new runtime is swapped in.
//! Requests already running keep the snapshot they started with.
//!
//! The file is watched by polling its content hash (every `poll`, default 1 s), which sees editors
//! that save by rename, network file systems and bind mounts alike; a change is applied once the
//! file has been stable for one more poll (debounce). A file that fails validation leaves the
//! running config in place; its problems are logged once and shown in `GET /api/health`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use iris_config::{Config, Diagnostic, EnvSource};
use iris_policy::Policy;
use iris_store::ConfigVersion;
use sha2::{Digest, Sha256};

use crate::Gateway;
use crate::caller::Caller;

/// Applies command-line overrides to every config that is loaded.
pub type Overrides = Arc<dyn Fn(&mut Config) + Send + Sync>;

pub fn hash_text(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[derive(Debug, Clone)]
pub struct ConfigSnapshot {
    pub text: String,
    pub hash: String,
    pub exists: bool,
    pub loaded_at_ms: i64,
    pub source: &'static str,
    /// Problems of a file on disk that was NOT applied (the running config is older).
    pub pending_problems: Vec<Diagnostic>,
}

pub struct ConfigFile {
    path: Option<PathBuf>,
    env: Arc<dyn EnvSource + Send + Sync>,
    overrides: Overrides,
    state: std::sync::Mutex<ConfigSnapshot>,
    save_lock: tokio::sync::Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(
        "the config changed since it was read (someone saved in between): read it again, re-apply your change and save with the new hash"
    )]
    Conflict,
    #[error("the config is empty")]
    Empty,
    #[error("the config has {} problem(s); saving treats warnings as errors", .0.len())]
    Invalid(Vec<Diagnostic>),
    #[error("{0}")]
    Lockout(String),
    #[error("could not write the config file: {0}")]
    Io(String),
}

impl ConfigFile {
    /// `text` is what `config` was loaded from (and what `path` holds, if any).
    pub fn new(
        path: Option<PathBuf>,
        text: String,
        env: Arc<dyn EnvSource + Send + Sync>,
        overrides: Overrides,
    ) -> ConfigFile {
        let exists = path.as_ref().is_some_and(|p| p.exists());
        ConfigFile {
            path,
            env,
            overrides,
            state: std::sync::Mutex::new(ConfigSnapshot {
                hash: hash_text(&text),
                text,
                exists,
                loaded_at_ms: iris_store::now_ms(),
                source: "file",
                pending_problems: Vec::new(),
            }),
            save_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// No file: the config lives in memory only (tests, embedded use).
    pub fn in_memory() -> ConfigFile {
        ConfigFile::new(
            None,
            String::new(),
            Arc::new(iris_config::ProcessEnv),
            Arc::new(|_| {}),
        )
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn snapshot(&self) -> ConfigSnapshot {
        match self.state.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut ConfigSnapshot)) {
        match self.state.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Every problem of a text, as saving sees them (empty: it would save).
    pub fn check(&self, text: &str) -> Vec<Diagnostic> {
        iris_config::check(text, self.env.as_ref())
    }

    /// Load a text into a config with the overrides applied.
    fn load(&self, text: &str) -> Result<Config, Vec<Diagnostic>> {
        let mut cfg = iris_config::load(text, self.env.as_ref())?.config;
        (self.overrides)(&mut cfg);
        Ok(cfg)
    }

    /// Save through the API: optimistic concurrency, warnings as errors, lockout check, atomic
    /// write, history, swap. Returns the new hash.
    pub async fn save(
        &self,
        gw: &Gateway,
        text: &str,
        expected_hash: &str,
        saver: &Caller,
        source: &str,
    ) -> Result<String, SaveError> {
        let _guard = self.save_lock.lock().await;
        let current = self.snapshot();
        if !iris_identity::keys::hashes_equal(expected_hash.trim(), &current.hash) {
            return Err(SaveError::Conflict);
        }
        if text.trim().is_empty() {
            return Err(SaveError::Empty);
        }
        let problems = self.check(text);
        if !problems.is_empty() {
            return Err(SaveError::Invalid(problems));
        }
        let cfg = self.load(text).map_err(SaveError::Invalid)?;
        lockout_check(saver, &cfg)?;
        if let Some(path) = &self.path {
            write_atomically(path, text).map_err(|e| SaveError::Io(e.to_string()))?;
        }
        let hash = hash_text(text);
        self.record_version(gw, &hash, text, &saver.label(), source)
            .await;
        gw.replace_config(cfg);
        self.update(|s| {
            s.text = text.to_owned();
            s.hash = hash.clone();
            s.exists = true;
            s.loaded_at_ms = iris_store::now_ms();
            s.source = "api";
            s.pending_problems.clear();
        });
        tracing::info!(by = %saver.label(), hash = %hash, source, "config saved");
        Ok(hash)
    }

    async fn record_version(&self, gw: &Gateway, hash: &str, text: &str, by: &str, source: &str) {
        let v = ConfigVersion {
            id: 0,
            hash: hash.to_owned(),
            saved_by: by.to_owned(),
            saved_at_ms: iris_store::now_ms(),
            source: source.to_owned(),
            bytes: text.len() as u64,
            text: text.to_owned(),
        };
        if let Err(e) = gw.store.insert_config_version(&v).await {
            tracing::warn!(error = %e, "could not keep the config version in the store");
        }
    }

    /// Keep the running version in the history if it is not the latest one there (start-up).
    pub async fn record_initial(&self, gw: &Gateway) {
        let snap = self.snapshot();
        if snap.text.is_empty() {
            return;
        }
        let latest = gw
            .store
            .config_versions(1)
            .await
            .ok()
            .and_then(|v| v.into_iter().next());
        if latest.map(|v| v.hash) != Some(snap.hash.clone()) {
            self.record_version(gw, &snap.hash, &snap.text, "(file)", "file")
                .await;
        }
    }

    /// Look at the file once; apply it if it changed and is valid. Returns whether it applied.
    pub async fn reload_if_changed(&self, gw: &Gateway) -> bool {
        let Some(path) = &self.path else { return false };
        let Ok(text) = tokio::fs::read_to_string(path).await else {
            return false;
        };
        let hash = hash_text(&text);
        let _guard = self.save_lock.lock().await;
        let snap = self.snapshot();
        if hash == snap.hash {
            if !snap.pending_problems.is_empty() {
                self.update(|s| s.pending_problems.clear());
            }
            return false;
        }
        match self.load(&text) {
            Ok(cfg) => {
                for w in self.check(&text) {
                    tracing::warn!("{}: {w}", path.display());
                }
                gw.replace_config(cfg);
                self.record_version(gw, &hash, &text, "(file)", "file")
                    .await;
                self.update(|s| {
                    s.text = text;
                    s.hash = hash;
                    s.exists = true;
                    s.loaded_at_ms = iris_store::now_ms();
                    s.source = "file";
                    s.pending_problems.clear();
                });
                tracing::info!(path = %path.display(), "config file changed: reloaded");
                true
            }
            Err(problems) => {
                let already = snap.pending_problems == problems;
                if !already {
                    tracing::error!(path = %path.display(), "the config file changed but has errors; the running config stays in place");
                    for p in &problems {
                        tracing::error!("  {p}");
                    }
                }
                self.update(|s| s.pending_problems = problems);
                false
            }
        }
    }

    /// Watch the file until `stop` is cancelled. A change is applied after it has been stable for
    /// one more poll.
    pub async fn watch(
        self: Arc<Self>,
        gw: Arc<Gateway>,
        poll: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let mut last_seen: Option<String> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(poll) => {}
            }
            let Ok(text) = tokio::fs::read_to_string(&path).await else {
                continue;
            };
            let hash = hash_text(&text);
            let running = self.snapshot().hash;
            if hash == running {
                last_seen = None;
                if !self.snapshot().pending_problems.is_empty() {
                    self.update(|s| s.pending_problems.clear());
                }
                continue;
            }
            if last_seen.as_deref() == Some(hash.as_str()) {
                self.reload_if_changed(&gw).await;
            } else {
                last_seen = Some(hash);
            }
        }
    }
}

/// Refuse a config that takes the saver's admin role away. The break-glass admin is exempt.
fn lockout_check(saver: &Caller, cfg: &Config) -> Result<(), SaveError> {
    if saver.local_admin {
        return Ok(());
    }
    let policy = Policy::new(&cfg.grants);
    let after = policy.evaluate(&saver.who.principal, saver.who.tailnet_grants(), None);
    if after.is_admin() {
        return Ok(());
    }
    let lost: Vec<String> = saver
        .decision
        .matched
        .iter()
        .filter(|m| m.role == Some("admin"))
        .map(|m| match &m.source {
            iris_policy::GrantSource::Config { index } => {
                format!("grants[{index}] (src \"{}\")", m.src)
            }
            iris_policy::GrantSource::ConfigTemp { index } => {
                format!("temp_grants[{index}] (src \"{}\")", m.src)
            }
            iris_policy::GrantSource::Tailnet => "the tailnet policy grant".to_owned(),
        })
        .collect();
    Err(SaveError::Lockout(format!(
        "refused: this config would take the admin role away from {} (who is saving it); the grant that gives it today is {}. Keep a grant with role \"admin\" whose src matches you, or use the local break-glass admin (`iris config put --local`) on the gateway's host",
        saver.label(),
        if lost.is_empty() {
            "not in the new config".to_owned()
        } else {
            lost.join(", ")
        }
    )))
}

/// Replace a file atomically: write a temp file beside it, fsync, rename over, fsync the directory.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(
            tmp.path(),
            std::fs::Permissions::from_mode(meta.permissions().mode()),
        );
    }
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
