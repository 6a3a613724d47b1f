//! Helpers shared by this crate's integration tests: small configs built around one valid
//! provider and one admin grant, and diagnostics rendered as the user sees them.

#![allow(dead_code)]

use std::collections::HashMap;

use iris_config::{Config, Diagnostic, check, load};

/// A valid provider body (id `p`, two models). No network is ever contacted by this crate.
pub const P_OK: &str =
    r#""baseurl": "http://127.0.0.1:8080", "apikey": "sk-test-secret", "models": ["m1", "m2"]"#;

/// A grant that makes `P_OK` configs warning-free.
pub const ADMIN_ALL: &str = r#"{"src": ["*"], "app": {"tailscale.com/cap/aperture": [{"role": "admin"}, {"role": "user"}, {"models": "**"}]}}"#;

pub fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Config with provider `p` whose fields are `body`, plus the admin grant.
pub fn with_provider(body: &str) -> String {
    format!("{{\n  \"providers\": {{ \"p\": {{ {body} }} }},\n  \"grants\": [{ADMIN_ALL}],\n}}\n")
}

/// Config with the valid provider `p` and the given `grants` array contents.
pub fn with_grants(grants: &str) -> String {
    format!("{{\n  \"providers\": {{ \"p\": {{ {P_OK} }} }},\n  \"grants\": [{grants}],\n}}\n")
}

/// Config with the valid provider, the admin grant and extra top-level entries.
pub fn with_top(extra: &str) -> String {
    format!(
        "{{\n  \"providers\": {{ \"p\": {{ {P_OK} }} }},\n  \"grants\": [{ADMIN_ALL}],\n  {extra}\n}}\n"
    )
}

/// Config with an `"iris"` section whose fields are `body`.
pub fn with_iris(body: &str) -> String {
    with_top(&format!("\"iris\": {{ {body} }},"))
}

pub fn render(diags: &[Diagnostic]) -> Vec<String> {
    diags.iter().map(ToString::to_string).collect()
}

pub fn diags_env(text: &str, env: &HashMap<String, String>) -> Vec<String> {
    render(&check(text, env))
}

pub fn diags(text: &str) -> Vec<String> {
    diags_env(text, &HashMap::new())
}

/// Loads a config that must have no errors (warnings allowed).
#[track_caller]
pub fn loaded(text: &str) -> Config {
    match load(text, &HashMap::new()) {
        Ok(l) => l.config,
        Err(d) => panic!("config did not load:\n{}", render(&d).join("\n")),
    }
}
