// System: what `aat doctor` checks, live (readiness of store, broker, runners, artifacts, GPU;
// queue depth).
import { api, el, every, problem } from "./api.js";

async function refresh() {
  let ready;
  const resp = await fetch("/v1/ready", { credentials: "same-origin" });
  if (resp.status === 200 || resp.status === 503) ready = await resp.json();
  else { const err = await problem(resp); ready = { checks: { api: { ok: false, detail: err.message } } }; }
  document.getElementById("check-rows").replaceChildren(...Object.entries(ready.checks).map(([name, c]) =>
    el("tr", { "data-check": name, "data-ok": String(c.ok) },
      el("th", { scope: "row", text: name }),
      el("td", {}, el("span", { class: `badge ${c.ok ? "succeeded" : "failed"}`, text: c.ok ? "ok" : "down" })),
      el("td", { text: c.detail || "" }))));
  const counts = {};
  for (const status of ["queued", "running"]) {
    const page = await api(`/v1/jobs?status=${status}&limit=500`);
    counts[status] = page.items.length + (page.next_cursor ? "+" : "");
  }
  document.getElementById("queue-facts").replaceChildren(
    el("dt", { text: "Queued" }), el("dd", { text: String(counts.queued), "data-testid": "queue-depth" }),
    el("dt", { text: "Running" }), el("dd", { text: String(counts.running) }));
  document.getElementById("checked-at").textContent = `checked ${new Date().toLocaleTimeString()}`;
}

every(3000, refresh);
