// Numbers, money, durations and times. Times are shown in the viewer's time zone; day and week
// buckets from the API are UTC days and are labelled as such.

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const shortTime = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
});
const compactTime = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const shortTimeYear = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
});
const hourOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const utcDay = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
const utcDayLong = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric", timeZone: "UTC" });
const ints = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

/** The viewer's IANA time zone, e.g. "Europe/Berlin". */
export const timeZone = new Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";

function isNum(x) {
  return typeof x === "number" && Number.isFinite(x);
}

export function fmtTime(ms) {
  return isNum(ms) ? dateTime.format(new Date(ms)) : "—";
}
/** Without the year when it is this year's: for tables. */
export function fmtTimeCompact(ms) {
  if (!isNum(ms)) return "—";
  const d = new Date(ms);
  return d.getFullYear() === new Date().getFullYear() ? compactTime.format(d) : dateTime.format(d);
}
/** Minutes, the year only when it is not this year's. */
export function fmtTimeShort(ms) {
  if (!isNum(ms)) return "—";
  const d = new Date(ms);
  return (d.getFullYear() === new Date().getFullYear() ? shortTime : shortTimeYear).format(d);
}
export function fmtHour(ms) {
  return isNum(ms) ? hourOnly.format(new Date(ms)) : "—";
}
/** A UTC day bucket: "YYYY-MM-DD" or unix ms at 00:00 UTC. */
export function fmtUtcDay(day, long = false) {
  const ms = typeof day === "string" ? dayKeyToMs(day) : day;
  if (!isNum(ms)) return String(day);
  return (long ? utcDayLong : utcDay).format(new Date(ms));
}
export function dayKeyToMs(key) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(key);
  return m ? Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) : NaN;
}
export function msToDayKey(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

export function fmtInt(n) {
  return isNum(n) ? ints.format(n) : "—";
}
export function fmtCompact(n) {
  return isNum(n) ? compact.format(n) : "—";
}
/** USD; null means the price is unknown, and that is said rather than shown as 0. */
export function fmtUsd(x) {
  if (!isNum(x)) return "unpriced";
  const abs = Math.abs(x);
  const digits = abs === 0 ? 2 : abs < 0.01 ? 4 : abs < 100 ? 2 : 0;
  return new Intl.NumberFormat(undefined, {
    style: "currency", currency: "USD", minimumFractionDigits: digits, maximumFractionDigits: digits,
  }).format(x);
}
/** A price per million tokens. */
export function fmtPrice(x) {
  return isNum(x) ? `$${x.toFixed(x < 1 ? 3 : 2)}` : "—";
}
export function fmtDuration(ms) {
  if (!isNum(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - m * 60)} s`;
  const hr = Math.floor(m / 60);
  return `${hr} h ${m - hr * 60} min`;
}
export function fmtBytes(n) {
  if (!isNum(n)) return "—";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** Who made a record or owns a key: login, else tags, else "(loopback)" or the source. */
export function whoOf(x) {
  if (!x) return "—";
  if (x.who) return x.who;
  if (x.login) return x.login;
  if (Array.isArray(x.tags) && x.tags.length) return x.tags.join(",");
  if (x.identity_source === "loopback" || x.source === "loopback") return "(loopback)";
  if (x.source === "local_admin") return "(local-admin)";
  return x.identity_source || x.source || "—";
}
