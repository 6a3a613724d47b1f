//! `iris setup`: client configuration that points a tool at the gateway.
//!
//! [`render`] is pure: target, gateway URL and options in, the file's contents out (exactly what
//! a fresh file would hold). [`write()`] puts it in place under a home directory: it merges into an
//! existing file (keeping every other key, comment and the layout as written), copies the old file
//! to `<file>.bak-<unix-ts>` first, and writes the new one atomically (temp file, then rename).
//!
//! | target        | file (under `$HOME`)            | what is set |
//! |---------------|---------------------------------|-------------|
//! | `claude-code` | `.claude/settings.json`         | `env.ANTHROPIC_BASE_URL` (no `/v1`), `apiKeyHelper` |
//! | `codex`       | `.codex/config.toml`            | `model_provider = "iris"`, `[model_providers.iris]` (`wire_api = "responses"`) |
//! | `gemini`      | `.gemini/.env`                  | `GOOGLE_GEMINI_BASE_URL`, `GEMINI_API_KEY` |
//! | `opencode`    | `.config/opencode/opencode.json`| providers `iris` (`@ai-sdk/openai-compatible`) and `iris-anthropic` (`@ai-sdk/anthropic`) |
//! | `env`         | none (printed)                  | `export` lines for the OpenAI and Anthropic SDKs |
//!
//! Keys are never written into these files: a key is referenced through an environment variable
//! ([`SetupOptions::key_env`]) or a file ([`SetupOptions::key_file`]), each in the way the tool
//! supports (a shell helper, `env_key`, `{env:..}`/`{file:..}`, `auth.command`).

mod dotenv;
mod json;
mod toml;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use thiserror::Error;

use crate::http::BaseUrl;

/// The placeholder credential sent when the gateway identifies callers by their tailnet identity.
pub const PLACEHOLDER_KEY: &str = "not-needed";

/// A client tool to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetupTarget {
    ClaudeCode,
    Codex,
    Gemini,
    OpenCode,
    /// Shell `export` lines (OpenAI and Anthropic SDKs, `llm`, most other tools).
    Env,
}

impl SetupTarget {
    pub const ALL: [SetupTarget; 5] = [
        SetupTarget::ClaudeCode,
        SetupTarget::Codex,
        SetupTarget::Gemini,
        SetupTarget::OpenCode,
        SetupTarget::Env,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SetupTarget::ClaudeCode => "claude-code",
            SetupTarget::Codex => "codex",
            SetupTarget::Gemini => "gemini",
            SetupTarget::OpenCode => "opencode",
            SetupTarget::Env => "env",
        }
    }

    /// Where the configuration goes, relative to the home directory (`None`: printed only).
    pub fn relative_path(self) -> Option<&'static str> {
        match self {
            SetupTarget::ClaudeCode => Some(".claude/settings.json"),
            SetupTarget::Codex => Some(".codex/config.toml"),
            SetupTarget::Gemini => Some(".gemini/.env"),
            SetupTarget::OpenCode => Some(".config/opencode/opencode.json"),
            SetupTarget::Env => None,
        }
    }
}

impl fmt::Display for SetupTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SetupTarget {
    type Err = SetupError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "claude-code" | "claude" | "claudecode" => Ok(SetupTarget::ClaudeCode),
            "codex" => Ok(SetupTarget::Codex),
            "gemini" | "gemini-cli" => Ok(SetupTarget::Gemini),
            "opencode" => Ok(SetupTarget::OpenCode),
            "env" | "shell" => Ok(SetupTarget::Env),
            other => Err(SetupError::InvalidOption(format!(
                "unknown client `{other}`: choose one of claude-code, codex, gemini, opencode, env"
            ))),
        }
    }
}

/// Which API family a model is used through (picks the OpenCode provider package).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelApi {
    /// OpenAI Chat Completions / Responses (`@ai-sdk/openai-compatible`).
    OpenAi,
    /// Anthropic Messages (`@ai-sdk/anthropic`).
    Anthropic,
}

/// A model the gateway offers, by the id a client requests it with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetupModel {
    pub id: String,
    pub api: ModelApi,
}

