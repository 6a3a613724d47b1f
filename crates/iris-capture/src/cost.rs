//! Cost estimates from token usage and a price table shipped as data (`data/prices.json`, parsed
//! once; every entry names its source and date).
//!
//! **Cost basis** (Aperture's `cost_basis`): `anthropic`, `openai`, `google`, `bedrock`,
//! `bedrock-us`, `bedrock-eu`, `bedrock-ap`, `vertex`, `azure`, `azure-eu`, `openrouter`,
//! `vercel`. When a provider sets none it is inferred from its compatibility flags
//! ([`CostBasis::infer`]): `bedrock_*` → bedrock, `gemini_*`/`google_*` → google,
//! `anthropic_messages` → anthropic, otherwise openai. The table holds the first-party list
//! prices of Anthropic, OpenAI and Google. A model is looked up under the basis's own table
//! first, then under its publisher's (recognised from the id: `claude-*` → anthropic, `gpt-*`,
//! `o1`/`o3`/`o4*`, `text-embedding-*` → openai, `gemini-*` → google). Resellers and clouds
//! (Bedrock, Vertex, Azure, OpenRouter, Vercel) are therefore priced at the publisher's list
//! price; regional surcharges are not applied — express them with a `model_cost_map`
//! adjustment.
//!
//! **`model_cost_map`**: `[{match, as, adjustment}]`; the first rule whose Go `path.Match` glob
//! matches the model id as requested wins; the model is then priced as `as` (a model id, or
//! `provider/model` to pick a table) and the total is multiplied by `adjustment` (default 1).
//!
//! **Model id normalisation**, tried in this order until an entry matches: the id lower-cased;
//! without a routing prefix up to the last `/` (`anthropic/claude-…`); without a Bedrock region
//! and vendor prefix and version suffix (`us.anthropic.claude-…-v1:0`); without a Vertex `@…`
//! or a `[…]` suffix; then repeatedly without a trailing date snapshot (`-20250929`,
//! `-2024-08-06`, `-0613`) or `-latest`; and for Claude ids, with dots as dashes
//! (`claude-sonnet-4.5` → `claude-sonnet-4-5`). So `claude-sonnet-4-5-20250929` is priced as
//! `claude-sonnet-4-5` and `gpt-4o-2024-08-06` as `gpt-4o`. An exact entry always wins over a
//! stripped form.
//!
//! **Token semantics** ([`Accounting`]): OpenAI-style usage (chat, responses, completions,
//! Gemini) counts cached tokens inside `input_tokens`: they are billed at the cache-read rate and
//! the rest at the input rate. Anthropic-style usage (messages, Vertex raw predict, Bedrock)
//! reports `input_tokens` without cache reads and writes, each billed at its own rate. Reasoning
//! and thinking tokens are part of `output_tokens` in both and never added again. Cache writes
//! are priced at the 5-minute rate (usage does not say which TTL was used).
//!
//! A token kind with a count but no published rate gives no price (`usd: None`,
//! `missing_rate: true`); an unknown model gives `usd: None`, `unknown_model: true`. Never a
//! made-up number.

use foldhash::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::glob::{BadPattern, check_pattern, glob_match};

/// The built-in price table, as shipped.
pub const BUILTIN_PRICES_JSON: &str = include_str!("../data/prices.json");

/// Providers that have their own table.
pub const TABLE_PROVIDERS: [&str; 3] = ["anthropic", "openai", "google"];

/// One model's rates, USD per million tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub provider: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    pub input: f64,
    pub output: f64,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<PriceTier>,
    pub source: String,
    pub as_of: String,
}

/// Rates that replace the base ones when the prompt is above `above_prompt_tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTier {
    pub above_prompt_tokens: u64,
    pub input: f64,
    pub output: f64,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    #[allow(dead_code)]
    about: String,
    models: Vec<ModelPrice>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PriceTableError {
    #[error("price table is not valid JSON: {0}")]
    Json(String),
    #[error("models[{index}] ({model}): {problem}")]
    Entry {
        index: usize,
        model: String,
        problem: String,
    },
}

