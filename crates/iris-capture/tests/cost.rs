//! Cost estimates: per-model arithmetic under both token accountings, cache tokens, long-context
//! tiers, `model_cost_map` overrides, unknown models and missing rates, basis inference, and the
//! shipped table itself (snapshotted, so every price change shows up in review).

// Test helpers outside #[test] fns panic on bad fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use iris_capture::cost::{BUILTIN_PRICES_JSON, candidates};
use iris_capture::{
    Accounting, CostBasis, CostEstimate, ModelCostRule, PriceTable, RuleError, TokenUsage, estimate,
};

use Accounting::{InputExcludesCache as Excl, InputIncludesCache as Incl};

fn usage(input: u64, output: u64, cache_read: u64, cache_write: u64, reasoning: u64) -> TokenUsage {
    TokenUsage {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
        reasoning_tokens: reasoning,
    }
}

fn rule(pattern: &str, as_model: &str, adjustment: f64) -> ModelCostRule {
    ModelCostRule {
        pattern: pattern.to_owned(),
        as_model: as_model.to_owned(),
        adjustment,
    }
}

fn priced(usd: f64, as_: &str) -> CostEstimate {
    CostEstimate {
        usd: Some(usd),
        priced_as: Some(as_.to_owned()),
        unknown_model: false,
        missing_rate: false,
    }
}

fn assert_close(got: &CostEstimate, want: &CostEstimate, what: &str) {
    assert_eq!(got.priced_as, want.priced_as, "{what}");
    assert_eq!(
        (got.unknown_model, got.missing_rate),
        (want.unknown_model, want.missing_rate),
        "{what}"
    );
    match (got.usd, want.usd) {
        (Some(g), Some(w)) => assert!((g - w).abs() < 1e-12, "{what}: got {g}, want {w}"),
        (g, w) => assert_eq!(g, w, "{what}"),
    }
}