/// Reads the models out of a gateway answer: `GET /api/models` (`{"models": [{"id",
/// "compatibility"}]}`), an OpenAI-style `GET /v1/models` (`{"data": [{"id"}]}`), or a bare array
/// of ids. A model served only on APIs other than OpenAI's and Anthropic's is left out.
pub fn models_from_api(answer: &Value) -> Vec<SetupModel> {
    let list = answer
        .get("models")
        .or_else(|| answer.get("data"))
        .unwrap_or(answer);
    let Some(items) = list.as_array() else {
        return Vec::new();
    };
    let mut out: Vec<SetupModel> = Vec::new();
    for item in items {
        let (id, api) = match item {
            Value::String(id) => (id.as_str(), Some(ModelApi::OpenAi)),
            Value::Object(_) => match item.get("id").and_then(Value::as_str) {
                Some(id) => (id, api_of(item.get("compatibility"))),
                None => continue,
            },
            _ => continue,
        };
        if let Some(api) = api
            && !out.iter().any(|m| m.id == id)
        {
            out.push(SetupModel {
                id: id.to_owned(),
                api,
            });
        }
    }
    out
}

fn api_of(compat: Option<&Value>) -> Option<ModelApi> {
    let has = |flag: &str| match compat {
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(flag)),
        Some(Value::Object(o)) => o.get(flag).and_then(Value::as_bool) == Some(true),
        _ => false,
    };
    match compat {
        None | Some(Value::Null) => Some(ModelApi::OpenAi),
        Some(_) if has("openai_chat") || has("openai_responses") => Some(ModelApi::OpenAi),
        Some(_) if has("anthropic_messages") => Some(ModelApi::Anthropic),
        Some(_) => None,
    }
}

/// Choices that change what is rendered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupOptions {
    /// The name of an environment variable that holds an iris key (`IRIS_API_KEY`).
    pub key_env: Option<String>,
    /// An absolute path to a file that holds an iris key.
    pub key_file: Option<PathBuf>,
    /// A default model to select, where the tool has such a setting.
    pub model: Option<String>,
    /// Models to list where the tool needs them listed (OpenCode); see [`models_from_api`].
    pub models: Vec<SetupModel>,
}

/// How [`write()`] combines the rendered configuration with an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeKind {
    /// JSON (comments allowed): set our keys, keep every other key, comment and the layout.
    Json,
    /// TOML: set our keys and replace our table, keep the rest as written.
    Toml,
    /// `KEY=value` lines: replace our keys' lines in place, append the missing ones.
    DotEnv,
    /// No file: the contents are for the terminal.
    Print,
}

/// One client's configuration, ready to show or to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub target: SetupTarget,
    /// The file it belongs in, relative to the home directory (`.claude/settings.json`); `None`
    /// for [`SetupTarget::Env`].
    pub path: Option<PathBuf>,
    /// The whole file as a fresh one would be (or the lines to print).
    pub contents: String,
    pub merge: MergeKind,
    /// Things to tell the person (what to export, what was assumed).
    pub notes: Vec<String>,
    plan: Plan,
}

impl Rendered {
    /// The path as a person writes it: `~/.claude/settings.json`.
    pub fn display_path(&self) -> Option<String> {
        self.path
            .as_ref()
            .map(|p| format!("~/{}", p.to_string_lossy()))
    }
}

/// What to set in the target file; both [`render`] and [`write()`] apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    ClaudeCode {
        base_url: String,
        helper: String,
        model: Option<String>,
    },
    Codex {
        base_url_v1: String,
        key: KeySource,
        model: Option<String>,
    },
    OpenCode {
        base_url_v1: String,
        api_key: String,
        openai: Vec<String>,
        anthropic: Vec<String>,
        model: Option<String>,
    },
    DotEnv {
        vars: Vec<(String, String)>,
        heading: String,
    },
    Print,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeySource {
    None,
    Env(String),
    File(String),
}

/// The outcome of [`write()`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// The file written (a symlink's target when the configured path was a symlink).
    pub path: PathBuf,
    /// Where the previous version was copied, if there was one and it changed.
    pub backup: Option<PathBuf>,
    /// The file did not exist before.
    pub created: bool,
    /// False when the file already said exactly this (nothing written, no backup).
    pub changed: bool,
    /// What the merge did besides setting iris's keys (values replaced or removed).
    pub notes: Vec<String>,
}