/// A validated price table with an index by (provider, model id or alias).
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    models: Vec<ModelPrice>,
    /// provider → model id or alias → entry (nested, so a lookup borrows its keys).
    index: HashMap<String, HashMap<String, usize>>,
}

impl PriceTable {
    /// The table shipped in `data/prices.json`, parsed once. (A test guarantees it parses; if
    /// it ever did not, every model would be unknown rather than mispriced.)
    pub fn builtin() -> &'static PriceTable {
        static TABLE: OnceLock<PriceTable> = OnceLock::new();
        TABLE.get_or_init(|| PriceTable::from_json(BUILTIN_PRICES_JSON).unwrap_or_default())
    }

    /// Parse and validate a table in the `data/prices.json` format.
    pub fn from_json(json: &str) -> Result<PriceTable, PriceTableError> {
        let file: PriceFile =
            serde_json::from_str(json).map_err(|e| PriceTableError::Json(e.to_string()))?;
        let mut index: HashMap<String, HashMap<String, usize>> = HashMap::default();
        for (i, m) in file.models.iter().enumerate() {
            let bad = |problem: String| PriceTableError::Entry {
                index: i,
                model: m.model.clone(),
                problem,
            };
            if !TABLE_PROVIDERS.contains(&m.provider.as_str()) {
                return Err(bad(format!("unknown provider {:?}", m.provider)));
            }
            let rates = [Some(m.input), Some(m.output), m.cache_read, m.cache_write];
            let tier_rates = m.long_context.as_ref().map_or([None; 4], |t| {
                [Some(t.input), Some(t.output), t.cache_read, t.cache_write]
            });
            if rates
                .iter()
                .chain(tier_rates.iter())
                .flatten()
                .any(|r| !r.is_finite() || *r < 0.0)
            {
                return Err(bad("rates must be finite and not negative".into()));
            }
            if m.source.trim().is_empty() {
                return Err(bad("source is required".into()));
            }
            if !valid_date(&m.as_of) {
                return Err(bad(format!(
                    "as_of {:?} is not YYYY-MM or YYYY-MM-DD",
                    m.as_of
                )));
            }
            for id in std::iter::once(&m.model).chain(&m.aliases) {
                if id.is_empty() || id.trim() != id || id.to_ascii_lowercase() != *id {
                    return Err(bad(format!(
                        "model id {id:?} must be lower case, no spaces"
                    )));
                }
                if index
                    .entry(m.provider.clone())
                    .or_default()
                    .insert(id.clone(), i)
                    .is_some()
                {
                    return Err(bad(format!("{}/{id} is listed twice", m.provider)));
                }
            }
        }
        Ok(PriceTable {
            models: file.models,
            index,
        })
    }

    /// Every entry, in file order.
    pub fn models(&self) -> &[ModelPrice] {
        &self.models
    }

    /// The entry for a model id under one provider's table, after normalisation.
    pub fn lookup(&self, provider: &str, model: &str) -> Option<&ModelPrice> {
        let table = self.index.get(provider)?;
        // An id as the table spells it (lower case, trimmed) is the first candidate: found
        // without working out the others (and without allocating).
        if let Some(&i) = table.get(model) {
            return Some(&self.models[i]);
        }
        candidates(model)
            .iter()
            .find_map(|c| table.get(c.as_str()).map(|&i| &self.models[i]))
    }

    /// The price used for `model` under `basis` and `rules`, with the adjustment that applies.
    pub fn resolve(
        &self,
        basis: CostBasis,
        model: &str,
        rules: &[ModelCostRule],
    ) -> Option<ResolvedPrice<'_>> {
        let (target, adjustment) = match rules
            .iter()
            .find(|r| glob_match(&r.pattern, model).unwrap_or(false))
        {
            Some(rule) => (rule.as_model.as_str(), rule.adjustment),
            None => (model, 1.0),
        };
        let price = self.find(basis, target)?;
        Some(ResolvedPrice { price, adjustment })
    }

    fn find(&self, basis: CostBasis, model: &str) -> Option<&ModelPrice> {
        if let Some((provider, rest)) = model.split_once('/')
            && TABLE_PROVIDERS.contains(&provider.to_ascii_lowercase().as_str())
        {
            let provider = provider.to_ascii_lowercase();
            // `provider/model`: that table first, then as any other id.
            if let Some(p) = self.lookup(&provider, rest) {
                return Some(p);
            }
        }
        if let Some(provider) = basis.table_provider()
            && let Some(p) = self.lookup(provider, model)
        {
            return Some(p);
        }
        let publisher = candidates(model).iter().find_map(|c| publisher_of(c))?;
        self.lookup(publisher, model)
    }

    /// Estimate the cost of one request (see the module docs for every rule).
    pub fn estimate(
        &self,
        basis: CostBasis,
        model: &str,
        usage: &TokenUsage,
        accounting: Accounting,
        rules: &[ModelCostRule],
    ) -> CostEstimate {
        let Some(resolved) = self.resolve(basis, model, rules) else {
            return CostEstimate {
                usd: None,
                priced_as: None,
                unknown_model: true,
                missing_rate: false,
            };
        };
        let p = resolved.price;
        // Not `format!`: the formatting machinery costs ten times the copy (one per request).
        let priced_as = Some([p.provider.as_str(), "/", p.model.as_str()].concat());
        let (cr, cw) = (usage.cache_read_tokens, usage.cache_write_tokens);
        let prompt = match accounting {
            Accounting::InputIncludesCache => usage.input_tokens,
            Accounting::InputExcludesCache => {
                usage.input_tokens.saturating_add(cr).saturating_add(cw)
            }
        };
        let rates = match &p.long_context {
            Some(t) if prompt > t.above_prompt_tokens => Rates {
                input: t.input,
                output: t.output,
                cache_read: t.cache_read,
                cache_write: t.cache_write,
            },
            _ => Rates {
                input: p.input,
                output: p.output,
                cache_read: p.cache_read,
                cache_write: p.cache_write,
            },
        };
        let fresh_input = match accounting {
            Accounting::InputIncludesCache => {
                usage.input_tokens.saturating_sub(cr).saturating_sub(cw)
            }
            Accounting::InputExcludesCache => usage.input_tokens,
        };
        let mut missing = false;
        let mut per_kind = |tokens: u64, rate: Option<f64>| -> f64 {
            match rate {
                _ if tokens == 0 => 0.0,
                Some(r) => tokens as f64 * r,
                None => {
                    missing = true;
                    0.0
                }
            }
        };
        let micro = per_kind(fresh_input, Some(rates.input))
            + per_kind(cr, rates.cache_read)
            + per_kind(cw, rates.cache_write)
            + per_kind(usage.output_tokens, Some(rates.output));
        CostEstimate {
            usd: (!missing).then(|| micro / 1_000_000.0 * resolved.adjustment),
            priced_as,
            unknown_model: false,
            missing_rate: missing,
        }
    }
}

