// The shell: who you are, the navigation, and a router over the URL fragment
// (#/overview, #/logs/sessions/<id>, ...). Pages are modules with render(ctx) -> Node.

import { api } from "./api.js";
import { h, put } from "./dom.js";
import { timeZone, whoOf } from "./format.js";
import { errorBox, pageHeader } from "./widgets.js";
import * as overview from "./pages/overview.js";
import * as adoption from "./pages/adoption.js";
import * as logs from "./pages/logs.js";
import * as tools from "./pages/tools.js";
import * as models from "./pages/models.js";
import * as settings from "./pages/settings.js";
import * as keys from "./pages/keys.js";

const ROUTES = [
  { id: "overview", title: "Overview", page: overview.render },
  { id: "adoption", title: "Adoption", page: adoption.render, admin: true },
  { id: "logs", title: "Logs", page: logs.renderList },
  { id: "logs/sessions/:id", title: "Session", page: logs.renderSession, nav: "logs" },
  { id: "logs/requests/:id", title: "Request", page: logs.renderCapture, nav: "logs" },
  { id: "tools", title: "Tool use", page: tools.render },
  { id: "models", title: "Models", page: models.render },
  { id: "keys", title: "Keys", page: keys.render },
  { id: "settings", title: "Settings", page: settings.render, admin: true },
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const whoBox = document.getElementById("whoami");
let whoami = null;
let firstRender = true;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const query = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
  const parts = path.split("/").filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return { parts, query };
}

function match(parts) {
  if (!parts.length) return { route: ROUTES[0], params: {} };
  for (const r of ROUTES) {
    const pat = r.id.split("/");
    if (pat.length !== parts.length) continue;
    const params = {};
    if (pat.every((p, i) => (p.startsWith(":") ? ((params[p.slice(1)] = parts[i]), true) : p === parts[i]))) {
      return { route: r, params };
    }
  }
  return null;
}

/** Builds a fragment link: link("logs/sessions", id) -> "#/logs/sessions/<id>". */
export function link(path, query) {
  const qs = query ? new URLSearchParams(query).toString() : "";
  return `#/${path}${qs ? `?${qs}` : ""}`;
}

function navigate(path, query) {
  location.hash = link(path, query).slice(1);
}

function isAdmin() {
  return whoami && whoami.role === "admin";
}

function renderWhoami() {
  const id = whoami.identity || {};
  const who = whoOf(id);
  const parts = [h("span", { class: "who-name", title: id.display_name || who }, who)];
  if (id.display_name && id.display_name !== who) parts.push(h("span", { class: "who-display" }, id.display_name));
  parts.push(h("span", { class: `role role-${whoami.role || "none"}` }, whoami.role ? whoami.role : "no role"));
  if (id.key_id) parts.push(h("span", { class: "who-via" }, `via key ${id.key_id}`));
  else if (id.source) parts.push(h("span", { class: "who-via" }, `via ${id.source.replace(/_/g, " ")}`));
  put(whoBox, h("span", { class: "visually-hidden" }, "Signed in as "), parts);
}

function renderNoRole() {
  nav.hidden = true;
  const id = whoami.identity || {};
  const rows = [
    ["Identity", whoOf(id)],
    ["Source", id.source || "—"],
    ["Display name", id.display_name || "—"],
    ["Tags", (id.tags || []).join(", ") || "—"],
    ["Groups", (id.groups || []).join(", ") || "—"],
    ["Node", id.node_name || "—"],
  ];
  put(main,
    pageHeader("No access"),
    h("section", { class: "panel no-access", "aria-label": "Why" },
      h("p", { class: "lead" }, "iris knows who you are, but no grant gives you a role, so the dashboard has nothing to show you."),
      h("h2", null, "What iris sees"),
      h("dl", { class: "facts" }, rows.map(([k, v]) => [h("dt", null, k), h("dd", null, v)])),
      h("h2", null, "Why"),
      h("p", { class: "explain" }, whoami.explain || "no explanation given"),
      h("p", null, "Ask an admin to add a grant with a role whose src matches you (your login, a group you are in, a tag your device carries, or *).")));
  document.title = "No access · iris";
}

