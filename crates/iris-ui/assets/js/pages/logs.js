// Logs: sessions (or plain requests) filtered by time, user and model; a session's requests;
// a request's capture (headers, bodies, the reassembled answer, tool calls).

import { api } from "../api.js";
import { h } from "../dom.js";
import { fmtBytes, fmtCompact, fmtDuration, fmtInt, fmtUsd, whoOf } from "../format.js";
import { KIND_LABELS, recordsTable, sessionsTable } from "../tables.js";
import {
  card, chips, codeBlock, errorBox, fill, filterForm, loading, pageHeader, pagedList, rangeFrom, section, table, timeEl,
} from "../widgets.js";

const PAGE = 25;

async function modelNames() {
  try {
    const m = await api("/api/models");
    return m.models.map((x) => x.qualified || x.id);
  } catch {
    return [];
  }
}

export async function renderList(ctx) {
  const q = ctx.query;
  const tab = q.get("tab") === "requests" ? "requests" : "sessions";
  const r = rangeFrom(q);
  const filter = {
    since_ms: r.since_ms, until_ms: r.until_ms, login: q.get("login") || undefined, model: q.get("model") || undefined,
  };
  const tabLink = (t, label) => {
    const nq = new URLSearchParams(q);
    nq.set("tab", t);
    return h("a", { href: ctx.link("logs", nq), class: `tab${t === tab ? " active" : ""}`, "aria-current": t === tab ? "page" : null }, label);
  };
  const fields = ["range"];
  if (ctx.isAdmin) fields.push("login");
  fields.push("model");
  if (tab === "requests") fields.push("status");
  const datalists = { model: await modelNames() };
  const form = filterForm({
    fields, query: q, datalists,
    onApply: (nq) => { nq.set("tab", tab); ctx.navigate("logs", nq); },
  });
  let list;
  if (tab === "sessions") {
    list = pagedList({
      label: "sessions",
      load: async (cursor) => {
        const res = await api("/api/sessions", { query: { ...filter, limit: PAGE, cursor } });
        return { rows: res.sessions, next_cursor: res.next_cursor };
      },
      render: (rows) => sessionsTable(rows, ctx.link),
    });
  } else {
    list = pagedList({
      label: "requests",
      load: async (cursor) => {
        const res = await api("/api/logs", { query: { ...filter, status: q.get("status") || undefined, limit: PAGE, cursor } });
        return { rows: res.records, next_cursor: res.next_cursor };
      },
      render: (rows) => recordsTable(rows, ctx.link),
    });
  }
  return h("div", null,
    pageHeader("Logs"),
    h("nav", { class: "tabs", "aria-label": "Log views" }, tabLink("sessions", "Sessions"), tabLink("requests", "Requests")),
    form,
    section(tab === "sessions" ? "Sessions" : "Requests", list));
}

function sessionSummary(s) {
  return h("div", { class: "cards" },
    card("Who", whoOf(s), (s.tags || []).length && s.login ? s.tags.join(", ") : null),
    card("Client", KIND_LABELS[s.kind] || s.kind, s.id),
    card("Requests", fmtInt(s.requests), s.errors ? `${fmtInt(s.errors)} errors` : "no errors"),
    card("Tokens", `${fmtCompact(s.input_tokens)} in / ${fmtCompact(s.output_tokens)} out`,
      `cache read ${fmtCompact(s.cache_read_tokens)} · cache write ${fmtCompact(s.cache_write_tokens)} · reasoning ${fmtCompact(s.reasoning_tokens)}`),
    card("Cost", fmtUsd(s.cost_usd), s.cost_usd === null ? "price unknown for some model" : null),
    card("Duration", fmtDuration(s.duration_ms), h("span", null, timeEl(s.first_ms), " → ", timeEl(s.last_ms))));
}

