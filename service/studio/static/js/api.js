// The studio's one way to talk to the service: the public REST API (same origin; the session
// cookie or loopback rule authorises it) and a place to show errors.

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

export async function api(path, { method = "GET", json, body, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers },
                 credentials: "same-origin" };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  const resp = await fetch(path, init);
  if (resp.status === 401) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    throw new ApiError(401, "unauthorized", "please log in");
  }
  if (!resp.ok) throw await problem(resp);
  if (resp.status === 204) return null;
  const type = resp.headers.get("content-type") || "";
  return type.includes("json") ? resp.json() : resp;
}

export async function problem(resp) {
  try {
    const p = await resp.json();
    return new ApiError(resp.status, p.code || "error", p.detail || p.title || resp.statusText);
  } catch {
    return new ApiError(resp.status, "error", resp.statusText || "request failed");
  }
}

const errorBox = () => document.getElementById("error-message");

export function showError(err) {
  const box = errorBox();
  const code = err && err.code ? ` [${err.code}]` : "";
  box.textContent = `error${code}: ${err && err.message ? err.message : String(err)}`;
  box.hidden = false;
}

export function clearError() {
  const box = errorBox();
  box.textContent = "";
  box.hidden = true;
}

// A drop zone and its file input: files dropped or picked go to onFiles (a FileList); the zone
// is marked "over" while something is dragged over it.
export function fileDrop(zone, input, onFiles) {
  input.addEventListener("change", () => onFiles(input.files));
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    onFiles(e.dataTransfer.files);
  });
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children) node.append(child);
  return node;
}

export function bytes(n) {
  if (n == null) return "";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function usd(n) {
  return n == null ? "" : `$${Number(n).toFixed(n < 0.1 ? 4 : 2)}`;
}

export function seconds(s) {
  if (s == null || !isFinite(s)) return "";
  if (s < 1) return `${Number(s.toFixed(2))} s`;
  if (s < 10) return `${Number(s.toFixed(1))} s`;
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

// Re-run something every `ms` while the page is visible (live lists).
export function every(ms, fn) {
  let timer = null;
  const tick = async () => {
    try { if (!document.hidden) await fn(); } finally { timer = setTimeout(tick, ms); }
  };
  tick();
  return () => clearTimeout(timer);
}

// The statuses a job does not leave (no more progress; cancel no longer applies).
export const TERMINAL = ["succeeded", "failed", "canceled"];

// A job's resource in the API; its previews, tiles, events and actions are below it.
export function jobBase(id) {
  return `/v1/jobs/${encodeURIComponent(id)}`;
}

// Retry = a new job with the same input, params, target and kind (upscale or animate), made by
// the server (POST /v1/jobs/{id}/retry). Returns the new job.
export async function retryJob(job) {
  return api(`${jobBase(job.id)}/retry`, { method: "POST" });
}

// Where a job came from, as a line the queue row and the job view both show: "rerun of
// …3fa9c012" / "retry of …" linking to that job (its full id on hover); null for a job
// submitted directly. The short id is the id's random tail (its head is the creation time,
// shared by jobs made close together).
export function jobOrigin(job) {
  const [how, parent] = job.rerun_of ? ["rerun", job.rerun_of] : job.retry_of ? ["retry", job.retry_of] : [];
  if (!parent) return null;
  return el("span", { "data-testid": "job-origin", "data-origin": how },
    `${how} of `, el("a", { href: `/jobs/${parent}`, title: parent, text: `…${parent.slice(-8)}` }));
}

// Sets `node` (a tile of a .grid-overlay) over its box {x, y, w, h} in an image of `size`
// {width, height} px, in percent, so the tile follows the image however large it is drawn.
export function placeBox(node, box, size) {
  const pct = (v, total) => `${(100 * v / total).toFixed(4)}%`;
  node.style.left = pct(box.x, size.width);
  node.style.top = pct(box.y, size.height);
  node.style.width = pct(box.w, size.width);
  node.style.height = pct(box.h, size.height);
  return node;
}

// Where each of `boxes` ({x, y, w, h}, overlapping neighbours as tiles are planned) answers a
// click: its box with every overlap with another box cut at the overlap's midline, so the hit
// areas of a grid meet without overlapping and a click lands on the tile whose centre is
// nearest along each axis. Returns {x, y, w, h} per box, in the same units.
export function hitBoxes(boxes) {
  return boxes.map((a) => {
    let left = a.x, top = a.y, right = a.x + a.w, bottom = a.y + a.h;
    for (const b of boxes) {
      if (b === a || b.x >= a.x + a.w || a.x >= b.x + b.w || b.y >= a.y + a.h || a.y >= b.y + b.h) continue;
      if (b.x > a.x) right = Math.min(right, (b.x + a.x + a.w) / 2);
      if (b.x < a.x) left = Math.max(left, (a.x + b.x + b.w) / 2);
      if (b.y > a.y) bottom = Math.min(bottom, (b.y + a.y + a.h) / 2);
      if (b.y < a.y) top = Math.max(top, (a.y + b.y + b.h) / 2);
    }
    return { x: left, y: top, w: right - left, h: bottom - top };
  });
}