#[derive(Debug, Error)]
pub enum SetupError {
    #[error("`{url}` is not a gateway URL: {reason} (expected http://host:port or https://host)")]
    InvalidGateway { url: String, reason: String },
    #[error("{0}")]
    InvalidOption(String),
    #[error("`{target}` has no file to write: print its lines instead")]
    NoFile { target: SetupTarget },
    #[error("cannot merge into {}: it is not valid {kind} ({detail}); fix or move it, then run again", .path.display())]
    Parse {
        path: PathBuf,
        kind: &'static str,
        detail: String,
    },
    #[error("cannot merge into {}: {detail}; fix or move it, then run again", .path.display())]
    Shape { path: PathBuf, detail: String },
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// A merge failure before the file path is known.
pub(crate) enum MergeError {
    Parse { kind: &'static str, detail: String },
    Shape(String),
}

impl MergeError {
    fn at(self, path: &Path) -> SetupError {
        match self {
            MergeError::Parse { kind, detail } => SetupError::Parse {
                path: path.to_owned(),
                kind,
                detail,
            },
            MergeError::Shape(detail) => SetupError::Shape {
                path: path.to_owned(),
                detail,
            },
        }
    }
}

/// A merged file and what the merge changed besides iris's own keys.
pub(crate) struct Merged {
    text: String,
    notes: Vec<String>,
}

/// The configuration of `target` for the gateway at `gateway_url` (the gateway's root, as in
/// `http://ai` or `https://iris.example.com`; a trailing `/v1` is taken off, with a note).
pub fn render(
    target: SetupTarget,
    gateway_url: &str,
    opts: &SetupOptions,
) -> Result<Rendered, SetupError> {
    let mut notes = Vec::new();
    let base = gateway_root(gateway_url, &mut notes)?;
    let key = key_source(opts)?;
    if let Some(m) = &opts.model
        && (m.trim().is_empty() || m.chars().any(char::is_control))
    {
        return Err(SetupError::InvalidOption(
            "the model name is empty or has control characters".to_owned(),
        ));
    }
    let model = opts.model.as_ref().map(|m| m.trim().to_owned());
    let base_v1 = format!("{base}/v1");

    let (plan, merge) = match target {
        SetupTarget::ClaudeCode => {
            let helper = match &key {
                KeySource::None => "echo iris-placeholder".to_owned(),
                KeySource::Env(name) => format!("echo \"${name}\""),
                KeySource::File(path) => format!("cat {}", sh_quote(path)),
            };
            let plan = Plan::ClaudeCode {
                base_url: base.clone(),
                helper,
                model,
            };
            (plan, MergeKind::Json)
        }
        SetupTarget::Codex => {
            if let KeySource::Env(name) = &key {
                notes.push(format!(
                    "Codex reads the key from ${name}: export it in the shell that runs codex"
                ));
            }
            let plan = Plan::Codex {
                base_url_v1: base_v1,
                key: key.clone(),
                model,
            };
            (plan, MergeKind::Toml)
        }
        SetupTarget::Gemini => {
            let mut vars = vec![
                ("GOOGLE_GEMINI_BASE_URL".to_owned(), base.clone()),
                ("GEMINI_API_KEY".to_owned(), PLACEHOLDER_KEY.to_owned()),
            ];
            if let Some(m) = model {
                vars.push(("GEMINI_MODEL".to_owned(), m));
            }
            let export = match &key {
                KeySource::None => None,
                KeySource::Env(name) => Some(format!("export GEMINI_API_KEY=\"${name}\"")),
                KeySource::File(path) => Some(format!(
                    "export GEMINI_API_KEY=\"$(cat {})\"",
                    sh_quote(path)
                )),
            };
            if let Some(export) = export {
                notes.push(format!(
                    "Gemini CLI reads .env values literally (no variables), so the file holds a placeholder key; to send your iris key, run `{export}` in the shell that runs gemini (a variable already in the environment wins over .env)"
                ));
            }
            let plan = Plan::DotEnv {
                vars,
                heading: "# iris gateway (written by `iris setup gemini`)".to_owned(),
            };
            (plan, MergeKind::DotEnv)
        }
        SetupTarget::OpenCode => {
            let api_key = match &key {
                KeySource::None => PLACEHOLDER_KEY.to_owned(),
                KeySource::Env(name) => format!("{{env:{name}}}"),
                KeySource::File(path) => format!("{{file:{path}}}"),
            };
            let openai: Vec<String> = opts
                .models
                .iter()
                .filter(|m| m.api == ModelApi::OpenAi)
                .map(|m| m.id.clone())
                .collect();
            let anthropic: Vec<String> = opts
                .models
                .iter()
                .filter(|m| m.api == ModelApi::Anthropic)
                .map(|m| m.id.clone())
                .collect();
            if openai.is_empty() && anthropic.is_empty() {
                notes.push(
                    "no models were listed: OpenCode shows a custom provider's models only when they are named under provider.iris.models (run setup while the gateway is reachable to list them)".to_owned(),
                );
            }
            let model = model.map(|m| {
                let provider = if anthropic.contains(&m) && !openai.contains(&m) {
                    json::OPENCODE_ANTHROPIC
                } else {
                    json::OPENCODE_OPENAI
                };
                format!("{provider}/{m}")
            });
            let plan = Plan::OpenCode {
                base_url_v1: base_v1,
                api_key,
                openai,
                anthropic,
                model,
            };
            (plan, MergeKind::Json)
        }
        SetupTarget::Env => (Plan::Print, MergeKind::Print),
    };

    let contents = match &plan {
        Plan::Print => env_lines(&base, &key),
        _ => {
            let path = PathBuf::from(target.relative_path().unwrap_or("(new file)"));
            apply(&plan, "").map_err(|e| e.at(&path))?.text
        }
    };
    Ok(Rendered {
        target,
        path: target.relative_path().map(PathBuf::from),
        contents,
        merge,
        notes,
        plan,
    })
}

/// Merges `rendered` into `existing` (the current text of its file; `""` for none): the text the
/// file would hold after [`write()`]. Pure.
pub fn merge(rendered: &Rendered, existing: &str) -> Result<String, SetupError> {
    let path = rendered.path.clone().ok_or(SetupError::NoFile {
        target: rendered.target,
    })?;
    apply(&rendered.plan, existing)
        .map(|m| m.text)
        .map_err(|e| e.at(&path))
}

fn apply(plan: &Plan, existing: &str) -> Result<Merged, MergeError> {
    match plan {
        Plan::ClaudeCode {
            base_url,
            helper,
            model,
        } => json::merge_claude_code(existing, base_url, helper, model.as_deref()),
        Plan::Codex {
            base_url_v1,
            key,
            model,
        } => toml::merge_codex(existing, base_url_v1, key, model.as_deref()),
        Plan::OpenCode {
            base_url_v1,
            api_key,
            openai,
            anthropic,
            model,
        } => json::merge_opencode(
            existing,
            base_url_v1,
            api_key,
            openai,
            anthropic,
            model.as_deref(),
        ),
        Plan::DotEnv { vars, heading } => Ok(dotenv::merge(existing, vars, heading)),
        Plan::Print => Err(MergeError::Shape("nothing to merge".to_owned())),
    }
}

/// Writes `rendered` into its file under `home`, merging and backing up (see the module docs).
pub fn write(rendered: &Rendered, home: &Path) -> Result<WriteReport, SetupError> {
    let rel = rendered.path.as_ref().ok_or(SetupError::NoFile {
        target: rendered.target,
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    write_to(rendered, &home.join(rel), now)
}

/// [`write()`] to an explicit file (for `CODEX_HOME` or `XDG_CONFIG_HOME` layouts), naming any
/// backup after `unix_ts`.
pub fn write_to(rendered: &Rendered, file: &Path, unix_ts: u64) -> Result<WriteReport, SetupError> {
    if rendered.merge == MergeKind::Print {
        return Err(SetupError::NoFile {
            target: rendered.target,
        });
    }
    let io_err = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| SetupError::Io {
            action,
            path,
            source,
        }
    };
    // A dotfiles symlink stays a symlink: write through to its target.
    let target = match fs::symlink_metadata(file) {
        Ok(m) if m.file_type().is_symlink() => {
            fs::canonicalize(file).map_err(io_err("follow the symlink", file))?
        }
        _ => file.to_owned(),
    };
    let existing = match fs::read_to_string(&target) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("read", &target)(e)),
    };
    let merged =
        apply(&rendered.plan, existing.as_deref().unwrap_or("")).map_err(|e| e.at(&target))?;
    if existing.as_deref() == Some(merged.text.as_str()) {
        return Ok(WriteReport {
            path: target,
            backup: None,
            created: false,
            changed: false,
            notes: merged.notes,
        });
    }
    let backup = match &existing {
        Some(_) => Some(backup(&target, unix_ts)?),
        None => None,
    };
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io_err("create the directory", parent))?;
    }
    atomic_write(&target, merged.text.as_bytes())?;
    Ok(WriteReport {
        path: target,
        backup,
        created: existing.is_none(),
        changed: true,
        notes: merged.notes,
    })
}

