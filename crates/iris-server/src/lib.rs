//! # iris-server: the HTTP front and the request path
//!
//! Layout: [`serve`] accepts connections (one task each, TCP_NODELAY, graceful shutdown);
//! [`conn::ConnCtx`] holds what is known about one connection (peer address, its WhoIs answer,
//! resolved once); [`identity`] resolves the principal of a request in the documented order;
//! [`proxy`] is the request path, top to bottom: identity → body → model → route → policy →
//! upstream → metered response → usage record; [`body`] carries the upstream answer to the client
//! while usage is extracted; [`error`] is the one mapping from gateway errors to HTTP answers in
//! the caller's dialect; [`upstream`] is the pooled provider client.
//!
//! This is the only crate that knows hyper/axum types. It holds no wire-format knowledge (that is
//! `iris-providers`), speaks no SQL (that is `iris-store`), and never decides access itself (that
//! is `iris-policy`).

pub mod admin;
pub mod body;
pub mod caller;
pub mod config_file;
pub mod conn;
pub mod drain;
pub mod error;
pub mod identity;
pub mod insights;
pub mod limits;
pub mod net;
pub mod observe;
pub mod proxy;
pub mod sniff;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use iris_config::Config;
use iris_identity::whois::WhoisClient;
use iris_policy::Policy;
use iris_providers::routing::RouteTable;
use iris_store::{Store, UsageSink};
use tokio::net::TcpListener;

/// Everything derived from one version of the config. A request takes one snapshot at its start
/// and finishes under it, whatever happens to the config meanwhile.
pub struct Runtime {
    pub config: Config,
    pub routes: RouteTable,
    pub policy: Policy,
    /// Redacts every provider key (and the configured headers) from captures.
    pub redactor: Arc<iris_capture::Redactor>,
    /// Cost settings per provider id.
    pub costs: foldhash::HashMap<String, Arc<observe::ProviderCost>>,
    /// Credential, extra headers and endpoint URLs per provider id.
    pub upstreams: foldhash::HashMap<String, upstream::ProviderUpstream>,
}

impl Runtime {
    pub fn new(config: Config) -> Runtime {
        let secrets: Vec<String> = config
            .providers
            .iter()
            .filter_map(|p| p.apikey.as_ref().map(|k| k.expose().to_owned()))
            .collect();
        let redactor = iris_capture::Redactor::new(secrets)
            .with_extra_headers(config.iris.captures.redact_headers.iter());
        let costs = config
            .providers
            .iter()
            .map(|p| {
                (
                    p.id.clone(),
                    Arc::new(observe::provider_cost(p, config.auto_cost_basis)),
                )
            })
            .collect();
        let upstreams = config
            .providers
            .iter()
            .map(|p| (p.id.clone(), upstream::ProviderUpstream::new(p)))
            .collect();
        Runtime {
            routes: RouteTable::new(&config),
            upstreams,
            policy: Policy::new(&config.grants),
            redactor: Arc::new(redactor),
            costs,
            config,
        }
    }
}

/// The shared state of a running gateway.
pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) observer: observe::Observer,
    observer_handle: std::sync::Mutex<Option<observe::ObserverHandle>>,
    pub(crate) whois: Option<WhoisClient>,
    pub(crate) client: upstream::UpstreamClient,
    pub(crate) key_touch: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    pub(crate) key_cache: identity::KeyCache,
    whois_down_logged: AtomicBool,
    pub config_file: Arc<config_file::ConfigFile>,
    pub(crate) key_failures: limits::FailureCounter,
    pub(crate) capture_budget: Arc<observe::CaptureBudget>,
    /// Client connections `serve` holds, and the limit it enforces.
    connections: Arc<Connections>,
}

/// What `serve` counts of its client connections. (Its semaphore's permits are not the count: the
/// accept loop holds one while it waits for the next connection.)
#[derive(Default)]
struct Connections {
    /// Accepted and not yet closed.
    open: AtomicUsize,
    /// `iris.limits.max_connections` as `serve` read it at its start (0 before).
    limit: AtomicUsize,
}

/// One connection `serve` accepted, counted in [`Gateway::connections_open`] until dropped.
struct OpenConnection(Arc<Connections>);

