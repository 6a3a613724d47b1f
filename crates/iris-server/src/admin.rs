//! The admin API under `/api` (and Aperture's `/aperture/config:validate`): config lifecycle,
//! whoami, read APIs, keys, health, and the OpenAPI document generated from these handlers.
//!
//! Who may do what: admins everything; users read their own usage, logs and keys and manage
//! their own keys; anyone identified may ask `whoami`, `health`, `providers`, `models`. Mutating
//! requests must be JSON (`Content-Type: application/json`) and, when a browser says where they
//! come from (`Origin`, `Sec-Fetch-Site`), same-origin: identity here is ambient (WhoIs), so it
//! must be protected like a cookie against cross-site requests.

use std::sync::{Arc, LazyLock};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Path, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use http::{HeaderMap, HeaderName, Method, StatusCode, header};
use iris_config::Diagnostic;
use iris_store::{ConfigVersion, GroupBy, KeyRecord, UsageGroup, UsageQuery, UsageRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::Gateway;
use crate::caller::Caller;
use crate::config_file::SaveError;

type Gw = Extension<Arc<Gateway>>;
type Who = Extension<Caller>;

/// An `/api` error: `{"error": {"message", "type", "code", ...extra}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Option<(&'static str, Value)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }
    fn forbidden(msg: &str) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", msg)
    }
    fn bad(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", msg)
    }
    fn store(e: iris_store::StoreError) -> ApiError {
        tracing::warn!(error = %e, "store error in the admin API");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store is unavailable; try again",
        )
    }
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    message: String,
    #[serde(rename = "type")]
    kind: String,
    code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Problem>>)]
    problems: Option<Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            409 => "conflict_error",
            s if s >= 500 => "api_error",
            _ => "invalid_request_error",
        };
        let mut err = json!({"message": self.message, "type": kind, "code": self.code});
        if let (Some((k, v)), Some(o)) = (self.extra, err.as_object_mut()) {
            o.insert(k.to_owned(), v);
        }
        (self.status, Json(json!({ "error": err }))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is too large",
            );
        }
        ApiError::bad(format!("invalid JSON body: {}", r.body_text()))
    }
}
impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad(format!("invalid query: {}", r.body_text()))
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn require_admin(c: &Caller) -> ApiResult<()> {
    if c.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(&format!(
            "this needs the admin role; {} has {}",
            c.label(),
            c.decision
                .role
                .map(|r| format!("role {r}"))
                .unwrap_or_else(|| "no role".into())
        )))
    }
}

fn require_role(c: &Caller) -> ApiResult<()> {
    if c.has_role() {
        Ok(())
    } else {
        Err(ApiError::forbidden(&format!(
            "access denied: no role granted to {} (GET /api/whoami explains what iris sees)",
            c.label()
        )))
    }
}

/// One config problem.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// `error` or `warning`
    severity: String,
    /// Where, e.g. `providers.anthropic.baseurl`
    path: String,
    message: String,
}

fn problems(d: &[Diagnostic]) -> Value {
    Value::Array(
        d.iter()
            .map(|d| {
                json!({"severity": if d.is_error() { "error" } else { "warning" }, "path": d.path, "message": d.message})
            })
            .collect(),
    )
}

// ---- health --------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/health", tag = "gateway",
    responses((status = 200, description = "Gateway health; details for admins", body = Object)))]
