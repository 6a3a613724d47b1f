//! The processes one run measures, all on loopback, started once and kept for every scenario:
//! the mock provider, the fake tailscaled, the baseline proxy, nginx (when installed) and iris
//! (`dist` build, identity resolution, grants and usage logging on).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use http::{HeaderName, HeaderValue};

use crate::load::Endpoint;
use crate::procfs::ProcSet;
use crate::procs::{Server, free_port, run_output};

/// The break-glass admin socket's name in iris's data directory (`iris::ADMIN_SOCKET`).
const IRIS_ADMIN_SOCKET: &str = "iris-admin.sock";
const IRIS_NAME: &str = "iris";

/// The login the benchmark's iris key is issued for.
pub const KEY_LOGIN: &str = "bench@example.com";
/// The loopback address the fake tailscaled knows as alice's laptop (fixtures/whois.json).
pub const WHOIS_PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Where the binaries and fixtures are.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Directory with `iris`, `iris-mock-provider`, `iris-fake-tailscaled`, `iris-bench-proxy`
    /// (normally `target/dist`).
    pub bin_dir: PathBuf,
    /// The repository root (for `crates/iris-testkit/fixtures/whois.json`).
    pub repo_root: PathBuf,
    /// Try to use nginx.
    pub nginx: bool,
    /// Extra environment for the two Rust proxies, iris and the baseline (e.g. `LD_PRELOAD` of
    /// another allocator, `MALLOC_ARENA_MAX`), so both are compared under the same setting.
    pub server_env: Vec<(String, String)>,
}

/// A measured target: where to send load, which processes to measure, and any extra headers.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub endpoint: Endpoint,
    pub procs: ProcSet,
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
}

/// The running processes.
pub struct Stack {
    pub work: tempfile::TempDir,
    /// Each iris instance's name and data directory.
    pub iris_data_dirs: Vec<(String, PathBuf)>,
    pub mock: Server,
    pub tailscaled: Server,
    pub baseline: Server,
    pub nginx: Option<Server>,
    /// Why nginx is absent, or its version.
    pub nginx_note: String,
    pub iris: Server,
    /// A second iris, the same but with `iris.captures.enabled: false`.
    pub iris_nocapture: Server,
    pub iris_key: String,
    pub iris_config: PathBuf,
    pub iris_nocapture_config: PathBuf,
    pub opts: StackOptions,
    _nginx_dir: Option<tempfile::TempDir>,
}

impl Stack {
    pub fn start(opts: &StackOptions) -> anyhow::Result<Stack> {
        let work = tempfile::Builder::new().prefix("iris-bench-").tempdir()?;
        let logs = work.path();
        let bin = |name: &str| opts.bin_dir.join(name);
        for b in [
            "iris",
            "iris-mock-provider",
            "iris-fake-tailscaled",
            "iris-bench-proxy",
        ] {
            if !bin(b).is_file() {
                bail!(
                    "{} is missing: build the binaries first (scripts/bench does: `cargo build --profile dist`)",
                    bin(b).display()
                );
            }
        }

        let mut cmd = Command::new(bin("iris-mock-provider"));
        cmd.args(["--listen", "127.0.0.1:0", "--no-record"]);
        let mock = Server::spawn("mock", cmd, logs)?;
        let mock_addr = mock.addr()?;

        let socket = work.path().join("tailscaled.sock");
        let fixtures = opts
            .repo_root
            .join("crates/iris-testkit/fixtures/whois.json");
        let mut cmd = Command::new(bin("iris-fake-tailscaled"));
        cmd.arg("--socket")
            .arg(&socket)
            .arg("--fixtures")
            .arg(&fixtures);
        let tailscaled = Server::spawn("tailscaled", cmd, logs)?;

        let mut cmd = Command::new(bin("iris-bench-proxy"));
        cmd.args(["--listen", "127.0.0.1:0", "--upstream"])
            .arg(mock_addr.to_string())
            .envs(opts.server_env.iter().map(|(k, v)| (k, v)));
        let baseline = Server::spawn("baseline", cmd, logs)?;

        let (nginx, nginx_note, nginx_dir) = if opts.nginx {
            match start_nginx(mock_addr, logs) {
                Ok((s, version, dir)) => (Some(s), version, Some(dir)),
                Err(e) => (None, format!("nginx: not used ({e:#})"), None),
            }
        } else {
            (None, "nginx: not used (--no-nginx)".to_owned(), None)
        };

        let data_dir = work.path().join("iris-data");
        std::fs::create_dir_all(&data_dir)?;
        let mut cmd = Command::new(bin("iris"));
        cmd.args(["keys", "create", "--for", KEY_LOGIN, "--data-dir"])
            .arg(&data_dir);
        let out = run_output(cmd, Duration::from_secs(30)).context("creating an iris key")?;
        let iris_key = out
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("iris_sk_"))
            .context("`iris keys create` printed no iris_sk_ token")?
            .to_owned();

