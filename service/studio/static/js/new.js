// New job: pick images, see the planned tile grid and the estimate, submit, open the job.
import { api, clearError, el, jobBase, placeBox, seconds, showError, usd } from "./api.js";
import { jobForm } from "./jobform.js";
import { readParams, readTarget, resetDefaults, restore, snapshot, store, toToml } from "./params.js";

const { form, fileInput, submit } = jobForm({ onFiles: setFiles, send: sendJobs });
const planImage = document.getElementById("plan-image");
const planGrid = document.getElementById("plan-grid");
const planStage = document.getElementById("plan-stage");
let files = [];
let inputSize = null;
let availableLoras = [];
let planTimer = null;
// What the last submit made of each chosen file: { job } (its job was created) or { error }.
// A second submit sends only the files without a job.
const outcomes = new Map();

function chosenLoras() {
  return [...document.querySelectorAll("#lora-picks [data-lora]")]
    .filter((row) => row.querySelector("input[type=checkbox]").checked)
    .map((row) => ({ name: row.dataset.lora,
                     weight: parseFloat(row.querySelector("input[type=number]").value) || 1 }));
}

function remember() {
  const values = snapshot(form, chosenLoras());
  store.saveLast(values);
  document.getElementById("preset-toml").textContent = toToml(values, form);
}

function setFiles(list) {
  files = [...list].filter((f) => f.size > 0);
  outcomes.clear();
  showPicked();
  submit.disabled = files.length === 0;
  inputSize = null;
  if (!files.length) { planStage.hidden = true; return; }
  const url = URL.createObjectURL(files[0]);
  planImage.onload = () => {
    inputSize = { width: planImage.naturalWidth, height: planImage.naturalHeight };
    fitStage(planStage, inputSize);
    planStage.hidden = false;
    schedulePlan();
  };
  planImage.onerror = () => {  // the browser cannot draw it (e.g. TGA): plan without a picture
    planStage.hidden = true;
    document.getElementById("plan-summary").textContent = "No preview for this file type.";
  };
  planImage.src = url;
}

// The stage is as wide as fits 60% of the window's height; small images are drawn larger.
export function fitStage(stage, size) {
  stage.style.maxWidth = `calc(60vh * ${size.width / size.height})`;
  stage.classList.toggle("pixelated", Math.max(size.width, size.height) <= 256);
}

function schedulePlan() {
  clearTimeout(planTimer);
  planTimer = setTimeout(plan, 150);
}

async function plan() {
  remember();
  if (!inputSize) return;
  try {
    const params = readParams(form, inputSize, chosenLoras());
    const result = await api("/v1/plan", { method: "POST", json: {
      input_width: inputSize.width, input_height: inputSize.height, params } });
    drawPlan(result);
    clearError();
  } catch (err) {
    planGrid.replaceChildren();
    showError(err);
  }
}

function drawPlan(result) {
  planGrid.replaceChildren(...result.tiles.map((t) => placeBox(el("div", { class: "tile planned" }), t, result)));
  document.getElementById("plan-summary").textContent =
    `${inputSize.width}×${inputSize.height} → ${result.width}×${result.height} px, ` +
    `${result.tiles.length} tiles of ${result.tile_size} px (overlap ${result.overlap} px)` +
    (files.length > 1 ? ` — grid shown for ${files[0].name}` : "");
  const e = result.estimate;
  document.getElementById("estimate").textContent = e.seconds_per_tile_source === "no_gpu"
    ? "Estimate: nothing is diffused (no GPU backend, or an asset type that never diffuses), so the job costs no GPU time."
    : `Estimate: ${e.tiles} GPU tiles × ${Number(e.seconds_per_tile.toPrecision(2))} s = ` +
      `${seconds(e.gpu_seconds)} of GPU time ≈ ${usd(e.usd)} per image ` +
      `(${e.seconds_per_tile_source === "recent_jobs" ? "from recent jobs" : "default per-tile time"}` +
      `, $${e.price_per_gpu_second}/GPU-second)`;
}