/// Copies `file` to `<file>.bak-<unix_ts>` (or `...-1`, `-2` when that exists).
fn backup(file: &Path, unix_ts: u64) -> Result<PathBuf, SetupError> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".to_owned());
    let mut candidate = file.with_file_name(format!("{name}.bak-{unix_ts}"));
    let mut n = 1;
    while candidate.exists() {
        candidate = file.with_file_name(format!("{name}.bak-{unix_ts}-{n}"));
        n += 1;
    }
    fs::copy(file, &candidate).map_err(|source| SetupError::Io {
        action: "back up",
        path: file.to_owned(),
        source,
    })?;
    Ok(candidate)
}

/// Writes through a temporary file in the same directory and a rename, keeping the permissions
/// of the file it replaces.
fn atomic_write(file: &Path, bytes: &[u8]) -> Result<(), SetupError> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".to_owned());
    let tmp = file.with_file_name(format!(".{name}.iris-tmp-{}", std::process::id()));
    let result = (|| {
        fs::write(&tmp, bytes)?;
        if let Ok(meta) = fs::metadata(file) {
            fs::set_permissions(&tmp, meta.permissions())?;
        }
        fs::rename(&tmp, file)
    })();
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(SetupError::Io {
            action: "write",
            path: file.to_owned(),
            source,
        });
    }
    Ok(())
}

