//! The request path, top to bottom as a request travels:
//! endpoint → identity → body → model → route → policy → upstream → metered response → usage.
//!
//! Every LLM-API request that gets an answer — served, denied or failed — leaves exactly one
//! usage record: either finalized here for an error, or by the metered body when the response
//! ends (or the client hangs up).

use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use iris_identity::Principal;
use iris_policy::Outcome;
use iris_providers::api::{ApiFamily, Dialect};
use iris_providers::routing::{RouteError, forward_request_header, forward_response_header};
use iris_providers::{models_list, peek, stream_filter::IncludeUsageFilter, usage::UsageExtractor};
use iris_store::UsageRecord;

use crate::body::{MeteredBody, Pending, RespBody, full, record_now};
use crate::conn::ConnCtx;
use crate::error::GatewayError;
use crate::identity::{self, Resolved};
use crate::{Gateway, Runtime};

enum Endpoint {
    Llm(ApiFamily),
    Models,
    Admin,
    Ui,
    Health,
    Unknown,
}

fn endpoint(path: &str) -> Endpoint {
    if let Some(f) = ApiFamily::from_path(path) {
        return Endpoint::Llm(f);
    }
    match path {
        "/v1/models" | "/models" => Endpoint::Models,
        "/healthz" => Endpoint::Health,
        "/ui" => Endpoint::Ui,
        p if p.starts_with("/ui/") => Endpoint::Ui,
        p if p.starts_with("/api/") || p == "/aperture/config:validate" => Endpoint::Admin,
        _ => Endpoint::Unknown,
    }
}

/// Every answer names its request (`HeaderName`, not `&str`: a `&str` is parsed as a name on
/// every use).
static X_IRIS_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-iris-request-id");

fn header_str<'a>(req: &'a Request<Incoming>, name: &http::HeaderName) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn new_record(req: &Request<Incoming>, id: &str, ts_ms: i64, api_family: &str) -> UsageRecord {
    let mut r = base_record(
        id,
        ts_ms,
        api_family,
        req.method().as_str(),
        req.uri().path(),
    );
    r.user_agent = header_str(req, &http::header::USER_AGENT).map(|s| first_chars(s, 256));
    r
}

/// The first `n` characters of `s`, copied (a slice, not a character at a time: most texts are
/// shorter than `n` bytes, and then whole).
fn first_chars(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_owned();
    }
    match s.char_indices().nth(n) {
        Some((cut, _)) => s[..cut].to_owned(),
        None => s.to_owned(),
    }
}

fn apply_principal(rec: &mut UsageRecord, p: &Principal) {
    rec.identity_source = p.source.as_str().to_owned();
    rec.login = p.login.clone();
    rec.display_name = p.display_name.clone();
    rec.tags = p.tags.clone();
    rec.node = p.node_name.clone();
    rec.node_id = p.node_id.clone();
    rec.key_id = p.key_id.clone();
}

