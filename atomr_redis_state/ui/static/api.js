// The inspector's HTTP API, the write token, and the live event stream.

const TOKEN_KEY = "atomr-inspector-token";

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function answer(response) {
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const message = typeof body === "object" && body && body.error ? body.error : String(body);
    throw new ApiError(response.status, message || response.statusText);
  }
  return body;
}

/** GET /api/<name>?params as JSON. */
export async function get(name, params = {}) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") query.set(k, v);
  return answer(await fetch(`/api/${name}?${query}`, { headers: { Accept: "application/json" } }));
}

/** POST a write with the token in its header (never a cookie). */
export async function post(name, body) {
  return answer(await fetch(`/api/${name}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Atomr-Token": token() || "" },
    body: JSON.stringify(body),
  }));
}

/** POST an action with the token and save what it returns as a file named `filename`. */
export async function download(name, body, filename) {
  const response = await fetch(`/api/${name}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Atomr-Token": token() || "" },
    body: JSON.stringify(body),
  });
  if (!response.ok) return answer(response);
  const url = URL.createObjectURL(await response.blob());
  const anchor = document.createElement("a");
  anchor.href = url;
  anchor.download = filename;
  document.body.append(anchor);
  anchor.click();
  anchor.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return null;
}

export function token() { return sessionStorage.getItem(TOKEN_KEY); }
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
}

/** A token given in the address (#token=...) is kept for this tab and taken out of the URL. */
export function takeTokenFromAddress() {
  const match = location.hash.match(/^#token=(.+)$/);
  if (match) {
    setToken(decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

/**
 * Listen to a workflow's (or run's) checkpoint events. `onEvent(event)` for each one;
 * `onState(state, note)` with "live", "connecting" or "gap"; after a gap or a reconnect,
 * `onResync()` (the page re-reads what it shows, since events may have been missed).
 */
export function listen(params, { onEvent, onState, onResync }) {
  const query = new URLSearchParams(params);
  let source = null;
  let everReady = false;
  let closed = false;
  let retry = null;
  const open = () => {
    onState("connecting");
    source = new EventSource(`/api/events?${query}`);
    source.addEventListener("ready", () => {
      onState("live");
      if (everReady) onResync("reconnected: events may have been missed while disconnected");
      everReady = true;
    });
    source.addEventListener("checkpoint", (e) => onEvent(JSON.parse(e.data)));
    source.addEventListener("gap", (e) => {
      const reason = JSON.parse(e.data).reason || "the subscription was interrupted";
      onState("gap", reason);
      onResync(`events may have been missed (${reason})`);
      setTimeout(() => { if (source.readyState === EventSource.OPEN) onState("live"); }, 5000);
    });
    source.onerror = () => {
      if (closed) return;
      onState("connecting");
      if (source.readyState === EventSource.CLOSED) {
        clearTimeout(retry);
        retry = setTimeout(open, 2000);
      }
    };
  };
  open();
  return () => { closed = true; clearTimeout(retry); source && source.close(); };
}
