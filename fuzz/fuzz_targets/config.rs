//! The config: `iris_config::load` and `check` on arbitrary text (HuJSON parsing, `${VAR}`
//! substitution, the full validation), with a pure in-memory environment. A config that loads is
//! then compiled the way the server does it (route table, model list, grant policy).
//!
//! Properties:
//! - `load` and `check` report the same diagnostics, in the same order (validation is
//!   deterministic), and `load` succeeds exactly when there is no error;
//! - every error is reported with a message;
//! - a planted secret, substituted from the environment, never appears in a diagnostic about a
//!   provider's `apikey`, `baseurl` or `add_headers` (the crate's no-secret invariant).
#![no_main]

use std::collections::HashMap;

use iris_config::{Diagnostic, check, load};
use libfuzzer_sys::fuzz_target;

/// Recognisable, and long enough never to occur by chance.
const SECRET: &str = "sk-fuzz-PLANTED-9f3c2e71a4b8";

fn env() -> HashMap<String, String> {
    [
        ("ANTHROPIC_API_KEY", SECRET),
        ("OPENAI_API_KEY", SECRET),
        ("KEY", SECRET),
        ("EMPTY", ""),
        ("HOST", "127.0.0.1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// For a path `providers.<name>.<field>...` (the name possibly written `["..."]`), the field.
fn provider_field(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("providers")?;
    let after_name = if let Some(r) = rest.strip_prefix('.') {
        let end = r.find(['.', '[']).unwrap_or(r.len());
        &r[end..]
    } else {
        let r = rest.strip_prefix('[')?;
        let mut it = serde_json::Deserializer::from_str(r).into_iter::<String>();
        it.next()?.ok()?;
        r[it.byte_offset()..].strip_prefix(']')?
    };
    let field = after_name.strip_prefix('.')?;
    let end = field.find(['.', '[']).unwrap_or(field.len());
    Some(&field[..end])
}

fn check_secret(d: &Diagnostic) {
    if matches!(
        provider_field(&d.path),
        Some("apikey" | "baseurl" | "add_headers")
    ) {
        assert!(
            !d.message.contains(SECRET),
            "a diagnostic leaks the secret: {d}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = env();
    let checked = check(text, &env);
    let loaded = load(text, &env);
    let reported = match &loaded {
        Ok(l) => &l.warnings,
        Err(all) => all,
    };
    assert_eq!(&checked, reported, "load and check disagree");
    assert_eq!(
        loaded.is_ok(),
        !checked.iter().any(Diagnostic::is_error),
        "load succeeded with errors, or failed without one"
    );
    for d in &checked {
        assert!(
            !d.message.is_empty(),
            "a diagnostic without a message at {:?}",
            d.path
        );
        check_secret(d);
    }
    let Ok(loaded) = loaded else {
        return;
    };
    let config = &loaded.config;
    for p in &config.providers {
        for family in iris_providers::ApiFamily::ALL {
            let _ = iris_providers::upstream_url(p, family, Some("beta=true"));
        }
        let _ = iris_providers::auth_header(p);
    }
    let table = iris_providers::RouteTable::new(config);
    let models = table.models();
    for m in &models {
        for family in iris_providers::ApiFamily::ALL {
            let _ = table.resolve(&m.id, family);
        }
    }
    let policy = iris_policy::Policy::new(&config.grants);
    let tailnet = iris_policy::TailnetGrants::default();
    let principal = iris_identity::Principal::loopback();
    let decision = policy.evaluate(&principal, &tailnet, models.first().map(|m| m.id.as_str()));
    let _ = decision.outcome();
});
