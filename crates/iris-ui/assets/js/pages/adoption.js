// Adoption (admins): active users per day or week, top users, model popularity, CSV export.

import { api, apiUrl } from "../api.js";
import { columnChart, hbarChart } from "../charts.js";
import { h } from "../dom.js";
import { fmtCompact, fmtInt, fmtUsd, fmtUtcDay } from "../format.js";
import { card, fill, filterForm, pageHeader, rangeFrom, section, table } from "../widgets.js";

function build(a, period) {
  const active = a.active || [];
  const users = a.top_users || [];
  const models = a.models || [];
  const peak = Math.max(0, ...active.map((x) => x.users || 0));
  const unit = period === "week" ? "week" : "day";
  return [
    h("div", { class: "cards" },
      card(`Peak active users per ${unit}`, fmtInt(peak)),
      card("Users with requests", fmtInt(users.length)),
      card("Models used", fmtInt(models.length))),
    section(`Active users per ${unit}`,
      columnChart({
        title: `Active users per ${unit}`, xTitle: period === "week" ? "week starting (UTC)" : "day (UTC)", yTitle: "active users",
        unit: "users", integer: true, fmt: fmtInt,
        labels: active.map((x) => fmtUtcDay(x.period_start_ms)),
        fullLabels: active.map((x) => fmtUtcDay(x.period_start_ms, true)),
        series: [{ name: "active users", values: active.map((x) => x.users) }],
      })),
    section("Top users",
      h("div", { class: "chart-grid" },
        hbarChart({
          title: "Tokens by user", labels: users.slice(0, 15).map((u) => u.who), yTitle: "user", xTitle: "tokens", unit: "tokens",
          series: [{ name: "tokens", values: users.slice(0, 15).map((u) => u.tokens) }],
        }),
        table({
          caption: "Top users",
          rows: users,
          empty: "No users in this range.",
          columns: [
            { label: "User", cell: (u) => u.who },
            { label: "Requests", num: true, cell: (u) => fmtInt(u.requests) },
            { label: "Tokens", num: true, cell: (u) => fmtCompact(u.tokens) },
            { label: "Cost", num: true, cell: (u) => fmtUsd(u.cost_usd) },
          ],
        }))),
    section("Model popularity",
      h("div", { class: "chart-grid" },
        hbarChart({
          title: "Requests and users by model", labels: models.map((m) => m.model), yTitle: "model", xTitle: "count",
          stacked: false, integer: true, fmt: fmtInt,
          series: [
            { name: "requests", values: models.map((m) => m.requests) },
            { name: "users", values: models.map((m) => m.users) },
          ],
        }),
        table({
          caption: "Model popularity",
          rows: models,
          empty: "No model was used in this range.",
          columns: [
            { label: "Model", cell: (m) => m.model },
            { label: "Requests", num: true, cell: (m) => fmtInt(m.requests) },
            { label: "Users", num: true, cell: (m) => fmtInt(m.users) },
          ],
        }))),
  ];
}

export function render(ctx) {
  const q = ctx.query;
  const r = rangeFrom(q, "30d");
  const period = q.get("period") === "week" ? "week" : "day";
  const params = { since_ms: r.since_ms, until_ms: r.until_ms, period };
  const body = h("div");
  const csv = h("a", { class: "button", href: apiUrl("/api/adoption.csv", params), download: "iris-adoption.csv" }, "Download CSV");
  const root = h("div", null,
    pageHeader("Adoption", csv),
    filterForm({
      fields: ["range", { name: "period", label: "Per", options: [["day", "day"], ["week", "week"]], default: "day" }],
      query: q.has("range") || q.has("since") ? q : new URLSearchParams({ range: "30d", period }),
      onApply: (nq) => ctx.navigate("adoption", nq),
    }),
    body);
  fill(body, api("/api/adoption", { query: params }), (a) => build(a, period), "adoption");
  return root;
}