async fn health(gw: Gw, who: Option<Who>) -> Json<Value> {
    let snap = gw.config_file.snapshot();
    // Reads keep working while writes fail (disk full, locked, read-only): ask the writer too.
    let sink = gw.observer.sink();
    // A damaged usage block (found by a read) leaves its records out of every answer.
    let damaged = gw.store.damaged_usage_blocks();
    let store_working = !sink.store_failing() && gw.store.count_usage().await.is_ok();
    let store_ok = store_working && damaged == 0;
    let degraded = !store_ok || !snap.pending_problems.is_empty();
    let mut body = json!({
        "status": if degraded { "degraded" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
    });
    if who.as_ref().is_some_and(|w| w.0.is_admin())
        && let Some(o) = body.as_object_mut()
    {
        o.insert(
            "config".into(),
            json!({
                "hash": snap.hash,
                "loaded_at_ms": snap.loaded_at_ms,
                "source": snap.source,
                "path": gw.config_file.path().map(|p| p.display().to_string()),
                "problems": problems(&snap.pending_problems),
            }),
        );
        o.insert(
            "store".into(),
            json!({
                "ok": store_ok,
                "error": sink.last_store_error().filter(|_| !store_working),
                "damaged_usage_blocks": damaged,
            }),
        );
        o.insert(
            "usage".into(),
            json!({"queued": sink.queued(), "dropped": sink.dropped(), "unenriched": gw.observer.unenriched(), "captures_dropped": gw.observer.captures_dropped()}),
        );
        o.insert(
            "tailscaled".into(),
            json!({"whois": gw.whois.is_some(), "reachable": gw.tailscaled_reachable()}),
        );
        o.insert(
            "connections".into(),
            json!({"open": gw.connections_open(), "limit": gw.connection_limit()}),
        );
    }
    Json(body)
}

// ---- whoami --------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/whoami", tag = "identity",
    responses((status = 200, description = "What iris sees of the caller, the grants that matched, the role and the models", body = Object),
              (status = 401, description = "No identity", body = ErrorBody)))]
async fn whoami(gw: Gw, Extension(c): Who) -> Json<Value> {
    let rt = gw.runtime();
    let models: Vec<String> = if c.has_role() {
        rt.routes
            .models()
            .into_iter()
            .filter(|m| {
                c.local_admin
                    || rt
                        .policy
                        .model_in(&c.who.principal, c.who.tailnet_grants(), &m.qualified)
            })
            .map(|m| m.qualified)
            .collect()
    } else {
        Vec::new()
    };
    let role = if c.local_admin {
        Some("admin")
    } else {
        c.decision.role
    };
    let explain = match (role, models.is_empty()) {
        (None, _) => "no grant gives this identity a role, so every model request is refused with 403 \"access denied: no role granted\"; an admin must add a grant with role \"user\" whose src matches it (its login, a group:, a tag: it carries, or *)".to_owned(),
        (Some(_), true) => "this identity has a role but no grant gives it any configured model, so model requests get 404".to_owned(),
        (Some(r), false) => format!("role {r}; {} model(s) available", models.len()),
    };
    Json(json!({
        "identity": &c.who.principal,
        "role": role,
        "grants": c.decision.matched,
        "rejected_tailnet_grants": c.who.tailnet_grants().rejected,
        "models": models,
        "explain": explain,
    }))
}

// ---- config --------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct ConfigResponse {
    /// The HuJSON text, exactly as stored
    config: String,
    exists: bool,
    /// Hex SHA-256 of the text; send it back with PUT
    hash: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ConfigUpdate {
    config: String,
    hash: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ConfigText {
    config: String,
}

#[derive(Serialize, ToSchema)]
pub struct SaveResponse {
    success: bool,
    hash: String,
}

#[derive(Serialize, ToSchema)]
pub struct ValidateResponse {
    valid: bool,
    /// Aperture's spelling of `valid`
    #[serde(rename = "Valid")]
    valid_aperture: bool,
    problems: Vec<Problem>,
}

#[utoipa::path(get, path = "/api/config", tag = "config",
    responses((status = 200, body = ConfigResponse), (status = 403, body = ErrorBody)))]
async fn get_config(gw: Gw, Extension(c): Who) -> ApiResult<Json<ConfigResponse>> {
    require_admin(&c)?;
    let s = gw.config_file.snapshot();
    Ok(Json(ConfigResponse {
        config: s.text,
        exists: s.exists,
        hash: s.hash,
    }))
}

fn save_error(e: SaveError) -> ApiError {
    match e {
        SaveError::Conflict => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
        SaveError::Empty => ApiError::bad("refused: the config is empty"),
        SaveError::Invalid(d) => {
            let lines: Vec<String> = d.iter().map(|d| d.to_string()).collect();
            let mut err = ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_config",
                format!(
                    "refused: saving treats warnings as errors, and the config has {} problem(s): {}",
                    d.len(),
                    lines.join("; ")
                ),
            );
            err.extra = Some(("problems", problems(&d)));
            err
        }
        SaveError::Lockout(m) => ApiError::new(StatusCode::FORBIDDEN, "admin_lockout", m),
        SaveError::Io(m) => {
            tracing::error!("config save failed: {m}");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "write_failed",
                "the config file could not be written; the running config is unchanged",
            )
        }
    }
}

