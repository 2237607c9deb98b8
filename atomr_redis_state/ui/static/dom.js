// Small DOM helpers: elements built with textContent only (never innerHTML), so stored text
// cannot inject markup, and control or bidi characters are shown as escapes.

const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/g;

/** Text from the store, with control, bidi and zero-width characters written as \uXXXX. */
export function safe(text, { keepNewlines = false } = {}) {
  return String(text).replace(UNSAFE, (c) =>
    keepNewlines && c === "\n" ? c : "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

/** h("a.link", {href: "/"}, "text", child) -> an element; strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const [name, ...classes] = tag.split(".");
  const el = document.createElement(name || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function pad(n) { return String(n).padStart(2, "0"); }

/** 2026-12-06 14:03:11 UTC */
export function utc(ms) {
  if (ms === null || ms === undefined) return "-";
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
}

/** "12 s ago", "3 min ago", "in 20 s" */
export function ago(ms, now = Date.now()) {
  if (ms === null || ms === undefined) return "-";
  const s = Math.round((now - ms) / 1000);
  const a = Math.abs(s);
  const text = a < 60 ? `${a} s` : a < 3600 ? `${Math.round(a / 60)} min` :
    a < 86400 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} d`;
  return s >= 0 ? `${text} ago` : `in ${text}`;
}

/** A <time> showing how long ago, with the exact UTC time as its title. */
export function when(ms) {
  if (ms === null || ms === undefined) return h("span.muted", {}, "-");
  return h("time", { datetime: new Date(ms).toISOString(), title: utc(ms), dataset: { ms } }, ago(ms));
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

let tones = {};

/** The tone of each run state (from the server's views), for badges. */
export function setTones(map) { tones = map || {}; }

/** A state badge: its colour follows the state's tone (active, attention, danger, ...). */
export function badge(state) {
  const tone = String(tones[state] || "neutral").replace(/[^a-z_]/g, "");
  return h(`span.badge.tone-${tone}`, { dataset: { state } }, String(state).replace("_", " "));
}

/** Keep every <time data-ms> on the page saying how long ago. */
export function tickTimes() {
  setInterval(() => {
    const now = Date.now();
    for (const el of document.querySelectorAll("time[data-ms]")) {
      el.textContent = ago(Number(el.dataset.ms), now);
    }
  }, 5000);
}

export function qs(name) { return new URLSearchParams(location.search).get(name); }

export function link(path, params) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") query.set(k, v);
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}
