//! The "what happened" part of the admin API: sessions, captures, tool use, adoption, prices and
//! the model test button. Same rules as the rest of `/api`: admins see everyone, users themselves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Path, Query};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use iris_store::{GroupBy, SessionSummary, UsageQuery, UsageRecord};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use crate::Gateway;
use crate::admin::{ApiError, ErrorBody};
use crate::caller::Caller;

type Gw = Extension<Arc<Gateway>>;
type Who = Extension<Caller>;
type ApiResult<T> = Result<T, ApiError>;

fn store_err(e: iris_store::StoreError) -> ApiError {
    tracing::warn!(error = %e, "store error in the admin API");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the store is unavailable; try again",
    )
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", what.to_owned())
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct SessionParams {
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    login: Option<String>,
    model: Option<String>,
    /// Sessions per page (default 50, at most 500)
    limit: Option<u32>,
    /// `next_cursor` of the previous page
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/sessions", tag = "usage", params(SessionParams),
    responses((status = 200, description = "Sessions, most recent activity first: {sessions: [SessionSummary], next_cursor}", body = Object)))]
pub async fn sessions(
    gw: Gw,
    Extension(c): Who,
    q: Result<Query<SessionParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(p) = q?;
    let limit = p.limit.unwrap_or(50).clamp(1, 500);
    let before = match p.cursor.as_deref() {
        Some(s) => Some(s.parse::<i64>().map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "invalid cursor")
        })?),
        None => None,
    };
    let mut query = UsageQuery {
        limit,
        since_ms: p.since_ms,
        until_ms: p.until_ms,
        login: p.login,
        model: p.model,
        ..UsageQuery::default()
    };
    c.scope(&mut query);
    let list: Vec<SessionSummary> = gw.store.sessions(&query, before).await.map_err(store_err)?;
    let next = (list.len() == limit as usize)
        .then(|| list.last().map(|s| s.last_ms.to_string()))
        .flatten();
    Ok(Json(json!({"sessions": list, "next_cursor": next})))
}

fn with_tool_calls(r: &UsageRecord) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        let calls: Vec<Value> = r.tool_names.iter().map(|n| json!({"name": n})).collect();
        o.insert("tool_calls".into(), Value::Array(calls));
    }
    v
}

#[utoipa::path(get, path = "/api/sessions/{id}", tag = "usage", params(("id" = String, Path, description = "Session id")),
    responses((status = 200, description = "{session, requests}", body = Object), (status = 404, body = ErrorBody)))]
pub async fn session(gw: Gw, Extension(c): Who, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let mut q = UsageQuery {
        limit: UsageQuery::MAX_LIMIT,
        ..UsageQuery::default()
    };
    c.scope(&mut q);
    let records = gw.store.session_records(&id, &q).await.map_err(store_err)?;
    if records.is_empty() {
        return Err(not_found("no such session"));
    }
    // Summed from the records themselves: a summary through `sessions` over their time range
    // could miss this session among others active then.
    let summary = iris_store::session_summary(&id, &records);
    Ok(Json(
        json!({"session": summary, "requests": records.iter().map(with_tool_calls).collect::<Vec<_>>()}),
    ))
}

#[utoipa::path(get, path = "/api/captures/{request_id}", tag = "usage", params(("request_id" = String, Path, description = "Request id")),
    responses((status = 200, description = "The capture: headers (redacted), bodies, reassembled answer, tool calls", body = Object),
              (status = 404, description = "Never captured, purged by retention, or not yours", body = ErrorBody),
              (status = 500, description = "The stored capture is damaged (`capture_damaged`)", body = ErrorBody)))]