#[utoipa::path(put, path = "/api/config", tag = "config", request_body = ConfigUpdate,
    responses((status = 200, body = SaveResponse), (status = 400, description = "Invalid config (warnings count)", body = ErrorBody),
              (status = 403, description = "Not admin, or the save would lock the saver out", body = ErrorBody),
              (status = 409, description = "Stale hash", body = ErrorBody)))]
async fn put_config(
    gw: Gw,
    Extension(c): Who,
    body: Result<Json<ConfigUpdate>, JsonRejection>,
) -> ApiResult<Json<SaveResponse>> {
    require_admin(&c)?;
    let Json(u) = body?;
    let source = if c.local_admin { "local" } else { "api" };
    let hash = gw
        .config_file
        .save(&gw, &u.config, &u.hash, &c, source)
        .await
        .map_err(save_error)?;
    Ok(Json(SaveResponse {
        success: true,
        hash,
    }))
}

#[utoipa::path(post, path = "/api/config/validate", tag = "config", request_body = ConfigText,
    responses((status = 200, body = ValidateResponse)))]
async fn validate_config(
    gw: Gw,
    Extension(c): Who,
    body: Result<Json<ConfigText>, JsonRejection>,
) -> ApiResult<Json<ValidateResponse>> {
    require_admin(&c)?;
    let Json(t) = body?;
    let mut d = gw.config_file.check(&t.config);
    if t.config.trim().is_empty() {
        d.push(Diagnostic {
            severity: iris_config::Severity::Error,
            path: String::new(),
            message: "the config is empty".into(),
        });
    }
    let list: Vec<Problem> = d
        .iter()
        .map(|d| Problem {
            severity: if d.is_error() {
                "error".into()
            } else {
                "warning".into()
            },
            path: d.path.clone(),
            message: d.message.clone(),
        })
        .collect();
    let valid = list.is_empty();
    Ok(Json(ValidateResponse {
        valid,
        valid_aperture: valid,
        problems: list,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct HistoryResponse {
    versions: Vec<ConfigVersion>,
}

#[utoipa::path(get, path = "/api/config/history", tag = "config", responses((status = 200, body = HistoryResponse)))]
async fn config_history(gw: Gw, Extension(c): Who) -> ApiResult<Json<HistoryResponse>> {
    require_admin(&c)?;
    let versions = gw
        .store
        .config_versions(200)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(HistoryResponse { versions }))
}

#[derive(Deserialize, ToSchema)]
pub struct RollbackRequest {
    /// The saved version to restore
    id: i64,
    /// The current hash (as for PUT)
    hash: String,
}

#[utoipa::path(post, path = "/api/config/rollback", tag = "config", request_body = RollbackRequest,
    responses((status = 200, body = SaveResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rollback(
    gw: Gw,
    Extension(c): Who,
    body: Result<Json<RollbackRequest>, JsonRejection>,
) -> ApiResult<Json<SaveResponse>> {
    require_admin(&c)?;
    let Json(r) = body?;
    let v = gw
        .store
        .config_version(r.id)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no saved config version {}", r.id),
            )
        })?;
    let hash = gw
        .config_file
        .save(&gw, &v.text, &r.hash, &c, "rollback")
        .await
        .map_err(save_error)?;
    Ok(Json(SaveResponse {
        success: true,
        hash,
    }))
}

// ---- providers and models ------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct ProviderInfo {
    id: String,
    name: String,
    description: String,
    models: Vec<String>,
    #[schema(value_type = Object)]
    compatibility: Value,
}

fn compat_json(c: &iris_config::Compatibility) -> Value {
    json!({
        "openai_chat": c.openai_chat, "openai_responses": c.openai_responses, "anthropic_messages": c.anthropic_messages,
        "gemini_generate_content": c.gemini_generate_content, "google_generate_content": c.google_generate_content,
        "google_raw_predict": c.google_raw_predict, "bedrock_model_invoke": c.bedrock_model_invoke,
        "bedrock_converse": c.bedrock_converse, "experimental_gemini_cli_vertex_compat": c.experimental_gemini_cli_vertex_compat,
    })
}

#[utoipa::path(get, path = "/api/providers", tag = "gateway",
    responses((status = 200, description = "Enabled providers (Aperture's shape); non-admins see only their granted models", body = Vec<ProviderInfo>)))]
