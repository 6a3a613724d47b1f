// Settings (admins): the HuJSON config in an editor with line numbers, Validate, Save (with the
// hash from the last load: a stale one gets 409), history with rollback, and a read-only
// structured view of providers and grants.

import { api } from "../api.js";
import { h, put } from "../dom.js";
import { parseHuJSON } from "../hujson.js";
import { fmtBytes } from "../format.js";
import { chips, errorBox, fill, pageHeader, section, table, timeEl } from "../widgets.js";
import { providersList } from "./models.js";

const CAP = "tailscale.com/cap/aperture";

function problemList(problems) {
  if (!problems || !problems.length) return null;
  return h("ul", { class: "problems", "aria-label": "Problems" }, problems.map((p) =>
    h("li", { class: `problem ${p.severity}` },
      h("span", { class: `severity ${p.severity}` }, p.severity),
      " ",
      h("code", { class: "path" }, p.path || "(top level)"),
      " ",
      h("span", { class: "message" }, p.message))));
}

/** The grants of a config text, for display; null when the text does not parse. */
function grantsOf(text) {
  let cfg;
  try {
    cfg = parseHuJSON(text);
  } catch (e) {
    return { error: e.message };
  }
  const out = [];
  const list = cfg && Array.isArray(cfg.grants) ? cfg.grants : [];
  list.forEach((g, i) => {
    const caps = g && g.app && Array.isArray(g.app[CAP]) ? g.app[CAP] : [];
    const role = caps.map((c) => c && c.role).filter(Boolean);
    const models = caps.map((c) => c && c.models).filter(Boolean);
    const other = [...new Set(caps.flatMap((c) => (c && typeof c === "object" ? Object.keys(c) : [])).filter((k) => k !== "role" && k !== "models"))];
    const otherApps = g && g.app ? Object.keys(g.app).filter((k) => k !== CAP) : [];
    out.push({ index: i, src: Array.isArray(g && g.src) ? g.src : [], role, models, other: [...other, ...otherApps] });
  });
  return { grants: out, providers: cfg && cfg.providers && typeof cfg.providers === "object" ? Object.keys(cfg.providers) : [] };
}

function grantsTable(text) {
  const g = grantsOf(text);
  if (g.error) return h("p", { class: "warn" }, `The text does not parse as HuJSON, so the grants cannot be shown: ${g.error}`);
  return table({
    caption: "Grants in the config",
    rows: g.grants,
    empty: "The config has no grants: nobody has a role.",
    columns: [
      { label: "#", num: true, cell: (x) => `grants[${x.index}]` },
      { label: "src", cell: (x) => chips(x.src) },
      { label: "Role", cell: (x) => (x.role.length ? chips(x.role) : h("span", { class: "muted" }, "none")) },
      { label: "Models", cell: (x) => (x.models.length ? chips(x.models) : h("span", { class: "muted" }, "—")) },
      { label: "Other", cell: (x) => (x.other.length ? chips(x.other) : "") },
    ],
  });
}

function matchedGrants(whoami) {
  return table({
    caption: "Grants that match you",
    rows: whoami.grants || [],
    empty: "No grant matches you.",
    columns: [
      { label: "From", cell: (g) => (g.source && g.source.kind === "tailnet" ? "tailnet policy" : g.source ? `${g.source.kind === "config_temp" ? "temp_grants" : "grants"}[${g.source.index}]` : "—") },
      { label: "Matched src", cell: (g) => h("code", null, g.src) },
      { label: "Role", cell: (g) => g.role || "—" },
      { label: "Models", cell: (g) => chips(g.models || []) },
    ],
  });
}

function editor() {
  const gutter = h("pre", { class: "gutter", "aria-hidden": "true" });
  const ta = h("textarea", {
    id: "config-text", class: "config-text", spellcheck: "false", wrap: "off", autocapitalize: "off", autocomplete: "off",
    "aria-describedby": "config-help",
  });
  let lines = 0;
  const sync = () => {
    const n = ta.value.split("\n").length;
    if (n !== lines) {
      lines = n;
      gutter.textContent = Array.from({ length: n }, (_, i) => String(i + 1)).join("\n");
    }
    gutter.scrollTop = ta.scrollTop;
  };
  ta.addEventListener("input", sync);
  ta.addEventListener("scroll", () => { gutter.scrollTop = ta.scrollTop; });
  const wrap = h("div", { class: "editor" }, gutter, ta);
  return { wrap, ta, set: (text) => { ta.value = text; sync(); } };
}