async function loadLoras() {
  const box = document.getElementById("lora-picks");
  try {
    availableLoras = (await api("/v1/models")).models;
  } catch (err) {
    box.replaceChildren(el("p", { class: "muted", text: `No LoRAs: ${err.message}` }));
    return;
  }
  if (!availableLoras.length) {
    box.replaceChildren(el("p", { class: "muted" }, "None on the worker yet. ",
                           el("a", { href: "/loras", text: "Upload one." })));
    return;
  }
  const last = (store.last() || {}).loras || [];
  const weights = Object.fromEntries(last.map((s) => [s.split(":")[0], s.split(":")[1]]));
  box.replaceChildren(...availableLoras.map((m, i) => {
    const id = `lora-${i}`;
    return el("div", { class: "row", "data-lora": m.name },
      el("input", { type: "checkbox", id, checked: m.name in weights }),
      el("label", { for: id, text: m.name }),
      el("label", { for: `${id}-w`, class: "sr-only", text: `Weight of ${m.name}` }),
      el("input", { type: "number", id: `${id}-w`, min: "-4", max: "4", step: "0.05",
                    value: weights[m.name] || "1" }),
      ...(m.trigger_words || []).map((w) => el("button", {
        type: "button", class: "chip", "data-word": w, text: w,
        title: `Add “${w}” to the style prompt` })));
  }));
}

// A LoRA's trigger word, clicked: into the style prompt (once), with the LoRA ticked.
document.getElementById("lora-picks").addEventListener("click", (e) => {
  const chip = e.target.closest("[data-word]");
  if (!chip) return;
  const prompt = form.querySelector("[data-param=prompt]");
  const words = prompt.value.split(",").map((w) => w.trim());
  if (!words.includes(chip.dataset.word)) {
    prompt.value = prompt.value.trim() ? `${prompt.value.trim()}, ${chip.dataset.word}` : chip.dataset.word;
  }
  chip.closest("[data-lora]").querySelector("input[type=checkbox]").checked = true;
  remember();
  schedulePlan();
});

async function pickStyle(file) {
  const status = document.getElementById("style-status");
  try {
    const stored = await api("/v1/styles", { method: "POST", body: file,
                                             headers: { "Content-Type": file.type || "application/octet-stream" } });
    document.getElementById("style-sha").value = stored.sha256;
    const scale = form.querySelector("[data-param=ip_adapter_scale]");
    if (scale && !parseFloat(scale.value)) scale.value = "0.5";  // a style image needs a scale
    status.textContent = `${file.name} will guide the style (IP-Adapter scale ${scale ? scale.value : ""}).`;
    clearError();
  } catch (err) {
    document.getElementById("style-sha").value = "";
    showError(err);
  }
}

function loadPresetList() {
  const select = document.getElementById("preset-select");
  const names = Object.keys(store.presets()).sort();
  select.replaceChildren(el("option", { value: "", text: "(last settings)" }),
                         ...names.map((n) => el("option", { value: n, text: n })));
}

// The chosen files, each with its outcome once submitted (a link to its job, or its error).
function showPicked() {
  const kb = (f) => `${f.name} (${Math.ceil(f.size / 1024)} KB)`;
  document.getElementById("picked").replaceChildren(...files.map((f) => {
    const out = outcomes.get(f);
    const li = el("li", { "data-testid": "picked-file", "data-name": f.name,
                          "data-outcome": out ? (out.job ? "submitted" : "failed") : null }, kb(f));
    if (out && out.job) li.append(" — submitted: ", el("a", { href: `/jobs/${out.job.id}`, text: `job ${out.job.id}` }));
    if (out && out.error) li.append(el("span", { class: "bad", text: ` — not submitted: ${errorText(out.error)}` }));
    return li;
  }));
  const left = files.filter((f) => !(outcomes.get(f) || {}).job).length;
  submit.textContent = left < files.length ? `Upscale the other ${left}` : "Upscale";
}

const errorText = (err) => `${err.code ? `[${err.code}] ` : ""}${err.message}`;