impl OpenConnection {
    fn new(c: &Arc<Connections>) -> OpenConnection {
        c.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(c.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gateway {
    /// A gateway whose capture writes run on the current runtime (tests, embedding).
    pub fn new(config: Config, store: Arc<dyn Store>, usage: UsageSink) -> Gateway {
        Gateway::with_store_runtime(config, store, usage, tokio::runtime::Handle::current())
    }

    /// A gateway whose capture writes run on `store_rt`, which must outlive the store's use (see
    /// `observe::spawn_observer`); `iris serve` gives it a runtime thread of its own.
    pub fn with_store_runtime(
        config: Config,
        store: Arc<dyn Store>,
        usage: UsageSink,
        store_rt: tokio::runtime::Handle,
    ) -> Gateway {
        let id = &config.iris.identity;
        let whois = id.whois.then(|| {
            WhoisClient::new(
                id.tailscale_socket
                    .clone()
                    .unwrap_or_else(iris_identity::whois::default_socket),
            )
        });
        let client = upstream::build_client(config.iris.timeouts.connect);
        let (observer, observer_handle) = observe::spawn_observer(
            store.clone(),
            usage,
            config.iris.usage.queue_capacity,
            store_rt,
        );
        Gateway {
            runtime: ArcSwap::from_pointee(Runtime::new(config)),
            store,
            observer,
            observer_handle: std::sync::Mutex::new(Some(observer_handle)),
            whois,
            client,
            key_touch: std::sync::Mutex::new(std::collections::HashMap::new()),
            key_cache: identity::KeyCache::default(),
            whois_down_logged: AtomicBool::new(false),
            config_file: Arc::new(config_file::ConfigFile::in_memory()),
            key_failures: limits::FailureCounter::default(),
            capture_budget: Arc::new(observe::CaptureBudget::default()),
            connections: Arc::default(),
        }
    }

    /// Manage the config through this file (API saves, history, reloads).
    pub fn with_config_file(mut self, file: config_file::ConfigFile) -> Gateway {
        self.config_file = Arc::new(file);
        self
    }

    /// Finish the work queued off the request path (sessions, costs, captures) and hand every
    /// record to the usage writer. Call after `serve` returned, before draining the writer.
    pub async fn finish(&self) {
        let handle = self.observer_handle.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            h.shutdown().await;
        }
    }

    /// Whether tailscaled answered the last time iris asked.
    pub fn tailscaled_reachable(&self) -> bool {
        self.whois.is_some() && !self.whois_down_logged.load(Ordering::Relaxed)
    }

    /// Response bytes held for captures by the requests in flight (bounded by
    /// `iris.captures.max_in_flight_bytes`): back to 0 whenever no response is being captured (a
    /// gauge for leak checks).
    pub fn capture_bytes_held(&self) -> u64 {
        self.capture_budget.used()
    }

    /// Client connections `serve` holds open now (at most [`connection_limit`]; those beyond
    /// wait in the kernel's listen backlog).
    ///
    /// [`connection_limit`]: Self::connection_limit
    pub fn connections_open(&self) -> usize {
        self.connections.open.load(Ordering::Relaxed)
    }

    /// The most client connections `serve` holds at once: `iris.limits.max_connections` as it
    /// was when `serve` started (a reload does not change it); 0 before.
    pub fn connection_limit(&self) -> usize {
        self.connections.limit.load(Ordering::Relaxed)
    }

    /// The current config snapshot.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Swap in a new, already validated config. Requests in flight keep their snapshot.
    pub fn replace_config(&self, config: Config) {
        self.runtime.store(Arc::new(Runtime::new(config)));
    }

    pub fn whois_client(&self) -> Option<&WhoisClient> {
        self.whois.as_ref()
    }

    /// Probe tailscaled once at start-up: `Ok(true)` reachable, `Ok(false)` WhoIs switched off.
    pub async fn probe_tailscaled(&self) -> Result<bool, String> {
        let Some(w) = &self.whois else {
            return Ok(false);
        };
        match w.whois_addr("127.0.0.1:1").await {
            Ok(_) => Ok(true),
            Err(iris_identity::whois::WhoisError::Status { status, .. }) if status < 500 => {
                Ok(true)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    pub(crate) fn note_whois_down(&self, err: &dyn std::fmt::Display) {
        if !self.whois_down_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %err, "tailscaled is not reachable; WhoIs identities are unavailable until it is");
        }
    }

    pub(crate) fn note_whois_up(&self) {
        if self.whois_down_logged.swap(false, Ordering::Relaxed) {
            tracing::info!("tailscaled is reachable again");
        }
    }
}

/// Serve connections from `listener` until `shutdown` resolves, then stop accepting, let the
/// requests in flight finish (up to `drain_timeout`), and return.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) -> std::io::Result<()> {
    let drain = drain::Drain::new();
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new());
    let settings = gateway.runtime().config.iris.clone();
    builder
        .http1()
        .header_read_timeout(Some(settings.timeouts.client_header));
    builder.http2().max_concurrent_streams(Some(256));
    let builders = Arc::new(sniff::Builders::new(builder));
    // Connections beyond the limit wait in the kernel's listen backlog.
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    (gateway.connections.limit).store(settings.max_connections, Ordering::Relaxed);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let open = OpenConnection::new(&gateway.connections);
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let ctx = Arc::new(conn::ConnCtx::new(peer, local));
        let gw = gateway.clone();
        // Set by the connection's first request (see the header deadline below).
        let started = Arc::new(AtomicBool::new(false));
        let first = started.clone();
        let service = hyper::service::service_fn(move |req| {
            first.store(true, Ordering::Relaxed);
            let gw = gw.clone();
            let ctx = ctx.clone();
            async move { Ok::<_, std::convert::Infallible>(proxy::handle(gw, ctx, req).await) }
        });
        let conn = sniff::Connection::new(stream, service, builders.clone());
        let watched = drain.watch(conn);
        let header_deadline =
            drain::FirstRequestDeadline::new(started, settings.timeouts.client_header);
        // The connection reads request bodies in its own task, and hyper's body channel wakes the
        // connection as the body is taken: absorbed here, instead of a yield that wakes another
        // worker once a request (see `iris_wake`).
        tokio::spawn(iris_wake::AbsorbSelfWakes::new(async move {
            // hyper's header timeout starts only once the protocol is known, so a client that
            // sends nothing (or a prefix of the HTTP/2 preface) would hold its slot forever: the
            // first request must have started within the header timeout of the connection.
            let ended = tokio::select! {
                r = watched => Some(r),
                () = header_deadline => None,
            };
            match ended {
                Some(Err(e)) => {
                    tracing::debug!(error = %e, peer = %peer, "connection ended with an error");
                }
                Some(Ok(())) => {}
                None => {
                    tracing::debug!(peer = %peer, "closed a connection that sent no request in time");
                }
            }
            drop(open);
            drop(permit);
        }));
    }
    drop(listener);
    tracing::info!(
        connections = drain.count(),
        "shutting down: finishing requests in flight"
    );
    if tokio::time::timeout(drain_timeout, drain.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the drain timeout; closing them");
    }
    Ok(())
}

