//! The grant matrix, table-driven through one `check` helper.

use super::*;
use iris_identity::Principal;

fn cap(role: Option<Role>, models: Option<&str>) -> Cap {
    Cap {
        role,
        models: models.map(str::to_owned),
    }
}

fn grant(index: usize, src: &[&str], caps: Vec<Cap>) -> Grant {
    Grant {
        src: src.iter().map(|s| s.to_string()).collect(),
        caps,
        origin: GrantOrigin::Grants { index },
    }
}

fn user(login: &str, groups: &[&str]) -> Principal {
    Principal {
        source: IdentitySource::Whois,
        login: Some(login.into()),
        groups: groups.iter().map(|s| s.to_string()).collect(),
        ..Principal::loopback()
    }
}

fn tagged(tags: &[&str]) -> Principal {
    Principal {
        source: IdentitySource::Whois,
        tags: iris_identity::normalize_tags(tags.iter().map(|s| s.to_string())),
        ..Principal::loopback()
    }
}

fn grants() -> Vec<Grant> {
    use Role::*;
    vec![
        grant(
            0,
            &["(loopback)"],
            vec![cap(Some(Admin), None), cap(None, Some("**"))],
        ),
        grant(
            1,
            &["group:ai-users"],
            vec![cap(Some(User), None), cap(None, Some("anthropic/**"))],
        ),
        grant(
            2,
            &["tag:ci"],
            vec![cap(Some(User), None), cap(None, Some("openai/gpt-5*"))],
        ),
        grant(
            3,
            &["tag:a,tag:b"],
            vec![cap(Some(User), None), cap(None, Some("*/claude-sonnet*"))],
        ),
        grant(4, &["bob@example.com"], vec![cap(None, Some("**"))]),
        grant(5, &["carol@example.com"], vec![cap(Some(User), None)]),
        grant(
            6,
            &["Dave@Example.com"],
            vec![cap(Some(User), Some("openai/gpt-4.1"))],
        ),
        grant(7, &["*"], vec![cap(None, Some("local/*"))]),
    ]
}

fn check(p: &Principal, tailnet: &[serde_json::Value], model: Option<&str>, want: Outcome) {
    let policy = Policy::new(&grants());
    let tg = TailnetGrants::compile(tailnet);
    let d = policy.evaluate(p, &tg, model);
    assert_eq!(d.outcome(), want, "principal {p:?} model {model:?}: {d:#?}");
    // The request path's shortcut must agree with the explained decision in every case.
    assert_eq!(
        policy.outcome(p, &tg, model),
        want,
        "outcome() for principal {p:?} model {model:?}"
    );
}

#[test]
fn grant_matrix() {
    use Outcome::*;
    let lo = Principal::loopback();
    let alice = user("alice@example.com", &["group:ai-users"]);
    let nobody = user("eve@example.com", &[]);
    let cases: Vec<(&Principal, Option<&str>, Outcome)> = vec![
        (&lo, Some("anthropic/claude-x"), Allowed),
        (&lo, Some("openai/deep/name"), Allowed),
        (&lo, None, Allowed),
        (&alice, Some("anthropic/claude-sonnet-4-5"), Allowed),
        (&alice, Some("anthropic/a/b"), Allowed),
        (&alice, Some("openai/gpt-5"), ModelNotGranted),
        (&alice, Some("local/llama"), Allowed), // `*` grant adds models, group grant the role
        (&alice, Some("local/a/b"), ModelNotGranted), // `*` is one segment
        (&nobody, Some("local/llama"), NoRole),
        (&nobody, None, NoRole),
    ];
    for (p, m, want) in cases {
        check(p, &[], m, want);
    }
}

