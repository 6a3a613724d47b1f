// The one place the dashboard talks to the network: same-origin /api/* only.

/** An error from the admin API (or from reaching it), with the API's own message. */
export class ApiError extends Error {
  constructor(status, message, type, code, body) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = type || "";
    this.code = code || "";
    this.body = body;
  }
  /** Extra fields of the API's error object (e.g. problems). */
  get detail() {
    return (this.body && this.body.error) || {};
  }
}

/** An API path plus a query string from the defined, non-empty values of query. */
export function apiUrl(path, query) {
  if (!path.startsWith("/api/")) throw new Error(`not an API path: ${path}`);
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const qs = q.toString();
  return qs ? `${path}?${qs}` : path;
}

/**
 * Calls the admin API and returns the parsed JSON. Bodies go as Content-Type: application/json
 * (the server refuses other mutations). Throws ApiError with the API's message on failure.
 */
export async function api(path, { method = "GET", body, query } = {}) {
  const url = apiUrl(path, query);
  const init = {
    method,
    credentials: "same-origin",
    cache: "no-store",
    redirect: "error",
    headers: { Accept: "application/json" },
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, `cannot reach iris (${method} ${path}): ${e.message}`, "network_error", "network_error", null);
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!resp.ok) {
    const err = data && typeof data === "object" ? data.error : null;
    const message = err && typeof err.message === "string" && err.message
      ? err.message
      : `${method} ${path} answered ${resp.status} ${resp.statusText}${text && !data ? `: ${text.slice(0, 300)}` : ""}`;
    throw new ApiError(resp.status, message, err && err.type, err && err.code, data);
  }
  if (text && data === null) {
    throw new ApiError(resp.status, `${method} ${path} did not answer JSON`, "bad_response", "bad_response", null);
  }
  return data;
}
