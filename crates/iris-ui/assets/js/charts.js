// Small SVG charts. Every chart has both axes, tick labels, axis titles with units, a legend,
// and a <title> on each bar (hover shows the value). Drawn in a fixed viewBox and scaled by CSS.

import { h, s } from "./dom.js";
import { fmtCompact } from "./format.js";

/** Colour-blind-friendly series colours. */
export const PALETTE = ["#3b5bdb", "#f08c00", "#0ca678", "#d6336c", "#1098ad", "#7048e8", "#74b816", "#868e96"];

const CHAR_W = 7.2; // estimated width of one 13px character
const W = 640;

function num(v) {
  return typeof v === "number" && Number.isFinite(v) && v > 0 ? v : 0;
}

/** Round tick values from 0 to at least max: steps of 1, 2, 2.5 or 5 times a power of ten. */
export function niceTicks(max, count = 5, integer = false) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  let step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
  if (integer) step = Math.max(1, Math.ceil(step));
  const ticks = [0];
  while (ticks[ticks.length - 1] < max - step * 1e-9) {
    ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  }
  return ticks;
}

function truncate(label, maxChars) {
  const t = String(label);
  return t.length > maxChars ? `${t.slice(0, Math.max(1, maxChars - 1))}…` : t;
}

function withColors(series) {
  return series.map((se, i) => ({ ...se, color: se.color || PALETTE[i % PALETTE.length] }));
}

/** Lays the legend out in rows from x0; returns the SVG group and its height. */
function legend(series, x0, width) {
  const items = [];
  let x = x0;
  let row = 0;
  for (const se of series) {
    const w = 18 + se.name.length * CHAR_W + 18;
    if (x + w > x0 + width && x > x0) {
      row += 1;
      x = x0;
    }
    const y = 10 + row * 18;
    items.push(
      s("g", { class: "legend-item" },
        s("rect", { x, y: y - 5, width: 12, height: 12, rx: 2, fill: se.color }),
        s("text", { x: x + 17, y: y + 1, "dominant-baseline": "middle" }, se.name)),
    );
    x += w;
  }
  return { node: s("g", { class: "legend", "aria-label": "Legend" }, items), height: (row + 1) * 18 + 4 };
}