struct Rates {
    input: f64,
    output: f64,
    cache_read: Option<f64>,
    cache_write: Option<f64>,
}

/// A table entry chosen for a model, and the `model_cost_map` multiplier that applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResolvedPrice<'a> {
    pub price: &'a ModelPrice,
    pub adjustment: f64,
}

/// [`PriceTable::estimate`] over the built-in table.
pub fn estimate(
    basis: CostBasis,
    model: &str,
    usage: &TokenUsage,
    accounting: Accounting,
    rules: &[ModelCostRule],
) -> CostEstimate {
    PriceTable::builtin().estimate(basis, model, usage, accounting, rules)
}

/// Tokens one request used (the same fields as iris-providers' `TokenUsage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// Informational: part of `output_tokens`, never billed twice.
    pub reasoning_tokens: u64,
}

/// How a provider's usage counts cached input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accounting {
    /// OpenAI, Gemini: `input_tokens` includes cache reads (and writes).
    InputIncludesCache,
    /// Anthropic: `input_tokens` excludes cache reads and writes.
    InputExcludesCache,
}

impl Accounting {
    /// The accounting of an API family's usage: Anthropic-shaped APIs (`anthropic_*`,
    /// `google_raw_predict`, `bedrock_*`) exclude cache tokens from input; the rest include them.
    pub fn for_family(api_family: &str) -> Accounting {
        if api_family.starts_with("anthropic")
            || api_family == "google_raw_predict"
            || api_family.starts_with("bedrock")
        {
            Accounting::InputExcludesCache
        } else {
            Accounting::InputIncludesCache
        }
    }
}

