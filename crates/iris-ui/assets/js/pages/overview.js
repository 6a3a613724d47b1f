// Overview: totals, tokens and cost by model, tokens and cost per day, active sessions, recent
// activity. Admins may narrow everything to one user (?login=..., also /ui/dashboard/<login>).

import { api } from "../api.js";
import { columnChart, hbarChart } from "../charts.js";
import { h } from "../dom.js";
import { dayKeyToMs, fmtCompact, fmtInt, fmtUsd, fmtUtcDay, msToDayKey } from "../format.js";
import { recordsTable, sessionsTable } from "../tables.js";
import { card, fill, filterForm, pageHeader, rangeFrom, section } from "../widgets.js";

const ACTIVE_MS = 30 * 60e3;

function sum(xs, f) {
  return xs.reduce((a, x) => a + (Number(f(x)) || 0), 0);
}

/** Total cost of groups: null when nothing is priced (never a made-up 0). */
function totalCost(u) {
  if (u.totals && typeof u.totals.cost_usd === "number") return u.totals.cost_usd;
  const priced = u.groups.filter((g) => typeof g.cost_usd === "number");
  return priced.length ? sum(priced, (g) => g.cost_usd) : null;
}

function unpriced(u) {
  if (u.totals && typeof u.totals.unpriced_requests === "number") return u.totals.unpriced_requests;
  return sum(u.groups, (g) => g.unpriced_requests);
}

function cards(u) {
  const t = u.totals || {};
  const cost = totalCost(u);
  const nUnpriced = unpriced(u);
  return [
    card("Requests", fmtInt(t.requests), t.errors ? `${fmtInt(t.errors)} errors` : "no errors"),
    card("Tokens", fmtCompact((t.input_tokens || 0) + (t.output_tokens || 0)),
      `${fmtCompact(t.input_tokens)} in · ${fmtCompact(t.output_tokens)} out · ${fmtCompact(t.cache_read_tokens)} cache read`),
    card("Cost", cost === null ? "unpriced" : fmtUsd(cost),
      nUnpriced ? `${fmtInt(nUnpriced)} requests unpriced (price unknown)` : "all requests priced"),
    card("Models used", fmtInt(u.groups.length), null),
  ];
}

function modelCharts(u) {
  const groups = u.groups.slice().sort((a, b) => (b.input_tokens + b.output_tokens) - (a.input_tokens + a.output_tokens)).slice(0, 15);
  const labels = groups.map((g) => g.key);
  const nUnpriced = unpriced(u);
  return [
    hbarChart({
      title: "Tokens by model", labels, yTitle: "model", xTitle: "tokens", unit: "tokens",
      series: [
        { name: "input", values: groups.map((g) => g.input_tokens) },
        { name: "output", values: groups.map((g) => g.output_tokens) },
        { name: "cache read", values: groups.map((g) => g.cache_read_tokens) },
      ],
    }),
    hbarChart({
      title: "Cost by model", labels, yTitle: "model", xTitle: "cost (USD)", fmt: fmtUsd, missing: "unpriced",
      series: [{ name: "cost (USD)", values: groups.map((g) => g.cost_usd) }],
      note: nUnpriced ? `${fmtInt(nUnpriced)} requests have no known price and are not in the cost.` : null,
    }),
  ];
}

/** Every UTC day from the first to the last, zeros where the API has no group. */
function dayRange(groups, sinceMs, untilMs) {
  const byKey = new Map(groups.map((g) => [g.key, g]));
  const keys = groups.map((g) => g.key).filter((k) => Number.isFinite(dayKeyToMs(k))).sort();
  const first = sinceMs ? dayKeyToMs(msToDayKey(sinceMs)) : keys.length ? dayKeyToMs(keys[0]) : NaN;
  const last = dayKeyToMs(msToDayKey(untilMs || Date.now()));
  if (!Number.isFinite(first) || first > last || (last - first) / 86400e3 > 400) {
    return groups;
  }
  const out = [];
  for (let d = first; d <= last; d += 86400e3) {
    const k = msToDayKey(d);
    out.push(byKey.get(k) || { key: k, requests: 0, input_tokens: 0, output_tokens: 0, cache_read_tokens: 0, cost_usd: null });
  }
  return out;
}

function dayCharts(u, r) {
  const days = dayRange(u.groups, r.since_ms, r.until_ms);
  const labels = days.map((d) => fmtUtcDay(d.key));
  const full = days.map((d) => fmtUtcDay(d.key, true));
  return [
    columnChart({
      title: "Tokens per day", labels, fullLabels: full, xTitle: "day (UTC)", yTitle: "tokens", unit: "tokens",
      series: [
        { name: "input", values: days.map((d) => d.input_tokens) },
        { name: "output", values: days.map((d) => d.output_tokens) },
        { name: "cache read", values: days.map((d) => d.cache_read_tokens) },
      ],
    }),
    columnChart({
      title: "Cost per day", labels, fullLabels: full, xTitle: "day (UTC)", yTitle: "cost (USD)", fmt: fmtUsd,
      series: [{ name: "cost (USD)", values: days.map((d) => d.cost_usd), color: "#0ca678" }],
    }),
  ];
}

export function render(ctx) {
  const q = ctx.query;
  const r = rangeFrom(q);
  const login = ctx.isAdmin ? q.get("login") || undefined : undefined;
  const base = { since_ms: r.since_ms, until_ms: r.until_ms, login };

  const cardBox = h("div", { class: "cards" });
  const byModel = h("div", { class: "chart-grid" });
  const perDay = h("div", { class: "chart-grid" });
  const active = h("div");
  const recent = h("div");
  const root = h("div", null,
    pageHeader(login ? `Overview: ${login}` : "Overview"),
    filterForm({ fields: ctx.isAdmin ? ["range", "login"] : ["range"], query: q, onApply: (nq) => ctx.navigate("overview", nq) }),
    section("Totals", cardBox),
    section("By model", byModel),
    section("Per day", perDay),
    section("Active sessions (last 30 minutes)", active),
    section("Recent activity", recent, h("p", null, h("a", { href: ctx.link("logs", { tab: "requests" }) }, "All requests →"))));

  const byModelReq = api("/api/usage", { query: { ...base, group_by: "model" } });
  fill(cardBox, byModelReq, cards, "totals");
  fill(byModel, byModelReq, modelCharts, "usage by model");
  fill(perDay, api("/api/usage", { query: { ...base, group_by: "day" } }), (u) => dayCharts(u, r), "usage per day");
  const now = Date.now();
  fill(active, api("/api/sessions", { query: { since_ms: now - ACTIVE_MS, login, limit: 20 } }),
    (res) => sessionsTable(res.sessions.filter((s) => s.last_ms >= now - ACTIVE_MS), ctx.link, "Active sessions"), "active sessions");
  fill(recent, api("/api/logs", { query: { limit: 10, login } }),
    (res) => recordsTable(res.records, ctx.link, { caption: "Recent requests" }), "recent activity");
  return root;
}
