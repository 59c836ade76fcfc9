// Queue and history: all jobs newest first, live, with filters, paging, cancel and retry.
import { TERMINAL, api, el, every, jobBase, jobOrigin, retryJob, showError, clearError, usd } from "./api.js";

const rows = document.getElementById("job-rows");
const statusFilter = document.getElementById("status-filter");
const nameFilter = document.getElementById("name-filter");
const PAGE = 25;
let cursors = [null];  // cursor of each page seen; the last is the current page's
let nextCursor = null;
let shown = new Map();  // job id -> the job, for row actions

function query() {
  const q = new URLSearchParams({ limit: String(PAGE) });
  if (statusFilter.value) q.set("status", statusFilter.value);
  const cursor = cursors[cursors.length - 1];
  if (cursor) q.set("cursor", cursor);
  return `/v1/jobs?${q}`;
}

function row(job) {
  const terminal = TERMINAL.includes(job.status);
  const thumb = el("img", { src: `${jobBase(job.id)}/preview/${job.status === "succeeded" ? "output" : "input"}?max=96`,
                            alt: "", loading: "lazy", width: "64", height: "64" });
  const actions = el("td", { class: "row-actions" });
  if (!terminal) {
    const b = el("button", { type: "button", "data-action": "cancel", "data-id": job.id, text: "Cancel" });
    actions.append(b);
  } else if (job.status !== "succeeded") {
    actions.append(el("button", { type: "button", "data-action": "retry", "data-id": job.id,
                                  "aria-label": `Retry ${job.input.filename}`, text: "Retry" }));
  }
  const origin = jobOrigin(job);
  const progress = el("progress", { max: "1", value: String(job.progress), "aria-label": `Progress of ${job.input.filename}` });
  return el("tr", { "data-testid": "job-row", "data-id": job.id, "data-status": job.status },
    el("td", {}, thumb),
    el("td", {}, el("a", { href: `/jobs/${job.id}`, text: job.input.filename }),
       job.animation ? el("small", { class: "hint", "data-kind": "animate",
                                     text: `animate: ${job.animation.motion}, ${job.animation.frames} frames` }) : "",
       origin ? el("small", { class: "hint" }, origin) : ""),
    el("td", {}, el("span", { class: `badge ${job.status}`, text: job.status })),
    el("td", {}, progress, ` ${Math.round(job.progress * 100)}%`),
    el("td", { text: new Date(job.created_at).toLocaleString() }),
    el("td", { text: usd(job.cost.usd) }),
    actions);
}

async function refresh() {
  try {
    const page = await api(query());
    nextCursor = page.next_cursor;
    const needle = nameFilter.value.trim().toLowerCase();
    const items = page.items.filter((j) => !needle || j.input.filename.toLowerCase().includes(needle));
    shown = new Map(items.map((j) => [j.id, j]));
    rows.replaceChildren(...items.map(row));
    document.getElementById("queue-empty").hidden = items.length > 0;
    document.getElementById("page-next").disabled = !nextCursor;
    document.getElementById("page-first").disabled = cursors.length === 1;
    clearError();
  } catch (err) { showError(err); }
}

rows.addEventListener("click", async (e) => {
  const button = e.target.closest("button[data-action]");
  if (!button) return;
  try {
    if (button.dataset.action === "cancel") {
      await api(`${jobBase(button.dataset.id)}/cancel`, { method: "POST" });
    } else {
      button.disabled = true;
      await retryJob(shown.get(button.dataset.id));
    }
    refresh();
  } catch (err) { showError(err); }
});
statusFilter.addEventListener("change", () => { cursors = [null]; refresh(); });
nameFilter.addEventListener("input", refresh);
document.getElementById("page-next").addEventListener("click", () => { cursors.push(nextCursor); refresh(); });
document.getElementById("page-first").addEventListener("click", () => { cursors = [null]; refresh(); });
every(2000, refresh);