/// The estimate for one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostEstimate {
    /// USD, or `None` when it cannot be known.
    pub usd: Option<f64>,
    /// The table entry used, as `provider/model`.
    pub priced_as: Option<String>,
    /// No price entry for the model.
    pub unknown_model: bool,
    /// The model is known but a token kind it used has no published rate.
    pub missing_rate: bool,
}

/// Aperture's `cost_basis` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CostBasis {
    Anthropic,
    #[serde(rename = "openai")]
    OpenAi,
    Google,
    Bedrock,
    BedrockUs,
    BedrockEu,
    BedrockAp,
    Vertex,
    Azure,
    AzureEu,
    #[serde(rename = "openrouter")]
    OpenRouter,
    Vercel,
}

impl CostBasis {
    pub const ALL: [CostBasis; 12] = [
        CostBasis::Anthropic,
        CostBasis::OpenAi,
        CostBasis::Google,
        CostBasis::Bedrock,
        CostBasis::BedrockUs,
        CostBasis::BedrockEu,
        CostBasis::BedrockAp,
        CostBasis::Vertex,
        CostBasis::Azure,
        CostBasis::AzureEu,
        CostBasis::OpenRouter,
        CostBasis::Vercel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CostBasis::Anthropic => "anthropic",
            CostBasis::OpenAi => "openai",
            CostBasis::Google => "google",
            CostBasis::Bedrock => "bedrock",
            CostBasis::BedrockUs => "bedrock-us",
            CostBasis::BedrockEu => "bedrock-eu",
            CostBasis::BedrockAp => "bedrock-ap",
            CostBasis::Vertex => "vertex",
            CostBasis::Azure => "azure",
            CostBasis::AzureEu => "azure-eu",
            CostBasis::OpenRouter => "openrouter",
            CostBasis::Vercel => "vercel",
        }
    }

    /// The table this basis has of its own, if any.
    pub fn table_provider(self) -> Option<&'static str> {
        match self {
            CostBasis::Anthropic => Some("anthropic"),
            CostBasis::OpenAi => Some("openai"),
            CostBasis::Google => Some("google"),
            CostBasis::Bedrock
            | CostBasis::BedrockUs
            | CostBasis::BedrockEu
            | CostBasis::BedrockAp
            | CostBasis::Vertex
            | CostBasis::Azure
            | CostBasis::AzureEu
            | CostBasis::OpenRouter
            | CostBasis::Vercel => None,
        }
    }

    /// The basis implied by a provider's enabled compatibility flags (their config names):
    /// `bedrock_*` → bedrock, `gemini_*` / `google_*` → google, `anthropic_messages` →
    /// anthropic, anything else (the `openai_*` flags, none at all) → openai. The flag
    /// `experimental_gemini_cli_vertex_compat` only modifies paths and is ignored.
    pub fn infer<'a>(enabled_flags: impl IntoIterator<Item = &'a str>) -> CostBasis {
        let flags: Vec<&str> = enabled_flags.into_iter().collect();
        if flags.iter().any(|f| f.starts_with("bedrock_")) {
            CostBasis::Bedrock
        } else if flags
            .iter()
            .any(|f| f.starts_with("gemini_") || f.starts_with("google_"))
        {
            CostBasis::Google
        } else if flags.contains(&"anthropic_messages") {
            CostBasis::Anthropic
        } else {
            CostBasis::OpenAi
        }
    }
}

