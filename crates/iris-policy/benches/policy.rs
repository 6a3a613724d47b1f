//! Micro-benchmarks of grant evaluation, run on every request twice (once for the role, once for
//! the model), and of model-pattern matching (`provider/model` globs).
//!
//! Run: `cargo bench -p iris-policy` (scripts/bench runs it with short measurement times).

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iris_identity::{IdentitySource, Principal};
use iris_policy::{Policy, TailnetGrants, compile_models_glob};
use serde_json::json;

/// A config with the grants a mid-sized team writes: admins, groups, tags, single users,
/// `(loopback)`, a catch-all, and a couple of legacy temp grants.
const CONFIG: &str = r#"{
  "providers": {
    "openai": {"baseurl": "http://127.0.0.1:9", "apikey": "k", "models": ["gpt-4o-mini", "gpt-4o", "o3"]},
    "anthropic": {"baseurl": "http://127.0.0.1:9", "apikey": "k", "authorization": "x-api-key",
                  "models": ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-8"], "compatibility": {"anthropic_messages": true}},
  },
  "grants": [
    {"src": ["admin@example.com", "root@example.com"], "app": {"tailscale.com/cap/aperture": [{"role": "admin"}, {"models": "**"}]}},
    {"src": ["group:ml-research"], "app": {"tailscale.com/cap/aperture": [{"role": "user"}, {"models": "openai/gpt-4o*"}, {"models": "anthropic/claude-opus-*"}]}},
    {"src": ["group:support"], "app": {"tailscale.com/cap/aperture": [{"role": "user"}, {"models": "anthropic/claude-haiku-*"}]}},
    {"src": ["tag:ci"], "app": {"tailscale.com/cap/aperture": [{"role": "user"}, {"models": "anthropic/claude-haiku-*"}]}},
    {"src": ["tag:prod,tag:batch"], "app": {"tailscale.com/cap/aperture": [{"role": "user"}, {"models": "openai/*"}]}},
    {"src": ["bob@example.com", "carol@example.com", "dave@example.com"], "app": {"tailscale.com/cap/aperture": [{"role": "user"}, {"models": "openai/o3"}]}},
    {"src": ["group:everyone"], "app": {"tailscale.com/cap/aperture": [{"models": "openai/gpt-4o-mini"}]}},
    {"src": ["(loopback)"], "app": {"tailscale.com/cap/aperture": [{"role": "user"}, {"models": "**"}]}},
    {"src": ["*"], "app": {"tailscale.com/cap/aperture": [{"models": "anthropic/claude-haiku-4-5"}]}},
  ],
}"#;

fn policy() -> Policy {
    let env: HashMap<String, String> = HashMap::new();
    match iris_config::load(CONFIG, &env) {
        Ok(l) => Policy::new(&l.config.grants),
        Err(d) => panic!("bench config invalid: {d:?}"),
    }
}

fn alice() -> Principal {
    Principal {
        source: IdentitySource::Whois,
        login: Some("alice@example.com".into()),
        display_name: Some("Alice Example".into()),
        groups: vec!["group:ml-research".into(), "group:everyone".into()],
        node_name: Some("alice-laptop".into()),
        node_id: Some("nAl1ceCNTRL".into()),
        cap_grants: vec![json!({"role": "user"}), json!({"models": "openai/**"})],
        ..Principal::loopback()
    }
}

fn evaluate(c: &mut Criterion) {
    let p = policy();
    let none = TailnetGrants::default();
    let loopback = Principal::loopback();
    let alice = alice();
    let alice_tailnet = TailnetGrants::compile(&alice.cap_grants);
    let ci = Principal {
        source: IdentitySource::Whois,
        tags: vec!["tag:ci".into()],
        ..Principal::loopback()
    };
    assert!(
        p.evaluate(&loopback, &none, Some("openai/gpt-4o-mini"))
            .model_granted
    );
    assert!(
        p.evaluate(&alice, &alice_tailnet, Some("anthropic/claude-opus-4-8"))
            .model_granted
    );
    assert!(!p.evaluate(&ci, &none, Some("openai/gpt-4o")).model_granted);

    let mut g = c.benchmark_group("policy");
    g.throughput(Throughput::Elements(1));
    g.bench_function("evaluate_role_loopback", |b| {
        b.iter(|| p.evaluate(black_box(&loopback), &none, None))
    });
    g.bench_function("evaluate_model_loopback", |b| {
        b.iter(|| p.evaluate(black_box(&loopback), &none, Some("openai/gpt-4o-mini")))
    });
    g.bench_function("evaluate_model_whois_user_with_capmap", |b| {
        b.iter(|| {
            p.evaluate(
                black_box(&alice),
                &alice_tailnet,
                Some("anthropic/claude-opus-4-8"),
            )
        })
    });
    g.bench_function("evaluate_model_tag_denied", |b| {
        b.iter(|| p.evaluate(black_box(&ci), &none, Some("openai/gpt-4o")))
    });
    g.bench_function("model_in_listing_6_models", |b| {
        let models = [
            "openai/gpt-4o-mini",
            "openai/gpt-4o",
            "openai/o3",
            "anthropic/claude-sonnet-4-5",
            "anthropic/claude-haiku-4-5",
            "anthropic/claude-opus-4-8",
        ];
        b.iter(|| {
            models
                .iter()
                .filter(|m| p.model_in(black_box(&alice), &alice_tailnet, m))
                .count()
        })
    });
    g.bench_function("compile_tailnet_grants", |b| {
        b.iter(|| TailnetGrants::compile(black_box(&alice.cap_grants)))
    });
    g.finish();
}

fn patterns(c: &mut Criterion) {
    let cases = [
        ("double_star", "**", "anthropic/claude-sonnet-4-5"),
        ("provider_star", "openai/*", "openai/gpt-4o-mini"),
        (
            "prefix_star",
            "anthropic/claude-haiku-*",
            "anthropic/claude-haiku-4-5",
        ),
        ("exact", "openai/o3", "openai/o3"),
        ("miss", "anthropic/claude-opus-*", "openai/gpt-4o"),
    ];
    let mut g = c.benchmark_group("model_pattern");
    g.throughput(Throughput::Elements(1));
    for (name, pattern, model) in cases {
        let glob = match compile_models_glob(pattern) {
            Ok(g) => g,
            Err(e) => panic!("{pattern}: {e}"),
        };
        g.bench_function(format!("match_{name}"), |b| {
            b.iter(|| glob.is_match(black_box(model)))
        });
    }
    g.bench_function("compile_prefix_star", |b| {
        b.iter(|| compile_models_glob(black_box("anthropic/claude-haiku-*")))
    });
    g.finish();
}

criterion_group!(benches, evaluate, patterns);
criterion_main!(benches);
