//! iris configuration: one HuJSON file (JSON with comments and trailing commas) in Tailscale
//! Aperture's schema (`providers`, `grants`, legacy `temp_grants`, with Aperture's meanings), plus
//! iris's own settings under the top-level key `"iris"`.
//!
//! Layout: [`load`] runs two phases. Phase 1 (`raw`) parses the text into a tree that keeps file
//! order and collapses duplicate keys with a warning; `env` then substitutes `${VAR}` macros in
//! string values. Phase 2 (`validate`) turns the tree into a [`Config`], reporting *every* problem
//! at once as a [`Diagnostic`] with a path such as `providers.anthropic.baseurl`, including
//! unknown keys at every level. `types` holds the validated types; `duration` the `"10s"` parser.
//!
//! **Architecture Invariant:** this crate does no IO. It never reads files or sockets, and reads
//! environment variables only through an [`EnvSource`] the caller passes ([`ProcessEnv`] in the
//! binary, a `HashMap` in tests). **Architecture Invariant:** no secret value ever appears in a
//! diagnostic or a `Debug`/`Display` output: API keys are [`Secret`]s, and messages about keys,
//! header values and URLs never echo the value.
//!
//! # Environment variables in values
//!
//! Any **string value** in the config (not a key) may refer to environment variables, so that
//! secrets stay out of the file:
//!
//! | written              | becomes                                                              |
//! |----------------------|----------------------------------------------------------------------|
//! | `${NAME}`            | the value of `NAME`; an **error** if `NAME` is not set               |
//! | `${NAME:-fallback}`  | the value of `NAME`, or `fallback` when `NAME` is unset or empty (as in a POSIX shell); the fallback may be empty: `${NAME:-}` |
//! | `$${`                | a literal `${` (no substitution)                                     |
//! | `$` anything else    | itself: `$NAME` without braces is not substituted                    |
//!
//! `NAME` is a letter or `_` followed by letters, digits or `_`. A fallback cannot contain `}` and
//! is used as written (it is not substituted again). A variable that is set to the empty string
//! substitutes as empty with `${NAME}`.
//!
//! An unset variable without a fallback is reported at the value's path as
//! `unsubstituted macros: [NAME]` (Aperture's message; several names are separated by spaces).
//! A `${` without a closing `}`, or an invalid name, is also an error. Error messages never include
//! a variable's value.
//!
//! Example: `"apikey": "${ANTHROPIC_API_KEY}"`, or `"apikey": "${ANTHROPIC_API_KEY:-}"` to start
//! without a key (with a warning) when the variable is unset.

mod diagnostic;
mod duration;
mod env;
mod raw;
mod types;
mod validate;

pub use diagnostic::{Diagnostic, Severity};
pub use duration::{DurationError, parse_duration};
pub use env::{EnvSource, ProcessEnv};
pub use types::{
    AuthMode, AuthScheme, Cap, CaptureSettings, Compatibility, Config, CostRule, DEFAULT_LISTEN,
    DatabaseSettings, Grant, GrantOrigin, IdentitySettings, IrisSettings, Provider, Role, Secret,
    Timeouts, UsageSettings,
};
pub use validate::{ModelPatternError, compile_model_pattern};

use diagnostic::{Diags, Path};

/// A config that loaded, with the warnings found on the way (log them).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Parses and validates a config. On any error, returns every diagnostic (errors and warnings,
/// in the order found) so the user can fix them all in one pass.
pub fn load(text: &str, env: &dyn EnvSource) -> Result<Loaded, Vec<Diagnostic>> {
    let (diags, config) = analyze(text, env);
    match config {
        Some(config) if !diags.iter().any(Diagnostic::is_error) => Ok(Loaded {
            config,
            warnings: diags,
        }),
        _ => Err(diags),
    }
}

/// Every diagnostic for a config, errors and warnings (for `iris config validate`). Empty means
/// the config is clean.
pub fn check(text: &str, env: &dyn EnvSource) -> Vec<Diagnostic> {
    analyze(text, env).0
}

fn analyze(text: &str, env: &dyn EnvSource) -> (Vec<Diagnostic>, Option<Config>) {
    let mut d = Diags::default();
    let Some(mut raw) = raw::parse(text, &mut d) else {
        return (d.into_vec(), None);
    };
    env::substitute_tree(&mut raw, env, &Path::root(), &mut d);
    let config = validate::validate(&raw, &mut d);
    let config = if d.has_errors() { None } else { config };
    (d.into_vec(), config)
}

impl Cap {
    /// Reads one Aperture capability object, as found in `app["tailscale.com/cap/aperture"]` of a
    /// config grant or in the WhoIs `CapMap` of a tailnet policy grant. Fields iris does not use
    /// are ignored; an invalid `role` or `models` is an error (all problems joined with `"; "`).
    pub fn from_json(v: &serde_json::Value) -> Result<Cap, String> {
        let mut d = Diags::default();
        let cap = validate::cap_from_raw(&raw::Raw::from_json(v), &Path::root(), false, &mut d);
        let errors: Vec<String> = d
            .into_vec()
            .into_iter()
            .filter(Diagnostic::is_error)
            .map(|e| {
                if e.path.is_empty() {
                    e.message
                } else {
                    format!("{}: {}", e.path, e.message)
                }
            })
            .collect();
        match cap {
            Some((cap, _)) if errors.is_empty() => Ok(cap),
            _ => Err(errors.join("; ")),
        }
    }
}

/// The commented config `iris` writes on first run. It loads without errors; without
/// `ANTHROPIC_API_KEY` / `OPENAI_API_KEY` set it warns that those providers have no key.
pub fn default_config_text() -> &'static str {
    include_str!("default_config.hujson")
}
