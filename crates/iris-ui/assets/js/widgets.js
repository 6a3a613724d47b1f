// Pieces every page uses: error boxes, cards, tables, filters, pagers.

import { h, put } from "./dom.js";
import { fmtTime, fmtTimeCompact, fmtTimeShort, timeZone } from "./format.js";

/** Shows an API (or any) error with the API's own message. */
export function errorBox(err, context) {
  const status = err && err.status ? ` (HTTP ${err.status}${err.code ? `, ${err.code}` : ""})` : "";
  return h("div", { class: "error", role: "alert" },
    h("strong", null, context ? `${context} failed${status}: ` : `Error${status}: `),
    h("span", { class: "error-message" }, err && err.message ? err.message : String(err)));
}

export function loading(what = "Loading") {
  return h("p", { class: "loading", role: "status" }, `${what}…`);
}

export function pageHeader(title, ...extra) {
  return h("div", { class: "page-header" }, h("h1", { tabindex: "-1" }, title), extra);
}

export function section(title, ...children) {
  return h("section", { class: "panel", "aria-label": title }, h("h2", null, title), children);
}

export function card(label, value, sub) {
  const small = typeof value === "string" && value.length > 14;
  return h("div", { class: "card" },
    h("div", { class: "card-label" }, label),
    h("div", { class: small ? "card-value small" : "card-value" }, value),
    sub ? h("div", { class: "card-sub" }, sub) : null);
}

export function chips(items) {
  return h("span", { class: "chips" }, items.map((t) => h("span", { class: "chip" }, t)));
}

/**
 * A time in the viewer's zone, the full date and zone in the tooltip. style: "compact"
 * (seconds, the year only when it is not this year), "minutes" (no seconds) or "full".
 */
export function timeEl(ms, style = "compact") {
  if (typeof ms !== "number") return "—";
  const iso = new Date(ms).toISOString();
  const text = style === "full" ? fmtTime(ms) : style === "minutes" ? fmtTimeShort(ms) : fmtTimeCompact(ms);
  return h("time", { datetime: iso, title: `${fmtTime(ms)} (${timeZone})` }, text);
}

/** At most n chips, then "+k more" (all of them in the tooltip). */
export function fewChips(items, n = 3) {
  if (items.length <= n) return chips(items);
  return h("span", { title: items.join(", ") }, chips(items.slice(0, n)), h("span", { class: "muted more" }, ` +${items.length - n} more`));
}

/**
 * A table. columns: [{label, cell: (row) => node|string, num?: bool}]; caption for screen readers.
 */
export function table({ columns, rows, empty = "Nothing to show.", caption, rowClass }) {
  if (!rows.length) return h("p", { class: "empty-note" }, empty);
  return h("div", { class: "table-wrap" },
    h("table", null,
      caption ? h("caption", { class: "visually-hidden" }, caption) : null,
      h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
      h("tbody", null, rows.map((r) =>
        h("tr", { class: rowClass ? rowClass(r) : null },
          columns.map((c) => h("td", { class: c.num ? "num" : c.wide ? "wide" : null }, c.cell(r))))))));
}

/** Pre-formatted text, pretty-printed when it is JSON. */
export function codeBlock(text, label) {
  let shown = text;
  let kind = "text";
  if (typeof text === "string") {
    const t = text.trim();
    if (t.startsWith("{") || t.startsWith("[")) {
      try {
        shown = JSON.stringify(JSON.parse(t), null, 2);
        kind = "json";
      } catch {
        shown = text;
      }
    }
  } else if (text !== null && text !== undefined) {
    shown = JSON.stringify(text, null, 2);
    kind = "json";
  }
  return h("pre", { class: `code ${kind}`, tabindex: "0", "aria-label": label || "code" }, shown);
}

// ---- time range filters --------------------------------------------------------------------

export const RANGES = [
  ["24h", "Last 24 hours", 24 * 3600e3],
  ["7d", "Last 7 days", 7 * 86400e3],
  ["30d", "Last 30 days", 30 * 86400e3],
  ["90d", "Last 90 days", 90 * 86400e3],
  ["all", "All time", null],
  ["custom", "Custom…", null],
];

/** since_ms/until_ms (and a label) from the route query: range=7d, or since=..&until=.. (ms). */
export function rangeFrom(query, fallback = "7d") {
  const r = query.get("range") || (query.get("since") ? "custom" : fallback);
  if (r === "custom") {
    const since = Number(query.get("since")) || undefined;
    const until = Number(query.get("until")) || undefined;
    return { range: r, since_ms: since, until_ms: until };
  }
  const def = RANGES.find((x) => x[0] === r) || RANGES.find((x) => x[0] === fallback);
  return { range: def[0], since_ms: def[2] ? Date.now() - def[2] : undefined, until_ms: undefined, span: def[2] };
}