impl fmt::Display for CostBasis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown cost_basis {0:?} (expected one of anthropic, openai, google, bedrock, bedrock-us, bedrock-eu, bedrock-ap, vertex, azure, azure-eu, openrouter, vercel)"
)]
pub struct UnknownCostBasis(pub String);

impl FromStr for CostBasis {
    type Err = UnknownCostBasis;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CostBasis::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| UnknownCostBasis(s.to_owned()))
    }
}

/// One `model_cost_map` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCostRule {
    /// Go `path.Match` glob over the requested model id.
    #[serde(rename = "match")]
    pub pattern: String,
    /// The model id (or `provider/model`) to price as.
    #[serde(rename = "as")]
    pub as_model: String,
    /// Multiplier on the total; 1.0 when absent.
    #[serde(default = "one")]
    pub adjustment: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    #[error(transparent)]
    Pattern(#[from] BadPattern),
    #[error("\"as\" is empty")]
    EmptyAs,
    #[error("adjustment must be a finite number of zero or more")]
    Adjustment,
}

impl ModelCostRule {
    /// The problems of a rule (for config validation), empty when it is fine.
    pub fn problems(&self) -> Vec<RuleError> {
        let mut out = Vec::new();
        if let Err(e) = check_pattern(&self.pattern) {
            out.push(RuleError::Pattern(e));
        }
        if self.as_model.trim().is_empty() {
            out.push(RuleError::EmptyAs);
        }
        if !self.adjustment.is_finite() || self.adjustment < 0.0 {
            out.push(RuleError::Adjustment);
        }
        out
    }
}

fn valid_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    match b.len() {
        7 => digits(0..4) && b[4] == b'-' && digits(5..7),
        10 => digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10),
        _ => false,
    }
}

/// The publisher whose table prices an (already normalised) id.
fn publisher_of(id: &str) -> Option<&'static str> {
    if id.starts_with("claude") {
        Some("anthropic")
    } else if id.starts_with("gemini") {
        Some("google")
    } else if id.starts_with("gpt-")
        || id.starts_with("chatgpt-")
        || id.starts_with("text-embedding-")
        || id.starts_with("codex-")
        || ["o1", "o3", "o4"]
            .iter()
            .any(|p| id == *p || id.starts_with(&format!("{p}-")))
    {
        Some("openai")
    } else {
        None
    }
}

const BEDROCK_REGIONS: [&str; 9] = [
    "us.", "eu.", "apac.", "ap.", "global.", "jp.", "au.", "ca.", "us-gov.",
];
const BEDROCK_VENDORS: [&str; 3] = ["anthropic.", "openai.", "google."];

/// The ids to try for a model, most specific first (see the module docs).
pub fn candidates(model: &str) -> Vec<String> {
    let lower = model.trim().to_ascii_lowercase();
    let mut out = vec![lower.clone()];
    let mut s = lower.rsplit('/').next().unwrap_or("").to_owned();
    for region in BEDROCK_REGIONS {
        if let Some(rest) = s.strip_prefix(region)
            && BEDROCK_VENDORS.iter().any(|v| rest.starts_with(v))
        {
            s = rest.to_owned();
            break;
        }
    }
    let had_vendor = BEDROCK_VENDORS.iter().any(|v| s.starts_with(v));
    if let Some(v) = BEDROCK_VENDORS.iter().find(|v| s.starts_with(*v)) {
        s = s[v.len()..].to_owned();
    }
    if had_vendor {
        // `-v1:0` / `-v2`: Bedrock version suffixes.
        if let Some((head, _)) = s.split_once(':') {
            s = head.to_owned();
        }
        if let Some(pos) = s.rfind("-v")
            && s.len() > pos + 2
            && s[pos + 2..].bytes().all(|b| b.is_ascii_digit())
        {
            s.truncate(pos);
        }
    }
    if let Some((head, _)) = s.split_once('@') {
        s = head.to_owned();
    }
    if let Some(pos) = s.find('[')
        && s.ends_with(']')
    {
        s.truncate(pos);
    }
    push_unique(&mut out, &s);
    while let Some(shorter) = strip_snapshot(&s) {
        s = shorter.to_owned();
        push_unique(&mut out, &s);
    }
    let dashed: Vec<String> = out
        .iter()
        .filter(|c| c.starts_with("claude") && c.contains('.'))
        .map(|c| c.replace('.', "-"))
        .collect();
    for d in dashed {
        let mut t = d;
        push_unique(&mut out, &t);
        while let Some(shorter) = strip_snapshot(&t) {
            t = shorter.to_owned();
            push_unique(&mut out, &t);
        }
    }
    out
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !s.is_empty() && !v.iter().any(|x| x == s) {
        v.push(s.to_owned());
    }
}