/// The address a listener is bound to, for the start-up banner.
pub fn bound_addr(listener: &TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}

/// Serve the admin API on the break-glass unix socket until `shutdown` resolves. Only the OS user
/// that runs iris (or root) may connect: the socket is created 0600 and each peer's uid is checked.
#[cfg(unix)]
pub async fn serve_local_admin(
    path: &std::path::Path,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        // A stale socket from an earlier run (a live gateway would hold it; the caller checked).
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    // SAFETY-free: libc getuid via std is not available; compare with the socket file's owner.
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(path)?);
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == owner || cred.uid() == 0 => {}
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    "refused a connection to the admin socket from another user"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the admin socket peer; refused");
                continue;
            }
        }
        let gw = gateway.clone();
        let ctx = Arc::new(conn::ConnCtx::local_admin());
        let service = hyper::service::service_fn(move |req| {
            let gw = gw.clone();
            let ctx = ctx.clone();
            async move { Ok::<_, std::convert::Infallible>(proxy::handle(gw, ctx, req).await) }
        });
        let conn = builder
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// Apply `database.retention` until `stop`: every `every`, delete captures (and, with
/// `purge: ["tools"]`, tool names) older than the retention; usage records are kept. Returns
/// after `stop` is cancelled.
pub async fn retention_loop(
    gateway: Arc<Gateway>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        purge_once(&gateway).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One retention pass; returns the number of captures deleted.
pub async fn purge_once(gateway: &Gateway) -> u64 {
    let rt = gateway.runtime();
    let db = &rt.config.database;
    let Ok(retention) = iris_capture::Retention::parse(&db.retention_duration) else {
        return 0;
    };
    let Some(cutoff) = retention.cutoff(iris_store::now_ms()) else {
        return 0;
    };
    let tools = db.purge.iter().any(|p| p == "tools");
    match gateway.store.purge(cutoff, tools).await {
        Ok(n) => {
            if n > 0 {
                tracing::info!(captures = n, "retention: purged captures");
            }
            n
        }
        Err(e) => {
            tracing::warn!(error = %e, "retention purge failed; will retry");
            0
        }
    }
}
