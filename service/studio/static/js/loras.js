// LoRA manager: list (with trigger words: a click adds one to the new-job prompt), chunked
// upload (drag and drop, progress, safetensors only), import by URL (the worker downloads; its
// progress is polled from /v1/models/imports, and a Cancel button stops it), delete with a
// confirmation.
import { api, bytes, clearError, el, fileDrop, showError } from "./api.js";
import { store } from "./params.js";

const rowsEl = document.getElementById("lora-rows");
const input = document.getElementById("lora-file");
const drop = document.getElementById("lora-drop");
const bar = document.getElementById("lora-progress");
const status = document.getElementById("lora-upload-status");

async function refresh() {
  try {
    const { models } = await api("/v1/models");
    rowsEl.replaceChildren(...models.map((m) => el("tr", { "data-testid": "lora-row", "data-name": m.name },
      el("td", { text: m.name }),
      el("td", { text: bytes(m.size_bytes) }),
      el("td", {}, el("code", { text: m.sha256 ? m.sha256.slice(0, 16) + "…" : "", title: m.sha256 || "" })),
      el("td", { class: "words" }, ...(m.trigger_words || []).map((w) => el("button", {
        type: "button", class: "chip", "data-testid": "lora-trigger", "data-word": w,
        "data-lora": m.name, title: `Add “${w}” to the new-job prompt`, text: w }))),
      el("td", {}, el("button", { type: "button", "data-testid": "lora-delete", "data-name": m.name,
                                  "aria-label": `Delete ${m.name}`, text: "Delete" })))));
    document.getElementById("lora-empty").hidden = models.length > 0;
  } catch (err) { showError(err); }
}

// ---- upload ---------------------------------------------------------------------------------

const CHUNK = 1024 * 1024;  // bytes per request; the API accepts up to chunk_bytes

async function upload(file) {
  clearError();
  if (!file.name.toLowerCase().endsWith(".safetensors")) {
    showError({ code: "model_invalid", message: `${file.name} is not a .safetensors file; only safetensors LoRAs can be uploaded` });
    return;
  }
  bar.hidden = false;
  bar.value = 0;
  status.textContent = `Uploading ${file.name}…`;
  try {
    const started = await api("/v1/models/uploads", { method: "POST", json: { filename: file.name, size: file.size } });
    let offset = started.received;
    const step = Math.min(CHUNK, started.chunk_bytes);
    while (offset < file.size) {
      const chunk = file.slice(offset, offset + step);
      const state = await api(`/v1/models/uploads/${started.id}?offset=${offset}`, {
        method: "PUT", body: chunk, headers: { "Content-Type": "application/octet-stream" } });
      offset = state.received;
      bar.value = offset / file.size;
    }
    status.textContent = `Checking ${file.name} and copying it to the worker…`;
    await api(`/v1/models/uploads/${started.id}/finish`, { method: "POST" });
    status.textContent = `Uploaded ${file.name}.`;
    refresh();
  } catch (err) {
    status.textContent = "";
    showError(err);
  } finally {
    bar.hidden = true;
  }
}

fileDrop(drop, input, (files) => {
  if (files[0]) upload(files[0]);
  input.value = "";  // the same file picked again uploads again
});

// ---- the list: trigger words and delete -----------------------------------------------------

// A trigger word goes into the remembered new-job settings (prompt, and the LoRA ticked), which
// the new-job page restores when it opens.
function addToPrompt(word, lora) {
  const last = store.last() || {};
  const prompt = (last.prompt || "").trim();
  const words = prompt.split(",").map((w) => w.trim());
  if (!words.includes(word)) last.prompt = prompt ? `${prompt}, ${word}` : word;
  const loras = last.loras || [];
  if (!loras.some((s) => s.split(":")[0] === lora)) last.loras = [...loras, `${lora}:1`];
  store.saveLast(last);
  const note = document.getElementById("lora-word-status");
  note.replaceChildren(`“${word}” is in the prompt of your next job (with ${lora}). `,
                       el("a", { href: "/", text: "Open the new job." }));
}

rowsEl.addEventListener("click", async (e) => {
  const chip = e.target.closest("[data-testid=lora-trigger]");
  if (chip) { addToPrompt(chip.dataset.word, chip.dataset.lora); return; }
  const button = e.target.closest("[data-testid=lora-delete]");
  if (!button) return;
  const name = button.dataset.name;
  if (!confirm(`Delete the LoRA ${name} from the worker's volume?`)) return;
  try {
    await api(`/v1/models/${encodeURIComponent(name)}`, { method: "DELETE" });
    refresh();
  } catch (err) { showError(err); }
});

