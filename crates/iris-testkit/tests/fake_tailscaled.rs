//! The fake tailscaled over its unix socket: the LocalAPI WhoIs contract iris relies on.

mod common;

use common::unix_get;
use iris_testkit::{FakeTailscaled, Fixtures};
use serde_json::{Value, json};

const HOST: (&str, &str) = ("host", "local-tailscaled.sock");

#[tokio::test]
async fn whois_answers_fixture_as_tab_indented_json() {
    let fake = FakeTailscaled::start().await;
    let r = unix_get(
        fake.socket_path(),
        "/localapi/v0/whois?addr=127.0.0.2%3A51234",
        &[HOST],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("tailscale-version").is_some());
    let text = r.text();
    assert!(
        text.starts_with("{\n\t\""),
        "tab-indented like Go's MarshalIndent: {text}"
    );
    let j = r.json();
    assert_eq!(j["UserProfile"]["LoginName"], "alice@example.com");
    assert_eq!(j["UserProfile"]["DisplayName"], "Alice Example");
    assert_eq!(j["UserProfile"]["Groups"], json!(["group:ai-users"]));
    assert_eq!(
        j["CapMap"]["tailscale.com/cap/aperture"],
        json!([{"role": "user"}, {"models": "openai/**"}])
    );
    assert!(j["Node"]["Name"].as_str().unwrap().ends_with(".ts.net."));

    // An unescaped IP:PORT and a bare IP work too.
    let r = unix_get(
        fake.socket_path(),
        "/localapi/v0/whois?addr=127.0.0.3:9",
        &[HOST],
    )
    .await;
    assert_eq!(r.json()["Node"]["Tags"], json!(["tag:prod", "tag:ci"]));
    assert_eq!(r.json()["UserProfile"]["LoginName"], "tagged-devices");
    assert_eq!(r.json()["CapMap"], Value::Null);
    assert!(r.text().contains("\"CapMap\": null"));
    let r = unix_get(
        fake.socket_path(),
        "/localapi/v0/whois?addr=100.64.0.9",
        &[HOST],
    )
    .await;
    assert_eq!(r.json()["Node"]["Tags"], json!(["tag:ci"]));
    assert_eq!(fake.whois_count(), 3);
    assert_eq!(
        fake.whois_addrs(),
        vec!["127.0.0.2:51234", "127.0.0.3:9", "100.64.0.9"]
    );
}

#[tokio::test]
async fn unknown_missing_and_invalid_addresses() {
    let fake = FakeTailscaled::start().await;
    let r = unix_get(
        fake.socket_path(),
        "/localapi/v0/whois?addr=127.0.0.1:4444",
        &[HOST],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "no match for IP:port\n");
    let r = unix_get(fake.socket_path(), "/localapi/v0/whois", &[HOST]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), "missing 'addr' parameter\n");
    let r = unix_get(
        fake.socket_path(),
        "/localapi/v0/whois?addr=nonsense",
        &[HOST],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), "invalid 'addr' parameter\n");
    let r = unix_get(fake.socket_path(), "/localapi/v0/status", &[HOST]).await;
    assert_eq!(r.status, 404);
    assert_eq!(fake.whois_count(), 3, "only whois requests are counted");
}

#[tokio::test]
async fn localapi_rejects_foreign_hosts_and_browsers() {
    let fake = FakeTailscaled::start().await;
    let path = "/localapi/v0/whois?addr=127.0.0.2";
    let cases: [(&[(&str, &str)], u16); 5] = [
        (&[("host", "localhost")], 403),
        (&[("host", "a2f746d702f...")], 403),
        (&[HOST, ("origin", "http://evil.example")], 403),
        (&[HOST, ("referer", "http://evil.example/")], 403),
        // HTTP/1.1 without a Host header: Go's server answers 400 before the handler.
        (&[], 400),
    ];
    for (headers, want) in cases {
        let r = unix_get(fake.socket_path(), path, headers).await;
        assert_eq!(r.status, want, "headers {headers:?}: {}", r.text());
    }
    let r = unix_get(fake.socket_path(), path, &[("host", "localhost")]).await;
    assert_eq!(r.text(), "invalid localapi request\n");
    // An empty Host is what tailscaled accepts besides its own name.
    let r = unix_get(fake.socket_path(), path, &[("host", "")]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn stats_endpoint_and_fixture_swap() {
    let fake = FakeTailscaled::start().await;
    for _ in 0..2 {
        unix_get(
            fake.socket_path(),
            "/localapi/v0/whois?addr=127.0.0.5:1",
            &[HOST],
        )
        .await;
    }
    let stats = unix_get(fake.socket_path(), "/__fake/stats", &[HOST])
        .await
        .json();
    assert_eq!(stats["whois_requests"], 2);
    assert_eq!(stats["whois_addrs"], json!(["127.0.0.5:1", "127.0.0.5:1"]));

    let mut f = Fixtures::default();
    f.insert(
        "127.0.0.5",
        json!({"Node": {"ID": 9}, "UserProfile": {"LoginName": "bob2@example.com"}}),
    )
    .unwrap();
    fake.set_fixtures(f);
    let r = unix_get(
        fake.socket_path(),
        "/localapi/v0/whois?addr=127.0.0.5:1",
        &[HOST],
    )
    .await;
    assert_eq!(r.json()["UserProfile"]["LoginName"], "bob2@example.com");
    assert_eq!(r.json()["CapMap"], Value::Null);
}

#[tokio::test]
async fn dropping_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ts.sock");
    let fake = FakeTailscaled::start_at(&socket, Fixtures::standard())
        .await
        .unwrap();
    assert!(socket.exists());
    drop(fake);
    assert!(!socket.exists(), "socket removed on drop");
    // A stale socket file is replaced on the next start.
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let fake = FakeTailscaled::start_at(&socket, Fixtures::standard())
        .await
        .unwrap();
    let r = unix_get(
        fake.socket_path(),
        "/localapi/v0/whois?addr=127.0.0.2",
        &[HOST],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[test]
fn binary_serves_fixture_file() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tailscaled.sock");
    let fixtures = dir.path().join("whois.json");
    std::fs::write(
        &fixtures,
        r#"{"127.0.0.7:80": {"Node": {"ID": 7}, "UserProfile": {"LoginName": "dora@example.com"}}}"#,
    )
    .unwrap();
    let (mut child, line) = common::spawn_with_first_line(
        std::process::Command::new(env!("CARGO_BIN_EXE_iris-fake-tailscaled"))
            .arg("--socket")
            .arg(&socket)
            .arg("--fixtures")
            .arg(&fixtures),
    );
    assert_eq!(line, format!("listening: {}", socket.display()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(unix_get(
        &socket,
        "/localapi/v0/whois?addr=127.0.0.7:80",
        &[HOST],
    ));
    assert_eq!(r.json()["UserProfile"]["LoginName"], "dora@example.com");
    let r = rt.block_on(unix_get(
        &socket,
        "/localapi/v0/whois?addr=127.0.0.7:81",
        &[HOST],
    ));
    assert_eq!(r.status, 404, "exact IP:PORT only, no bare-IP fixture");
    let status = common::terminate(&mut child);
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "socket removed on exit");
}

#[test]
fn binary_rejects_a_bad_fixture_file() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = dir.path().join("whois.json");
    std::fs::write(&fixtures, r#"{"not-an-ip": {}}"#).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iris-fake-tailscaled"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--fixtures")
        .arg(&fixtures)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-ip"));
}
