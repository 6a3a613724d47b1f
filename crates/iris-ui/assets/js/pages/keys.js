// Keys: iris-issued API keys. Admins see and manage every key; users their own. A new key's
// token is shown once, with a copy button, and is gone when the panel is closed.

import { api } from "../api.js";
import { h, put } from "../dom.js";
import { fmtTime, whoOf } from "../format.js";
import { errorBox, fill, pageHeader, section, table, timeEl } from "../widgets.js";

const EXPIRIES = [["", "never"], ["1d", "1 day"], ["7d", "7 days"], ["30d", "30 days"], ["90d", "90 days"], ["365d", "1 year"]];

function status(k, now) {
  if (k.revoked_ms) return h("span", { class: "status bad" }, "revoked");
  if (k.expires_ms && k.expires_ms <= now) return h("span", { class: "status bad" }, "expired");
  return h("span", { class: "status ok" }, "active");
}

async function copy(text, input) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // fall through to the selection copy
  }
  input.focus();
  input.select();
  try {
    return document.execCommand("copy");
  } catch {
    return false;
  }
}

function tokenPanel(created, onDone) {
  const input = h("input", { type: "text", readOnly: true, value: created.token, id: "new-token", class: "token", "aria-describedby": "token-note" });
  const note = h("span", { class: "copy-note", "aria-live": "polite" });
  const copyBtn = h("button", { type: "button", class: "primary" }, "Copy");
  copyBtn.addEventListener("click", async () => {
    note.textContent = (await copy(created.token, input)) ? "Copied." : "Select the token and copy it (Ctrl+C).";
  });
  const done = h("button", { type: "button" }, "Done, hide the token");
  done.addEventListener("click", onDone);
  return h("div", { class: "token-panel", role: "region", "aria-label": "New key" },
    h("h3", null, `New key ${created.id} for ${created.for}`),
    h("p", { id: "token-note", class: "warn" }, "This is the only time the token is shown. Copy it now: iris stores only its hash."),
    h("div", { class: "token-row" }, h("label", { for: "new-token" }, "Token"), input, copyBtn, note),
    created.expires_ms ? h("p", { class: "muted" }, `Expires ${fmtTime(created.expires_ms)}.`) : h("p", { class: "muted" }, "Never expires."),
    h("p", null, "Use it as ", h("code", null, "Authorization: Bearer <token>"), " (or as the SDK's API key) with iris as the base URL."),
    done);
}

export function render(ctx) {
  const me = ctx.whoami.identity || {};
  const mine = whoOf(me);
  const created = h("div");
  const listBox = h("div");
  const formMsg = h("div", { "aria-live": "polite" });
  const forInput = ctx.isAdmin
    ? h("input", { type: "text", id: "key-for", name: "for", value: me.login || (me.tags || []).join(",") || "", placeholder: "alice@example.com or tag:ci", required: true })
    : h("input", { type: "text", id: "key-for", name: "for", value: mine, readOnly: true });
  const expires = h("select", { id: "key-expires", name: "expires" }, EXPIRIES.map(([v, l]) => h("option", { value: v, selected: v === "30d" }, l)));
  const noteInput = h("input", { type: "text", id: "key-note", name: "note", placeholder: "what it is for, e.g. CI runner" });
  const form = h("form", { class: "key-form", "aria-label": "Create a key" },
    h("span", { class: "field" }, h("label", { for: "key-for" }, "For"), forInput),
    h("span", { class: "field" }, h("label", { for: "key-expires" }, "Expires"), expires),
    h("span", { class: "field grow" }, h("label", { for: "key-note" }, "Note"), noteInput),
    h("button", { type: "submit", class: "primary" }, "Create key"));

  function loadList() {
    const now = Date.now();
    fill(listBox, api("/api/keys"), (res) => table({
      caption: "Keys",
      rows: (res.keys || []).slice().sort((a, b) => b.created_ms - a.created_ms),
      empty: "No keys yet.",
      rowClass: (k) => (k.revoked_ms ? "revoked" : null),
      columns: [
        { label: "ID", cell: (k) => h("code", null, k.id) },
        { label: "For", cell: (k) => whoOf(k) },
        { label: "Note", cell: (k) => k.note || "" },
        { label: "Created", cell: (k) => [timeEl(k.created_ms, "minutes"), k.created_by ? h("div", { class: "muted small" }, `by ${k.created_by}`) : null] },
        { label: "Expires", cell: (k) => (k.expires_ms ? timeEl(k.expires_ms, "minutes") : "never") },
        { label: "Last used", cell: (k) => (k.last_used_ms ? timeEl(k.last_used_ms, "minutes") : "never") },
        { label: "Status", cell: (k) => [status(k, now), k.revoked_ms ? null : h("div", null, revokeControl(k))] },
      ],
    }), "keys");
  }

  function revokeControl(k) {
    const box = h("span", { class: "revoke" });
    const ask = h("button", { type: "button", class: "danger", "aria-label": `Revoke ${k.id}` }, "Revoke");
    ask.addEventListener("click", () => {
      const yes = h("button", { type: "button", class: "danger", "aria-label": `Confirm revoking ${k.id}` }, `Revoke ${k.id}`);
      const no = h("button", { type: "button" }, "Cancel");
      no.addEventListener("click", () => put(box, ask));
      yes.addEventListener("click", async () => {
        yes.disabled = true;
        try {
          await api(`/api/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
          loadList();
        } catch (e) {
          put(box, errorBox(e, `Revoking ${k.id}`));
        }
      });
      put(box, h("span", null, "Sure? "), yes, " ", no);
      yes.focus();
    });
    return put(box, ask);
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    put(formMsg);
    const body = { for: forInput.value.trim(), expires: expires.value || null, note: noteInput.value.trim() || null };
    try {
      const res = await api("/api/keys", { method: "POST", body });
      noteInput.value = "";
      put(created, tokenPanel(res, () => {
        put(created);
        form.querySelector("button[type=submit]").focus();
      }));
      created.querySelector("#new-token").focus();
      loadList();
    } catch (e) {
      put(formMsg, errorBox(e, "Creating the key"));
    }
  });

  loadList();
  return h("div", null,
    pageHeader("Keys"),
    section("Create a key",
      h("p", { class: "muted" }, ctx.isAdmin ? "Admins may create keys for any login or tag (tag:ci, or tag:a,tag:b)." : `Keys you create act as you (${mine}).`),
      form, formMsg, created),
    section(ctx.isAdmin ? "All keys" : "Your keys", listBox));
}