pub async fn capture(
    gw: Gw,
    Extension(c): Who,
    Path(request_id): Path<String>,
) -> ApiResult<Response> {
    if !c.is_admin() {
        let mut q = UsageQuery {
            limit: 1,
            request_id: Some(request_id.clone()),
            ..UsageQuery::default()
        };
        c.scope(&mut q);
        if gw
            .store
            .recent_usage(&q)
            .await
            .map_err(store_err)?
            .is_empty()
        {
            return Err(not_found("no capture for this request"));
        }
    }
    let row = gw
        .store
        .capture(&request_id)
        .await
        .map_err(store_err)?
        .ok_or_else(|| {
            not_found("no capture for this request (never captured, or purged by retention)")
        })?;
    // The bodies go back into the document; answers whose reassembly was deferred are
    // reassembled now (see iris_capture::capture).
    let body = iris_capture::stored_document(
        row.body,
        row.request_body,
        row.response_body,
        &gw.runtime().redactor,
    )
    .map_err(|e| {
        tracing::error!(request_id = %request_id, error = %e, "a stored capture is damaged");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "capture_damaged",
            e.to_string(),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct ToolParams {
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    login: Option<String>,
    /// day (default) or hour
    bucket: Option<String>,
}

#[utoipa::path(get, path = "/api/tools", tag = "usage", params(ToolParams),
    responses((status = 200, description = "{buckets, by_session, totals}", body = Object)))]
pub async fn tools(
    gw: Gw,
    Extension(c): Who,
    q: Result<Query<ToolParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(p) = q?;
    let width: i64 = match p.bucket.as_deref().unwrap_or("day") {
        "day" => 86_400_000,
        "hour" => 3_600_000,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("bucket must be day or hour, not {other:?}"),
            ));
        }
    };
    let mut q = UsageQuery {
        limit: UsageQuery::MAX_LIMIT,
        since_ms: p.since_ms,
        until_ms: p.until_ms,
        login: p.login,
        with_tools: true,
        ..UsageQuery::default()
    };
    c.scope(&mut q);
    let records = gw.store.recent_usage(&q).await.map_err(store_err)?;
    let mut buckets: BTreeMap<i64, BTreeMap<String, u64>> = BTreeMap::new();
    let mut per_session: BTreeMap<String, (String, BTreeMap<String, u64>)> = BTreeMap::new();
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for r in &records {
        let start = r.ts_ms - r.ts_ms.rem_euclid(width);
        let who = r.login.clone().unwrap_or_else(|| {
            if r.tags.is_empty() {
                "(loopback)".into()
            } else {
                r.tags.join(",")
            }
        });
        for name in &r.tool_names {
            *buckets
                .entry(start)
                .or_default()
                .entry(name.clone())
                .or_default() += 1;
            *totals.entry(name.clone()).or_default() += 1;
            if let Some(s) = &r.session_id {
                *per_session
                    .entry(s.clone())
                    .or_insert_with(|| (who.clone(), BTreeMap::new()))
                    .1
                    .entry(name.clone())
                    .or_default() += 1;
            }
        }
    }
    let counts = |m: BTreeMap<String, u64>| {
        let mut v: Vec<Value> = m
            .into_iter()
            .map(|(name, count)| json!({"name": name, "count": count}))
            .collect();
        v.sort_by(|a, b| b["count"].as_u64().cmp(&a["count"].as_u64()));
        v
    };
    Ok(Json(json!({
        "buckets": buckets.into_iter().map(|(start, m)| json!({"start_ms": start, "counts": m})).collect::<Vec<_>>(),
        "by_session": per_session.into_iter().map(|(id, (who, m))| json!({"session_id": id, "who": who, "tools": counts(m)})).collect::<Vec<_>>(),
        "totals": counts(totals),
        "truncated": records.len() as u32 >= UsageQuery::MAX_LIMIT,
    })))
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct AdoptionParams {
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    /// day (default) or week
    period: Option<String>,
}

async fn adoption_data(
    gw: &Gateway,
    c: &Caller,
    p: &AdoptionParams,
) -> ApiResult<(Value, Vec<iris_store::UsageGroup>)> {
    if !c.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "adoption is for admins",
        ));
    }
    let by = match p.period.as_deref().unwrap_or("day") {
        "day" => GroupBy::Day,
        "week" => GroupBy::Week,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("period must be day or week, not {other:?}"),
            ));
        }
    };
    let q = UsageQuery {
        since_ms: p.since_ms,
        until_ms: p.until_ms,
        ..UsageQuery::default()
    };
    let active = gw.store.usage_summary(&q, by).await.map_err(store_err)?;
    let users = gw
        .store
        .usage_summary(&q, GroupBy::User)
        .await
        .map_err(store_err)?;
    let models = gw
        .store
        .usage_summary(&q, GroupBy::Model)
        .await
        .map_err(store_err)?;
    let day_ms = |k: &str| {
        chrono::NaiveDate::parse_from_str(k, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp_millis())
    };
    let v = json!({
        "active": active.iter().map(|g| json!({"period": g.key, "period_start_ms": day_ms(&g.key), "users": g.users})).collect::<Vec<_>>(),
        "top_users": users.iter().take(50).map(|g| json!({"who": g.key, "requests": g.requests, "tokens": g.input_tokens + g.output_tokens, "cost_usd": g.cost_usd})).collect::<Vec<_>>(),
        "models": models.iter().map(|g| json!({"model": g.key, "requests": g.requests, "users": g.users})).collect::<Vec<_>>(),
    });
    Ok((v, users))
}

