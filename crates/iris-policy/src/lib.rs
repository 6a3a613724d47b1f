//! # iris-policy: who may use which model, and why
//!
//! Layout: [`Policy`] is compiled once per config load from the config's grants; a principal's
//! grants from the tailnet policy file (WhoIs `CapMap`) are compiled once per connection into
//! [`TailnetGrants`]. [`Policy::evaluate`] is a pure function from (principal, config grants,
//! tailnet grants, requested model) to a [`Decision`] that lists every grant that matched and
//! where it came from, so a denial can explain itself.
//!
//! Semantics (Aperture's, documented in ARCHITECTURE.md): deny by default; the union of all
//! matching grants; a role (`user` or `admin`; admin includes user) is required, without one the
//! answer is 403 `access denied: no role granted`; with a role but no grant for the model, 404.
//! `models` are globs over `provider/model` where `*` stays within one segment and `**` spans
//! any number. `src` forms: `*`, a login, `group:x`, `(loopback)`, `tag:x` (matches any node
//! carrying `tag:x` — better than Aperture's exact string), and `tag:a,tag:b` (exactly that set).
//!
//! This crate never does IO, never reads a clock, and never sees a request or a socket.

use globset::GlobMatcher;
use iris_config::{Cap, Grant, GrantOrigin, Role};
use iris_identity::{IdentitySource, Principal};
use serde::Serialize;

/// Compile a `models` glob the way grants are matched: `*` within a segment, `**` across. The
/// same function the config validator uses, so validation and matching never disagree.
pub fn compile_models_glob(pattern: &str) -> Result<GlobMatcher, String> {
    iris_config::compile_model_pattern(pattern).map_err(|e| e.to_string())
}

/// Where a grant came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GrantSource {
    /// `grants[index]` in the config file.
    Config { index: usize },
    /// `temp_grants[index]` in the config file (legacy form).
    ConfigTemp { index: usize },
    /// The tailnet policy file, delivered through WhoIs `CapMap` (`tailscale.com/cap/aperture`).
    Tailnet,
}

#[derive(Debug, Clone)]
enum Src {
    Any,
    Login(String),
    Group(String),
    Tag(String),
    TagSet(Vec<String>),
    Loopback,
}

impl Src {
    fn parse(s: &str) -> Option<Src> {
        let s = s.trim();
        if s == "*" {
            Some(Src::Any)
        } else if s == "(loopback)" {
            Some(Src::Loopback)
        } else if s.starts_with("group:") {
            Some(Src::Group(s.to_owned()))
        } else if s.starts_with("tag:") {
            if s.contains(',') {
                let mut tags: Vec<String> = s.split(',').map(|t| t.trim().to_owned()).collect();
                tags.sort();
                tags.dedup();
                Some(Src::TagSet(tags))
            } else {
                Some(Src::Tag(s.to_owned()))
            }
        } else if s.is_empty() {
            None
        } else {
            Some(Src::Login(s.to_ascii_lowercase()))
        }
    }

    fn matches(&self, p: &Principal) -> bool {
        match self {
            Src::Any => true,
            Src::Loopback => p.source == IdentitySource::Loopback,
            Src::Login(l) => p
                .login
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(l)),
            Src::Group(g) => p.groups.iter().any(|x| x == g),
            Src::Tag(t) => p.tags.iter().any(|x| x == t),
            Src::TagSet(set) => p.tags == *set,
        }
    }
}

#[derive(Debug, Clone)]
struct CompiledGrant {
    source: GrantSource,
    src: Vec<(String, Src)>,
    role: Option<Role>,
    models: Vec<(String, GlobMatcher)>,
}

fn merge_role(a: Option<Role>, b: Option<Role>) -> Option<Role> {
    match (a, b) {
        (Some(Role::Admin), _) | (_, Some(Role::Admin)) => Some(Role::Admin),
        (Some(Role::User), _) | (_, Some(Role::User)) => Some(Role::User),
        (None, None) => None,
    }
}

fn compile_caps(caps: &[Cap]) -> (Option<Role>, Vec<(String, GlobMatcher)>) {
    let mut role = None;
    let mut models = Vec::new();
    for cap in caps {
        role = merge_role(role, cap.role);
        if let Some(m) = &cap.models {
            // Config validation rejects patterns that do not compile; anything that still fails
            // here grants nothing (fail closed).
            if let Ok(g) = compile_models_glob(m) {
                models.push((m.clone(), g));
            }
        }
    }
    (role, models)
}

/// The grants of the config file, compiled.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    grants: Vec<CompiledGrant>,
}

/// A principal's grants from the tailnet policy file, compiled once per connection.
#[derive(Debug, Clone, Default)]
pub struct TailnetGrants {
    grant: Option<CompiledGrant>,
    /// CapMap values that were not valid capability objects; they grant nothing.
    pub rejected: Vec<String>,
}