// ---- import by URL --------------------------------------------------------------------------

const importForm = document.getElementById("lora-import-form");
const importsEl = document.getElementById("lora-imports");
const imports = new Map();  // id -> latest state from the API
const ACTIVE = new Set(["queued", "downloading", "checking"]);
let pollTimer = null;

// "CivitAI version 108 (v3, SDXL 1.0; the model's newest)" once the worker has resolved it
function versionText(item) {
  const v = item.version;
  if (!v) return "";
  const about = [v.name, v.base_model].filter(Boolean).join(", ");
  const detail = about + (v.chosen === "newest" ? "; the model's newest" : "");
  return ` — CivitAI version ${v.version_id}${detail ? ` (${detail})` : ""}`;
}

function importText(item) {
  const name = (item.name || item.url) + versionText(item);
  if (item.state === "queued") return `${name}: waiting for the worker…`;
  if (item.state === "downloading") {
    return item.bytes_total ? `${name}: ${bytes(item.bytes_done)} of ${bytes(item.bytes_total)}`
                            : `${name}: ${bytes(item.bytes_done)} downloaded…`;
  }
  if (item.state === "checking") return `${name}: checking the file…`;
  if (item.state === "done") return `${item.model.name}${versionText(item)}: imported (${bytes(item.model.size_bytes)}).`;
  if (item.state === "canceled") return `${name}: canceled; nothing was kept.`;
  return `${name}: failed: ${item.error ? item.error.message : "unknown error"}`;
}

function renderImports() {
  const items = [...imports.values()].sort((a, b) => b.created_at - a.created_at).slice(0, 5);
  importsEl.replaceChildren(...items.map((item) => {
    const label = item.name || item.url;
    const progress = el("progress", { "data-testid": "lora-import-progress", max: "1",
                                      "aria-label": `Import of ${label}` });
    if (item.state === "done") progress.value = 1;
    else if (item.bytes_total) progress.value = item.bytes_done / item.bytes_total;
    else if (item.state !== "downloading") progress.value = 0;
    // an unknown total leaves the bar indeterminate while it downloads
    const active = ACTIVE.has(item.state);
    const cancel = active ? [el("button", { type: "button", "data-testid": "lora-import-cancel",
                                            "data-id": item.id, "aria-label": `Cancel the import of ${label}`,
                                            text: "Cancel" })] : [];
    return el("li", { "data-testid": "lora-import", "data-id": item.id, "data-state": item.state },
      ...(active || item.state === "done" ? [progress] : []),
      el("span", { text: importText(item) }), ...cancel);
  }));
}

function schedule(delay) {
  if (!pollTimer && [...imports.values()].some((i) => ACTIVE.has(i.state))) {
    pollTimer = setTimeout(poll, delay);
  }
}

async function poll() {
  pollTimer = null;
  const active = [...imports.values()].filter((i) => ACTIVE.has(i.state));
  for (const item of active) {
    try {
      const fresh = await api(`/v1/models/imports/${item.id}`);
      if (!ACTIVE.has(imports.get(fresh.id).state)) continue;  // canceled meanwhile
      imports.set(fresh.id, fresh);
      if (fresh.state === "done") refresh();
      if (fresh.state === "failed") showError({ code: fresh.error.code, message: fresh.error.message });
    } catch (err) { showError(err); }
  }
  renderImports();
  schedule(400);
}

importsEl.addEventListener("click", async (e) => {
  const button = e.target.closest("[data-testid=lora-import-cancel]");
  if (!button) return;
  button.disabled = true;
  clearError();
  try {
    const item = await api(`/v1/models/imports/${button.dataset.id}/cancel`, { method: "POST" });
    imports.set(item.id, item);
    if (item.state === "done") refresh();  // it had finished before the cancel arrived
  } catch (err) {
    button.disabled = false;
    showError(err);
  }
  renderImports();
});

importForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearError();
  const url = importForm.elements.url.value.trim();
  const name = importForm.elements.name.value.trim();
  try {
    const item = await api("/v1/models/imports", { method: "POST",
                                                   json: name ? { url, name } : { url } });
    imports.set(item.id, item);
    importForm.reset();
    renderImports();
    schedule(200);
  } catch (err) { showError(err); }
});

async function loadImports() {
  try {
    const hour = Date.now() / 1000 - 3600;
    for (const item of (await api("/v1/models/imports")).imports) {
      if (ACTIVE.has(item.state) || item.updated_at > hour) imports.set(item.id, item);
    }
    renderImports();
    schedule(400);
  } catch { /* no GPU backend: the list above says so */ }
}

refresh();
loadImports();