#[utoipa::path(get, path = "/api/adoption", tag = "usage", params(AdoptionParams),
    responses((status = 200, description = "{active, top_users, models}", body = Object), (status = 403, body = ErrorBody)))]
pub async fn adoption(
    gw: Gw,
    Extension(c): Who,
    q: Result<Query<AdoptionParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(p) = q?;
    Ok(Json(adoption_data(&gw, &c, &p).await?.0))
}

fn csv_field(s: &str) -> String {
    // Quote always; neutralise spreadsheet formulas.
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[utoipa::path(get, path = "/api/adoption.csv", tag = "usage", params(AdoptionParams),
    responses((status = 200, description = "CSV: who,requests,input_tokens,output_tokens,cost_usd", content_type = "text/csv")))]
pub async fn adoption_csv(
    gw: Gw,
    Extension(c): Who,
    q: Result<Query<AdoptionParams>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(p) = q?;
    let (_, users) = adoption_data(&gw, &c, &p).await?;
    let mut out = String::from("who,requests,input_tokens,output_tokens,cost_usd\n");
    for g in users {
        out.push_str(&format!(
            "{},{},{},{},{}\n",
            csv_field(&g.key),
            g.requests,
            g.input_tokens,
            g.output_tokens,
            g.cost_usd.map(|c| format!("{c:.6}")).unwrap_or_default()
        ));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"iris-adoption.csv\"",
            ),
        ],
        out,
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/prices", tag = "gateway",
    responses((status = 200, description = "Prices iris uses for the configured models (USD per million tokens)", body = Object)))]
pub async fn prices(gw: Gw, Extension(_c): Who) -> Json<Value> {
    let rt = gw.runtime();
    let table = iris_capture::PriceTable::builtin();
    let mut out = Vec::new();
    for p in rt.config.providers.iter().filter(|p| !p.disabled) {
        let Some(cost) = rt.costs.get(&p.id) else {
            continue;
        };
        for m in &p.models {
            let r = table.resolve(cost.basis, m, &cost.rules);
            out.push(json!({
                "provider": p.id,
                "model": m,
                "cost_basis": cost.basis.as_str(),
                "priced_as": r.map(|r| format!("{}/{}", r.price.provider, r.price.model)),
                "adjustment": r.map(|r| r.adjustment),
                "input_per_mtok": r.map(|r| r.price.input),
                "output_per_mtok": r.map(|r| r.price.output),
                "cache_read_per_mtok": r.and_then(|r| r.price.cache_read),
                "cache_write_per_mtok": r.and_then(|r| r.price.cache_write),
                "source": r.map(|r| r.price.source.clone()),
                "as_of": r.map(|r| r.price.as_of.clone()),
            }));
        }
    }
    Json(json!({"models": out}))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ModelTest {
    /// A model id or `provider/model`
    model: String,
}

/// `POST /api/models/test`: a minimal request to the model, as the caller (their grants apply),
/// straight to the provider, recorded like any other request.
#[utoipa::path(post, path = "/api/models/test", tag = "gateway", request_body = ModelTest,
    responses((status = 200, description = "{ok, status, latency_ms, text, error}", body = Object), (status = 404, body = ErrorBody)))]
