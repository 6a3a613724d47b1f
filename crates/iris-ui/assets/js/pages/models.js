// Models: what the caller may use, with provider, compatibility and prices, and a Test button
// that sends a minimal request through iris as the caller.

import { api } from "../api.js";
import { h, put } from "../dom.js";
import { fmtDuration, fmtPrice } from "../format.js";
import { chips, errorBox, pageHeader, section, table } from "../widgets.js";

function testButton(model) {
  const result = h("span", { class: "test-result", "aria-live": "polite" });
  const btn = h("button", { type: "button", "aria-label": `Test ${model}` }, "Test");
  btn.addEventListener("click", async () => {
    btn.disabled = true;
    put(result, h("span", { class: "muted" }, "Testing…"));
    try {
      const r = await api("/api/models/test", { method: "POST", body: { model } });
      if (r.ok) {
        put(result, h("span", { class: "status ok" }, `OK · ${r.status} · ${fmtDuration(r.latency_ms)}`),
          r.text ? h("span", { class: "test-text" }, ` “${r.text.length > 80 ? `${r.text.slice(0, 79)}…` : r.text}”`) : null);
      } else {
        put(result, h("span", { class: "status bad" }, `Failed · ${r.status || "no status"} · ${fmtDuration(r.latency_ms)}`),
          r.error ? h("span", { class: "test-text" }, ` ${r.error}`) : null);
      }
    } catch (e) {
      put(result, errorBox(e, `Testing ${model}`));
    }
    btn.disabled = false;
  });
  return h("span", { class: "test-cell" }, btn, result);
}

function priceCell(p, field) {
  if (!p) return h("span", { class: "muted", title: "no price known for this model" }, "—");
  return h("span", { title: p.source ? `source: ${p.source}${p.as_of ? `, as of ${p.as_of}` : ""}` : null }, fmtPrice(p[field]));
}

export async function render() {
  const [models, providers, prices] = await Promise.allSettled([api("/api/models"), api("/api/providers"), api("/api/prices")]);
  const errors = [];
  if (models.status === "rejected") errors.push(errorBox(models.reason, "Loading models"));
  if (providers.status === "rejected") errors.push(errorBox(providers.reason, "Loading providers"));
  if (prices.status === "rejected") errors.push(errorBox(prices.reason, "Loading prices"));
  const provList = providers.status === "fulfilled" && Array.isArray(providers.value) ? providers.value : [];
  const provName = new Map(provList.map((p) => [p.id, p.name || p.id]));
  const priceMap = new Map(
    (prices.status === "fulfilled" ? prices.value.models || [] : []).map((p) => [`${p.provider}/${p.model}`, p]));
  const rows = models.status === "fulfilled" ? models.value.models || [] : [];
  return h("div", null,
    pageHeader("Models"),
    errors,
    section("Models you may use",
      h("p", { class: "muted" }, "Prices are US dollars per million tokens. “—” means iris knows no price for the model; its requests show as unpriced."),
      table({
        caption: "Models",
        rows,
        empty: "No model is granted to you.",
        columns: [
          { label: "Model", cell: (m) => h("code", null, m.qualified || `${m.provider}/${m.id}`) },
          { label: "Provider", cell: (m) => provName.get(m.provider) || m.provider },
          { label: "Compatibility", cell: (m) => chips(m.compatibility || []) },
          { label: "Input", num: true, cell: (m) => priceCell(priceMap.get(m.qualified || `${m.provider}/${m.id}`), "input_per_mtok") },
          { label: "Output", num: true, cell: (m) => priceCell(priceMap.get(m.qualified || `${m.provider}/${m.id}`), "output_per_mtok") },
          { label: "Cache read", num: true, cell: (m) => priceCell(priceMap.get(m.qualified || `${m.provider}/${m.id}`), "cache_read_per_mtok") },
          { label: "Cache write", num: true, cell: (m) => priceCell(priceMap.get(m.qualified || `${m.provider}/${m.id}`), "cache_write_per_mtok") },
          { label: "Test", cell: (m) => testButton(m.qualified || `${m.provider}/${m.id}`) },
        ],
      })),
    section("Providers", providersList(provList)));
}

export function providersList(list) {
  if (!list.length) return h("p", { class: "empty-note" }, "No providers.");
  return h("div", { class: "providers" }, list.map((p) =>
    h("article", { class: "provider", "aria-label": `Provider ${p.id}` },
      h("h3", null, p.name || p.id, p.name && p.name !== p.id ? h("span", { class: "muted" }, ` (${p.id})`) : null),
      p.description ? h("p", null, p.description) : null,
      h("p", null, "Models: ", chips(p.models || [])),
      h("p", null, "Compatibility: ", chips(Object.entries(p.compatibility || {}).filter(([, v]) => v).map(([k]) => k))))));
}