async fn providers(gw: Gw, Extension(c): Who) -> ApiResult<Json<Vec<ProviderInfo>>> {
    require_role(&c)?;
    let rt = gw.runtime();
    let out = rt
        .config
        .providers
        .iter()
        .filter(|p| !p.disabled)
        .filter_map(|p| {
            let models: Vec<String> = p
                .models
                .iter()
                .filter(|m| {
                    c.is_admin()
                        || rt.policy.model_in(
                            &c.who.principal,
                            c.who.tailnet_grants(),
                            &format!("{}/{m}", p.id),
                        )
                })
                .cloned()
                .collect();
            (c.is_admin() || !models.is_empty()).then(|| ProviderInfo {
                id: p.id.clone(),
                name: p.name.clone(),
                description: p.description.clone(),
                models,
                compatibility: compat_json(&p.compatibility),
            })
        })
        .collect();
    Ok(Json(out))
}

#[derive(Serialize, ToSchema)]
pub struct ModelInfo {
    /// The id to send in `model`
    id: String,
    provider: String,
    /// `provider/model`, as grants match it
    qualified: String,
}

#[derive(Serialize, ToSchema)]
pub struct ModelsResponse {
    models: Vec<ModelInfo>,
}

#[utoipa::path(get, path = "/api/models", tag = "gateway", responses((status = 200, body = ModelsResponse)))]
async fn models(gw: Gw, Extension(c): Who) -> ApiResult<Json<ModelsResponse>> {
    require_role(&c)?;
    let rt = gw.runtime();
    let models = rt
        .routes
        .models()
        .into_iter()
        .filter(|m| {
            c.local_admin
                || rt
                    .policy
                    .model_in(&c.who.principal, c.who.tailnet_grants(), &m.qualified)
        })
        .map(|m| ModelInfo {
            id: m.id,
            provider: m.provider_id,
            qualified: m.qualified,
        })
        .collect();
    Ok(Json(ModelsResponse { models }))
}

// ---- usage and logs ------------------------------------------------------------------------

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// Only records at or after this time (unix ms)
    since_ms: Option<i64>,
    /// Only records before this time (unix ms)
    until_ms: Option<i64>,
    /// Only this login (admins only; users always see their own)
    login: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    /// user | model | provider | day (default user)
    group_by: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UsageResponse {
    group_by: String,
    groups: Vec<UsageGroup>,
    totals: UsageGroup,
}

#[utoipa::path(get, path = "/api/usage", tag = "usage", params(UsageParams),
    responses((status = 200, body = UsageResponse), (status = 400, body = ErrorBody)))]
