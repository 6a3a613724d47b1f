//! Who is calling: the resolution order (see ARCHITECTURE.md, "Threat model").
//!
//! 1. WhoIs on the connection's peer address (once per connection). A tailnet peer is that
//!    identity, whatever headers it sends.
//! 2. Only on a loopback connection and only when `iris.identity.serve_headers` is on: the
//!    `Tailscale-User-Login` header set by `tailscale serve`; a proxied request without it (a
//!    tagged node) is resolved by WhoIs on `X-Forwarded-For` and never becomes `(loopback)`.
//! 3. An iris key in `Authorization: Bearer`, `x-api-key` or `x-goog-api-key` (Gemini CLI) (other
//!    values are placeholders and
//!    ignored). A bad, revoked or expired iris key is refused, never ignored.
//! 4. A direct loopback connection with none of the above is `(loopback)` — unless WhoIs failed
//!    for it (tailscaled up but erroring): then the request is refused, because in
//!    userspace-networking mode tailnet peers also arrive from loopback.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, header};
use iris_identity::whois::WhoisError;
use iris_identity::{Principal, keys, serve};
use iris_policy::TailnetGrants;

use crate::conn::{ConnCtx, TailnetIdentity};
use crate::error::GatewayError;
use crate::{Gateway, Runtime};

/// The resolved caller and its grants from the tailnet policy file.
#[derive(Clone)]
pub struct Resolved {
    /// Shared, not copied per request: a WhoIs identity lives as long as its connection, a
    /// key's as long as its cache entry, `(loopback)` for ever.
    pub principal: Arc<Principal>,
    pub tailnet: Option<Arc<TailnetIdentity>>,
}

static LOOPBACK: std::sync::LazyLock<Arc<Principal>> =
    std::sync::LazyLock::new(|| Arc::new(Principal::loopback()));

static NO_TAILNET_GRANTS: std::sync::LazyLock<TailnetGrants> =
    std::sync::LazyLock::new(TailnetGrants::default);

impl Resolved {
    pub fn tailnet_grants(&self) -> &TailnetGrants {
        self.tailnet
            .as_ref()
            .map(|t| &t.grants)
            .unwrap_or(&NO_TAILNET_GRANTS)
    }

    pub fn plain(principal: Principal) -> Resolved {
        Resolved::shared(Arc::new(principal))
    }

    pub fn shared(principal: Arc<Principal>) -> Resolved {
        Resolved {
            principal,
            tailnet: None,
        }
    }
}

fn header<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

// Looked up by `HeaderName`, not by `&str`: a `&str` is parsed and checked as a header name on
// every lookup.
static LOGIN_HEADER: HeaderName = HeaderName::from_static(serve::LOGIN_HEADER);
static NAME_HEADER: HeaderName = HeaderName::from_static(serve::NAME_HEADER);
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");

fn tailnet_identity(principal: Principal) -> Arc<TailnetIdentity> {
    let grants = TailnetGrants::compile(&principal.cap_grants);
    for r in &grants.rejected {
        tracing::warn!(who = %principal.label(), value = %r, "ignoring an invalid tailscale.com/cap/aperture value from the tailnet policy");
    }
    Arc::new(TailnetIdentity {
        principal: Arc::new(principal),
        grants,
    })
}

/// WhoIs for an address. `Ok(None)`: not a tailnet peer, or tailscaled is not running.
async fn whois(gw: &Gateway, addr: &str) -> Result<Option<Arc<TailnetIdentity>>, WhoisError> {
    let Some(client) = gw.whois_client() else {
        return Ok(None);
    };
    match client.whois_addr(addr).await {
        Ok(p) => {
            gw.note_whois_up();
            Ok(p.map(tailnet_identity))
        }
        Err(e @ WhoisError::Unavailable { .. }) => {
            gw.note_whois_down(&e);
            Ok(None)
        }
        // A peer tailscaled knows but that has neither user nor tags: not an identity.
        Err(WhoisError::NoIdentity) => Ok(None),
        Err(e) => Err(e),
    }
}