export function render(ctx) {
  const ed = editor();
  const meta = h("p", { class: "muted", id: "config-meta" });
  const messages = h("div", { class: "messages", "aria-live": "polite" });
  const grantsBox = h("div");
  const historyBox = h("div");
  const providersBox = h("div");
  const validate = h("button", { type: "button" }, "Validate");
  const save = h("button", { type: "button", class: "primary" }, "Save");
  const reload = h("button", { type: "button" }, "Reload");
  const dirty = h("span", { class: "dirty", hidden: true }, "unsaved changes");
  let loaded = { text: "", hash: "" };
  let reloadArmed = false;

  const setDirty = () => { dirty.hidden = ed.ta.value === loaded.text; };
  ed.ta.addEventListener("input", setDirty);

  function say(kind, ...content) {
    put(messages, h("div", { class: `message ${kind}`, role: kind === "ok" ? "status" : "alert" }, content));
  }

  async function load() {
    put(messages);
    try {
      const c = await api("/api/config");
      loaded = { text: c.config, hash: c.hash };
      ed.set(c.config);
      setDirty();
      put(meta, c.exists ? "Loaded from the config file" : "No config file yet: this is the built-in default",
        ` · ${fmtBytes(c.config.length)} · hash `, h("code", null, c.hash.slice(0, 12)));
      put(grantsBox, grantsTable(c.config));
    } catch (e) {
      say("error", errorBox(e, "Loading the config"));
    }
    reloadArmed = false;
    reload.textContent = "Reload";
  }

  function loadHistory() {
    fill(historyBox, api("/api/config/history"), (hist) => table({
      caption: "Saved versions",
      rows: hist.versions || [],
      empty: "No saved versions yet.",
      columns: [
        { label: "Version", num: true, cell: (v) => String(v.id) },
        { label: "Saved", cell: (v) => timeEl(v.saved_at_ms) },
        { label: "By", cell: (v) => v.saved_by || "—" },
        { label: "Source", cell: (v) => v.source || "—" },
        { label: "Size", num: true, cell: (v) => fmtBytes(v.bytes) },
        { label: "Hash", cell: (v) => h("code", null, (v.hash || "").slice(0, 12)) },
        {
          label: "", cell: (v) => (v.hash === loaded.hash ? h("span", { class: "muted" }, "current")
            : h("button", { type: "button", "aria-label": `Roll back to version ${v.id}`, onclick: () => rollback(v.id) }, "Roll back")),
        },
      ],
    }), "history");
  }

  /** Shows the outcome of a save or rollback: the API's message, problems, 409, lockout. */
  function saveFailed(e, what) {
    if (e.status === 409 || e.code === "conflict") {
      say("error", h("strong", null, `${what} refused: the config changed since you loaded it. `),
        h("span", { class: "error-message" }, e.message),
        h("p", null, "Reload to get the current version (your edits here will be replaced), then make your change again."));
    } else if (e.code === "admin_lockout") {
      say("error", h("strong", null, `${what} refused: it would take your own admin role away. `),
        h("span", { class: "error-message" }, e.message));
    } else if (e.code === "invalid_config" || (e.status === 400 && e.detail.problems)) {
      const problems = e.detail.problems || [];
      say("error", h("strong", null, `${what} refused (saving treats warnings as errors): `),
        h("span", { class: "error-message" }, `${problems.length} problem(s)`), problemList(problems));
    } else {
      say("error", errorBox(e, what));
    }
  }

  async function saved(res, what) {
    await load();
    say("ok", `${what}: the new config is live (hash `, h("code", null, String(res.hash || "").slice(0, 12)), ").");
    loadHistory();
  }

  async function rollback(id) {
    try {
      const res = await api("/api/config/rollback", { method: "POST", body: { id, hash: loaded.hash } });
      await saved(res, `Rolled back to version ${id}`);
    } catch (e) {
      saveFailed(e, "Rollback");
    }
  }

  validate.addEventListener("click", async () => {
    validate.disabled = true;
    try {
      const res = await api("/api/config/validate", { method: "POST", body: { config: ed.ta.value } });
      const problems = res.problems || [];
      if (res.valid && !problems.length) say("ok", "Valid: no problems.");
      else if (res.valid) say("warn", `Valid, with ${problems.length} warning(s) (Save treats warnings as errors):`, problemList(problems));
      else say("error", h("strong", null, `Not valid: ${problems.length} problem(s)`), problemList(problems));
      put(grantsBox, grantsTable(ed.ta.value));
    } catch (e) {
      say("error", errorBox(e, "Validation"));
    }
    validate.disabled = false;
  });

  save.addEventListener("click", async () => {
    save.disabled = true;
    try {
      const res = await api("/api/config", { method: "PUT", body: { config: ed.ta.value, hash: loaded.hash } });
      await saved(res, "Saved");
    } catch (e) {
      saveFailed(e, "Save");
    }
    save.disabled = false;
  });

  reload.addEventListener("click", () => {
    if (ed.ta.value !== loaded.text && !reloadArmed) {
      reloadArmed = true;
      reload.textContent = "Discard my edits and reload";
      return;
    }
    load();
  });

  fill(providersBox, api("/api/providers"), (list) => providersList(Array.isArray(list) ? list : []), "providers");
  load().then(loadHistory);

  return h("div", null,
    pageHeader("Settings"),
    section("Configuration",
      h("label", { for: "config-text", class: "label-block" }, "Config (HuJSON: JSON with comments and trailing commas)"),
      h("p", { id: "config-help", class: "muted" }, "Validate checks without saving. Save needs the text you loaded to still be current, and refuses warnings, an empty config, and any change that would take your own admin role away."),
      meta,
      ed.wrap,
      h("div", { class: "toolbar" }, validate, save, reload, dirty),
      messages),
    section("Grants (read-only view of the text above)", grantsBox),
    section("Grants that match you", matchedGrants(ctx.whoami)),
    section("Providers (running config)", providersBox),
    section("History", historyBox));
}