function frame(title, desc, width, height, parts, note) {
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${title}. ${desc}`,
    preserveAspectRatio: "xMinYMin meet",
  }, s("title", null, title), s("desc", null, desc), parts);
  return h("figure", { class: "chart" }, h("figcaption", null, title), svg, note ? h("p", { class: "chart-note" }, note) : null);
}

/**
 * Vertical bars over categories (usually time buckets).
 * o = {title, labels, fullLabels?, series:[{name, values}], stacked?, xTitle, yTitle, fmt?, integer?, unit?, height?}
 */
export function columnChart(o) {
  const fmt = o.fmt || fmtCompact;
  const series = withColors(o.series);
  const stacked = o.stacked !== false;
  const n = o.labels.length;
  const H0 = o.height || 280;
  const lg = legend(series, 70, W - 86);
  const m = { l: 70, r: 16, t: lg.height + 14, b: 52 };
  const H = H0 + lg.height;
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const totals = o.labels.map((_, i) =>
    stacked ? series.reduce((a, se) => a + num(se.values[i]), 0) : Math.max(0, ...series.map((se) => num(se.values[i]))));
  const max = Math.max(0, ...totals);
  const ticks = niceTicks(max, 5, o.integer);
  const top = ticks[ticks.length - 1];
  const y = (v) => m.t + ph - (v / top) * ph;
  const parts = [lg.node];
  for (const t of ticks) {
    parts.push(s("line", { class: "grid", x1: m.l, x2: m.l + pw, y1: y(t), y2: y(t) }));
    parts.push(s("text", { class: "tick", x: m.l - 8, y: y(t), "text-anchor": "end", "dominant-baseline": "middle" }, fmt(t)));
  }
  const band = n ? pw / n : pw;
  const gap = Math.min(band * 0.25, 12);
  const bars = [];
  for (let i = 0; i < n; i++) {
    const label = (o.fullLabels && o.fullLabels[i]) || o.labels[i];
    if (stacked) {
      let acc = 0;
      for (const se of series) {
        const v = num(se.values[i]);
        if (!v) continue;
        bars.push(s("rect", {
          class: "bar", x: m.l + i * band + gap / 2, width: Math.max(1, band - gap),
          y: y(acc + v), height: Math.max(0.5, y(acc) - y(acc + v)), fill: se.color,
        }, s("title", null, `${label} · ${se.name}: ${fmt(v)}${o.unit ? ` ${o.unit}` : ""}`)));
        acc += v;
      }
    } else {
      const bw = Math.max(1, (band - gap) / series.length);
      series.forEach((se, j) => {
        const v = num(se.values[i]);
        if (!v) return;
        bars.push(s("rect", {
          class: "bar", x: m.l + i * band + gap / 2 + j * bw, width: bw, y: y(v), height: Math.max(0.5, y(0) - y(v)), fill: se.color,
        }, s("title", null, `${label} · ${se.name}: ${fmt(v)}${o.unit ? ` ${o.unit}` : ""}`)));
      });
    }
  }
  parts.push(s("g", { class: "bars" }, bars));
  parts.push(s("line", { class: "axis", x1: m.l, x2: m.l + pw, y1: y(0), y2: y(0) }));
  parts.push(s("line", { class: "axis", x1: m.l, x2: m.l, y1: m.t, y2: y(0) }));
  const every = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(pw / 64))));
  for (let i = 0; i < n; i += every) {
    const x = m.l + i * band + band / 2;
    parts.push(s("line", { class: "axis", x1: x, x2: x, y1: y(0), y2: y(0) + 4 }));
    parts.push(s("text", { class: "tick", x, y: y(0) + 17, "text-anchor": "middle" }, truncate(o.labels[i], 12)));
  }
  parts.push(s("text", { class: "axis-title", x: m.l + pw / 2, y: H - 10, "text-anchor": "middle" }, o.xTitle));
  parts.push(s("text", { class: "axis-title", transform: `translate(16 ${m.t + ph / 2}) rotate(-90)`, "text-anchor": "middle" }, o.yTitle));
  if (!max) {
    parts.push(s("text", { class: "empty", x: m.l + pw / 2, y: m.t + ph / 2, "text-anchor": "middle" }, "No data in this range"));
  }
  const desc = `${o.yTitle} by ${o.xTitle}; ${n} bars; largest ${fmt(max)}${o.unit ? ` ${o.unit}` : ""}; series ${series.map((x) => x.name).join(", ")}`;
  return frame(o.title, desc, W, H, parts, o.note);
}

/**
 * Horizontal bars, one row per category (models, users, tools).
 * o = {title, labels, series:[{name, values}], stacked?, xTitle, yTitle, fmt?, integer?, unit?,
 *      missing? (text for a row whose values are all null, e.g. "unpriced")}
 */
export function hbarChart(o) {
  const fmt = o.fmt || fmtCompact;
  const series = withColors(o.series);
  const stacked = o.stacked !== false;
  const n = o.labels.length;
  const maxChars = 28;
  const labelW = Math.min(maxChars, Math.max(4, ...o.labels.map((l) => String(l).length))) * CHAR_W;
  const lg = legend(series, 30, W - 46);
  const m = { l: 30 + labelW + 10, r: 56, t: lg.height + 10, b: 46 };
  const rowH = 26;
  const ph = Math.max(1, n) * rowH;
  const H = m.t + ph + m.b;
  const pw = W - m.l - m.r;
  const totals = o.labels.map((_, i) =>
    stacked ? series.reduce((a, se) => a + num(se.values[i]), 0) : Math.max(0, ...series.map((se) => num(se.values[i]))));
  const max = Math.max(0, ...totals);
  const ticks = niceTicks(max, 5, o.integer);
  const top = ticks[ticks.length - 1];
  const x = (v) => m.l + (v / top) * pw;
  const parts = [lg.node];
  for (const t of ticks) {
    parts.push(s("line", { class: "grid", x1: x(t), x2: x(t), y1: m.t, y2: m.t + ph }));
    parts.push(s("text", { class: "tick", x: x(t), y: m.t + ph + 16, "text-anchor": "middle" }, fmt(t)));
  }
  const bars = [];
  for (let i = 0; i < n; i++) {
    const y0 = m.t + i * rowH;
    const full = String(o.labels[i]);
    parts.push(s("text", { class: "tick", x: m.l - 8, y: y0 + rowH / 2, "text-anchor": "end", "dominant-baseline": "middle" },
      s("title", null, full), truncate(full, maxChars)));
    const bh = rowH - 8;
    if (stacked) {
      let acc = 0;
      for (const se of series) {
        const v = num(se.values[i]);
        if (!v) continue;
        bars.push(s("rect", { class: "bar", x: x(acc), width: Math.max(0.5, x(acc + v) - x(acc)), y: y0 + 4, height: bh, fill: se.color },
          s("title", null, `${full} · ${se.name}: ${fmt(v)}${o.unit ? ` ${o.unit}` : ""}`)));
        acc += v;
      }
    } else {
      const each = bh / series.length;
      series.forEach((se, j) => {
        const v = num(se.values[i]);
        if (!v) return;
        bars.push(s("rect", { class: "bar", x: x(0), width: Math.max(0.5, x(v) - x(0)), y: y0 + 4 + j * each, height: each, fill: se.color },
          s("title", null, `${full} · ${se.name}: ${fmt(v)}${o.unit ? ` ${o.unit}` : ""}`)));
      });
    }
    if (totals[i] > 0) {
      parts.push(s("text", { class: "value", x: x(totals[i]) + 4, y: y0 + rowH / 2, "dominant-baseline": "middle" }, fmt(totals[i])));
    } else if (o.missing && series.every((se) => se.values[i] === null || se.values[i] === undefined)) {
      parts.push(s("text", { class: "value missing", x: x(0) + 4, y: y0 + rowH / 2, "dominant-baseline": "middle" }, o.missing));
    }
  }
  parts.push(s("g", { class: "bars" }, bars));
  parts.push(s("line", { class: "axis", x1: m.l, x2: m.l, y1: m.t, y2: m.t + ph }));
  parts.push(s("line", { class: "axis", x1: m.l, x2: m.l + pw, y1: m.t + ph, y2: m.t + ph }));
  parts.push(s("text", { class: "axis-title", x: m.l + pw / 2, y: H - 8, "text-anchor": "middle" }, o.xTitle));
  parts.push(s("text", { class: "axis-title", transform: `translate(14 ${m.t + ph / 2}) rotate(-90)`, "text-anchor": "middle" }, o.yTitle));
  if (!max) {
    parts.push(s("text", { class: "empty", x: m.l + pw / 2, y: m.t + ph / 2, "text-anchor": "middle", "dominant-baseline": "middle" }, "No data in this range"));
  }
  const desc = `${o.xTitle} per ${o.yTitle}; ${n} rows; largest ${fmt(max)}${o.unit ? ` ${o.unit}` : ""}; series ${series.map((v) => v.name).join(", ")}`;
  return frame(o.title, desc, W, H, parts, o.note);
}