        let iris_config = work.path().join("iris.hujson");
        let mock_url = format!("http://{mock_addr}");
        std::fs::write(&iris_config, iris_config_text(&mock_url, &socket, true))?;
        let iris = start_iris(
            &opts.bin_dir,
            &iris_config,
            &data_dir,
            &socket,
            logs,
            None,
            &opts.server_env,
        )?;
        let nocap_config = work.path().join("iris-nocapture.hujson");
        std::fs::write(&nocap_config, iris_config_text(&mock_url, &socket, false))?;
        let nocap_data = work.path().join("iris-nocapture-data");
        std::fs::create_dir_all(&nocap_data)?;
        let mut iris_nocapture = start_iris(
            &opts.bin_dir,
            &nocap_config,
            &nocap_data,
            &socket,
            logs,
            None,
            &opts.server_env,
        )?;
        iris_nocapture.name = "iris-nocapture".into();

        Ok(Stack {
            iris_data_dirs: vec![
                (IRIS_NAME.to_owned(), data_dir),
                ("iris-nocapture".to_owned(), nocap_data),
            ],
            work,
            mock,
            tailscaled,
            baseline,
            nginx,
            nginx_note,
            iris,
            iris_nocapture,
            iris_key,
            iris_config,
            iris_nocapture_config: nocap_config,
            opts: opts.clone(),
            _nginx_dir: nginx_dir,
        })
    }

    pub fn mock_target(&self) -> anyhow::Result<Target> {
        Ok(Target {
            name: "direct".into(),
            endpoint: Endpoint::new(self.mock.addr()?),
            procs: self.mock.procs.clone(),
            extra_headers: Vec::new(),
        })
    }

    /// The targets of the request-path scenarios, in their base order. `identities`: add the
    /// iris-with-key and iris-via-WhoIs variants.
    pub fn targets(&self, identities: bool) -> anyhow::Result<Vec<Target>> {
        let mut t = vec![
            self.mock_target()?,
            Target {
                name: "baseline".into(),
                endpoint: Endpoint::new(self.baseline.addr()?),
                procs: self.baseline.procs.clone(),
                extra_headers: Vec::new(),
            },
        ];
        if let Some(n) = &self.nginx {
            t.push(Target {
                name: "nginx".into(),
                endpoint: Endpoint::new(n.addr()?),
                procs: n.procs.clone(),
                extra_headers: Vec::new(),
            });
        }
        let iris = self.iris.addr()?;
        t.push(Target {
            name: "iris".into(),
            endpoint: Endpoint::new(iris),
            procs: self.iris.procs.clone(),
            extra_headers: Vec::new(),
        });
        t.push(Target {
            name: "iris-nocapture".into(),
            endpoint: Endpoint::new(self.iris_nocapture.addr()?),
            procs: self.iris_nocapture.procs.clone(),
            extra_headers: Vec::new(),
        });
        if identities {
            t.push(Target {
                name: "iris-key".into(),
                endpoint: Endpoint::new(iris),
                procs: self.iris.procs.clone(),
                extra_headers: vec![(
                    http::header::AUTHORIZATION,
                    HeaderValue::from_str(&format!("Bearer {}", self.iris_key))?,
                )],
            });
            t.push(Target {
                name: "iris-whois".into(),
                endpoint: Endpoint {
                    addr: iris,
                    source_ip: Some(WHOIS_PEER),
                },
                procs: self.iris.procs.clone(),
                extra_headers: Vec::new(),
            });
        }
        Ok(t)
    }

    /// Every server process, for the "still running" check after each scenario.
    pub fn servers_mut(&mut self) -> Vec<&mut Server> {
        let mut v = vec![
            &mut self.mock,
            &mut self.tailscaled,
            &mut self.baseline,
            &mut self.iris,
            &mut self.iris_nocapture,
        ];
        if let Some(n) = self.nginx.as_mut() {
            v.push(n);
        }
        v
    }

    /// Each iris instance's name and break-glass admin socket (in its data directory).
    pub fn iris_admin_sockets(&self) -> Vec<(String, PathBuf)> {
        (self.iris_data_dirs.iter())
            .map(|(name, dir)| (name.clone(), dir.join(IRIS_ADMIN_SOCKET)))
            .collect()
    }

    pub fn tailscaled_socket(&self) -> PathBuf {
        self.work.path().join("tailscaled.sock")
    }
}

