// Shared helpers: calls to the console's API, building elements (text only, never HTML),
// formatting, and timers that stop when the view changes.

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

export async function api(path, { method = "GET", body } = {}) {
  const options = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const reply = await fetch(`/console/api${path}`, options);
  const text = await reply.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (!reply.ok) {
    if (reply.status === 401 && path !== "/login") window.dispatchEvent(new Event("signed-out"));
    throw new ApiError(reply.status, data);
  }
  return data;
}

// h("td", {class: "x"}, "text", child): an element; strings become text nodes.
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "class") element.className = value;
    else if (key === "style") Object.assign(element.style, value);   // CSSOM: allowed by the CSP
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function table(headers, rows) {
  return h("table", {}, h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "—";
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 0)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// Every view gets a scope: its timers and streams end when the view is left.
export class Scope {
  constructor() { this.stops = []; this.alive = true; }
  every(seconds, fn) {
    const ms = Math.max(1000, seconds * 1000);      // never faster than once a second
    let timer = null;
    const tick = async () => {
      if (!this.alive) return;
      try { await fn(); } catch (error) { console.warn(error); }
      if (this.alive) timer = setTimeout(tick, ms);
    };
    tick();
    this.stops.push(() => clearTimeout(timer));
  }
  onStop(fn) { this.stops.push(fn); }
  stop() { this.alive = false; this.stops.forEach((fn) => fn()); }
}

export function showError(where, error) {
  where.replaceChildren(h("p", { class: "error" }, error.message || String(error)));
}
