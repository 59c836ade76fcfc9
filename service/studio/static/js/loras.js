// LoRA manager: list, chunked upload (drag and drop, progress, safetensors only), delete with
// a confirmation.
import { api, bytes, clearError, el, showError } from "./api.js";

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
      el("td", { text: (m.trigger_words || []).join(", ") }),
      el("td", {}, el("button", { type: "button", "data-testid": "lora-delete", "data-name": m.name,
                                  "aria-label": `Delete ${m.name}`, text: "Delete" })))));
    document.getElementById("lora-empty").hidden = models.length > 0;
  } catch (err) { showError(err); }
}

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

input.addEventListener("change", () => { if (input.files[0]) upload(input.files[0]); input.value = ""; });
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]);
});
rowsEl.addEventListener("click", async (e) => {
  const button = e.target.closest("[data-testid=lora-delete]");
  if (!button) return;
  const name = button.dataset.name;
  if (!confirm(`Delete the LoRA ${name} from the worker's volume?`)) return;
  try {
    await api(`/v1/models/${encodeURIComponent(name)}`, { method: "DELETE" });
    refresh();
  } catch (err) { showError(err); }
});
refresh();