/// Start `iris serve` (optionally under a wrapper such as valgrind) and wait for its
/// `listening:` line.
pub fn start_iris(
    bin_dir: &Path,
    config: &Path,
    data_dir: &Path,
    socket: &Path,
    logs: &Path,
    wrapper: Option<&[String]>,
    env: &[(String, String)],
) -> anyhow::Result<Server> {
    let iris_bin = bin_dir.join("iris");
    let mut cmd = match wrapper {
        Some([first, rest @ ..]) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&iris_bin);
            c
        }
        _ => Command::new(&iris_bin),
    };
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .arg("--tailscale-socket")
        .arg(socket)
        // The default log level a user runs with.
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(k, v)| (k, v)));
    // Named after the config (`iris`, `iris-nocapture`): each instance's log is its own file.
    let stem = config
        .file_stem()
        .map_or_else(|| "iris".into(), |s| s.to_string_lossy());
    let name = if wrapper.is_some() {
        format!("{stem}-profiled")
    } else {
        stem.into_owned()
    };
    Server::spawn(&name, cmd, logs)
}

/// [`start_iris`] under a wrapper (valgrind), with a long start-up bound.
pub fn start_iris_slow(
    bin_dir: &Path,
    config: &Path,
    data_dir: &Path,
    socket: &Path,
    logs: &Path,
    wrapper: &[String],
) -> anyhow::Result<Server> {
    let Some((first, rest)) = wrapper.split_first() else {
        bail!("empty wrapper command");
    };
    let mut cmd = Command::new(first);
    cmd.args(rest)
        .arg(bin_dir.join("iris"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .arg("--tailscale-socket")
        .arg(socket)
        .env_remove("RUST_LOG");
    Server::spawn_with_timeout("iris-profiled", cmd, logs, Duration::from_secs(180))
}

/// iris's config for the run: the mock as both providers, the grants the brief asks for
/// (`(loopback)` with role user and every model) plus the key's and the WhoIs peer's, a few
/// more grants so evaluation is not trivially short, the default usage settings, and
/// captures on or off.
pub fn iris_config_text(mock_url: &str, socket: &Path, captures: bool) -> String {
    let socket = socket.display();
    format!(
        r#"{{
  // Generated by iris-bench for one benchmark run.
  "providers": {{
    "openai": {{"baseurl": "{mock_url}", "apikey": "sk-bench-openai-key", "models": ["gpt-4o-mini", "gpt-4o"],
                "compatibility": {{"openai_chat": true, "openai_responses": true}}}},
    "anthropic": {{"baseurl": "{mock_url}", "apikey": "sk-ant-bench-key", "authorization": "x-api-key",
                   "models": ["claude-sonnet-4-5", "claude-haiku-4-5"], "compatibility": {{"anthropic_messages": true}}}},
  }},
  "grants": [
    {{"src": ["admin@example.com"], "app": {{"tailscale.com/cap/aperture": [{{"role": "admin"}}, {{"models": "**"}}]}}}},
    {{"src": ["group:ml-research"], "app": {{"tailscale.com/cap/aperture": [{{"role": "user"}}, {{"models": "openai/gpt-4o*"}}]}}}},
    {{"src": ["tag:ci"], "app": {{"tailscale.com/cap/aperture": [{{"role": "user"}}, {{"models": "anthropic/claude-haiku-*"}}]}}}},
    {{"src": ["{KEY_LOGIN}", "alice@example.com"], "app": {{"tailscale.com/cap/aperture": [{{"role": "user"}}, {{"models": "**"}}]}}}},
    {{"src": ["(loopback)"], "app": {{"tailscale.com/cap/aperture": [{{"role": "user"}}, {{"models": "**"}}]}}}},
  ],
  "iris": {{
    "identity": {{"whois": true, "tailscale_socket": "{socket}", "keys": true, "loopback": true}},
    "captures": {{"enabled": {captures}}},
  }},
}}"#
    )
}

/// nginx as a plain reverse proxy to the mock: keep-alive upstream, no buffering (streams pass
/// through), no access log. Returns the server, its version line and its directory.
fn start_nginx(
    mock: SocketAddr,
    logs: &Path,
) -> anyhow::Result<(Server, String, tempfile::TempDir)> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("not installed")?;
    let version = {
        let out = Command::new(&nginx).arg("-v").output()?;
        String::from_utf8_lossy(&out.stderr).trim().to_owned()
    };
    // nginx's workers may run as another user: their directory must be traversable.
    let dir = tempfile::Builder::new()
        .prefix("iris-bench-nginx-")
        .tempdir()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let listen = free_port()?;
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, nginx_config_text(listen, mock, dir.path()))?;
    let mut cmd = Command::new(&nginx);
    cmd.arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"]);
    let mut server = Server::spawn_on_port("nginx", cmd, listen, logs)?;
    server.procs.with_children = true;
    Ok((server, version, dir))
}

pub fn nginx_config_text(listen: SocketAddr, mock: SocketAddr, dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"# Generated by iris-bench: nginx as a plain reverse proxy to the mock provider.
worker_processes auto;
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {d}/client_body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  client_max_body_size 64m;
  client_body_buffer_size 1m;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  upstream mock {{ server {mock}; keepalive 256; keepalive_requests 10000000; }}
  server {{
    listen {listen} backlog=4096;
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 300s;
    }}
  }}
}}
"#
    )
}
