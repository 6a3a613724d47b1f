// Tool use: tool calls over time (stacked by tool), totals, and the breakdown per session.

import { api } from "../api.js";
import { columnChart, hbarChart } from "../charts.js";
import { h } from "../dom.js";
import { fmtHour, fmtInt, fmtTimeShort, fmtUtcDay } from "../format.js";
import { chips, fill, filterForm, pageHeader, rangeFrom, section, table } from "../widgets.js";

const MAX_SERIES = 7;

function build(t, bucket, ctx) {
  const totals = (t.totals || []).slice().sort((a, b) => b.count - a.count);
  const top = totals.slice(0, MAX_SERIES).map((x) => x.name);
  const rest = totals.length > MAX_SERIES;
  const buckets = t.buckets || [];
  const series = top.map((name) => ({ name, values: buckets.map((b) => (b.counts || {})[name] || 0) }));
  if (rest) {
    series.push({
      name: "other tools", color: "#868e96",
      values: buckets.map((b) => Object.entries(b.counts || {}).filter(([k]) => !top.includes(k)).reduce((a, [, v]) => a + v, 0)),
    });
  }
  const hourly = bucket === "hour";
  const labels = buckets.map((b) => (hourly ? fmtHour(b.start_ms) : fmtUtcDay(b.start_ms)));
  const full = buckets.map((b) => (hourly ? fmtTimeShort(b.start_ms) : fmtUtcDay(b.start_ms, true)));
  return [
    section("Tool calls over time",
      columnChart({
        title: `Tool calls per ${bucket}`, labels, fullLabels: full, series, integer: true, fmt: fmtInt, unit: "calls",
        xTitle: hourly ? "hour (your time)" : "day (UTC)", yTitle: "tool calls",
      })),
    section("Tools",
      h("div", { class: "chart-grid" },
        hbarChart({
          title: "Calls by tool", labels: totals.slice(0, 20).map((x) => x.name), yTitle: "tool", xTitle: "calls", unit: "calls",
          integer: true, fmt: fmtInt, series: [{ name: "calls", values: totals.slice(0, 20).map((x) => x.count) }],
        }),
        table({
          caption: "Calls by tool", rows: totals, empty: "No tool calls in this range.",
          columns: [{ label: "Tool", cell: (x) => h("code", null, x.name) }, { label: "Calls", num: true, cell: (x) => fmtInt(x.count) }],
        }))),
    section("Per session",
      table({
        caption: "Tool calls per session", rows: t.by_session || [], empty: "No session used tools in this range.",
        columns: [
          { label: "Session", cell: (x) => h("a", { href: ctx.link(`logs/sessions/${encodeURIComponent(x.session_id)}`) }, h("code", null, x.session_id)) },
          { label: "Who", cell: (x) => x.who || "—" },
          { label: "Calls", num: true, cell: (x) => fmtInt((x.tools || []).reduce((a, y) => a + y.count, 0)) },
          { label: "Tools", cell: (x) => chips((x.tools || []).map((y) => `${y.name} ×${y.count}`)) },
        ],
      })),
  ];
}

export function render(ctx) {
  const q = ctx.query;
  const r = rangeFrom(q);
  const bucket = q.get("bucket") || (r.span && r.span <= 2 * 86400e3 ? "hour" : "day");
  const login = ctx.isAdmin ? q.get("login") || undefined : undefined;
  const body = h("div");
  const fields = ["range"];
  if (ctx.isAdmin) fields.push("login");
  fields.push({ name: "bucket", label: "Per", options: [["day", "day"], ["hour", "hour"]], default: bucket });
  const root = h("div", null,
    pageHeader("Tool use"),
    filterForm({ fields, query: q, onApply: (nq) => ctx.navigate("tools", nq) }),
    body);
  fill(body, api("/api/tools", { query: { since_ms: r.since_ms, until_ms: r.until_ms, login, bucket } }), (t) => build(t, bucket, ctx), "tool use");
  return root;
}
