//! Tier 2: who is calling, through the real server on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

const ALICE: [u8; 4] = [127, 0, 0, 2];
const CI_NODE: [u8; 4] = [127, 0, 0, 3];
const BOB: [u8; 4] = [127, 0, 0, 5];

async fn whoami(c: &TestClient, headers: &[(&str, &str)]) -> Answer {
    c.send("GET", "/api/whoami", headers, "").await
}

#[tokio::test]
async fn whois_identities_and_grants() {
    let mut h = Harness::start().await;
    // alice: CapMap gives role user + openai/**, the group grant adds anthropic/claude-haiku-*.
    let alice = h.client_from(ALICE);
    assert_eq!(
        alice
            .post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
            .await
            .status,
        200
    );
    assert_eq!(
        alice
            .post("/v1/messages", &[], &messages("claude-haiku-4-5", false))
            .await
            .status,
        200
    );
    let denied = alice
        .post("/v1/messages", &[], &messages("claude-sonnet-4-5", false))
        .await;
    assert_eq!(denied.status, 404, "{}", denied.body);
    assert_eq!(denied.json()["type"], "error");
    assert_eq!(denied.json()["error"]["type"], "not_found_error");
    // The multi-tag node matches the tag:ci grant (iris does better than exact-string matching).
    let ci = h.client_from(CI_NODE);
    assert_eq!(
        ci.post("/v1/messages", &[], &messages("claude-sonnet-4-5", true))
            .await
            .status,
        200
    );
    assert_eq!(
        ci.post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
            .await
            .status,
        404
    );
    // bob has models but no role: 403 with Aperture's message, and the mock never sees it.
    h.mock.reset();
    let bob = h
        .client_from(BOB)
        .post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
        .await;
    assert_eq!(bob.status, 403);
    assert!(
        bob.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("access denied: no role granted")
    );
    assert!(
        h.mock.requests().is_empty(),
        "a denied request reached the upstream"
    );

    let recs = h.records().await;
    let alice_recs: Vec<_> = recs
        .iter()
        .filter(|r| r.login.as_deref() == Some("alice@example.com"))
        .collect();
    assert_eq!(alice_recs.len(), 3);
    assert!(alice_recs.iter().all(|r| r.identity_source == "whois"
        && r.node.as_deref() == Some("alice-laptop.tail4e2b1.ts.net")));
    let ci_recs: Vec<_> = recs.iter().filter(|r| !r.tags.is_empty()).collect();
    assert_eq!(ci_recs.len(), 2);
    assert!(
        ci_recs
            .iter()
            .all(|r| r.tags == ["tag:ci", "tag:prod"] && r.login.is_none())
    );
    let bob_rec = recs
        .iter()
        .find(|r| r.login.as_deref() == Some("bob@example.com"))
        .unwrap();
    assert_eq!(
        (bob_rec.status, bob_rec.error_class.as_deref()),
        (403, Some("denied_no_role"))
    );
}

