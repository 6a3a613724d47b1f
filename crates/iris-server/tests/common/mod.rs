//! The in-process harness: a real `iris_server::serve` on 127.0.0.1:0 in front of the testkit's
//! mock provider, with the fake tailscaled and a temporary store.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use iris_store::{
    SqliteStore, Store, UsageQuery, UsageRecord, UsageWriterConfig, UsageWriterHandle,
};
use iris_testkit::mock::MockProvider;
use iris_testkit::tailscaled::FakeTailscaled;

pub const OPENAI_KEY: &str = "sk-PLANTED-openai-7f3a9c";
pub const ANTHROPIC_KEY: &str = "sk-ant-PLANTED-anthropic-2b8e1d";

pub struct Harness {
    pub url: String,
    pub addr: SocketAddr,
    pub mock: MockProvider,
    pub tailscaled: Option<FakeTailscaled>,
    pub store: Arc<SqliteStore>,
    pub gateway: Arc<iris_server::Gateway>,
    /// The config file, when the harness manages one (`Options::file`).
    pub config_path: Option<std::path::PathBuf>,
    pub dir: tempfile::TempDir,
    writer: Option<UsageWriterHandle>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
pub struct Options {
    /// Extra text spliced into the `"iris"` section (starting with a comma).
    pub iris: String,
    /// Extra text spliced into `"iris": {"identity": {...}}` (starting with a comma).
    pub identity: String,
    /// Use this tailscaled socket path instead of a fake tailscaled.
    pub socket: Option<std::path::PathBuf>,
    /// Keep the config in a file managed by the gateway (API saves, reloads, history), and watch
    /// it, polling every 50 ms.
    pub file: bool,
}

pub fn config_text(mock_url: &str, socket: &str, identity_extra: &str, iris_extra: &str) -> String {
    format!(
        r#"{{
  // providers on the mock; anthropic's baseurl ends in /v1 on purpose (must not become /v1/v1)
  "providers": {{
    "openai": {{"baseurl": "{mock_url}", "apikey": "${{T_OPENAI_KEY}}", "models": ["gpt-4o-mini", "text-embedding-3-small"],
                "compatibility": {{"openai_chat": true, "openai_responses": true}}}},
    "anthropic": {{"baseurl": "{mock_url}/v1", "apikey": "${{T_ANTHROPIC_KEY}}", "authorization": "x-api-key",
                   "models": ["claude-sonnet-4-5", "claude-haiku-4-5"], "compatibility": {{"anthropic_messages": true}},
                   "add_headers": ["X-Team: platform"]}},
  }},
  "grants": [
    {{"src": ["(loopback)"], "app": {{"tailscale.com/cap/aperture": [{{"role": "admin"}}, {{"models": "**"}}]}}}},
    {{"src": ["group:ai-users"], "app": {{"tailscale.com/cap/aperture": [{{"models": "anthropic/claude-haiku-*"}}]}}}},
    {{"src": ["tag:ci"], "app": {{"tailscale.com/cap/aperture": [{{"role": "user"}}, {{"models": "anthropic/**"}}]}}}},
    {{"src": ["bob@example.com"], "app": {{"tailscale.com/cap/aperture": [{{"models": "**"}}]}}}},
    {{"src": ["carol@example.com"], "app": {{"tailscale.com/cap/aperture": [{{"role": "user"}}, {{"models": "openai/**"}}]}}}},
  ],
  "iris": {{"identity": {{"tailscale_socket": "{socket}" {identity_extra}}}, "usage": {{"flush_interval": "20ms"}} {iris_extra} }},
}}"#
    )
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Harness {
        let mock = MockProvider::start().await;
        let (tailscaled, socket) = match opts.socket {
            Some(s) => (None, s),
            None => {
                let ts = FakeTailscaled::start().await;
                let s = ts.socket_path().to_path_buf();
                (Some(ts), s)
            }
        };
        let mut text = config_text(
            &mock.url(),
            &socket.display().to_string(),
            &opts.identity,
            &opts.iris,
        );
        if opts.file {
            // Saves treat warnings as errors: start file-managed configs without the /v1 warning.
            text = text.replace(
                &format!("\"{}/v1\"", mock.url()),
                &format!("\"{}\"", mock.url()),
            );
        }
        let env: HashMap<String, String> = [
            ("T_OPENAI_KEY".to_string(), OPENAI_KEY.to_string()),
            ("T_ANTHROPIC_KEY".to_string(), ANTHROPIC_KEY.to_string()),
        ]
        .into();
        let loaded = match iris_config::load(&text, &env) {
            Ok(l) => l,
            Err(d) => panic!("test config invalid: {d:#?}"),
        };
        let store = Arc::new(SqliteStore::open_temporary().await.unwrap());
        let dyn_store: Arc<dyn Store> = store.clone();
        let (sink, writer) = iris_store::spawn_usage_writer(
            dyn_store.clone(),
            UsageWriterConfig {
                queue_capacity: 10_000,
                batch_size: 100,
                flush_interval: Duration::from_millis(20),
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut gw = iris_server::Gateway::new(loaded.config, dyn_store, sink);
        let mut config_path = None;
        if opts.file {
            let path = dir.path().join("iris.hujson");
            std::fs::write(&path, &text).unwrap();
            gw = gw.with_config_file(iris_server::config_file::ConfigFile::new(
                Some(path.clone()),
                text.clone(),
                Arc::new(env.clone()),
                Arc::new(|_| {}),
            ));
            config_path = Some(path);
        }
        let gw = Arc::new(gw);
        gw.config_file.record_initial(&gw).await;
        let gateway = gw.clone();
        let stop_watch = tokio_util::sync::CancellationToken::new();
        if opts.file {
            tokio::spawn(gw.config_file.clone().watch(
                gw.clone(),
                Duration::from_millis(50),
                stop_watch.clone(),
            ));
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = rx.await;
            };
            iris_server::serve(listener, gw, stop, Duration::from_secs(10))
                .await
                .unwrap();
            stop_watch.cancel();
        });
        Harness {
            url: format!("http://{addr}"),
            addr,
            mock,
            tailscaled,
            store,
            gateway,
            config_path,
            dir,
            writer: Some(writer),
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stop the gateway gracefully and flush every usage record.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), t)
                .await
                .unwrap()
                .unwrap();
        }
        self.gateway.finish().await;
        if let Some(w) = self.writer.take() {
            w.shutdown().await;
        }
    }

    /// All usage records (newest first), after a graceful shutdown so nothing is in flight.
    pub async fn records(&mut self) -> Vec<UsageRecord> {
        self.shutdown().await;
        self.store
            .recent_usage(&UsageQuery {
                limit: 1000,
                ..UsageQuery::default()
            })
            .await
            .unwrap()
    }

    /// A client whose connections come from `ip` (a loopback address), so the fake tailscaled sees
    /// a different peer.
    pub fn client_from(&self, ip: [u8; 4]) -> TestClient {
        let mut http = HttpConnector::new();
        http.set_local_address(Some(IpAddr::from(ip)));
        http.set_nodelay(true);
        TestClient {
            base: self.url.clone(),
            client: Client::builder(TokioExecutor::new()).build(http),
        }
    }

    pub fn client(&self) -> TestClient {
        self.client_from([127, 0, 0, 1])
    }
}

pub struct TestClient {
    pub base: String,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl TestClient {
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> http::Request<Full<Bytes>> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if !body.is_empty() {
            b = b.header("content-type", "application/json");
        }
        b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let req = self.request(method, path, headers, body);
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .expect("gateway answered in time")
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        self.send("POST", path, headers, body).await
    }
}

pub fn chat(model: &str, stream: bool) -> String {
    serde_json::json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello"}]})
        .to_string()
}

pub fn messages(model: &str, stream: bool) -> String {
    serde_json::json!({"model": model, "stream": stream, "max_tokens": 32, "messages": [{"role": "user", "content": "hello"}]})
        .to_string()
}