#[test]
fn tags_match_any_carried_tag_and_exact_sets() {
    use Outcome::*;
    // Better than Aperture: tag:ci matches a node that carries tag:ci among others.
    check(
        &tagged(&["tag:prod", "tag:ci"]),
        &[],
        Some("openai/gpt-5-mini"),
        Allowed,
    );
    check(&tagged(&["tag:ci"]), &[], Some("openai/gpt-5"), Allowed);
    check(
        &tagged(&["tag:ci"]),
        &[],
        Some("anthropic/claude-x"),
        ModelNotGranted,
    );
    // The exact sorted, comma-joined form matches that exact set only.
    check(
        &tagged(&["tag:b", "tag:a"]),
        &[],
        Some("anthropic/claude-sonnet-4"),
        Allowed,
    );
    check(
        &tagged(&["tag:a", "tag:b", "tag:c"]),
        &[],
        Some("anthropic/claude-sonnet-4"),
        NoRole,
    );
    check(
        &tagged(&["tag:a"]),
        &[],
        Some("anthropic/claude-sonnet-4"),
        NoRole,
    );
    // `tagged-devices` is never a login, and a tagged node never matches login grants.
    check(&tagged(&["tag:other"]), &[], Some("local/x"), NoRole);
}

#[test]
fn role_only_and_model_only() {
    use Outcome::*;
    // Models but no role: 403 even though the model matches.
    check(
        &user("bob@example.com", &[]),
        &[],
        Some("openai/gpt-5"),
        NoRole,
    );
    // Role but no models: 404 for any model, allowed without a model.
    check(
        &user("carol@example.com", &[]),
        &[],
        Some("openai/gpt-5"),
        ModelNotGranted,
    );
    check(&user("carol@example.com", &[]), &[], None, Allowed);
    // Logins compare case-insensitively; model ids do not.
    check(
        &user("dave@example.com", &[]),
        &[],
        Some("openai/gpt-4.1"),
        Allowed,
    );
    check(
        &user("dave@example.com", &[]),
        &[],
        Some("openai/GPT-4.1"),
        ModelNotGranted,
    );
}

#[test]
fn escapes_and_lookalikes_do_not_match() {
    use Outcome::*;
    let alice = user("alice@example.com", &["group:ai-users"]);
    // `anthropic/../openai/x` matches `anthropic/**` textually: it is a model name like any
    // other (policy does not normalise paths), and routing then finds no such model.
    check(&alice, &[], Some("anthropic/../openai/x"), Allowed);
    for m in [
        "аnthropic/claude-x", // Cyrillic 'а'
        "openai/../anthropic/x",
        "ANTHROPIC/claude-x",
        "anthropic",
    ] {
        check(&alice, &[], Some(m), ModelNotGranted);
    }
    // Glob metacharacters in the *requested* name are plain characters.
    check(&tagged(&["tag:ci"]), &[], Some("openai/*"), ModelNotGranted);
    check(&tagged(&["tag:ci"]), &[], Some("openai/gpt-5[x]"), Allowed); // gpt-5* covers it
}

#[test]
fn tailnet_capmap_grants_count() {
    use Outcome::*;
    let eve = user("eve@example.com", &[]);
    let caps = vec![
        serde_json::json!({"role": "user"}),
        serde_json::json!({"models": "openai/**"}),
    ];
    check(&eve, &caps, Some("openai/gpt-5"), Allowed);
    check(&eve, &caps, Some("anthropic/x"), ModelNotGranted);
    check(
        &eve,
        &[serde_json::json!({"models": "openai/**"})],
        Some("openai/gpt-5"),
        NoRole,
    );
    let tg = TailnetGrants::compile(&[serde_json::json!({"role": "root"}), serde_json::json!(7)]);
    assert_eq!(tg.rejected.len(), 2);
}

#[test]
fn decision_explains_itself() {
    let policy = Policy::new(&grants());
    let alice = user("alice@example.com", &["group:ai-users"]);
    let tg = TailnetGrants::compile(&[serde_json::json!({"role": "admin"})]);
    let d = policy.evaluate(&alice, &tg, Some("anthropic/claude-x"));
    assert_eq!(d.role, Some("admin"));
    assert!(d.is_admin());
    let sources: Vec<_> = d
        .matched
        .iter()
        .map(|m| (m.source.clone(), m.src.clone()))
        .collect();
    assert_eq!(
        sources,
        vec![
            (
                GrantSource::Config { index: 1 },
                "group:ai-users".to_string()
            ),
            (GrantSource::Config { index: 7 }, "*".to_string()),
            (GrantSource::Tailnet, "(tailnet policy)".to_string()),
        ]
    );
    assert!(policy.model_in(&alice, &tg, "anthropic/x"));
    assert!(!policy.model_in(&alice, &tg, "openai/x"));
}
