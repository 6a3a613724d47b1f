//! Tier 2: the admin API — config lifecycle, lockout, break-glass, reload, read APIs, keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

const ALICE: [u8; 4] = [127, 0, 0, 2];
const CI_NODE: [u8; 4] = [127, 0, 0, 3];
const JSON: (&str, &str) = ("content-type", "application/json");

async fn get_config(c: &TestClient) -> (String, String) {
    let r = c.send("GET", "/api/config", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    (
        v["config"].as_str().unwrap().to_owned(),
        v["hash"].as_str().unwrap().to_owned(),
    )
}

async fn put_config(c: &TestClient, text: &str, hash: &str) -> Answer {
    c.send(
        "PUT",
        "/api/config",
        &[JSON],
        &json!({"config": text, "hash": hash}).to_string(),
    )
    .await
}

/// Send one request over the break-glass unix socket.
async fn local(path: &std::path::Path, method: &str, uri: &str, body: &str) -> (u16, Value) {
    let stream = tokio::net::UnixStream::connect(path).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "local")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn concurrent_saves_with_the_same_hash_one_wins() {
    let h = Harness::start_with(Options {
        file: true,
        ..Options::default()
    })
    .await;
    let c = h.client();
    let (text, hash) = get_config(&c).await;
    let a = text.replace("\"X-Team: platform\"", "\"X-Team: a\"");
    let b = text.replace("\"X-Team: platform\"", "\"X-Team: b\"");
    let (ra, rb) = tokio::join!(put_config(&c, &a, &hash), put_config(&c, &b, &hash));
    let mut statuses = [ra.status, rb.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{} / {}", ra.body, rb.body);
    let loser = if ra.status == 409 { &ra } else { &rb };
    assert_eq!(loser.json()["error"]["code"], "conflict");
    // The file holds the winner's text exactly, comments and all.
    let on_disk = std::fs::read_to_string(h.config_path.as_ref().unwrap()).unwrap();
    let winner = if ra.status == 200 { &a } else { &b };
    assert_eq!(&on_disk, winner);
    assert!(on_disk.contains("// providers on the mock"));
    assert_eq!(get_config(&c).await.0, *winner);
}

#[tokio::test]
async fn saves_treat_warnings_as_errors_and_refuse_empty_configs() {
    let h = Harness::start_with(Options {
        file: true,
        ..Options::default()
    })
    .await;
    let c = h.client();
    let (text, hash) = get_config(&c).await;
    let r = put_config(&c, "  ", &hash).await;
    assert_eq!(r.status, 400);
    let warned = text.replace(
        "\"compatibility\": {\"openai_chat\": true",
        "\"basurl\": \"x\", \"compatibility\": {\"openai_chat\": true",
    );
    let r = put_config(&c, &warned, &hash).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "invalid_config");
    let problems = r.json()["error"]["problems"].clone();
    assert_eq!(problems[0]["severity"], "warning");
    assert!(
        problems[0]["path"]
            .as_str()
            .unwrap()
            .starts_with("providers.openai")
    );
    // The validate endpoints say the same without saving, in both spellings.
    for path in ["/api/config/validate", "/aperture/config:validate"] {
        let v = c
            .send(
                "POST",
                path,
                &[JSON],
                &json!({"config": warned}).to_string(),
            )
            .await
            .json();
        assert_eq!(
            (v["valid"].clone(), v["Valid"].clone()),
            (json!(false), json!(false))
        );
    }
    assert_eq!(get_config(&c).await.1, hash, "nothing was saved");
}

#[tokio::test]
async fn lockout_is_refused_and_break_glass_recovers() {
    let h = Harness::start_with(Options {
        file: true,
        ..Options::default()
    })
    .await;
    let c = h.client();
    let (text, hash) = get_config(&c).await;
    // Take (loopback)'s admin away: the loopback admin is the saver.
    let locked = text.replace(
        "[{\"role\": \"admin\"}, {\"models\": \"**\"}]",
        "[{\"role\": \"user\"}, {\"models\": \"**\"}]",
    );
    assert_ne!(locked, text);
    // (another grant keeps an admin so the config has no "no admin" warning)
    let locked = locked.replace(
        "[{\"role\": \"user\"}, {\"models\": \"anthropic/**\"}]",
        "[{\"role\": \"admin\"}, {\"models\": \"anthropic/**\"}]",
    );
    let r = put_config(&c, &locked, &hash).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "admin_lockout");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("grants[0]"),
        "{}",
        r.body
    );
    // The break-glass socket (local OS user) saves it anyway.
    let sock = h.dir.path().join("admin.sock");
    let (gw, s2) = (h.gateway.clone(), sock.clone());
    tokio::spawn(
        async move { iris_server::serve_local_admin(&s2, gw, std::future::pending()).await },
    );
    for _ in 0..50 {
        if sock.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (st, who) = local(&sock, "GET", "/api/whoami", "").await;
    assert_eq!(
        (st, who["role"].clone(), who["identity"]["source"].clone()),
        (200, json!("admin"), json!("local_admin"))
    );
    let (st, body) = local(
        &sock,
        "PUT",
        "/api/config",
        &json!({"config": locked, "hash": hash}).to_string(),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    // Now loopback is a user: it cannot read the config any more, and the socket restores it.
    assert_eq!(c.send("GET", "/api/config", &[], "").await.status, 403);
    let (_, cur) = local(&sock, "GET", "/api/config", "").await;
    let (st, _) = local(
        &sock,
        "PUT",
        "/api/config",
        &json!({"config": text, "hash": cur["hash"]}).to_string(),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(c.send("GET", "/api/config", &[], "").await.status, 200);
    // The socket never serves models (it would bypass grants).
    let (st, _) = local(
        &sock,
        "POST",
        "/v1/chat/completions",
        &chat("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn history_and_rollback() {
    let h = Harness::start_with(Options {
        file: true,
        ..Options::default()
    })
    .await;
    let c = h.client();
    let (v0, h0) = get_config(&c).await;
    let v1 = v0.replace("X-Team: platform", "X-Team: one");
    let h1 = put_config(&c, &v1, &h0).await.json()["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let hist = c.send("GET", "/api/config/history", &[], "").await.json();
    let versions = hist["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["hash"], h1.as_str());
    assert_eq!(versions[0]["saved_by"], "(loopback)");
    assert_eq!(versions[1]["hash"], h0.as_str());
    let first_id = versions[1]["id"].clone();
    // Rollback with a stale hash is refused; with the current one it restores v0.
    let stale = c
        .send(
            "POST",
            "/api/config/rollback",
            &[JSON],
            &json!({"id": first_id, "hash": h0}).to_string(),
        )
        .await;
    assert_eq!(stale.status, 409);
    let ok = c
        .send(
            "POST",
            "/api/config/rollback",
            &[JSON],
            &json!({"id": first_id, "hash": h1}).to_string(),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(get_config(&c).await.0, v0);
    let r = c
        .post("/v1/messages", &[], &messages("claude-haiku-4-5", false))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        h.mock.requests().last().unwrap().header("x-team"),
        Some("platform")
    );
}

#[tokio::test]
async fn file_edits_reload_and_broken_files_leave_the_running_config() {
    let h = Harness::start_with(Options {
        file: true,
        ..Options::default()
    })
    .await;
    let c = h.client();
    let path = h.config_path.clone().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    // A broken file: the running config stays, health shows the problems.
    std::fs::write(
        &path,
        text.replace("\"providers\": {", "\"providers\": {,,"),
    )
    .unwrap();
    let mut health = Value::Null;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        health = c.send("GET", "/api/health", &[], "").await.json();
        if health["status"] == "degraded" {
            break;
        }
    }
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(!health["config"]["problems"].as_array().unwrap().is_empty());
    // The admin detail counts the client connections served: at least this client's own.
    let open = health["connections"]["open"].as_u64().unwrap();
    assert!(open >= 1, "{health}");
    assert!(
        open <= health["connections"]["limit"].as_u64().unwrap(),
        "{health}"
    );
    assert_eq!(
        c.post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
            .await
            .status,
        200
    );
    // A good edit applies without a restart: the tagged node loses anthropic.
    std::fs::write(
        &path,
        text.replace(
            "{\"role\": \"user\"}, {\"models\": \"anthropic/**\"}",
            "{\"role\": \"user\"}, {\"models\": \"openai/**\"}",
        ),
    )
    .unwrap();
    let ci = h.client_from(CI_NODE);
    let mut status = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        status = ci
            .post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
            .await
            .status;
        if status == 200 {
            break;
        }
    }
    assert_eq!(status, 200);
    assert_eq!(
        ci.post("/v1/messages", &[], &messages("claude-haiku-4-5", false))
            .await
            .status,
        404
    );
    assert_eq!(
        c.send("GET", "/api/health", &[], "").await.json()["status"],
        "ok"
    );
}

#[tokio::test]
async fn hot_reload_under_load_fails_no_request() {
    let h = Harness::start_with(Options {
        file: true,
        ..Options::default()
    })
    .await;
    let c = h.client();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let c = h.client();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            for _ in 0..2000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let r = c
                    .post(
                        "/v1/messages",
                        &[("x-mock-chunks", "3")],
                        &messages("claude-haiku-4-5", true),
                    )
                    .await;
                if r.status == 200 && r.body.contains("message_stop") {
                    ok += 1;
                } else {
                    failed.push((r.status, r.body));
                }
            }
            (ok, failed)
        }));
    }
    // Change the config several times while the requests run.
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (text, hash) = get_config(&c).await;
        let next = text.replace(
            &format!(
                "X-Team: {}",
                if i == 0 {
                    "platform".to_string()
                } else {
                    format!("v{}", i - 1)
                }
            ),
            &format!("X-Team: v{i}"),
        );
        let r = put_config(&c, &next, &hash).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let (ok, failed) = w.await.unwrap();
        assert!(failed.is_empty(), "{failed:?}");
        total += ok;
    }
    assert!(total > 20, "the load ran: {total}");
    // Requests that started after the last change see it.
    h.mock.reset();
    assert_eq!(
        c.post("/v1/messages", &[], &messages("claude-haiku-4-5", false))
            .await
            .status,
        200
    );
    assert_eq!(h.mock.requests()[0].header("x-team"), Some("v5"));
}