async fn usage(
    gw: Gw,
    Extension(c): Who,
    q: Result<Query<UsageParams>, QueryRejection>,
) -> ApiResult<Json<UsageResponse>> {
    let Query(p) = q?;
    let by = match p.group_by.as_deref().unwrap_or("user") {
        "user" => GroupBy::User,
        "model" => GroupBy::Model,
        "provider" => GroupBy::Provider,
        "day" => GroupBy::Day,
        other => {
            return Err(ApiError::bad(format!(
                "group_by must be user, model, provider or day, not {other:?}"
            )));
        }
    };
    let mut query = UsageQuery {
        since_ms: p.since_ms,
        until_ms: p.until_ms,
        login: p.login,
        model: p.model,
        provider: p.provider,
        ..UsageQuery::default()
    };
    c.scope(&mut query);
    let groups = gw
        .store
        .usage_summary(&query, by)
        .await
        .map_err(ApiError::store)?;
    let mut totals = UsageGroup {
        key: "total".into(),
        ..UsageGroup::default()
    };
    for g in &groups {
        totals.requests += g.requests;
        totals.errors += g.errors;
        totals.input_tokens += g.input_tokens;
        totals.output_tokens += g.output_tokens;
        totals.cache_read_tokens += g.cache_read_tokens;
        totals.cache_write_tokens += g.cache_write_tokens;
        totals.reasoning_tokens += g.reasoning_tokens;
    }
    Ok(Json(UsageResponse {
        group_by: p.group_by.unwrap_or_else(|| "user".into()),
        groups,
        totals,
    }))
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct LogsParams {
    /// Page size (default 50, at most 1000)
    limit: Option<u32>,
    /// `next_cursor` of the previous page
    cursor: Option<String>,
    login: Option<String>,
    model: Option<String>,
    status: Option<u16>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct LogsResponse {
    records: Vec<UsageRecord>,
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/logs", tag = "usage", params(LogsParams),
    responses((status = 200, description = "Request records, newest first", body = LogsResponse)))]
async fn logs(
    gw: Gw,
    Extension(c): Who,
    q: Result<Query<LogsParams>, QueryRejection>,
) -> ApiResult<Json<LogsResponse>> {
    let Query(p) = q?;
    let limit = p.limit.unwrap_or(50).clamp(1, 1000);
    let mut query = UsageQuery {
        limit,
        before_id: p.cursor,
        login: p.login,
        model: p.model,
        status: p.status,
        since_ms: p.since_ms,
        until_ms: p.until_ms,
        ..UsageQuery::default()
    };
    c.scope(&mut query);
    let records = gw
        .store
        .recent_usage(&query)
        .await
        .map_err(ApiError::store)?;
    let next_cursor = (records.len() == limit as usize)
        .then(|| records.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(LogsResponse {
        records,
        next_cursor,
    }))
}

// ---- keys ----------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct KeyInfo {
    id: String,
    login: Option<String>,
    tags: Vec<String>,
    note: Option<String>,
    created_ms: i64,
    expires_ms: Option<i64>,
    revoked_ms: Option<i64>,
    last_used_ms: Option<i64>,
    created_by: Option<String>,
}

impl From<KeyRecord> for KeyInfo {
    fn from(k: KeyRecord) -> KeyInfo {
        KeyInfo {
            id: k.id,
            login: k.login,
            tags: k.tags,
            note: k.note,
            created_ms: k.created_ms,
            expires_ms: k.expires_ms,
            revoked_ms: k.revoked_ms,
            last_used_ms: k.last_used_ms,
            created_by: k.created_by,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct KeysResponse {
    keys: Vec<KeyInfo>,
}

#[utoipa::path(get, path = "/api/keys", tag = "keys", responses((status = 200, description = "Admins: every key; users: their own", body = KeysResponse)))]
async fn list_keys(gw: Gw, Extension(c): Who) -> ApiResult<Json<KeysResponse>> {
    let keys = gw.store.list_keys().await.map_err(ApiError::store)?;
    let keys = keys
        .into_iter()
        .filter(|k| c.is_admin() || c.owns(k.login.as_deref(), &k.tags))
        .map(KeyInfo::from)
        .collect();
    Ok(Json(KeysResponse { keys }))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateKey {
    /// A login (alice@example.com) or tag:NAME[,tag:OTHER]
    #[serde(rename = "for")]
    subject: String,
    /// Lifetime such as 10m, 12h, 30d; none = no expiry
    expires: Option<String>,
    note: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    id: String,
    /// The secret, shown this once
    token: String,
    #[serde(rename = "for")]
    subject: String,
    expires_ms: Option<i64>,
}

/// Parse a lifetime: a whole number followed by s, m, h or d.
pub fn parse_lifetime_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a lifetime like 10m, 12h or 30d"))?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?} is not a lifetime like 10m, 12h or 30d")),
    };
    if n <= 0 {
        return Err("a key's lifetime must be positive".into());
    }
    n.checked_mul(ms).ok_or_else(|| "lifetime too long".into())
}