/// The gateway's root URL, checked, without a trailing slash or `/v1`.
fn gateway_root(url: &str, notes: &mut Vec<String>) -> Result<String, SetupError> {
    let invalid = |reason: String| SetupError::InvalidGateway {
        url: url.to_owned(),
        reason,
    };
    let base = BaseUrl::parse(url).map_err(invalid)?;
    let mut root = base.to_string();
    if let Some(bad) = root
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~:/[]%".contains(*c)))
    {
        return Err(invalid(format!(
            "the character `{bad}` cannot be written safely into client configs"
        )));
    }
    if let Some(stripped) = root.strip_suffix("/v1") {
        notes.push(format!(
            "took `/v1` off the gateway URL: clients add it themselves (a base URL ending in /v1 gives /v1/v1); using {stripped}"
        ));
        root = stripped.to_owned();
    }
    Ok(root)
}

fn key_source(opts: &SetupOptions) -> Result<KeySource, SetupError> {
    match (&opts.key_env, &opts.key_file) {
        (Some(_), Some(_)) => Err(SetupError::InvalidOption(
            "give the iris key either as an environment variable or as a file, not both".to_owned(),
        )),
        (Some(name), None) => {
            let name = name.trim().trim_start_matches('$');
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(SetupError::InvalidOption(format!(
                    "`{name}` is not an environment variable name (letters, digits and _, not starting with a digit)"
                )));
            }
            Ok(KeySource::Env(name.to_owned()))
        }
        (None, Some(path)) => {
            if !path.is_absolute() {
                return Err(SetupError::InvalidOption(format!(
                    "the key file {} must be an absolute path (tools run from other directories)",
                    path.display()
                )));
            }
            let Some(text) = path.to_str() else {
                return Err(SetupError::InvalidOption(
                    "the key file path is not valid UTF-8".to_owned(),
                ));
            };
            if text.chars().any(|c| c.is_control() || c == '{' || c == '}') {
                return Err(SetupError::InvalidOption(
                    "the key file path has characters (control characters or braces) that cannot be written safely into client configs".to_owned(),
                ));
            }
            Ok(KeySource::File(text.to_owned()))
        }
        (None, None) => Ok(KeySource::None),
    }
}