/// Entry point for every request on the gateway's listener.
pub async fn handle(
    gw: Arc<Gateway>,
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Response<RespBody> {
    let start = Instant::now();
    let rt = gw.runtime();
    let (id, ts_ms) = iris_store::new_record_id_and_time();
    let endpoint = endpoint(req.uri().path());
    if ctx.local_admin && !matches!(endpoint, Endpoint::Admin) {
        // The break-glass socket serves the admin API only: it must never bypass grants for models.
        return GatewayError::NotFound(req.uri().path().chars().take(200).collect())
            .to_response(Dialect::OpenAi, &id);
    }
    match endpoint {
        Endpoint::Llm(family) => {
            let pending = Pending::new(
                gw.observer.clone(),
                new_record(&req, &id, ts_ms, family.as_str()),
                start,
            );
            Box::pin(llm(&gw, &rt, &ctx, req, family, pending, &id)).await
        }
        Endpoint::Models => {
            let pending = Pending::new(
                gw.observer.clone(),
                new_record(&req, &id, ts_ms, "models"),
                start,
            );
            Box::pin(models(&gw, &rt, &ctx, req, pending, &id)).await
        }
        Endpoint::Admin => {
            Box::pin(async {
                let caller = caller(&gw, &rt, &ctx, req.headers()).await;
                crate::admin::serve(gw.clone(), caller, req).await
            })
            .await
        }
        Endpoint::Ui => ui(&req),
        Endpoint::Health => {
            let mut r = Response::new(full(Bytes::from_static(b"{\"status\":\"ok\"}")));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Endpoint::Unknown => GatewayError::NotFound(req.uri().path().chars().take(200).collect())
            .to_response(Dialect::OpenAi, &id),
    }
}

/// Answer with an error and finalize the request's record.
fn fail(mut pending: Pending, err: GatewayError, dialect: Dialect, id: &str) -> Response<RespBody> {
    let resp = err.to_response(dialect, id);
    if resp.status().is_server_error() {
        tracing::warn!(
            request_id = id,
            class = err.class(),
            detail = err.log_detail().unwrap_or(""),
            "{err}"
        );
    }
    pending.rec().status = resp.status().as_u16();
    let len = resp.body().size_hint().exact().unwrap_or(0);
    record_now(pending, Some(err.class()), len);
    resp
}

async fn llm(
    gw: &Gateway,
    rt: &Runtime,
    ctx: &ConnCtx,
    req: Request<Incoming>,
    family: ApiFamily,
    mut pending: Pending,
    id: &str,
) -> Response<RespBody> {
    let dialect = family.dialect();
    if req.method() != Method::POST {
        let m = req.method().to_string();
        return fail(pending, GatewayError::MethodNotAllowed(m), dialect, id);
    }
    // Identity is ambient (WhoIs), so a web page on another site must not be able to spend a
    // tailnet user's models through their browser.
    let rebinding = crate::admin::rebinding(req.headers(), &rt.config.iris.browser_hosts);
    if rebinding || crate::admin::cross_origin(req.headers()) {
        return fail(pending, GatewayError::CrossSite { rebinding }, dialect, id);
    }

    // Identity, then the role: a caller without one learns nothing about models.
    let who = match identity::resolve(gw, rt, ctx, req.headers()).await {
        Ok(r) => r,
        Err(e) => return fail(pending, e, dialect, id),
    };
    apply_principal(pending.rec(), &who.principal);
    if rt
        .policy
        .outcome(&who.principal, who.tailnet_grants(), None)
        == Outcome::NoRole
    {
        return fail(
            pending,
            GatewayError::NoRole {
                who: who.principal.label(),
            },
            dialect,
            id,
        );
    }

    // Body, within the limit, and the model in it.
    let (mut parts, body) = req.into_parts();
    let limit = rt.config.iris.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return fail(pending, GatewayError::TooLarge(limit), dialect, id);
    }
    let body_timeout = rt.config.iris.timeouts.request_body;
    let mut collect = std::pin::pin!(Limited::new(body, limit).collect());
    // Most bodies arrive with their head: then no timer is armed (and no clock read to arm it).
    let collected = match futures_util::poll!(collect.as_mut()) {
        Poll::Ready(r) => r,
        Poll::Pending => match tokio::time::timeout(body_timeout, collect).await {
            Ok(r) => r,
            Err(_) => {
                return fail(
                    pending,
                    GatewayError::RequestTimeout(body_timeout.as_secs_f64()),
                    dialect,
                    id,
                );
            }
        },
    };
    let body = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            let err = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                GatewayError::TooLarge(limit)
            } else {
                GatewayError::BadRequest(format!("could not read the request body: {e}"))
            };
            return fail(pending, err, dialect, id);
        }
    };
    pending.rec().bytes_in = body.len() as u64;
    // The raw parts of the exchange, worked out off the request path (sessions, cost, captures).
    let captures = &rt.config.iris.captures;
    pending.keep_cap = if captures.enabled {
        captures.max_body_bytes.max(captures.max_raw_events_bytes)
    } else {
        0
    };
    pending.exchange = Some(Box::new(crate::observe::Exchange {
        budget: Some(gw.capture_budget.clone()),
        budget_limit: captures.max_in_flight_bytes,
        // Sessions need a few request headers; captures need them all.
        request_headers: crate::observe::header_pairs(&parts.headers, |n| {
            captures.enabled || iris_capture::is_session_header(n)
        }),
        // A small body is copied: shared, it would pin the whole connection read buffer it is a
        // slice of for as long as the request lasts (hours, for a long stream). A large one was
        // collected from many frames into a buffer of its own.
        request_body: if body.len() <= 64 << 10 {
            Bytes::copy_from_slice(&body)
        } else {
            body.clone()
        },
        session_parts: None,
        response_headers: iris_capture::HeaderList::new(),
        response: Vec::new(),
        budget_held: 0,
        response_complete: true,
        response_is_sse: false,
        cost: None,
        capture: captures.enabled.then(|| {
            (
                iris_capture::CaptureLimits {
                    max_body_bytes: captures.max_body_bytes,
                    max_raw_events_bytes: captures.max_raw_events_bytes,
                },
                rt.redactor.clone(),
            )
        }),
        usage: None,
        usage_in_response: false,
    }));
    let mut peeked = match peek::peek_body(&body) {
        Ok(p) => p,
        Err(e) => {
            return fail(
                pending,
                GatewayError::BadRequest(e.to_string()),
                dialect,
                id,
            );
        }
    };
    pending.rec().streaming = peeked.peek.stream;
    if let Some(x) = pending.exchange.as_mut() {
        // The exchange keeps the request body as it came (a copy of `body`, same offsets).
        x.session_parts = Some(std::mem::take(&mut peeked.peek.session));
    }
    let Some(requested) = peeked.peek.model.take() else {
        return fail(pending, GatewayError::MissingModel, dialect, id);
    };
    // Kept in the record, read from there (no copy).
    let (rec, exchange) = pending.rec_and_exchange();
    let requested: &str = rec.requested_model.insert(requested);

    // Route, then the model grant.
    let route = match rt.routes.resolve(requested, family) {
        Ok(r) => r,
        Err(RouteError::UnknownModel(m)) => {
            return fail(pending, GatewayError::UnknownModel(m), dialect, id);
        }
        Err(RouteError::WrongApi { model, .. }) => {
            return fail(
                pending,
                GatewayError::WrongApi {
                    model,
                    api: family.as_str(),
                },
                dialect,
                id,
            );
        }
    };
    match rt
        .policy
        .outcome(&who.principal, who.tailnet_grants(), Some(&route.qualified))
    {
        Outcome::Allowed => {}
        Outcome::NoRole => {
            return fail(
                pending,
                GatewayError::NoRole {
                    who: who.principal.label(),
                },
                dialect,
                id,
            );
        }
        Outcome::ModelNotGranted => {
            let err = GatewayError::ModelNotGranted {
                model: requested.to_owned(),
                who: who.principal.label(),
            };
            return fail(pending, err, dialect, id);
        }
    }
    let Some(provider) = rt.config.provider(&route.provider_id) else {
        return fail(
            pending,
            GatewayError::Internal("route to a missing provider".into()),
            dialect,
            id,
        );
    };
    rec.provider = Some(route.provider_id);
    let upstream_model: &str = rec.upstream_model.insert(route.model);
    if let Some(x) = exchange {
        x.cost = rt.costs.get(&provider.id).cloned();
    }

    // The upstream body: the bare model id, and usage asked for on OpenAI chat streams; in one
    // copy of the body, spliced where the peek found the fields (`PeekedBody::rewrite`).
    let bare_model = (upstream_model != requested).then_some(upstream_model);
    let inject_usage = family == ApiFamily::OpenAiChat
        && peeked.peek.stream
        && peeked.peek.include_usage != Some(true);
    let up_body = match peeked.rewrite(bare_model, inject_usage) {
        Ok(Some(b)) => Bytes::from(b),
        Ok(None) => body,
        Err(e) => {
            return fail(
                pending,
                GatewayError::BadRequest(e.to_string()),
                dialect,
                id,
            );
        }
    };

    let upstream = rt.upstreams.get(&provider.id);
    let up_req = match build_upstream_request(&mut parts, provider, upstream, family, up_body) {
        Ok(r) => r,
        Err(e) => return fail(pending, e, dialect, id),
    };
    let first_byte = rt.config.iris.timeouts.first_byte;
    let resp = match tokio::time::timeout(first_byte, gw.client.request(up_req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let err = if crate::upstream::is_connect_timeout(&e) {
                GatewayError::UpstreamTimeout {
                    provider: provider.id.clone(),
                    secs: rt.config.iris.timeouts.connect.as_secs_f64(),
                }
            } else {
                GatewayError::UpstreamUnreachable {
                    provider: provider.id.clone(),
                    detail: format!("{e:?}"),
                }
            };
            return fail(pending, err, dialect, id);
        }
        Err(_) => {
            let err = GatewayError::UpstreamTimeout {
                provider: provider.id.clone(),
                secs: first_byte.as_secs_f64(),
            };
            return fail(pending, err, dialect, id);
        }
    };

    // The answer, metered on its way to the client.
    let (up_parts, up_body) = resp.into_parts();
    let is_sse = up_parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        });
    let status = up_parts.status;
    pending.rec().status = status.as_u16();
    if !status.is_success() {
        pending.rec().error_class = Some("upstream_status".into());
    }
    let filter = (inject_usage && is_sse && status.is_success()).then(IncludeUsageFilter::new);
    if let Some(x) = pending.exchange.as_mut() {
        if x.capture.is_some() {
            x.response_headers = crate::observe::header_pairs(&up_parts.headers, |_| true);
        }
        x.response_is_sse = is_sse;
    }
    let mut out = Response::builder().status(status);
    let listed = connection_listed(&up_parts.headers);
    if let Some(h) = out.headers_mut() {
        *h = up_parts.headers;
        retain_headers(h, |name| {
            forward_response_header(name.as_str()) && !listed.iter().any(|l| l == name.as_str())
        });
        if let Ok(v) = HeaderValue::from_str(id) {
            h.insert(X_IRIS_REQUEST_ID.clone(), v);
        }
    }
    let metered = MeteredBody::new(
        up_body,
        pending,
        UsageExtractor::new(family, is_sse),
        filter,
        rt.config.iris.timeouts.idle,
        is_sse.then_some(dialect),
    );
    out.body(BodyExt::boxed_unsync(metered))
        .unwrap_or_else(|e| {
            tracing::error!(request_id = id, error = %e, "could not build the response");
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        })
}