// One job per chosen file (but for those a previous submit made a job of). Opens the job (one
// file) or the queue (several) when every file has its job; else stays, each file showing its
// outcome, and throws an error naming the files that failed.
async function sendJobs() {
  const todo = files.filter((f) => !(outcomes.get(f) || {}).job);
  const targets = todo.map((f) => readTarget(form, f.name, files.length));  // refused: nothing sent
  for (const [i, file] of todo.entries()) {
    const size = files.length === 1 ? inputSize : null;
    const params = readParams(form, size, chosenLoras());
    const style = document.getElementById("style-sha").value;
    if (style) params.style_image_sha256 = style;
    const body = new FormData();
    body.append("file", file, file.name);
    body.append("params", JSON.stringify(params));
    if (targets[i]) body.append("target", JSON.stringify(targets[i]));
    try {
      outcomes.set(file, { job: await api("/v1/jobs", { method: "POST", body }) });
    } catch (err) {
      if (err.status === 401) throw err;  // off to the login page
      outcomes.set(file, { error: err });
    }
  }
  remember();
  showPicked();
  const failed = files.filter((f) => outcomes.get(f).error);
  if (!failed.length) {
    location.href = files.length === 1 ? `/jobs/${outcomes.get(files[0]).job.id}` : "/jobs";
    return;
  }
  const made = files.length - failed.length;
  const first = outcomes.get(failed[0]).error;
  throw Object.assign(new Error(
    failed.map((f) => `${f.name}: ${f === failed[0] ? first.message : errorText(outcomes.get(f).error)}`).join("; ") +
    (made ? ` (${made} of ${files.length} files were submitted; see the list)` : "")), { code: first.code });
}

function wire() {
  form.addEventListener("input", schedulePlan);
  form.addEventListener("change", (e) => {
    if (e.target.id === "size-mode") {
      document.getElementById("exact-size").hidden = e.target.value !== "exact";
    }
    schedulePlan();
  });
  document.getElementById("style-file").addEventListener("change", (e) => {
    e.stopPropagation();
    if (e.target.files[0]) pickStyle(e.target.files[0]);
  });
  document.getElementById("style-clear").addEventListener("click", () => {
    document.getElementById("style-sha").value = "";
    document.getElementById("style-file").value = "";
    document.getElementById("style-status").textContent = "No style image.";
  });
  document.getElementById("preset-save").addEventListener("click", () => {
    const name = document.getElementById("preset-name").value.trim();
    if (!name) { showError(new Error("give the preset a name first")); return; }
    store.savePreset(name, snapshot(form, chosenLoras()));
    loadPresetList();
    document.getElementById("preset-select").value = name;
  });
  document.getElementById("preset-load").addEventListener("click", () => {
    const name = document.getElementById("preset-select").value;
    restore(form, name ? store.presets()[name] : store.last());
    document.getElementById("exact-size").hidden = form.querySelector("#size-mode").value !== "exact";
    schedulePlan();
  });
  document.getElementById("preset-delete").addEventListener("click", () => {
    const name = document.getElementById("preset-select").value;
    if (name && confirm(`Delete the preset "${name}"?`)) { store.deletePreset(name); loadPresetList(); }
  });
  document.getElementById("preset-reset").addEventListener("click", () => { resetDefaults(form); schedulePlan(); });
}

// `/?sheet_of=<animate job>` (the Animate view's "Upscale this sheet"): that job's sheet as the
// file, processed cell by cell (its frames' boxes), beside the delivered sheet when there is one.
async function takeSheet(id) {
  const base = jobBase(id);
  try {
    const [job, { tiles }] = await Promise.all([api(base), api(`${base}/tiles`)]);
    const meta = Object.keys((job.output && job.output.files) || {}).find((n) => n.endsWith(".json"));
    if (!meta || !tiles.length) throw new Error(`job ${id} has no finished spritesheet to upscale`);
    const blob = await (await api(`${base}/result`, { headers: { Accept: "image/*" } })).blob();
    form.querySelector("[data-param=sheet]").value = `cell=${tiles[0].w}x${tiles[0].h}`;
    form.querySelector("[data-param=asset_type]").value = "sprite";
    if (job.output.delivered_path) {
      form.querySelector("#target_repo").value = job.target.repo;
      form.querySelector("#target_path").value = job.output.delivered_path;
    }
    const picked = new DataTransfer();  // shown in the file input too
    picked.items.add(new File([blob], meta.replace(/\.json$/, ".png"), { type: "image/png" }));
    fileInput.files = picked.files;
    setFiles(picked.files);
  } catch (err) { showError(err); }
}

document.getElementById("exact-size").hidden = form.querySelector("#size-mode").value !== "exact";
wire();
loadPresetList();
loadLoras().then(remember);
const sheetOf = new URLSearchParams(location.search).get("sheet_of");
if (sheetOf) takeSheet(sheetOf);
