//! The decoder of tailscaled's WhoIs answer (`iris_identity::whois::decode`, what the WhoIs
//! client runs on a 200 body), then what the server does with the principal once per connection:
//! compile its `CapMap` grants (`iris_policy::TailnetGrants::compile`, which reads each value with
//! `iris_config::Cap::from_json`) and evaluate them.
//!
//! Properties (ARCHITECTURE.md, identity): a tagged node's identity is its tags and never a
//! login; the synthetic `tagged-devices` login is never an identity; tags come out sorted,
//! deduplicated and non-empty; a principal always has a login or tags.
#![no_main]

use iris_identity::IdentitySource;
use iris_identity::whois::{TAGGED_DEVICES_LOGIN, decode};
use iris_policy::{Policy, TailnetGrants};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = decode(data) else {
        return;
    };
    assert_eq!(p.source, IdentitySource::Whois);
    assert!(
        p.login.is_some() == p.tags.is_empty(),
        "login xor tags: {p:?}"
    );
    if let Some(login) = &p.login {
        assert_ne!(login, TAGGED_DEVICES_LOGIN);
        assert!(!login.trim().is_empty());
    } else {
        assert!(p.display_name.is_none() && p.groups.is_empty());
    }
    assert!(
        p.tags.windows(2).all(|w| w[0] < w[1]),
        "tags not sorted/deduplicated"
    );
    assert!(p.tags.iter().all(|t| !t.is_empty() && t.trim() == t));
    let _ = p.label();

    let tailnet = TailnetGrants::compile(&p.cap_grants);
    assert!(tailnet.rejected.len() <= p.cap_grants.len());
    let policy = Policy::default();
    for model in [
        None,
        Some("anthropic/claude-sonnet-4-5"),
        Some("openai/gpt-5"),
    ] {
        let d = policy.evaluate(&p, &tailnet, model);
        let _ = d.outcome();
        if let Some(m) = model {
            assert_eq!(policy.model_in(&p, &tailnet, m), d.model_granted);
        }
    }
});