/// `s` as one shell word: unchanged when it only has safe characters, else single-quoted.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/:=@%+,".contains(c))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn env_lines(base: &str, key: &KeySource) -> String {
    let key_value = match key {
        KeySource::None => PLACEHOLDER_KEY.to_owned(),
        KeySource::Env(name) => format!("\"${name}\""),
        KeySource::File(path) => format!("\"$(cat {})\"", sh_quote(path)),
    };
    format!(
        "export OPENAI_BASE_URL={v1}\n\
         export OPENAI_API_KEY={key_value}\n\
         export ANTHROPIC_BASE_URL={root}\n\
         export ANTHROPIC_API_KEY={key_value}\n",
        v1 = sh_quote(&format!("{base}/v1")),
        root = sh_quote(base),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_round_trip() {
        for t in SetupTarget::ALL {
            assert_eq!(t.name().parse::<SetupTarget>().unwrap(), t);
        }
        assert_eq!(
            "Claude".parse::<SetupTarget>().unwrap(),
            SetupTarget::ClaudeCode
        );
        assert!("vim".parse::<SetupTarget>().is_err());
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(sh_quote("/home/a/key"), "/home/a/key");
        assert_eq!(sh_quote("/home/a b/key"), "'/home/a b/key'");
        assert_eq!(sh_quote("/x/it's"), r"'/x/it'\''s'");
        assert_eq!(sh_quote("http://[::1]:4747"), "'http://[::1]:4747'");
    }

    #[test]
    fn models_from_answers() {
        let answer = serde_json::json!({"models": [
            {"id": "gpt-4o", "provider": "openai", "compatibility": ["openai_chat", "openai_responses"]},
            {"id": "claude-sonnet-4-5", "provider": "anthropic", "compatibility": ["anthropic_messages"]},
            {"id": "gemini-2.5-pro", "compatibility": ["gemini_generate_content"]},
            {"id": "llama", "compatibility": {"openai_chat": true}},
            {"id": "gpt-4o", "compatibility": ["openai_chat"]},
            {"provider": "no-id"}
        ]});
        let got = models_from_api(&answer);
        let ids: Vec<(&str, ModelApi)> = got.iter().map(|m| (m.id.as_str(), m.api)).collect();
        assert_eq!(
            ids,
            [
                ("gpt-4o", ModelApi::OpenAi),
                ("claude-sonnet-4-5", ModelApi::Anthropic),
                ("llama", ModelApi::OpenAi)
            ]
        );
        let openai_list = serde_json::json!({"object": "list", "data": [{"id": "a"}, {"id": "b"}]});
        assert_eq!(models_from_api(&openai_list).len(), 2);
        assert!(models_from_api(&serde_json::json!({"x": 1})).is_empty());
    }

    #[test]
    fn gateway_urls() {
        let mut notes = Vec::new();
        assert_eq!(gateway_root("http://ai/", &mut notes).unwrap(), "http://ai");
        assert!(notes.is_empty());
        assert_eq!(
            gateway_root("http://127.0.0.1:4747/v1", &mut notes).unwrap(),
            "http://127.0.0.1:4747"
        );
        assert_eq!(notes.len(), 1);
        assert!(gateway_root("ai:4747", &mut notes).is_err());
        assert!(gateway_root("http://ai/$(reboot)", &mut notes).is_err());
    }

    #[test]
    fn key_options_are_checked() {
        let env = |n: &str| SetupOptions {
            key_env: Some(n.into()),
            ..SetupOptions::default()
        };
        assert_eq!(
            key_source(&env("IRIS_KEY")).unwrap(),
            KeySource::Env("IRIS_KEY".into())
        );
        assert_eq!(
            key_source(&env("$IRIS_KEY")).unwrap(),
            KeySource::Env("IRIS_KEY".into())
        );
        for bad in ["1KEY", "A;rm -rf", "", "A-B"] {
            assert!(key_source(&env(bad)).is_err(), "{bad}");
        }
        let file = |p: &str| SetupOptions {
            key_file: Some(p.into()),
            ..SetupOptions::default()
        };
        assert!(key_source(&file("relative/key")).is_err());
        assert!(key_source(&file("/a/{b}")).is_err());
        assert!(key_source(&file("/home/a/.iris-key")).is_ok());
        let both = SetupOptions {
            key_env: Some("A".into()),
            key_file: Some("/k".into()),
            ..SetupOptions::default()
        };
        assert!(key_source(&both).is_err());
    }
}
