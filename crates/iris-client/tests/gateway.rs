//! The admin API client against a small in-test server with canned answers for each status, over
//! TCP on `127.0.0.1:0` and over a unix socket (the break-glass path).
// Test helpers panic on setup failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

use iris_client::gateway::{ClientError, Endpoint, GatewayClient, LogsQuery, UsageQuery};

const ADMIN: &str = "iris_sk_admin";
const USER: &str = "iris_sk_user";

fn bearer(h: &HeaderMap) -> Option<&str> {
    h.get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn error(status: StatusCode, message: &str, code: &str) -> Response {
    (
        status,
        axum::Json(
            json!({"error": {"message": message, "type": "invalid_request_error", "code": code}}),
        ),
    )
        .into_response()
}

/// Admin endpoints need `Bearer iris_sk_admin` on TCP; on the unix socket everyone is admin,
/// which the test server is told by `socket`.
fn is_admin(h: &HeaderMap, socket: bool) -> bool {
    socket || bearer(h) == Some(ADMIN)
}

fn router(socket: bool) -> Router {
    Router::new()
        .route(
            "/api/health",
            get(|h: HeaderMap| async move {
                axum::Json(json!({
                    "status": "ok",
                    "version": "0.1.0",
                    "saw_authorization": h.contains_key("authorization"),
                }))
            }),
        )
        .route(
            "/api/whoami",
            get(move |h: HeaderMap| async move {
                match (socket, bearer(&h)) {
                    (true, _) | (false, Some(ADMIN)) => axum::Json(json!({
                        "identity": {"source": "key", "login": "admin@example.com", "key_id": "k_admin", "tags": []},
                        "peer": "127.0.0.1:5555", "role": "admin", "grants": [],
                        "models": ["openai/gpt-4o"], "explain": "role admin; 1 model(s) available"
                    }))
                    .into_response(),
                    (false, Some(USER)) => axum::Json(json!({
                        "identity": {"source": "key", "login": "bob@example.com", "key_id": "k_bob", "tags": []},
                        "role": "user", "models": []
                    }))
                    .into_response(),
                    (false, _) => error(StatusCode::UNAUTHORIZED, "invalid iris key", "invalid_key"),
                }
            }),
        )
        .route(
            "/api/config",
            get(move |h: HeaderMap| async move {
                if !is_admin(&h, socket) {
                    return error(StatusCode::FORBIDDEN, "access denied: the config API needs role admin", "forbidden");
                }
                axum::Json(json!({"config": "{\n  // hi\n}\n", "exists": true, "hash": "h1"})).into_response()
            })
            .put(move |h: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
                if !is_admin(&h, socket) {
                    return error(StatusCode::FORBIDDEN, "access denied: the config API needs role admin", "forbidden");
                }
                if body["hash"] != "h1" {
                    return error(StatusCode::CONFLICT, "the config hash does not match", "conflict");
                }
                match body["config"].as_str() {
                    Some("invalid") => (
                        StatusCode::BAD_REQUEST,
                        axum::Json(json!({
                            "error": {"message": "the config has 2 problems", "type": "invalid_request_error", "code": "invalid_config"},
                            "problems": [
                                {"severity": "error", "path": "providers.openai.baseurl", "message": "must be an http(s) URL"},
                                {"severity": "warning", "path": "grants[0].src", "message": "matches nobody"}
                            ]
                        })),
                    )
                        .into_response(),
                    Some("lockout") => error(
                        StatusCode::FORBIDDEN,
                        "saving this would remove your admin role (grant 0 gives it today)",
                        "admin_lockout",
                    ),
                    _ => axum::Json(json!({"success": true, "hash": "h2"})).into_response(),
                }
            }),
        )
        .route(
            "/api/config/validate",
            post(|axum::Json(body): axum::Json<Value>| async move {
                let valid = body["config"] != "bad";
                let problems = if valid {
                    json!([])
                } else {
                    json!([{"severity": "error", "path": "", "message": "expected an object"}])
                };
                axum::Json(json!({"valid": valid, "Valid": valid, "problems": problems}))
            }),
        )
        .route(
            "/api/config/history",
            get(|| async {
                axum::Json(json!({"versions": [
                    {"id": 2, "hash": "h2", "saved_by": "admin@example.com", "saved_at_ms": 1700000001000_i64, "bytes": 120, "source": "api"},
                    {"id": 1, "hash": "h1", "saved_by": null, "saved_at_ms": 1700000000000_i64, "bytes": 100, "source": "file"}
                ]}))
            }),
        )
        .route(
            "/api/config/rollback",
            post(|axum::Json(body): axum::Json<Value>| async move {
                if body["id"] == 999 {
                    return error(StatusCode::NOT_FOUND, "no config version 999", "not_found");
                }
                if body["hash"] != "h1" {
                    return error(StatusCode::CONFLICT, "stale", "conflict");
                }
                axum::Json(json!({"success": true, "hash": "h0"})).into_response()
            }),
        )
        .route(
            "/api/usage",
            get(|RawQuery(q): RawQuery| async move {
                let q = q.unwrap_or_default();
                if q.contains("group_by=html") {
                    return (StatusCode::OK, "<html>a login page</html>").into_response();
                }
                if q.contains("group_by=boom") {
                    return (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(json!({"error": {"message": "store unavailable", "type": "api_error"}})),
                    )
                        .into_response();
                }
                axum::Json(json!({"groups": [], "totals": {"requests": 0}, "query": q})).into_response()
            }),
        )
        .route(
            "/api/logs",
            get(|RawQuery(q): RawQuery| async move {
                axum::Json(json!({"records": [], "next_cursor": null, "query": q.unwrap_or_default()}))
            }),
        )
        .route(
            "/api/keys",
            get(|| async {
                axum::Json(json!({"keys": [
                    {"id": "k_1", "login": "alice@example.com", "tags": [], "note": "laptop",
                     "created_ms": 1, "expires_ms": null, "revoked_ms": null, "last_used_ms": 5, "created_by": "admin@example.com"}
                ]}))
            })
            .post(|axum::Json(body): axum::Json<Value>| async move {
                (
                    StatusCode::CREATED,
                    axum::Json(json!({
                        "id": "k_2", "token": "iris_sk_new_token", "for": body["for"],
                        "expires_ms": if body["expires"].is_null() { Value::Null } else { json!(1_800_000_000_000_i64) },
                        "note_seen": body["note"],
                    })),
                )
            }),
        )
        .route(
            "/api/keys/{id}",
            delete(|Path(id): Path<String>| async move {
                if id == "k_1" {
                    axum::Json(json!({"revoked": true})).into_response()
                } else {
                    error(StatusCode::NOT_FOUND, &format!("no key {id}"), "not_found")
                }
            }),
        )
}