#[tokio::test]
async fn whois_once_per_connection() {
    let h = Harness::start().await;
    let ts = h.tailscaled.as_ref().unwrap();
    let before = ts.whois_count();
    let alice = h.client_from(ALICE);
    for _ in 0..5 {
        assert_eq!(
            alice
                .post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        ts.whois_count() - before,
        1,
        "one WhoIs for one keep-alive connection"
    );
}

#[tokio::test]
async fn identity_headers_from_untrusted_connections_are_ignored() {
    let spoof = [
        ("tailscale-user-login", "carol@example.com"),
        ("tailscale-user-name", "Carol"),
    ];
    // serve_headers off (the default): loopback stays loopback.
    let h = Harness::start().await;
    let me = whoami(&h.client(), &spoof).await.json();
    assert_eq!(me["identity"]["source"], "loopback");
    assert_eq!(me["identity"]["login"], serde_json::Value::Null);
    // A tailnet peer is who WhoIs says, whatever it sends.
    let me = whoami(&h.client_from(ALICE), &spoof).await.json();
    assert_eq!(me["identity"]["login"], "alice@example.com");

    // serve_headers on: honoured from loopback, still ignored from a tailnet peer.
    let h = Harness::start_with(Options {
        identity: r#", "serve_headers": true"#.into(),
        ..Options::default()
    })
    .await;
    let me = whoami(&h.client(), &spoof).await.json();
    assert_eq!(me["identity"]["source"], "serve_headers");
    assert_eq!(me["identity"]["login"], "carol@example.com");
    let me = whoami(&h.client_from(ALICE), &spoof).await.json();
    assert_eq!(me["identity"]["login"], "alice@example.com");
}

#[tokio::test]
async fn serve_proxied_tagged_node_never_becomes_loopback() {
    let mut h = Harness::start_with(Options {
        identity: r#", "serve_headers": true"#.into(),
        ..Options::default()
    })
    .await;
    let c = h.client();
    // A tagged node through `tailscale serve`: no user headers, X-Forwarded-For its tailnet IP.
    let me = whoami(&c, &[("x-forwarded-for", "100.64.0.9")])
        .await
        .json();
    assert_eq!(me["identity"]["tags"], serde_json::json!(["tag:ci"]));
    assert_eq!(me["identity"]["source"], "whois");
    // An unknown forwarded peer is refused, not (loopback).
    let r = c
        .post(
            "/v1/chat/completions",
            &[("x-forwarded-for", "100.99.99.99")],
            &chat("gpt-4o-mini", false),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(h.mock.requests().is_empty());
    let recs = h.records().await;
    assert_eq!(recs[0].identity_source, "none");
    assert_eq!(recs[0].status, 401);
}

#[tokio::test]
async fn whois_errors_fail_closed_for_loopback_and_missing_tailscaled_does_not() {
    // tailscaled absent: loopback works.
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start_with(Options {
        socket: Some(dir.path().join("absent.sock")),
        ..Options::default()
    })
    .await;
    assert_eq!(
        h.client()
            .post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
            .await
            .status,
        200
    );

    // tailscaled present but broken (closes every connection): a loopback peer could be a tailnet
    // peer in userspace mode, so it is refused rather than treated as (loopback).
    let sock = dir.path().join("broken.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    let h = Harness::start_with(Options {
        socket: Some(sock),
        ..Options::default()
    })
    .await;
    let r = h
        .client()
        .post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(h.mock.requests().is_empty());
}

#[tokio::test]
async fn iris_keys_act_as_their_identity_and_refusals_are_immediate() {
    use iris_store::{KeyRecord, Store};
    let mut h = Harness::start().await;
    let now = iris_store::now_ms();
    let mk = |login: Option<&str>, tags: Vec<String>, expires: Option<i64>| {
        let k = iris_identity::keys::generate();
        (
            k.token.clone(),
            KeyRecord {
                id: k.id,
                token_hash: k.token_hash,
                login: login.map(str::to_owned),
                tags,
                note: None,
                created_ms: now,
                expires_ms: expires,
                revoked_ms: None,
                last_used_ms: None,
                created_by: None,
            },
        )
    };
    let (carol, carol_rec) = mk(Some("carol@example.com"), vec![], None);
    let (ci, ci_rec) = mk(None, vec!["tag:ci".into()], Some(now + 3_600_000));
    let (old, old_rec) = mk(Some("carol@example.com"), vec![], Some(now - 1));
    for r in [&carol_rec, &ci_rec, &old_rec] {
        h.store.insert_key(r).await.unwrap();
    }
    let c = h.client();
    let bearer = format!("Bearer {carol}");
    let ok = c
        .post(
            "/v1/chat/completions",
            &[("authorization", &bearer)],
            &chat("gpt-4o-mini", false),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    // Carol's grants apply, not loopback's: anthropic is not hers.
    let no = c
        .post(
            "/v1/messages",
            &[("x-api-key", &carol)],
            &messages("claude-haiku-4-5", false),
        )
        .await;
    assert_eq!(no.status, 404);
    let ci_ok = c
        .post(
            "/v1/messages",
            &[("x-api-key", &ci)],
            &messages("claude-haiku-4-5", false),
        )
        .await;
    assert_eq!(ci_ok.status, 200);
    // Expired, unknown and malformed keys are refused in the caller's dialect.
    let expired = c
        .post(
            "/v1/messages",
            &[("x-api-key", &old)],
            &messages("claude-haiku-4-5", false),
        )
        .await;
    assert_eq!(expired.status, 401);
    assert_eq!(expired.json()["error"]["type"], "authentication_error");
    let forged = format!("Bearer {}", iris_identity::keys::generate().token);
    assert_eq!(
        c.post(
            "/v1/chat/completions",
            &[("authorization", &forged)],
            &chat("gpt-4o-mini", false)
        )
        .await
        .status,
        401
    );
    assert_eq!(
        c.post(
            "/v1/chat/completions",
            &[("authorization", "Bearer iris_sk_short")],
            &chat("gpt-4o-mini", false)
        )
        .await
        .status,
        401
    );
    // Revocation applies to the very next request.
    assert!(
        h.store
            .revoke_key(&carol_rec.id, iris_store::now_ms())
            .await
            .unwrap()
    );
    let revoked = c
        .post(
            "/v1/chat/completions",
            &[("authorization", &bearer)],
            &chat("gpt-4o-mini", false),
        )
        .await;
    assert_eq!(revoked.status, 401);
    assert!(revoked.body.contains("revoked"));
    // A placeholder credential is ignored: loopback.
    assert_eq!(
        c.post(
            "/v1/messages",
            &[("x-api-key", "not-needed")],
            &messages("claude-haiku-4-5", false)
        )
        .await
        .status,
        200
    );
    // No iris key ever reaches the upstream.
    for r in h.mock.requests() {
        assert!(
            !r.headers.iter().any(|(_, v)| v.contains("iris_sk_")),
            "{r:?}"
        );
    }
    let recs = h.records().await;
    let carol_recs: Vec<_> = recs
        .iter()
        .filter(|r| {
            r.key_id.as_deref() == Some(carol_rec.id.as_str())
                || r.login.as_deref() == Some("carol@example.com")
        })
        .collect();
    assert!(carol_recs.iter().all(|r| r.identity_source == "key"));
    assert_eq!(carol_recs.len(), 2);
}

#[tokio::test]
async fn guessing_keys_is_rate_limited_per_address() {
    let h = Harness::start_with(Options {
        iris: r#", "limits": {"key_failures_per_minute": 5}"#.into(),
        ..Options::default()
    })
    .await;
    let c = h.client();
    for _ in 0..5 {
        let guess = format!("Bearer {}", iris_identity::keys::generate().token);
        let r = c
            .post(
                "/v1/chat/completions",
                &[("authorization", &guess)],
                &chat("gpt-4o-mini", false),
            )
            .await;
        assert_eq!(r.status, 401);
    }
    let guess = format!("Bearer {}", iris_identity::keys::generate().token);
    let r = c
        .post(
            "/v1/chat/completions",
            &[("authorization", &guess)],
            &chat("gpt-4o-mini", false),
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.headers.get("retry-after").unwrap(), "60");
    // Another address is not affected, and requests without a key still work.
    let other = h.client_from([127, 0, 0, 9]);
    let guess = format!("Bearer {}", iris_identity::keys::generate().token);
    assert_eq!(
        other
            .post(
                "/v1/chat/completions",
                &[("authorization", &guess)],
                &chat("gpt-4o-mini", false)
            )
            .await
            .status,
        401
    );
    assert_eq!(
        c.post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
            .await
            .status,
        200
    );
}