#[utoipa::path(post, path = "/api/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_key(
    gw: Gw,
    Extension(c): Who,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let Json(req) = body?;
    let (login, tags) = iris_identity::keys::parse_subject(&req.subject).map_err(ApiError::bad)?;
    if !c.is_admin() && !c.owns(login.as_deref(), &tags) {
        return Err(ApiError::forbidden(
            "non-admins may create keys only for themselves",
        ));
    }
    let now = iris_store::now_ms();
    let expires_ms = match req.expires.as_deref() {
        Some(e) => Some(now + parse_lifetime_ms(e).map_err(ApiError::bad)?),
        None => None,
    };
    let k = iris_identity::keys::generate();
    gw.store
        .insert_key(&KeyRecord {
            id: k.id.clone(),
            token_hash: k.token_hash.clone(),
            login,
            tags,
            note: req.note,
            created_ms: now,
            expires_ms,
            revoked_ms: None,
            last_used_ms: None,
            created_by: Some(c.label()),
        })
        .await
        .map_err(ApiError::store)?;
    tracing::info!(id = %k.id, by = %c.label(), subject = %req.subject, "key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            id: k.id,
            token: k.token,
            subject: req.subject,
            expires_ms,
        }),
    ))
}

#[utoipa::path(delete, path = "/api/keys/{id}", tag = "keys", params(("id" = String, Path, description = "Key id")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
async fn revoke_key(gw: Gw, Extension(c): Who, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let keys = gw.store.list_keys().await.map_err(ApiError::store)?;
    let Some(k) = keys.into_iter().find(|k| k.id == id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no key {id}"),
        ));
    };
    if !c.is_admin() && !c.owns(k.login.as_deref(), &k.tags) {
        // Same answer as for a missing key: a user learns nothing about others' keys.
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no key {id}"),
        ));
    }
    gw.store
        .revoke_key(&id, iris_store::now_ms())
        .await
        .map_err(ApiError::store)?;
    tracing::info!(id = %id, by = %c.label(), "key revoked");
    Ok(Json(json!({"revoked": true, "id": id})))
}

// ---- OpenAPI ---------------------------------------------------------------------------------

/// The statuses every `/api` operation can answer besides its own (identity, role, cross-site and
/// rate-limit refusals, bad input, an unavailable store), added to each operation of the document.
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let public = public(path);
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ] {
                let Some(op) = op.as_mut() else { continue };
                let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let has_body = op.request_body.is_some();
                let mut add = |code: &str, description: &str| {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| error(description).into());
                };
                add(
                    "403",
                    "Refused: no role or not an admin, or a cross-site or DNS-rebinding browser request",
                );
                if !public {
                    add(
                        "401",
                        "No identity: not a tailnet peer iris can identify, and no valid iris key",
                    );
                    add(
                        "429",
                        "Too many failed iris-key attempts from this address (see Retry-After)",
                    );
                    add("503", "The store or tailscaled is unavailable; try again");
                }
                if has_params || has_body {
                    add("400", "Invalid query, path or body");
                }
                if has_body {
                    add("413", "The body is larger than the admin API accepts");
                    add(
                        "415",
                        "The body was not sent as Content-Type: application/json",
                    );
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    modifiers(&CommonResponses),
    info(
        title = "iris admin API",
        description = "Config, identity, usage and keys of an iris gateway."
    ),
    paths(
        crate::insights::sessions,
        crate::insights::session,
        crate::insights::capture,
        crate::insights::tools,
        crate::insights::adoption,
        crate::insights::adoption_csv,
        crate::insights::prices,
        crate::insights::model_test,
        health,
        whoami,
        get_config,
        put_config,
        validate_config,
        config_history,
        rollback,
        providers,
        models,
        usage,
        logs,
        list_keys,
        create_key,
        revoke_key
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        Problem,
        ConfigResponse,
        ConfigUpdate,
        ConfigText,
        SaveResponse,
        ValidateResponse,
        HistoryResponse,
        RollbackRequest,
        ConfigVersion,
        ProviderInfo,
        ModelInfo,
        ModelsResponse,
        UsageResponse,
        UsageGroup,
        LogsResponse,
        UsageRecord,
        KeysResponse,
        KeyInfo,
        CreateKey,
        CreatedKey,
        crate::insights::ModelTest,
        iris_store::SessionSummary,
        iris_store::ToolCount
    ))
)]
struct ApiDoc;

/// The OpenAPI document of `/api`, generated from the handlers above.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".into())
}

static OPENAPI: LazyLock<String> = LazyLock::new(openapi_json);

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI.as_str(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API endpoint")
}