function toLocalInput(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const p = (x) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

let uid = 0;
function id(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

/**
 * A filter form. fields: "range", "login", "model", "status", or {name, label, options:[[v,l]]}.
 * values: the current URLSearchParams. onApply(URLSearchParams) gets the new query.
 */
export function filterForm({ fields, query, onApply, datalists = {} }) {
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filters" });
  const controls = [];
  for (const f of fields) {
    if (f === "range") {
      const cur = rangeFrom(query);
      const sel = h("select", { id: id("range"), name: "range" },
        RANGES.map(([v, l]) => h("option", { value: v, selected: v === cur.range }, l)));
      const since = h("input", { type: "datetime-local", id: id("since"), name: "since", value: toLocalInput(cur.range === "custom" ? cur.since_ms : null) });
      const until = h("input", { type: "datetime-local", id: id("until"), name: "until", value: toLocalInput(cur.range === "custom" ? cur.until_ms : null) });
      const custom = h("span", { class: "custom-range", hidden: cur.range !== "custom" },
        h("label", { for: since.id }, "From"), since, h("label", { for: until.id }, "to"), until);
      sel.addEventListener("change", () => { custom.hidden = sel.value !== "custom"; });
      controls.push(h("span", { class: "field" }, h("label", { for: sel.id }, "Time range"), sel), custom);
    } else {
      const spec = typeof f === "string"
        ? { login: { name: "login", label: "User", placeholder: "alice@example.com or tag:ci" },
          model: { name: "model", label: "Model", placeholder: "any model" },
          status: { name: "status", label: "Status", placeholder: "e.g. 200", inputmode: "numeric" } }[f]
        : f;
      const fid = id(spec.name);
      let input;
      if (spec.options) {
        input = h("select", { id: fid, name: spec.name },
          spec.options.map(([v, l]) => h("option", { value: v, selected: (query.get(spec.name) || spec.default || "") === v }, l)));
      } else {
        const list = datalists[spec.name];
        input = h("input", {
          type: "text", id: fid, name: spec.name, value: query.get(spec.name) || "", placeholder: spec.placeholder,
          inputmode: spec.inputmode, list: list ? `${fid}-list` : null, autocomplete: "off",
        });
        if (list) controls.push(h("datalist", { id: `${fid}-list` }, list.map((v) => h("option", { value: v }))));
      }
      controls.push(h("span", { class: "field" }, h("label", { for: fid }, spec.label), input));
    }
  }
  controls.push(h("button", { type: "submit", class: "primary" }, "Apply"));
  form.append(...controls);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const q = new URLSearchParams();
    for (const [k, v] of data.entries()) {
      const val = String(v).trim();
      if (!val || k === "since" || k === "until") continue;
      q.set(k, val);
    }
    if (q.get("range") === "custom") {
      const since = Date.parse(String(data.get("since") || ""));
      const until = Date.parse(String(data.get("until") || ""));
      if (Number.isFinite(since)) q.set("since", String(since));
      if (Number.isFinite(until)) q.set("until", String(until));
    }
    onApply(q);
  });
  return form;
}

/**
 * Cursor paging over an API list: keeps the cursors of the pages before, so Previous works.
 * load(cursor) -> Promise<{rows, next_cursor}>; render(rows) -> node.
 */
export function pagedList({ load, render, label }) {
  const box = h("div", { class: "paged" });
  const body = h("div");
  const info = h("span", { class: "page-info", "aria-live": "polite" });
  const prev = h("button", { type: "button" }, "← Newer");
  const next = h("button", { type: "button" }, "Older →");
  const stack = [];
  let current = null;
  let nextCursor = null;
  async function show(cursor) {
    put(body, loading(label ? `Loading ${label}` : "Loading"));
    prev.disabled = true;
    next.disabled = true;
    try {
      const res = await load(cursor);
      current = cursor;
      nextCursor = res.next_cursor || null;
      put(body, render(res.rows));
      info.textContent = `Page ${stack.length + 1}${res.rows.length ? ` · ${res.rows.length} shown` : ""}`;
    } catch (e) {
      put(body, errorBox(e, label ? `Loading ${label}` : "Loading"));
    }
    prev.disabled = stack.length === 0;
    next.disabled = !nextCursor;
  }
  prev.addEventListener("click", () => { if (stack.length) show(stack.pop()); });
  next.addEventListener("click", () => { if (nextCursor) { stack.push(current); show(nextCursor); } });
  box.append(body, h("div", { class: "pager", role: "navigation", "aria-label": label ? `${label} pages` : "Pages" }, prev, info, next));
  show(null);
  return box;
}

/** Shows loading in el, then what build(data) returns, or the error with the API's message. */
export async function fill(el, promise, build, context) {
  put(el, loading(context ? `Loading ${context}` : "Loading"));
  try {
    const data = await promise;
    put(el, build(data));
  } catch (e) {
    put(el, errorBox(e, context ? `Loading ${context}` : "Loading"));
  }
}