#[tokio::test]
async fn users_see_only_their_own_and_cannot_touch_the_config() {
    let h = Harness::start().await;
    let alice = h.client_from(ALICE);
    let ci = h.client_from(CI_NODE);
    assert_eq!(
        alice
            .post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
            .await
            .status,
        200
    );
    assert_eq!(
        ci.post("/v1/messages", &[], &messages("claude-haiku-4-5", false))
            .await
            .status,
        200
    );
    assert_eq!(
        h.client()
            .post("/v1/messages", &[], &messages("claude-haiku-4-5", false))
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mine = alice.send("GET", "/api/logs", &[], "").await.json();
    let recs = mine["records"].as_array().unwrap();
    assert_eq!(recs.len(), 1);
    assert!(recs.iter().all(|r| r["login"] == "alice@example.com"));
    // Asking for someone else's logs still gives your own.
    let other = alice
        .send("GET", "/api/logs?login=carol@example.com", &[], "")
        .await
        .json();
    assert!(
        other["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["login"] == "alice@example.com")
    );
    let ci_usage = ci.send("GET", "/api/usage", &[], "").await.json();
    assert_eq!(ci_usage["groups"][0]["key"], "tag:ci,tag:prod");
    assert_eq!(ci_usage["groups"].as_array().unwrap().len(), 1);
    let admin_usage = h.client().send("GET", "/api/usage", &[], "").await.json();
    assert_eq!(admin_usage["totals"]["requests"], 3);
    // Config: users may neither read nor write.
    assert_eq!(alice.send("GET", "/api/config", &[], "").await.status, 403);
    assert_eq!(put_config(&alice, "{}", "x").await.status, 403);
    assert_eq!(
        alice
            .send("GET", "/api/config/history", &[], "")
            .await
            .status,
        403
    );
    // Models and providers show only what is granted.
    let models = alice.send("GET", "/api/models", &[], "").await.json();
    let q: Vec<_> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["qualified"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        q,
        [
            "openai/gpt-4o-mini",
            "openai/text-embedding-3-small",
            "anthropic/claude-haiku-4-5"
        ]
    );
    let provs = ci.send("GET", "/api/providers", &[], "").await.json();
    assert_eq!(provs.as_array().unwrap().len(), 1);
    assert_eq!(provs[0]["id"], "anthropic");
}

#[tokio::test]
async fn key_lifecycle_through_the_api() {
    let h = Harness::start().await;
    let admin = h.client();
    let alice = h.client_from(ALICE);
    // Alice may create a key for herself, not for others.
    let r = alice
        .send(
            "POST",
            "/api/keys",
            &[JSON],
            &json!({"for": "bob@example.com"}).to_string(),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = alice
        .send(
            "POST",
            "/api/keys",
            &[JSON],
            &json!({"for": "alice@example.com", "expires": "1h", "note": "laptop"}).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let alice_key = r.json();
    // The admin creates one for carol.
    let r = admin
        .send(
            "POST",
            "/api/keys",
            &[JSON],
            &json!({"for": "carol@example.com"}).to_string(),
        )
        .await;
    let carol = r.json();
    let token = carol["token"].as_str().unwrap().to_owned();
    // Use it from loopback: it acts as carol.
    let bearer = format!("Bearer {token}");
    let r = admin
        .post(
            "/v1/chat/completions",
            &[("authorization", &bearer)],
            &chat("gpt-4o-mini", false),
        )
        .await;
    assert_eq!(r.status, 200);
    // Listing: alice sees only hers, the admin sees both, no hashes anywhere.
    let list = alice.send("GET", "/api/keys", &[], "").await;
    assert_eq!(list.json()["keys"].as_array().unwrap().len(), 1);
    assert!(!list.body.contains("token_hash"));
    assert_eq!(
        admin.send("GET", "/api/keys", &[], "").await.json()["keys"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Alice cannot revoke carol's key (and cannot tell it exists); the admin can.
    let carol_id = carol["id"].as_str().unwrap();
    assert_eq!(
        alice
            .send("DELETE", &format!("/api/keys/{carol_id}"), &[], "")
            .await
            .status,
        404
    );
    assert_eq!(
        admin
            .send("DELETE", &format!("/api/keys/{carol_id}"), &[], "")
            .await
            .status,
        200
    );
    let r = admin
        .post(
            "/v1/chat/completions",
            &[("authorization", &bearer)],
            &chat("gpt-4o-mini", false),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        alice
            .send(
                "DELETE",
                &format!("/api/keys/{}", alice_key["id"].as_str().unwrap()),
                &[],
                ""
            )
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn cross_site_and_non_json_mutations_are_refused() {
    let h = Harness::start().await;
    let c = h.client();
    let body = json!({"for": "(loopback)"}).to_string();
    let r = c
        .send(
            "POST",
            "/api/keys",
            &[JSON, ("origin", "https://evil.example")],
            &body,
        )
        .await;
    assert_eq!(r.status, 403);
    let r = c
        .send(
            "POST",
            "/api/keys",
            &[JSON, ("sec-fetch-site", "cross-site")],
            &body,
        )
        .await;
    assert_eq!(r.status, 403);
    let r = c
        .send(
            "POST",
            "/api/keys",
            &[("content-type", "text/plain")],
            &body,
        )
        .await;
    assert_eq!(r.status, 415);
    let r = c
        .send(
            "DELETE",
            "/api/keys/key_x",
            &[("origin", "http://attacker.test")],
            "",
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn openapi_document_describes_every_route() {
    let h = Harness::start().await;
    let doc = h
        .client()
        .send("GET", "/api/openapi.json", &[], "")
        .await
        .json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/health",
        "/api/whoami",
        "/api/config",
        "/api/config/validate",
        "/api/config/history",
        "/api/config/rollback",
        "/api/providers",
        "/api/models",
        "/api/usage",
        "/api/logs",
        "/api/keys",
        "/api/keys/{id}",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(paths["/api/config"].get("put").is_some());
    assert!(doc["components"]["schemas"]["UsageRecord"].is_object());
}