#[test]
fn arithmetic_table() {
    use CostBasis::*;
    let table: Vec<(&str, CostBasis, &str, TokenUsage, Accounting, CostEstimate)> = vec![
        (
            "anthropic: input excludes cache; reads and 5m writes billed apart",
            Anthropic,
            "claude-sonnet-4-5-20250929",
            usage(1_000, 500, 20_000, 3_000, 0),
            Excl,
            // 1000×3 + 20000×0.30 + 3000×3.75 + 500×15
            priced(0.02775, "anthropic/claude-sonnet-4-5"),
        ),
        (
            "openai: cached tokens are inside input and billed at the cache rate",
            OpenAi,
            "gpt-4o-2024-08-06",
            usage(10_000, 2_000, 4_000, 0, 0),
            Incl,
            // 6000×2.50 + 4000×1.25 + 2000×10
            priced(0.04, "openai/gpt-4o"),
        ),
        (
            "openai: reasoning tokens are part of output, not added again",
            OpenAi,
            "gpt-5",
            usage(1_000, 3_000, 0, 0, 2_500),
            Incl,
            priced(0.03125, "openai/gpt-5"),
        ),
        (
            "gpt-5 mini with cache hits",
            OpenAi,
            "gpt-5-mini-2025-08-07",
            usage(100_000, 1_000, 90_000, 0, 0),
            Incl,
            // 10000×0.25 + 90000×0.025 + 1000×2
            priced(0.00675, "openai/gpt-5-mini"),
        ),
        (
            "claude opus 4.8 as Claude Code sends it",
            Anthropic,
            "claude-opus-4-8",
            usage(3, 1_200, 80_000, 1_500, 0),
            Excl,
            // 3×5 + 80000×0.5 + 1500×6.25 + 1200×25
            priced(0.079390, "anthropic/claude-opus-4-8"),
        ),
        (
            "long context tier above 200K prompt tokens",
            Anthropic,
            "claude-sonnet-4-5",
            usage(250_000, 1_000, 0, 0, 0),
            Excl,
            priced(1.5225, "anthropic/claude-sonnet-4-5"),
        ),
        (
            "haiku 5.5 above its 100K tier: every token at the higher rates",
            Anthropic,
            "claude-haiku-5-5",
            usage(50_000, 1_000, 60_000, 0, 0),
            Excl,
            // 50000×0.5 + 60000×0.05 + 1000×2.5
            priced(0.0305, "anthropic/claude-haiku-5-5"),
        ),
        (
            "haiku 5.5 below the tier",
            Anthropic,
            "claude-haiku-5-5",
            usage(50_000, 1_000, 40_000, 0, 0),
            Excl,
            priced(0.0059, "anthropic/claude-haiku-5-5"),
        ),
        (
            "bedrock priced at the publisher's list price, id normalised",
            Bedrock,
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            usage(1_000, 500, 20_000, 3_000, 0),
            Excl,
            priced(0.02775, "anthropic/claude-sonnet-4-5"),
        ),
        (
            "openrouter id with dots, usage in OpenAI accounting",
            OpenRouter,
            "anthropic/claude-sonnet-4.5",
            usage(1_000, 100, 200, 0, 0),
            Incl,
            // 800×3 + 200×0.30 + 100×15
            priced(0.00396, "anthropic/claude-sonnet-4-5"),
        ),
        (
            "vertex id with @version",
            Vertex,
            "claude-haiku-4-5@20251001",
            usage(1_000_000, 0, 0, 0, 0),
            Excl,
            priced(1.0, "anthropic/claude-haiku-4-5"),
        ),
        (
            "embeddings",
            OpenAi,
            "text-embedding-3-small",
            usage(1_000_000, 0, 0, 0, 0),
            Incl,
            priced(0.02, "openai/text-embedding-3-small"),
        ),
        (
            "older snapshot suffix",
            OpenAi,
            "gpt-4-0613",
            usage(1_000, 1_000, 0, 0, 0),
            Incl,
            priced(0.09, "openai/gpt-4"),
        ),
        (
            "gemini long context",
            Google,
            "gemini-2.5-pro",
            usage(300_000, 10_000, 0, 0, 0),
            Incl,
            // 300000×2.5 + 10000×15
            priced(0.9, "google/gemini-2.5-pro"),
        ),
        (
            "zero usage costs zero",
            OpenAi,
            "o3",
            usage(0, 0, 0, 0, 0),
            Incl,
            priced(0.0, "openai/o3"),
        ),
    ];
    for (what, basis, model, u, acc, want) in table {
        let got = estimate(basis, model, &u, acc, &[]);
        assert_close(&got, &want, what);
    }
}

#[test]
fn unknown_models_and_missing_rates_have_no_price() {
    let got = estimate(
        CostBasis::OpenAi,
        "llama-3.3-70b-instruct",
        &usage(10, 10, 0, 0, 0),
        Incl,
        &[],
    );
    assert_eq!(
        got,
        CostEstimate {
            usd: None,
            priced_as: None,
            unknown_model: true,
            missing_rate: false
        }
    );
    // o3 has no published cached-input rate here: with cache hits, no number at all.
    let got = estimate(
        CostBasis::OpenAi,
        "o3",
        &usage(1_000, 10, 500, 0, 0),
        Incl,
        &[],
    );
    assert_eq!(
        got,
        CostEstimate {
            usd: None,
            priced_as: Some("openai/o3".into()),
            unknown_model: false,
            missing_rate: true
        }
    );
    // Long context without published cache rates: the same.
    let got = estimate(
        CostBasis::Anthropic,
        "claude-sonnet-4-5",
        &usage(150_000, 10, 60_000, 0, 0),
        Excl,
        &[],
    );
    assert!(got.missing_rate && got.usd.is_none());
    // A claude model under the google basis with no Google entry still finds Anthropic's.
    let got = estimate(
        CostBasis::Google,
        "claude-opus-4-1",
        &usage(1, 0, 0, 0, 0),
        Excl,
        &[],
    );
    assert_eq!(got.priced_as.as_deref(), Some("anthropic/claude-opus-4-1"));
}