/// Header names listed in a `Connection` header: hop-by-hop for this message only.
fn connection_listed(h: &http::HeaderMap) -> Vec<String> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The client's own provider credential, for `auth_mode: passthrough` providers. Iris keys and
/// empty values are not credentials for a provider.
fn client_credential(h: &http::HeaderMap) -> Option<(http::HeaderName, HeaderValue)> {
    for name in [
        header::AUTHORIZATION,
        http::HeaderName::from_static("x-api-key"),
        http::HeaderName::from_static("x-goog-api-key"),
    ] {
        if let Some(v) = h.get(&name) {
            let text = v.to_str().unwrap_or("");
            let bare = text
                .strip_prefix("Bearer ")
                .or_else(|| text.strip_prefix("bearer "))
                .unwrap_or(text)
                .trim();
            if !bare.is_empty() && !iris_identity::keys::is_iris_key(bare) {
                let mut v = v.clone();
                v.set_sensitive(true);
                return Some((name, v));
            }
        }
    }
    None
}

/// Remove the headers `keep` refuses (every value of each such name), where they are: the map
/// is forwarded itself, not rehashed into a new one (nor its values cloned, each a reference
/// count on the connection's shared read buffer). `HeaderMap::remove` moves the map's last name
/// into the removed one's place, so names may change order; one name's values keep theirs.
fn retain_headers(h: &mut http::HeaderMap, keep: impl Fn(&HeaderName) -> bool) {
    let refused: Vec<HeaderName> = h.keys().filter(|n| !keep(n)).cloned().collect();
    for n in &refused {
        h.remove(n);
    }
}

