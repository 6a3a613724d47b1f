// Tables shared by several pages: sessions and request records.

import { h } from "./dom.js";
import { fmtDuration, fmtInt, fmtCompact, fmtUsd, whoOf } from "./format.js";
import { chips, fewChips, table, timeEl } from "./widgets.js";

export const KIND_LABELS = {
  claude_code: "Claude Code",
  codex: "Codex",
  fingerprint: "conversation",
  single: "single request",
};

function statusCell(status, errorClass) {
  const ok = status >= 200 && status < 400;
  return h("span", { class: `status ${ok ? "ok" : "bad"}`, title: errorClass || null }, String(status), errorClass ? ` ${errorClass}` : "");
}

function tokensCell(r) {
  return h("span", { title: `input ${fmtInt(r.input_tokens)} · output ${fmtInt(r.output_tokens)} · cache read ${fmtInt(r.cache_read_tokens)} · cache write ${fmtInt(r.cache_write_tokens)} · reasoning ${fmtInt(r.reasoning_tokens)}` },
    `${fmtCompact(r.input_tokens)} / ${fmtCompact(r.output_tokens)}`);
}

function costCell(c) {
  return c === null || c === undefined ? h("span", { class: "muted", title: "the price of this model is unknown" }, "unpriced") : fmtUsd(c);
}

export function sessionsTable(rows, link, caption = "Sessions") {
  return table({
    caption,
    rows,
    empty: "No sessions in this range.",
    columns: [
      { label: "Last activity", cell: (s) => h("a", { href: link(`logs/sessions/${encodeURIComponent(s.id)}`), class: "row-link" }, timeEl(s.last_ms)) },
      { label: "Who", cell: (s) => whoOf(s) },
      { label: "Client", cell: (s) => KIND_LABELS[s.kind] || s.kind },
      {
        label: "Requests", num: true,
        cell: (s) => [fmtInt(s.requests), s.errors ? h("div", { class: "status bad small" }, `${fmtInt(s.errors)} error${s.errors === 1 ? "" : "s"}`) : null],
      },
      { label: "Models", cell: (s) => fewChips(s.models || [], 2) },
      { label: "Tokens in / out", num: true, cell: tokensCell },
      { label: "Cost", num: true, cell: (s) => costCell(s.cost_usd) },
      { label: "Duration", num: true, cell: (s) => fmtDuration(s.duration_ms) },
      { label: "Tools", wide: true, cell: (s) => fewChips((s.tools || []).map((t) => `${t.name} ×${t.count}`), 2) },
    ],
  });
}

export function recordsTable(rows, link, { caption = "Requests", withWho = true, withCost = false, withTools = false, session } = {}) {
  const cols = [
    { label: "Time", cell: (r) => h("a", { href: link(`logs/requests/${encodeURIComponent(r.request_id || r.id)}`, session ? { session } : null), class: "row-link" }, timeEl(r.ts_ms)) },
  ];
  if (withWho) cols.push({ label: "Who", cell: (r) => whoOf(r) });
  cols.push(
    { label: "Model", cell: (r) => r.requested_model || "—" },
    { label: "Provider", cell: (r) => r.provider || "—" },
    { label: "Status", cell: (r) => statusCell(r.status, r.error_class) },
    { label: "Tokens in / out", num: true, cell: tokensCell },
  );
  if (withCost) cols.push({ label: "Cost", num: true, cell: (r) => costCell(r.cost_usd) });
  cols.push(
    { label: "Duration", num: true, cell: (r) => fmtDuration(r.duration_ms) },
    { label: "Streamed", cell: (r) => (r.streaming ? "yes" : "no") },
  );
  if (withTools) cols.push({ label: "Tool calls", cell: (r) => chips((r.tool_calls || []).map((t) => t.name)) });
  return table({ caption, rows, columns: cols, empty: "No requests in this range." });
}