export function renderSession(ctx) {
  const id = ctx.params.id;
  const body = h("div");
  const root = h("div", null,
    h("p", { class: "crumbs" }, h("a", { href: ctx.link("logs") }, "← Logs")),
    pageHeader("Session"),
    body);
  fill(body, api(`/api/sessions/${encodeURIComponent(id)}`), (res) => {
    const s = res.session;
    return [
      sessionSummary(s),
      section("Models and tools", h("p", null, "Models: ", chips(s.models || [])),
        h("p", null, "Tools: ", (s.tools || []).length ? chips(s.tools.map((t) => `${t.name} ×${t.count}`)) : "none")),
      section("Requests", recordsTable(res.requests, ctx.link, { caption: "Requests in this session", withWho: false, withCost: true, withTools: true, session: id })),
    ];
  }, "the session");
  return root;
}

function headersTable(rows, caption) {
  return table({
    caption,
    rows: rows || [],
    empty: "No headers captured.",
    columns: [
      { label: "Name", cell: (x) => h("code", null, x[0]) },
      { label: "Value", cell: (x) => h("code", { class: "wrap" }, x[1]) },
    ],
  });
}

function truncNote(flag, what) {
  return flag ? h("p", { class: "warn" }, `The ${what} was larger than the capture limit; what is shown is cut short.`) : null;
}

function reassembled(r) {
  if (!r) return h("p", { class: "empty-note" }, "No reassembled answer (the response was not a model answer iris could read).");
  return [
    h("dl", { class: "facts" }, h("dt", null, "Stop reason"), h("dd", null, r.stop_reason || "—")),
    r.thinking ? h("details", { class: "thinking" }, h("summary", null, "Thinking"), h("pre", { class: "code text" }, r.thinking)) : null,
    h("h3", null, "Text"),
    r.text ? h("pre", { class: "code text answer" }, r.text) : h("p", { class: "empty-note" }, "(no text)"),
    h("h3", null, "Tool calls"),
    (r.tool_calls || []).length
      ? h("ol", { class: "tool-calls" }, r.tool_calls.map((t) =>
        h("li", null, h("div", null, h("strong", null, t.name), t.id ? h("span", { class: "muted" }, ` ${t.id}`) : null), codeBlock(t.arguments, `arguments of ${t.name}`))))
      : h("p", { class: "empty-note" }, "No tool calls."),
  ];
}

export function renderCapture(ctx) {
  const id = ctx.params.id;
  const session = ctx.query.get("session");
  const body = h("div", null, loading("Loading the capture"));
  const root = h("div", null,
    h("p", { class: "crumbs" },
      h("a", { href: ctx.link("logs") }, "← Logs"),
      session ? [" · ", h("a", { href: ctx.link(`logs/sessions/${encodeURIComponent(session)}`) }, "← Session")] : null),
    pageHeader("Request"),
    body);
  api(`/api/captures/${encodeURIComponent(id)}`).then((c) => {
    body.replaceChildren(...[
      h("div", { class: "cards" },
        card("Request", `${c.method} ${c.path}`, c.request_id),
        card("Status", String(c.status))),
      section("Reassembled answer", reassembled(c.reassembled), truncNote(c.raw_events_truncated, "event stream")),
      section("Request headers", headersTable(c.request_headers, "Request headers")),
      section("Request body", truncNote(c.request_truncated, "request body"),
        c.request_body === null ? h("p", { class: "empty-note" }, "No request body captured.") : codeBlock(c.request_body, "request body"),
        c.request_body ? h("p", { class: "muted" }, fmtBytes(c.request_body.length)) : null),
      section("Response headers", headersTable(c.response_headers, "Response headers")),
      section("Response body", truncNote(c.response_truncated, "response body"),
        c.response_body === null ? h("p", { class: "empty-note" }, "No response body captured.")
          : h("details", { open: c.response_body.length < 4000 }, h("summary", null, `Raw response (${fmtBytes(c.response_body.length)})`), codeBlock(c.response_body, "response body"))),
    ].flat().filter(Boolean));
  }).catch((e) => {
    const gone = e.status === 404;
    body.replaceChildren(
      gone ? h("p", { class: "lead" }, "This request has no capture: it was purged by the retention policy or was never captured.") : "",
      errorBox(e, "Loading the capture"));
  });
  return root;
}