/// `s` without one trailing date snapshot (`-YYYYMMDD`, `-YYYY-MM-DD`, `-MMDD`) or `-latest`.
fn strip_snapshot(s: &str) -> Option<&str> {
    if let Some(head) = s.strip_suffix("-latest") {
        return Some(head);
    }
    let b = s.as_bytes();
    let all_digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let n = b.len();
    // -YYYY-MM-DD
    if n > 11
        && b[n - 11] == b'-'
        && all_digits(n - 10..n - 6)
        && b[n - 6] == b'-'
        && all_digits(n - 5..n - 3)
        && b[n - 3] == b'-'
        && all_digits(n - 2..n)
    {
        return Some(&s[..n - 11]);
    }
    // -YYYYMMDD
    if n > 9 && b[n - 9] == b'-' && all_digits(n - 8..n) && b[n - 8] == b'2' {
        return Some(&s[..n - 9]);
    }
    // -MMDD (older OpenAI snapshots: gpt-4-0613, gpt-3.5-turbo-0125)
    if n > 5 && b[n - 5] == b'-' && all_digits(n - 4..n) && (b[n - 4] == b'0' || b[n - 4] == b'1') {
        return Some(&s[..n - 5]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_stripping() {
        assert_eq!(strip_snapshot("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(
            strip_snapshot("claude-sonnet-4-5-20250929"),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(strip_snapshot("gpt-4-0613"), Some("gpt-4"));
        assert_eq!(
            strip_snapshot("claude-3-7-sonnet-latest"),
            Some("claude-3-7-sonnet")
        );
        assert_eq!(strip_snapshot("claude-sonnet-4-5"), None);
        assert_eq!(strip_snapshot("gpt-5"), None);
        assert_eq!(strip_snapshot("o3"), None);
        assert_eq!(strip_snapshot("gpt-5.4-nano"), None);
    }

    #[test]
    fn candidate_lists() {
        assert_eq!(
            candidates("us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            vec![
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                "claude-sonnet-4-5-20250929",
                "claude-sonnet-4-5"
            ]
        );
        assert_eq!(
            candidates("anthropic/claude-sonnet-4.5"),
            vec![
                "anthropic/claude-sonnet-4.5",
                "claude-sonnet-4.5",
                "claude-sonnet-4-5"
            ]
        );
        assert_eq!(
            candidates("claude-sonnet-4-5@20250929"),
            vec!["claude-sonnet-4-5@20250929", "claude-sonnet-4-5"]
        );
        assert_eq!(
            candidates("claude-opus-4-8[1m]"),
            vec!["claude-opus-4-8[1m]", "claude-opus-4-8"]
        );
        assert_eq!(candidates("GPT-4o"), vec!["gpt-4o"]);
    }

    #[test]
    fn dates() {
        for ok in ["2026-11-22", "2026-03"] {
            assert!(valid_date(ok), "{ok}");
        }
        for bad in ["2026", "26-11-22", "2026-1-2", "yesterday", ""] {
            assert!(!valid_date(bad), "{bad}");
        }
    }
}