pub async fn resolve(
    gw: &Gateway,
    rt: &Runtime,
    ctx: &ConnCtx,
    headers: &HeaderMap,
) -> Result<Resolved, GatewayError> {
    let settings = &rt.config.iris.identity;
    let loopback_peer = ctx.peer_is_loopback();

    // 1. WhoIs on the peer, once per connection.
    let mut whois_failed: Option<String> = None;
    if settings.whois {
        // The address is formatted only when the connection's first request asks.
        let ask = || async { whois(gw, &ctx.peer.to_string()).await };
        match ctx.whois.get_or_try_init(ask).await {
            Ok(Some(t)) => {
                return Ok(Resolved {
                    principal: t.principal.clone(),
                    tailnet: Some(t.clone()),
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(peer = %ctx.peer, error = %e, "WhoIs failed");
                whois_failed = Some(e.to_string());
            }
        }
    }

    // 2. `tailscale serve` headers, only from loopback and only when switched on.
    let mut proxied = false;
    if settings.serve_headers && loopback_peer {
        if let Some(login) = header(headers, &LOGIN_HEADER).filter(|l| !l.trim().is_empty())
            && let Some(p) = serve::principal_from_headers(login, header(headers, &NAME_HEADER))
        {
            return Ok(Resolved::plain(p));
        }
        if let Some(xff) = header(headers, &X_FORWARDED_FOR) {
            proxied = true;
            // serve sets the tailnet source address; take the last hop it appended.
            let ip = xff.rsplit(',').next().unwrap_or("").trim();
            if ip.parse::<std::net::IpAddr>().is_ok() {
                match whois(gw, ip).await {
                    Ok(Some(t)) => {
                        return Ok(Resolved {
                            principal: t.principal.clone(),
                            tailnet: Some(t),
                        });
                    }
                    Ok(None) => {}
                    Err(e) => whois_failed = Some(e.to_string()),
                }
            }
        }
    }

    // 3. iris keys.
    if settings.keys
        && let Some(token) = keys::find_key(
            header(headers, &header::AUTHORIZATION),
            header(headers, &X_API_KEY),
        )
        .or_else(|| keys::find_key(None, header(headers, &X_GOOG_API_KEY)))
    {
        let limit = rt.config.iris.key_failures_per_minute;
        if gw.key_failures.blocked(ctx.peer.ip(), limit) {
            return Err(GatewayError::TooManyKeyFailures);
        }
        let r = resolve_key(gw, token).await.map(Resolved::shared);
        if matches!(r, Err(GatewayError::Unauthenticated(_))) {
            gw.key_failures.failed(ctx.peer.ip());
        }
        return r;
    }

    // 4. (loopback)
    if settings.loopback && loopback_peer && !proxied {
        if let Some(e) = whois_failed {
            return Err(GatewayError::IdentityUnavailable(e));
        }
        return Ok(Resolved::shared(LOOPBACK.clone()));
    }
    if let Some(e) = whois_failed {
        return Err(GatewayError::IdentityUnavailable(e));
    }
    Err(GatewayError::Unauthenticated(
        "no identity: this connection is not from a tailnet peer iris can identify, and no iris key was presented (send one as Authorization: Bearer iris_sk_...)".into(),
    ))
}

async fn resolve_key(gw: &Gateway, token: &str) -> Result<Arc<Principal>, GatewayError> {
    if !keys::well_formed(token) {
        return Err(GatewayError::Unauthenticated("malformed iris key".into()));
    }
    let hash = keys::hash_token(token);
    let revocations = gw.store.key_revocations();
    let (rec, principal) = match gw.key_cache.get(&hash, revocations) {
        Some(hit) => hit,
        None => {
            let rec = gw
                .store
                .key_by_hash(&hash)
                .await
                .map_err(|e| GatewayError::StoreUnavailable(e.to_string()))?
                .filter(|r| keys::hashes_equal(&r.token_hash, &hash))
                .ok_or_else(|| GatewayError::Unauthenticated("unknown iris key".into()))?;
            let principal = Arc::new(Principal::for_key(&rec.id, rec.login.as_deref(), &rec.tags));
            let rec = Arc::new(rec);
            gw.key_cache
                .put(hash, revocations, rec.clone(), principal.clone());
            (rec, principal)
        }
    };
    let now = iris_store::now_ms();
    if rec.revoked_ms.is_some() {
        return Err(GatewayError::Unauthenticated(format!(
            "iris key {} was revoked",
            rec.id
        )));
    }
    if rec.expires_ms.is_some_and(|e| e <= now) {
        return Err(GatewayError::Unauthenticated(format!(
            "iris key {} has expired",
            rec.id
        )));
    }
    touch_key(gw, &rec.id, now);
    Ok(principal)
}

/// Known keys, by token hash, for [`KEY_CACHE_TTL`]: a key's store lookup is otherwise the
/// costliest step of a request made with one. A revocation through this process's store (API,
/// dashboard, break-glass socket) invalidates every entry at once: entries remember the store's
/// revocation counter. One made by another process (another replica, a direct write to the
/// database file) takes effect within the TTL. Unknown keys are never cached (and are rate
/// limited per address).
#[derive(Default)]
pub struct KeyCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, CachedKey>>,
}

struct CachedKey {
    at: std::time::Instant,
    /// The store's [`iris_store::Store::key_revocations`] when the key was looked up.
    revocations: u64,
    record: Arc<iris_store::KeyRecord>,
    /// Who the key is (built once per lookup, shared by the requests made with it).
    principal: Arc<Principal>,
}

/// How long a looked-up key is trusted without asking the store again.
pub const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Entries kept at most; beyond it the cache starts over (a bound, not an eviction policy).
const KEY_CACHE_MAX: usize = 10_000;

impl KeyCache {
    fn get(
        &self,
        hash: &str,
        revocations: u64,
    ) -> Option<(Arc<iris_store::KeyRecord>, Arc<Principal>)> {
        let m = self.entries.lock().ok()?;
        let c = m.get(hash)?;
        (c.revocations == revocations && c.at.elapsed() < KEY_CACHE_TTL)
            .then(|| (c.record.clone(), c.principal.clone()))
    }

    fn put(
        &self,
        hash: String,
        revocations: u64,
        record: Arc<iris_store::KeyRecord>,
        principal: Arc<Principal>,
    ) {
        if let Ok(mut m) = self.entries.lock() {
            if m.len() >= KEY_CACHE_MAX {
                m.retain(|_, c| c.at.elapsed() < KEY_CACHE_TTL);
                if m.len() >= KEY_CACHE_MAX {
                    m.clear();
                }
            }
            m.insert(
                hash,
                CachedKey {
                    at: std::time::Instant::now(),
                    revocations,
                    record,
                    principal,
                },
            );
        }
    }
}

/// Record a key's last use, at most once a minute per key, off the request path.
fn touch_key(gw: &Gateway, id: &str, now: i64) {
    let due = {
        let Ok(mut m) = gw.key_touch.lock() else {
            return;
        };
        let due = m.get(id).is_none_or(|&last| now - last >= 60_000);
        if due {
            m.insert(id.to_owned(), now);
        }
        due
    };
    if due {
        let store = gw.store.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = store.touch_key(&id, now).await {
                tracing::debug!(error = %e, "could not record key use");
            }
        });
    }
}