static ROUTER: LazyLock<Router> = LazyLock::new(|| {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/whoami", get(whoami))
        .route("/api/config", get(get_config).put(put_config))
        .route("/api/config/validate", post(validate_config))
        .route("/aperture/config:validate", post(validate_config))
        .route("/api/config/history", get(config_history))
        .route("/api/config/rollback", post(rollback))
        .route("/api/providers", get(providers))
        .route("/api/models", get(models))
        .route("/api/usage", get(usage))
        .route("/api/logs", get(logs))
        .route("/api/keys", get(list_keys).post(create_key))
        .route("/api/keys/{id}", delete(revoke_key))
        .route("/api/sessions", get(crate::insights::sessions))
        .route("/api/sessions/{id}", get(crate::insights::session))
        .route("/api/captures/{request_id}", get(crate::insights::capture))
        .route("/api/tools", get(crate::insights::tools))
        .route("/api/adoption", get(crate::insights::adoption))
        .route("/api/adoption.csv", get(crate::insights::adoption_csv))
        .route("/api/prices", get(crate::insights::prices))
        .route("/api/models/test", post(crate::insights::model_test))
        .route("/api/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
});

/// Paths that answer without an identity.
fn public(path: &str) -> bool {
    matches!(path, "/api/openapi.json" | "/api/health")
}

/// Refuse cross-site and non-JSON mutating requests (identity is ambient, like a cookie).
fn csrf_check(method: &Method, headers: &HeaderMap, hosts: &[String]) -> Result<(), ApiError> {
    // Reads too: a rebinding page would otherwise read logs and captures with the browser's
    // identity.
    if rebinding(headers, hosts) {
        return Err(ApiError::forbidden(REBINDING_REFUSED));
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if cross_origin(headers) {
        return Err(ApiError::forbidden("cross-site request refused"));
    }
    if *method != Method::DELETE {
        let json = h("content-type").is_some_and(|c| {
            c.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
    }
    Ok(())
}

/// Serve one `/api` request. `caller` is `None` when the identity could not be resolved (`err`).
pub async fn serve(
    gw: Arc<Gateway>,
    caller: Result<Caller, crate::error::GatewayError>,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<crate::body::RespBody> {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let path = req.uri().path().to_owned();
    let rt = gw.runtime();
    let resp =
        if let Err(e) = csrf_check(req.method(), req.headers(), &rt.config.iris.browser_hosts) {
            e.into_response()
        } else {
            let mut req = req.map(axum::body::Body::new);
            match caller {
                Ok(c) => {
                    req.extensions_mut().insert(c);
                }
                Err(e) if !public(&path) => {
                    let status = e.status();
                    let code = e.class();
                    let mut r = ApiError::new(status, code, e.to_string()).into_response();
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        // As on the model endpoints: when guessing may go on.
                        r.headers_mut()
                            .insert(header::RETRY_AFTER, http::HeaderValue::from_static("60"));
                    }
                    return to_resp(r);
                }
                Err(_) => {}
            }
            req.extensions_mut().insert(gw);
            match ROUTER.clone().oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        };
    fn to_resp(mut r: Response) -> http::Response<crate::body::RespBody> {
        // Answers hold logs, captures (prompts) and keys: never cached, never sniffed as script.
        let h = r.headers_mut();
        h.entry(header::CACHE_CONTROL)
            .or_insert(http::HeaderValue::from_static("no-store"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            http::HeaderValue::from_static("nosniff"),
        );
        r.map(|b| {
            b.map_err(|e| -> crate::body::BoxError { Box::new(e) })
                .boxed_unsync()
        })
    }
    to_resp(resp)
}

/// What a refused DNS-rebinding request is told (model endpoints and `/api` alike).
pub const REBINDING_REFUSED: &str = "refused: a browser request for a host name iris cannot vouch for (DNS rebinding); open iris by IP address, localhost or its MagicDNS name, or list this host name in iris.browser_hosts";

/// Not among `http`'s standard names; a `&str` would be parsed as a name on every lookup.
static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Whether a browser says this request comes from another site or origin (`Sec-Fetch-Site`, or an
/// `Origin` that is not this host). Non-browser clients send neither header.
pub fn cross_origin(headers: &HeaderMap) -> bool {
    let h = |n: &HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    if h(&SEC_FETCH_SITE).is_some_and(|s| s != "same-origin" && s != "none") {
        return true;
    }
    if let Some(origin) = h(&header::ORIGIN) {
        let o = origin
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(origin);
        return h(&header::HOST).is_none_or(|host| !o.eq_ignore_ascii_case(host));
    }
    false
}

/// Whether a browser (it sends `Origin` or `Sec-Fetch-Site`) asks for a `Host` iris cannot vouch
/// for. A page on `evil.example` whose DNS name is re-pointed at the gateway (DNS rebinding) is
/// "same-origin" with it by every header the browser sends, yet it must not borrow the ambient
/// identity of the browser's machine — `(loopback)`, an admin by default. Such a page can only
/// name a domain its author controls, so browsers are served only for hosts no attacker can
/// re-point: IP literals, `localhost`, single-label names (MagicDNS short names such as `ai`) and
/// names under `.ts.net`, plus the names an admin lists in `iris.browser_hosts` (`hosts`).
pub fn rebinding(headers: &HeaderMap, hosts: &[String]) -> bool {
    let browser = headers.contains_key(&SEC_FETCH_SITE) || headers.contains_key(header::ORIGIN);
    browser
        && !headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(host_name)
            .is_some_and(|(name, bracketed)| {
                vouched_name(&name, bracketed) || hosts.contains(&name)
            })
}

/// The name of a `Host` value: without its port and trailing dot, lowercase, and whether it was
/// a bracketed IPv6 literal. `None` when the value is malformed.
fn host_name(host: &str) -> Option<(String, bool)> {
    let host = host.trim();
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        let (ip, port) = rest.split_once(']')?;
        let port_ok = port.is_empty() || port.strip_prefix(':').is_some_and(digits);
        return port_ok.then(|| (ip.to_ascii_lowercase(), true));
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if digits(port) => name,
        Some(_) => return None,
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    (!name.is_empty()).then_some((name, false))
}

/// Whether a host name is one no outside party can point at iris: see [`rebinding`].
fn vouched_name(name: &str, bracketed: bool) -> bool {
    if bracketed {
        return name.parse::<std::net::Ipv6Addr>().is_ok();
    }
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || !name.contains('.')
        || name.ends_with(".ts.net")
}

/// Whether a `Host` value (with or without a port) is vouched for without any configuration.
pub fn vouched_host(host: &str) -> bool {
    host_name(host).is_some_and(|(name, bracketed)| vouched_name(&name, bracketed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_browser_hosts_are_served_to_browsers() {
        let hosts = vec!["ai.example.com".to_owned()];
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, "https://ai.example.com".parse().unwrap());
        h.insert(header::HOST, "ai.example.com".parse().unwrap());
        assert!(rebinding(&h, &[]));
        assert!(!rebinding(&h, &hosts));
        assert!(!cross_origin(&h));
        h.insert(header::HOST, "AI.example.com.:443".parse().unwrap());
        assert!(!rebinding(&h, &hosts));
        h.insert(header::HOST, "ai.example.com.evil.example".parse().unwrap());
        assert!(rebinding(&h, &hosts));
        h.insert(header::HOST, "ai.example.com:x".parse().unwrap());
        assert!(rebinding(&h, &hosts));
        // The refusal says how to allow a host name of one's own, on every path.
        let on_models = crate::error::GatewayError::CrossSite { rebinding: true }.to_string();
        assert!(on_models.contains("iris.browser_hosts"), "{on_models}");
        let other = crate::error::GatewayError::CrossSite { rebinding: false }.to_string();
        assert!(other.contains("another site"), "{other}");
    }

    #[test]
    fn vouched_hosts() {
        for h in [
            "127.0.0.1:4747",
            "127.0.0.1",
            "[::1]:4747",
            "[fd7a:115c:a1e0::1]",
            "localhost:4747",
            "app.localhost",
            "ai",
            "AI:80",
            "ai.tail1234.ts.net",
            "ai.tail1234.ts.net.:443",
            "100.101.102.103",
        ] {
            assert!(vouched_host(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:4747",
            "127.0.0.1.nip.io",
            "ts.net.evil.example",
            "evil.example.",
            "",
            ":4747",
            "[::1",
            "[::1]x",
            "ai:http",
        ] {
            assert!(!vouched_host(h), "{h}");
        }
    }
}