impl TailnetGrants {
    pub fn compile(values: &[serde_json::Value]) -> TailnetGrants {
        if values.is_empty() {
            return TailnetGrants::default();
        }
        let mut caps = Vec::new();
        let mut rejected = Vec::new();
        for v in values {
            match Cap::from_json(v) {
                Ok(c) => caps.push(c),
                Err(e) => rejected.push(format!("{v}: {e}")),
            }
        }
        let (role, models) = compile_caps(&caps);
        TailnetGrants {
            grant: Some(CompiledGrant {
                source: GrantSource::Tailnet,
                src: vec![("(tailnet policy)".to_owned(), Src::Any)],
                role,
                models,
            }),
            rejected,
        }
    }
}

/// One grant that matched the principal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Matched {
    pub source: GrantSource,
    /// The `src` entry that matched.
    pub src: String,
    pub role: Option<&'static str>,
    pub models: Vec<String>,
}

/// What the principal may do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub role: Option<&'static str>,
    pub matched: Vec<Matched>,
    /// The requested `provider/model`, if any.
    pub model: Option<String>,
    /// Whether some matching grant's `models` pattern covers `model`.
    pub model_granted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    /// 403 `access denied: no role granted`.
    NoRole,
    /// 404: role present, model not granted.
    ModelNotGranted,
}

impl Decision {
    pub fn outcome(&self) -> Outcome {
        outcome(
            self.role.is_some(),
            self.model.is_some(),
            self.model_granted,
        )
    }

    pub fn is_admin(&self) -> bool {
        self.role == Some("admin")
    }
}

/// No role is a 403 whatever was asked; a role without the asked model a 404.
fn outcome(has_role: bool, asked_model: bool, model_granted: bool) -> Outcome {
    if !has_role {
        Outcome::NoRole
    } else if asked_model && !model_granted {
        Outcome::ModelNotGranted
    } else {
        Outcome::Allowed
    }
}

fn role_name(r: Option<Role>) -> Option<&'static str> {
    match r {
        Some(Role::Admin) => Some("admin"),
        Some(Role::User) => Some("user"),
        None => None,
    }
}

impl Policy {
    pub fn new(grants: &[Grant]) -> Policy {
        let grants = grants
            .iter()
            .map(|g| {
                let (role, models) = compile_caps(&g.caps);
                CompiledGrant {
                    source: match g.origin {
                        GrantOrigin::Grants { index } => GrantSource::Config { index },
                        GrantOrigin::TempGrants { index } => GrantSource::ConfigTemp { index },
                    },
                    src: g
                        .src
                        .iter()
                        .filter_map(|s| Src::parse(s).map(|m| (s.clone(), m)))
                        .collect(),
                    role,
                    models,
                }
            })
            .collect();
        Policy { grants }
    }

    /// Decide for `principal` asking for `model` (`provider/model`), or for no model (listing,
    /// admin endpoints).
    pub fn evaluate(
        &self,
        principal: &Principal,
        tailnet: &TailnetGrants,
        model: Option<&str>,
    ) -> Decision {
        let mut matched = Vec::new();
        let (role, model_granted) = self.walk(principal, tailnet, model, |g, src| {
            matched.push(Matched {
                source: g.source.clone(),
                src: src.to_owned(),
                role: role_name(g.role),
                models: g.models.iter().map(|(p, _)| p.clone()).collect(),
            });
        });
        Decision {
            role: role_name(role),
            matched,
            model: model.map(str::to_owned),
            model_granted,
        }
    }

    /// [`Policy::evaluate`]'s outcome without the explanation: the request path asks this twice a
    /// request and needs no list of matched grants (which [`Decision`] builds from copies).
    pub fn outcome(
        &self,
        principal: &Principal,
        tailnet: &TailnetGrants,
        model: Option<&str>,
    ) -> Outcome {
        let (role, model_granted) = self.walk(principal, tailnet, model, |_, _| {});
        outcome(role.is_some(), model.is_some(), model_granted)
    }

    /// Every grant (config, then tailnet) that matches `principal`, handed to `matched` with the
    /// `src` entry that matched: the merged role and whether one of them grants `model`.
    fn walk(
        &self,
        principal: &Principal,
        tailnet: &TailnetGrants,
        model: Option<&str>,
        mut matched: impl FnMut(&CompiledGrant, &str),
    ) -> (Option<Role>, bool) {
        let mut role = None;
        let mut model_granted = false;
        for g in self.grants.iter().chain(tailnet.grant.iter()) {
            let Some((src, _)) = g.src.iter().find(|(_, m)| m.matches(principal)) else {
                continue;
            };
            role = merge_role(role, g.role);
            if let Some(m) = model {
                model_granted = model_granted || g.models.iter().any(|(_, glob)| glob.is_match(m));
            }
            matched(g, src);
        }
        (role, model_granted)
    }

    /// Whether `model` is granted by a decision computed without a model (for listings).
    pub fn model_in(&self, principal: &Principal, tailnet: &TailnetGrants, model: &str) -> bool {
        self.grants
            .iter()
            .chain(tailnet.grant.iter())
            .filter(|g| g.src.iter().any(|(_, m)| m.matches(principal)))
            .any(|g| g.models.iter().any(|(_, glob)| glob.is_match(model)))
    }
}

#[cfg(test)]
mod tests;