#[test]
fn model_cost_map_overrides() {
    let u = usage(10_000, 2_000, 4_000, 0, 0);
    // An Azure deployment name priced as gpt-4o with a 10% regional uplift.
    let rules = vec![
        rule("prod-*-eu", "gpt-4o", 1.1),
        rule("prod-*", "gpt-4o-mini", 1.0),
    ];
    let got = estimate(CostBasis::AzureEu, "prod-chat-eu", &u, Incl, &rules);
    assert_close(
        &got,
        &priced(0.044, "openai/gpt-4o"),
        "first match wins, adjusted",
    );
    let got = estimate(CostBasis::AzureEu, "prod-chat", &u, Incl, &rules);
    // 6000×0.15 + 4000×0.075 + 2000×0.6
    assert_close(&got, &priced(0.0024, "openai/gpt-4o-mini"), "second rule");
    // `*` does not cross `/`.
    let got = estimate(CostBasis::AzureEu, "prod/chat", &u, Incl, &rules);
    assert!(got.unknown_model);
    // `provider/model` targets and a discount.
    let rules = vec![rule("my-claude", "anthropic/claude-opus-4-1", 0.5)];
    let got = estimate(
        CostBasis::OpenAi,
        "my-claude",
        &usage(1_000_000, 0, 0, 0, 0),
        Excl,
        &rules,
    );
    assert_close(
        &got,
        &priced(7.5, "anthropic/claude-opus-4-1"),
        "provider/model target",
    );
    // A rule pointing at an unknown model leaves it unknown; a rule also overrides a known id.
    let rules = vec![rule("gpt-4o", "no-such-model", 1.0)];
    assert!(estimate(CostBasis::OpenAi, "gpt-4o", &u, Incl, &rules).unknown_model);
    // The default adjustment is 1 when the config leaves it out.
    let parsed: Vec<ModelCostRule> =
        serde_json::from_str(r#"[{"match": "ft:gpt-4o-*", "as": "gpt-4o"}]"#).unwrap();
    assert_eq!(parsed[0].adjustment, 1.0);
    let got = estimate(
        CostBasis::OpenAi,
        "ft:gpt-4o-2024-08-06:acme::abc",
        &u,
        Incl,
        &parsed,
    );
    assert_close(
        &got,
        &priced(0.04, "openai/gpt-4o"),
        "fine-tune priced as base",
    );
}

#[test]
fn rule_problems() {
    assert_eq!(rule("gpt-*", "gpt-4o", 1.0).problems(), vec![]);
    let p = rule("gpt-[", " ", f64::NAN).problems();
    assert_eq!(p.len(), 3);
    assert!(matches!(p[0], RuleError::Pattern(_)));
    assert_eq!(p[1], RuleError::EmptyAs);
    assert_eq!(p[2], RuleError::Adjustment);
    assert_eq!(rule("x", "y", -1.0).problems(), vec![RuleError::Adjustment]);
    assert!(serde_json::from_str::<ModelCostRule>(r#"{"match":"x","as":"y","extra":1}"#).is_err());
}

#[test]
fn basis_inference_and_names() {
    let table: &[(&[&str], CostBasis)] = &[
        (&[], CostBasis::OpenAi),
        (&["openai_chat"], CostBasis::OpenAi),
        (&["openai_chat", "openai_responses"], CostBasis::OpenAi),
        (&["anthropic_messages"], CostBasis::Anthropic),
        (&["openai_chat", "anthropic_messages"], CostBasis::Anthropic),
        (&["gemini_generate_content"], CostBasis::Google),
        (&["google_generate_content"], CostBasis::Google),
        (&["google_raw_predict"], CostBasis::Google),
        (&["bedrock_converse"], CostBasis::Bedrock),
        (
            &["bedrock_model_invoke", "anthropic_messages"],
            CostBasis::Bedrock,
        ),
        (
            &["openai_chat", "experimental_gemini_cli_vertex_compat"],
            CostBasis::OpenAi,
        ),
    ];
    for (flags, want) in table {
        assert_eq!(CostBasis::infer(flags.iter().copied()), *want, "{flags:?}");
    }
    for b in CostBasis::ALL {
        assert_eq!(b.as_str().parse::<CostBasis>(), Ok(b));
        assert_eq!(
            serde_json::to_value(b).unwrap(),
            serde_json::json!(b.as_str())
        );
        let back: CostBasis = serde_json::from_value(serde_json::json!(b.as_str())).unwrap();
        assert_eq!(back, b);
    }
    assert!("aws".parse::<CostBasis>().is_err());
    assert_eq!(Accounting::for_family("anthropic_messages"), Excl);
    assert_eq!(Accounting::for_family("google_raw_predict"), Excl);
    assert_eq!(Accounting::for_family("bedrock_converse"), Excl);
    assert_eq!(Accounting::for_family("openai_chat"), Incl);
    assert_eq!(Accounting::for_family("openai_responses"), Incl);
    assert_eq!(Accounting::for_family("gemini_generate_content"), Incl);
}

#[test]
fn builtin_table_is_valid_and_covers_the_families() {
    let t = PriceTable::from_json(BUILTIN_PRICES_JSON).expect("data/prices.json is valid");
    assert_eq!(t.models().len(), PriceTable::builtin().models().len());
    for m in t.models() {
        assert!(
            m.source.contains("http"),
            "{}: source must be a URL",
            m.model
        );
        // Every entry is reachable by its own id and prices something.
        let got = estimate(
            CostBasis::OpenAi,
            &format!("{}/{}", m.provider, m.model),
            &usage(1_000_000, 1_000_000, 0, 0, 0),
            Incl,
            &[],
        );
        assert_eq!(got.priced_as, Some(format!("{}/{}", m.provider, m.model)));
        assert!(got.usd.is_some_and(|u| u > 0.0), "{}", m.model);
    }
    for required in [
        "anthropic/claude-opus-4-1",
        "anthropic/claude-opus-4-5",
        "anthropic/claude-sonnet-4-5",
        "anthropic/claude-sonnet-4",
        "anthropic/claude-haiku-4-5",
        "anthropic/claude-3-7-sonnet",
        "anthropic/claude-3-5-haiku",
        "anthropic/claude-3-5-sonnet",
        "openai/gpt-5",
        "openai/gpt-5-mini",
        "openai/gpt-5-nano",
        "openai/gpt-4.1",
        "openai/gpt-4.1-mini",
        "openai/gpt-4.1-nano",
        "openai/gpt-4o",
        "openai/gpt-4o-mini",
        "openai/o3",
        "openai/o4-mini",
        "openai/text-embedding-3-small",
        "google/gemini-2.5-pro",
        "google/gemini-2.5-flash",
    ] {
        let (provider, model) = required.split_once('/').unwrap();
        assert!(t.lookup(provider, model).is_some(), "{required} missing");
    }
    // Aliases resolve to their entry.
    assert_eq!(
        t.lookup("anthropic", "claude-opus-4-0")
            .map(|m| m.model.as_str()),
        Some("claude-opus-4")
    );
    assert_eq!(
        t.lookup("anthropic", "claude-sonnet-4-20250514")
            .map(|m| m.model.as_str()),
        Some("claude-sonnet-4")
    );
}

#[test]
fn bad_tables_are_rejected() {
    let entry = |extra: &str| {
        format!(
            r#"{{"about":"x","models":[{{"provider":"openai","model":"m","input":1,"output":1,"cache_read":null,"cache_write":null,"source":"https://x","as_of":"2026-01-01"{extra}}}]}}"#
        )
    };
    assert!(PriceTable::from_json(&entry("")).is_ok());
    assert!(PriceTable::from_json(&entry(r#","aliases":["m"]"#)).is_err());
    assert!(PriceTable::from_json(&entry(r#","unknown":1"#)).is_err());
    assert!(PriceTable::from_json(&entry("").replace("2026-01-01", "soon")).is_err());
    assert!(PriceTable::from_json(&entry("").replace("\"input\":1", "\"input\":-1")).is_err());
    assert!(PriceTable::from_json(&entry("").replace("\"openai\"", "\"acme\"")).is_err());
    assert!(PriceTable::from_json(&entry("").replace("\"m\"", "\"M\"")).is_err());
    assert!(PriceTable::from_json(&entry("").replace("https://x", " ")).is_err());
    assert!(PriceTable::from_json("{").is_err());
}

#[test]
fn normalisation_rule() {
    let table: &[(&str, &str)] = &[
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("CLAUDE-OPUS-4-8", "claude-opus-4-8"),
        ("claude-opus-4-8[1m]", "claude-opus-4-8"),
        (
            "eu.anthropic.claude-haiku-4-5-20251001-v1:0",
            "claude-haiku-4-5",
        ),
        ("openai/gpt-4.1", "gpt-4.1"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
    ];
    let t = PriceTable::builtin();
    for (id, want) in table {
        let found = ["anthropic", "openai", "google"]
            .iter()
            .find_map(|p| t.lookup(p, id));
        assert_eq!(
            found.map(|m| m.model.as_str()),
            Some(*want),
            "{id} → {:?}",
            candidates(id)
        );
    }
    // No fuzzy matching beyond the rule.
    for id in [
        "claude-sonnet",
        "gpt-4o-audio-preview",
        "gpt-5-pro",
        "o3-deep-research",
    ] {
        assert!(
            ["anthropic", "openai", "google"]
                .iter()
                .all(|p| t.lookup(p, id).is_none()),
            "{id} must be unknown"
        );
    }
}

#[test]
fn shipped_prices_snapshot() {
    let mut lines = Vec::new();
    let rate = |r: Option<f64>| r.map_or("-".to_owned(), |r| r.to_string());
    for m in PriceTable::builtin().models() {
        let mut line = format!(
            "{}/{} in={} out={} cache_read={} cache_write={}",
            m.provider,
            m.model,
            m.input,
            m.output,
            rate(m.cache_read),
            rate(m.cache_write)
        );
        if let Some(t) = &m.long_context {
            line.push_str(&format!(
                " | >{}: in={} out={} cache_read={} cache_write={}",
                t.above_prompt_tokens,
                t.input,
                t.output,
                rate(t.cache_read),
                rate(t.cache_write)
            ));
        }
        if !m.aliases.is_empty() {
            line.push_str(&format!(" aliases={}", m.aliases.join(",")));
        }
        line.push_str(&format!(" as_of={}", m.as_of));
        lines.push(line);
    }
    insta::assert_snapshot!(lines.join("\n"));
}

/// A table id as spelled (the lookup's allocation-free first try) and the spellings that
/// normalise to it (case, spaces, Bedrock and Vertex decorations, snapshots) find the same
/// entry; an id under another provider's table is not found through this one.
#[test]
fn exact_ids_and_their_spellings_find_the_same_entry() {
    let t = PriceTable::builtin();
    for m in t.models() {
        for id in std::iter::once(&m.model).chain(&m.aliases) {
            let exact = t.lookup(&m.provider, id).map(|p| (&p.provider, &p.model));
            assert_eq!(exact, Some((&m.provider, &m.model)), "{}/{id}", m.provider);
            for spelled in [id.to_ascii_uppercase(), format!("  {id} ")] {
                let found = t
                    .lookup(&m.provider, &spelled)
                    .map(|p| (&p.provider, &p.model));
                assert_eq!(found, exact, "{spelled:?}");
            }
        }
    }
    let claude = t
        .models()
        .iter()
        .find(|m| m.provider == "anthropic")
        .unwrap();
    assert!(t.lookup("openai", &claude.model).is_none());
    assert!(t.lookup("no-such-provider", &claude.model).is_none());
}