pub async fn model_test(
    gw: Gw,
    Extension(c): Who,
    body: Result<Json<ModelTest>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    use iris_providers::api::ApiFamily;
    let Json(t) = body?;
    let rt = gw.runtime();
    let family_for = |fam| rt.routes.resolve(&t.model, fam).ok().map(|r| (fam, r));
    let Some((family, route)) = family_for(ApiFamily::AnthropicMessages)
        .or_else(|| family_for(ApiFamily::OpenAiChat))
        .or_else(|| family_for(ApiFamily::OpenAiResponses))
    else {
        return Err(not_found(&format!(
            "model {:?} is not served by any enabled provider",
            t.model
        )));
    };
    if !c.local_admin {
        let d = rt.policy.evaluate(
            &c.who.principal,
            c.who.tailnet_grants(),
            Some(&route.qualified),
        );
        if d.outcome() != iris_policy::Outcome::Allowed {
            return Err(not_found(&format!(
                "model {:?} is not granted to {}",
                t.model,
                c.label()
            )));
        }
    }
    let Some(provider) = rt.config.provider(&route.provider_id) else {
        return Err(not_found("provider gone"));
    };
    let body = match family {
        ApiFamily::AnthropicMessages => {
            json!({"model": route.model, "max_tokens": 16, "messages": [{"role": "user", "content": "Reply with: ok"}]})
        }
        ApiFamily::OpenAiResponses => {
            json!({"model": route.model, "max_output_tokens": 16, "input": "Reply with: ok"})
        }
        _ => {
            json!({"model": route.model, "max_tokens": 16, "messages": [{"role": "user", "content": "Reply with: ok"}]})
        }
    };
    let mut req = http::Request::builder()
        .method(http::Method::POST)
        .uri(iris_providers::routing::upstream_url(
            provider, family, None,
        ))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT_ENCODING, "identity")
        .header(header::USER_AGENT, "iris-model-test");
    if family == ApiFamily::AnthropicMessages {
        req = req.header("anthropic-version", "2023-06-01");
    }
    if let Some((name, value)) = iris_providers::routing::auth_header(provider) {
        req = req.header(name, value);
    }
    for (n, v) in &provider.add_headers {
        req = req.header(n.as_str(), v.as_str());
    }
    let bytes = Bytes::from(body.to_string());
    let req = req
        .body(Full::new(bytes.clone()))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    // The record's id and time are those of the request's start, as for a proxied request.
    let (record_id, ts_ms) = iris_store::new_record_id_and_time();
    let start = Instant::now();
    let timeout = rt
        .config
        .iris
        .timeouts
        .first_byte
        .min(std::time::Duration::from_secs(60));
    let outcome = tokio::time::timeout(timeout, async {
        let resp = gw
            .client
            .request(req)
            .await
            .map_err(|_| format!("provider {} is unreachable", provider.id))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|_| "could not read the answer".to_string())?
            .to_bytes();
        Ok::<_, String>((status, body))
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {}s", timeout.as_secs())));
    let latency_ms = start.elapsed().as_millis() as u64;
    // The test is a request like any other: it leaves a usage record.
    let mut ex = iris_providers::usage::UsageExtractor::new(family, false);
    let mut rec = crate::proxy::bare_record(
        &record_id,
        ts_ms,
        family.as_str(),
        "/api/models/test",
        &c.who.principal,
    );
    rec.requested_model = Some(t.model.clone());
    rec.provider = Some(provider.id.clone());
    rec.upstream_model = Some(route.model.clone());
    rec.user_agent = Some("iris-model-test".into());
    rec.bytes_in = bytes.len() as u64;
    rec.duration_ms = latency_ms;
    let answer = match outcome {
        Ok((status, body)) => {
            ex.feed(&body);
            let got = ex.finish();
            if let Some(u) = got.usage {
                rec.usage_known = true;
                rec.input_tokens = u.input_tokens;
                rec.output_tokens = u.output_tokens;
            }
            rec.status = status;
            rec.bytes_out = body.len() as u64;
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let text = v["content"][0]["text"]
                .as_str()
                .or_else(|| v["choices"][0]["message"]["content"].as_str())
                .or_else(|| v["output"][0]["content"][0]["text"].as_str())
                .map(str::to_owned);
            let ok = (200..300).contains(&status);
            if !ok {
                rec.error_class = Some("upstream_status".into());
            }
            let error = (!ok).then(|| {
                v["error"]["message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("the provider answered {status}"))
            });
            json!({"ok": ok, "status": status, "latency_ms": latency_ms, "text": text, "error": error})
        }
        Err(e) => {
            rec.status = 502;
            rec.error_class = Some("upstream_unreachable".into());
            json!({"ok": false, "status": 502, "latency_ms": latency_ms, "text": null, "error": e})
        }
    };
    gw.observer.record(Box::new(rec), None);
    Ok(Json(answer))
}