fn build_upstream_request(
    parts: &mut http::request::Parts,
    provider: &iris_config::Provider,
    up: Option<&crate::upstream::ProviderUpstream>,
    family: ApiFamily,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, GatewayError> {
    let invalid_url =
        || GatewayError::Internal(format!("invalid upstream url for provider {}", provider.id));
    let up = up.ok_or_else(|| GatewayError::Internal("route to a missing provider".into()))?;
    let uri = up
        .uri(provider, family, parts.uri.query())
        .ok_or_else(invalid_url)?;
    let mut req = Request::builder().method(Method::POST).uri(uri);
    let h = req.headers_mut().ok_or_else(invalid_url)?;
    let listed = connection_listed(&parts.headers);
    // `passthrough`: the client's own provider credential goes upstream (iris keys never do);
    // without one, the configured key is the fallback.
    let passthrough = (provider.auth_mode == iris_config::AuthMode::Passthrough)
        .then(|| client_credential(&parts.headers))
        .flatten();
    *h = std::mem::take(&mut parts.headers);
    retain_headers(h, |name| {
        forward_request_header(name.as_str())
            && name != header::ACCEPT_ENCODING
            && !listed.iter().any(|l| l == name.as_str())
    });
    // Usage is read from the bytes as they pass, so the answer must not be compressed. (Without
    // the header, any coding would be acceptable to the provider.)
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if let Some(host) = up.host(family) {
        h.insert(header::HOST, host.clone());
    }
    if let Some((name, value)) = passthrough {
        h.insert(name, value);
    } else if let Some((name, value)) = up
        .auth
        .as_ref()
        .map_err(|e| GatewayError::Internal(e.clone()))?
    {
        h.insert(name.clone(), value.clone());
    }
    let added = up
        .add_headers
        .as_ref()
        .map_err(|e| GatewayError::Internal(e.clone()))?;
    for (name, value) in added {
        h.insert(name.clone(), value.clone());
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    req.body(Full::new(body))
        .map_err(|e| GatewayError::Internal(format!("could not build the upstream request: {e}")))
}

async fn models(
    gw: &Gateway,
    rt: &Runtime,
    ctx: &ConnCtx,
    req: Request<Incoming>,
    mut pending: Pending,
    id: &str,
) -> Response<RespBody> {
    let dialect = if req.headers().contains_key("anthropic-version") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    if req.method() != Method::GET {
        let m = req.method().to_string();
        return fail(pending, GatewayError::MethodNotAllowed(m), dialect, id);
    }
    let who: Resolved = match identity::resolve(gw, rt, ctx, req.headers()).await {
        Ok(r) => r,
        Err(e) => return fail(pending, e, dialect, id),
    };
    apply_principal(pending.rec(), &who.principal);
    if rt
        .policy
        .outcome(&who.principal, who.tailnet_grants(), None)
        == Outcome::NoRole
    {
        return fail(
            pending,
            GatewayError::NoRole {
                who: who.principal.label(),
            },
            dialect,
            id,
        );
    }
    let visible: Vec<_> = rt
        .routes
        .models()
        .into_iter()
        .filter(|m| {
            rt.policy
                .model_in(&who.principal, who.tailnet_grants(), &m.qualified)
        })
        .collect();
    let body = match dialect {
        Dialect::Anthropic => models_list::anthropic_models_json(&visible),
        Dialect::OpenAi => models_list::openai_models_json(&visible),
    };
    pending.rec().status = 200;
    record_now(pending, None, body.len() as u64);
    let mut r = Response::new(full(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert(X_IRIS_REQUEST_ID.clone(), v);
    }
    r
}

/// The caller of an admin request: the break-glass admin on the local socket, or whoever the
/// identity sources say.
async fn caller(
    gw: &Gateway,
    rt: &Runtime,
    ctx: &ConnCtx,
    headers: &http::HeaderMap,
) -> Result<crate::caller::Caller, GatewayError> {
    let (who, local_admin) = if ctx.local_admin {
        (Resolved::plain(Principal::local_admin()), true)
    } else {
        (identity::resolve(gw, rt, ctx, headers).await?, false)
    };
    let decision = rt
        .policy
        .evaluate(&who.principal, who.tailnet_grants(), None);
    Ok(crate::caller::Caller {
        who,
        decision,
        local_admin,
    })
}

/// A record for a request iris makes on someone's behalf (the model test button), begun at
/// `ts_ms`: like every record, the time its id was made at (`new_record_id_and_time`).
pub(crate) fn bare_record(
    id: &str,
    ts_ms: i64,
    api_family: &str,
    path: &str,
    p: &Principal,
) -> UsageRecord {
    let mut r = base_record(id, ts_ms, api_family, "POST", path);
    apply_principal(&mut r, p);
    r
}

/// A request's record before anything is known of it: no caller (`identity_source` "none"), no
/// model, no answer.
fn base_record(id: &str, ts_ms: i64, api_family: &str, method: &str, path: &str) -> UsageRecord {
    UsageRecord {
        id: id.to_owned(),
        ts_ms,
        request_id: id.to_owned(),
        identity_source: "none".into(),
        api_family: api_family.to_owned(),
        method: method.to_owned(),
        path: path.to_owned(),
        ..UsageRecord::default()
    }
}

/// The dashboard's embedded assets. They hold no data (every number comes from `/api` under the
/// caller's identity), so they are served to anyone, with strict security headers.
fn ui(req: &Request<Incoming>) -> Response<RespBody> {
    let path = req.uri().path();
    if path == "/ui" {
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
        return r;
    }
    let rel = path.strip_prefix("/ui/").unwrap_or("");
    let Some(asset) = iris_ui::asset(rel) else {
        let mut r = Response::new(full(Bytes::from_static(b"not found")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    };
    let not_modified = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag));
    let mut r = if not_modified {
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(full(Bytes::from_static(asset.bytes)))
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    for (name, value) in iris_ui::SECURITY_HEADERS {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.insert(n, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::{first_chars, retain_headers};
    use http::{HeaderMap, HeaderName, HeaderValue};

    #[test]
    fn retained_headers_keep_every_value_of_a_kept_name_in_order() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("anthropic-beta", "a"),
            ("cookie", "secret"),
            ("anthropic-beta", "b"),
            ("x-team", "platform"),
            ("cookie", "secret-2"),
            ("anthropic-beta", "c"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        retain_headers(&mut h, |n| n != "cookie");
        let got: Vec<_> = h
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("anthropic-beta", "a"),
                ("anthropic-beta", "b"),
                ("anthropic-beta", "c"),
                ("x-team", "platform"),
            ]
        );
    }

    #[test]
    fn first_chars_counts_characters_not_bytes() {
        let ua = "é".repeat(300);
        assert_eq!(first_chars(&ua, 256), "é".repeat(256));
        assert_eq!(first_chars("curl/8.5", 256), "curl/8.5");
        assert_eq!(first_chars(&"a".repeat(257), 256), "a".repeat(256));
        assert_eq!(first_chars(&"é".repeat(200), 256), "é".repeat(200));
        assert_eq!(first_chars("", 256), "");
    }
}
