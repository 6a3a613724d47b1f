// DOM building without HTML strings: every text goes in through text nodes, so nothing a
// capture or a config contains can become markup (the CSP's Trusted Types refuse HTML
// string sinks anyway).

const SVG_NS = "http://www.w3.org/2000/svg";

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "value" && "value" in el && !(el instanceof SVGElement)) {
      el.value = String(v);
    } else if (k === "checked" || k === "disabled" || k === "selected" || k === "hidden" || k === "readOnly") {
      el[k] = Boolean(v);
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
}

function appendAll(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** An HTML element: h("a", {href: "#/logs"}, "Logs"). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

/** Replaces el's children. */
export function put(el, ...children) {
  el.replaceChildren();
  appendAll(el, children);
  return el;
}
