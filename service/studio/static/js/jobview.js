// What both job views share: the status line (badge, stage, progress, ETA, the buttons that
// fit the status), cancel and retry, and picking several cells of a grid by mouse or keyboard
// (the upscale view's tiles, the animate view's frames).
import { TERMINAL, api, el, jobBase, jobOrigin, retryJob, seconds, showError, usd } from "./api.js";

function eta(job) {
  if (job.status !== "running" || !job.started_at || job.progress <= 0.02) return "";
  const elapsed = (Date.now() - Date.parse(job.started_at)) / 1000;
  return `about ${seconds(elapsed * (1 - job.progress) / job.progress)} left`;
}

/** The "Measured cost" fact of a job: dollars, GPU seconds and RunPod jobs. */
export function costFact(cost) {
  const jobs = `${cost.runpod_jobs} RunPod job${cost.runpod_jobs === 1 ? "" : "s"}`;
  return ["Measured cost", `${usd(cost.usd)} · ${cost.execution_s.toFixed(1)} GPU s · ${jobs}`];
}

// Status badge (data-status kept current), stage, progress, ETA, the facts list (with where
// the job came from, first), download, cancel and retry as the status allows, and the job's
// error in the error box.
export function renderStatus(job, facts) {
  const status = document.getElementById("job-status");
  status.textContent = job.status;
  status.dataset.status = job.status;
  status.className = `badge ${job.status}`;
  document.getElementById("job-title").replaceChildren("Job ", el("code", { text: job.input.filename }));
  document.getElementById("job-stage").textContent = job.status === "running" ? job.stage : "";
  const bar = document.getElementById("job-progress");
  bar.value = job.progress;
  bar.textContent = `${Math.round(job.progress * 100)}%`;
  document.getElementById("job-eta").textContent = eta(job);
  const origin = jobOrigin(job);
  if (origin) facts.unshift(["From", origin]);
  if (job.error) facts.push(["Error", `[${job.error.code}] ${job.error.message}`]);
  document.getElementById("job-facts").replaceChildren(  // a fact is text or a node
    ...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
  const done = job.status === "succeeded";
  const download = document.getElementById("download-result");
  download.hidden = !done;
  if (done) download.href = `${jobBase(job.id)}/result`;
  document.getElementById("cancel-job").hidden = TERMINAL.includes(job.status);
  document.getElementById("retry-job").hidden = !["failed", "canceled"].includes(job.status);
  if (job.error) showError({ code: job.error.code, message: job.error.message });
}

// Cancel and retry buttons; `current()` is the job shown, `shown(job)` redraws it.
export function wireCancelRetry(current, shown) {
  document.getElementById("cancel-job").addEventListener("click", async () => {
    try { shown(await api(`${jobBase(current().id)}/cancel`, { method: "POST" })); }
    catch (err) { showError(err); }
  });
  document.getElementById("retry-job").addEventListener("click", async () => {
    try { location.href = `/jobs/${(await retryJob(current())).id}`; }
    catch (err) { showError(err); }
  });
}

// Selection over the buttons `[data-testid=<testid>]` in `container`: a click or Enter/Space
// selects one, with Shift or Ctrl (Cmd) it adds or removes; arrow keys move a roving focus
// (`columns()` cells per row). `onChange()` runs after every change of the selection.
export class Picker {
  constructor(container, testid, { columns, onChange }) {
    this.container = container;
    this.selector = `[data-testid=${testid}]`;
    this.selected = new Set();
    this.focus = 0;
    this.columns = columns;
    this.onChange = onChange;
    container.addEventListener("click", (e) => {
      const node = e.target.closest(this.selector);
      if (node) this.pick(Number(node.dataset.index), e.shiftKey || e.ctrlKey || e.metaKey);
    });
    container.addEventListener("keydown", (e) => {
      const node = e.target.closest(this.selector);
      if (!node) return;
      const index = Number(node.dataset.index);
      if (e.key.startsWith("Arrow")) { e.preventDefault(); this.move(index, e.key); }
      else if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        this.pick(index, e.shiftKey || e.ctrlKey || e.metaKey);
      }
    });
  }

  // Attributes of a freshly drawn cell (aria-pressed, roving tabindex).
  attrs(index) {
    return { "aria-pressed": this.selected.has(index) ? "true" : "false",
             tabindex: index === this.focus ? "0" : "-1" };
  }

  chosen() {
    return [...this.selected].sort((a, b) => a - b);
  }

  clear() {
    this.selected.clear();
    this.refresh();
  }

  pick(index, additive) {
    if (!additive) this.selected.clear();
    if (additive && this.selected.has(index)) this.selected.delete(index);
    else this.selected.add(index);
    this.focus = index;
    this.refresh();
  }

  refresh() {
    for (const node of this.container.querySelectorAll(this.selector)) {
      const i = Number(node.dataset.index);
      node.setAttribute("aria-pressed", this.selected.has(i) ? "true" : "false");
      node.tabIndex = i === this.focus ? 0 : -1;
    }
    this.onChange();
  }

  move(index, key) {
    const count = this.container.querySelectorAll(this.selector).length;
    const cols = this.columns() || 1;
    const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -cols, ArrowDown: cols }[key];
    this.focus = Math.min(count - 1, Math.max(0, index + step));
    for (const node of this.container.querySelectorAll(this.selector)) {
      node.tabIndex = Number(node.dataset.index) === this.focus ? 0 : -1;
    }
    this.container.querySelector(`[data-index="${this.focus}"]`).focus();
  }
}