struct TcpServer {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tcp_server() -> TcpServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, router(false)).await.unwrap();
    });
    TcpServer { url, task }
}

fn client(url: &str, key: Option<&str>) -> GatewayClient {
    GatewayClient::new(Endpoint::parse(url).unwrap(), key.map(str::to_owned)).unwrap()
}

#[tokio::test]
async fn successful_calls_return_typed_answers() {
    let s = tcp_server().await;
    let c = client(&s.url, Some(ADMIN));

    let health = c.health().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["saw_authorization"], true, "the key goes on TCP");

    let me = c.whoami().await.unwrap();
    assert_eq!(me.identity.login.as_deref(), Some("admin@example.com"));
    assert_eq!(me.role.as_deref(), Some("admin"));
    assert_eq!(
        me.describe(),
        "admin@example.com (iris key k_admin; role admin; 1 model)"
    );

    let doc = c.config_get().await.unwrap();
    assert_eq!(doc.hash, "h1");
    assert!(doc.exists);
    assert_eq!(doc.config, "{\n  // hi\n}\n");

    assert_eq!(c.config_put("{}", "h1").await.unwrap().hash, "h2");
    assert_eq!(c.config_rollback(1, "h1").await.unwrap().hash, "h0");

    let ok = c.config_validate("{}").await.unwrap();
    assert!(ok.valid && ok.problems.is_empty());
    let bad = c.config_validate("bad").await.unwrap();
    assert!(!bad.valid);
    assert_eq!(bad.problems[0].to_string(), "error: expected an object");

    let history = c.config_history().await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].id, 2);
    assert_eq!(history[1].saved_by, None);

    let usage = c
        .usage(&UsageQuery {
            login: Some("alice@example.com".into()),
            group_by: Some("model".into()),
            ..UsageQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(usage["query"], "login=alice%40example.com&group_by=model");
    let logs = c
        .logs(&LogsQuery {
            limit: Some(20),
            cursor: Some("abc/def".into()),
            ..LogsQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(logs["query"], "limit=20&cursor=abc%2Fdef");

    let keys = c.keys_list().await.unwrap();
    assert_eq!(keys[0].id, "k_1");
    assert_eq!(keys[0].note.as_deref(), Some("laptop"));
    let created = c
        .keys_create("tag:ci", Some("30d"), Some("runner"))
        .await
        .unwrap();
    assert_eq!(created.token, "iris_sk_new_token");
    assert_eq!(created.for_subject, "tag:ci");
    assert_eq!(created.expires_ms, Some(1_800_000_000_000));
    assert!(!format!("{created:?}").contains("new_token"));
    c.keys_revoke("k_1").await.unwrap();
}

#[tokio::test]
async fn errors_say_what_to_do() {
    let s = tcp_server().await;
    let admin = client(&s.url, Some(ADMIN));
    let user = client(&s.url, Some(USER));
    let nobody = client(&s.url, Some("iris_sk_wrong"));

    // 401: the server's message and a hint.
    let e = nobody.whoami().await.unwrap_err();
    assert!(
        matches!(e, ClientError::Denied { status: 401, .. }),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.starts_with("invalid iris key (HTTP 401)\nhint: "),
        "{text}"
    );

    // 403: the server's message, then how to get admin rights.
    let e = user.config_get().await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("access denied: the config API needs role admin (HTTP 403)"),
        "{text}"
    );
    assert!(
        text.contains("admin identity") && text.contains("iris-admin.sock"),
        "{text}"
    );

    // 409.
    let e = admin.config_put("{}", "stale").await.unwrap_err();
    assert!(matches!(e, ClientError::Conflict { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "the config changed since you read it (someone saved in between): run `iris config get` again"
    );
    let e = admin.config_rollback(1, "stale").await.unwrap_err();
    assert!(matches!(e, ClientError::Conflict { .. }), "{e:?}");

    // 400 invalid_config: every problem on its own line.
    let e = admin.config_put("invalid", "h1").await.unwrap_err();
    let ClientError::InvalidConfig { problems, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(problems.len(), 2);
    assert_eq!(
        e.to_string(),
        "the gateway refused the config: the config has 2 problems\n\
         error: providers.openai.baseurl: must be an http(s) URL\n\
         warning: grants[0].src: matches nobody"
    );

    // 403 admin_lockout is not "you are not an admin".
    let e = admin.config_put("lockout", "h1").await.unwrap_err();
    assert!(matches!(e, ClientError::AdminLockout { .. }), "{e:?}");
    assert!(e.to_string().contains("grant 0 gives it today"));

    // 404.
    let e = admin.config_rollback(999, "h1").await.unwrap_err();
    assert_eq!(e.to_string(), "not found: no config version 999");
    let e = admin.keys_revoke("k_404").await.unwrap_err();
    assert_eq!(e.to_string(), "not found: no key k_404");

    // 5xx and answers that are not JSON.
    let boom = UsageQuery {
        group_by: Some("boom".into()),
        ..UsageQuery::default()
    };
    let e = admin.usage(&boom).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "the gateway answered HTTP 500: store unavailable"
    );
    let html = UsageQuery {
        group_by: Some("html".into()),
        ..UsageQuery::default()
    };
    let e = admin.usage(&html).await.unwrap_err();
    assert!(
        matches!(e, ClientError::BadResponse { status: 200, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("is http://127.0.0.1:"), "{e}");
}

#[tokio::test]
async fn no_gateway_is_named_with_the_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let e = client(&url, None).health().await.unwrap_err();
    assert!(matches!(e, ClientError::NoGateway { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("no gateway at {url} (is `iris serve` running?)")),
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("refused"),
        "the OS error is kept: {text}"
    );
}

#[tokio::test]
async fn a_silent_gateway_times_out() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            open.push(s);
        }
    });
    let c = client(&url, None).with_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let e = c.health().await.unwrap_err();
    assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    hold.abort();
}

#[tokio::test]
async fn break_glass_socket_works_and_keeps_the_key_home() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("iris-admin.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, router(true)).await.unwrap();
    });

    let endpoint = Endpoint::parse(&format!("unix:{}", sock.display())).unwrap();
    assert_eq!(endpoint, Endpoint::Unix(sock.clone()));
    let c = GatewayClient::new(endpoint, Some(USER.to_owned())).unwrap();
    let health = c.health().await.unwrap();
    assert_eq!(
        health["saw_authorization"], false,
        "no key on the unix socket"
    );
    assert_eq!(c.config_get().await.unwrap().hash, "h1");
    assert_eq!(c.config_put("{}", "h1").await.unwrap().hash, "h2");
    let e = c.config_put("{}", "stale").await.unwrap_err();
    assert!(matches!(e, ClientError::Conflict { .. }), "{e:?}");
    let e = c.config_put("invalid", "h1").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("error: providers.openai.baseurl: must be an http(s) URL")
    );
    assert_eq!(c.keys_list().await.unwrap().len(), 1);
    // Several calls in a row: each on its own connection, none left hanging.
    for _ in 0..5 {
        c.whoami().await.unwrap();
    }
    server.abort();
}

#[tokio::test]
async fn missing_socket_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("iris-admin.sock");
    let c = GatewayClient::new(Endpoint::Unix(sock.clone()), None).unwrap();
    let e = c.health().await.unwrap_err();
    assert!(matches!(e, ClientError::NoSocket { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&sock.display().to_string()) && text.contains("iris serve"),
        "{text}"
    );
}