async function render() {
  const { parts, query } = parseHash();
  const m = match(parts);
  for (const a of nav.querySelectorAll("a[data-route]")) a.removeAttribute("aria-current");
  if (!m) {
    put(main, pageHeader("Not found"), h("p", null, "There is no page here. "), h("a", { href: "#/overview" }, "Go to the overview"));
    document.title = "Not found · iris";
    return;
  }
  const { route, params } = m;
  const current = nav.querySelector(`a[data-route="${route.nav || route.id}"]`);
  if (current) current.setAttribute("aria-current", "page");
  document.title = `${route.title} · iris`;
  if (route.admin && !isAdmin()) {
    put(main, pageHeader(route.title),
      errorBox({ status: 403, code: "forbidden", message: `${route.title} needs the admin role; you have the ${whoami.role} role.` }));
    return;
  }
  const ctx = { params, query, whoami, isAdmin: isAdmin(), navigate, link };
  const view = h("div", { class: "view" });
  put(main, view);
  try {
    const node = await route.page(ctx, view);
    if (node) put(view, node);
  } catch (e) {
    put(view, pageHeader(route.title), errorBox(e));
  }
  if (!firstRender) {
    const h1 = main.querySelector("h1");
    if (h1) h1.focus({ preventScroll: false });
  }
  firstRender = false;
}

/** /ui/logs -> /ui/#/logs, and Aperture's /ui/dashboard/<login> -> /ui/#/overview?login=<login>. */
function pathToHash() {
  if (location.hash) return;
  const rest = location.pathname.replace(/^\/ui\/?/, "").replace(/^index\.html$/, "");
  if (!rest) return;
  const segs = rest.split("/").filter(Boolean);
  let target;
  if (segs[0] === "dashboard" && segs[1]) target = link("overview", { login: decodeURIComponent(segs[1]) });
  else target = `#/${segs.join("/")}`;
  history.replaceState(null, "", `/ui/${target}`);
}

/** For admins: a banner when /api/health says degraded (config problems, store, tailscaled). */
async function healthBanner() {
  const banner = document.getElementById("banner");
  let health;
  try {
    health = await api("/api/health");
  } catch (e) {
    put(banner, h("strong", null, "Health check failed: "), e.message);
    banner.hidden = false;
    return;
  }
  const reasons = [];
  const problems = (health.config && health.config.problems) || [];
  if (problems.length) {
    reasons.push(h("span", null, `the config file has ${problems.length} problem(s) and was not applied (`,
      problems.slice(0, 3).map((p, i) => [i ? "; " : "", h("code", null, p.path || "(top level)"), ` ${p.message}`]),
      problems.length > 3 ? "; …" : "", ")"));
  }
  if (health.store && health.store.ok === false) reasons.push("the usage store is unavailable");
  if (health.usage && health.usage.dropped > 0) reasons.push(`${health.usage.dropped} usage record(s) were dropped`);
  if (health.tailscaled && health.tailscaled.reachable === false) reasons.push("tailscaled is not reachable (identities from WhoIs fail)");
  if (health.status === "ok" && !reasons.length) return;
  put(banner, h("strong", null, `iris is ${health.status || "degraded"}: `),
    reasons.length ? reasons.map((r, i) => [i ? "; " : "", r]) : "see /api/health",
    " ", h("a", { href: "#/settings" }, "Settings"));
  banner.hidden = false;
}

async function start() {
  document.getElementById("skip-link").addEventListener("click", () => main.focus());
  document.getElementById("tz").textContent = `Times in ${timeZone}`;
  pathToHash();
  try {
    whoami = await api("/api/whoami");
  } catch (e) {
    put(whoBox, "Unknown caller");
    put(main, pageHeader("iris"), errorBox(e, "Asking iris who you are"));
    return;
  }
  renderWhoami();
  if (!whoami.role) {
    renderNoRole();
    return;
  }
  for (const li of nav.querySelectorAll("[data-admin]")) li.hidden = !isAdmin();
  if (isAdmin()) healthBanner();
  nav.hidden = false;
  window.addEventListener("hashchange", render);
  await render();
}

start();
