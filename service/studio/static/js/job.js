// Job view: live tile grid from SSE, tile panel (before/after, caption, re-run), whole-image
// compare slider with zoom and 1:1 pixels, download, cancel, retry.
import "/static/vendor/img-comparison-slider-8.0.7.js";
import Panzoom from "/static/vendor/panzoom-4.6.2.es.js";
import { TERMINAL, api, clearError, el, hitBoxes, jobBase, placeBox, seconds, showError } from "./api.js";
import { Picker, costFact, renderStatus, wireCancelRetry } from "./jobview.js";

const jobId = document.body.dataset.jobId;
const grid = document.getElementById("tile-grid");
const gridImage = document.getElementById("grid-image");
let job = null;
let tiles = [];
let events = null;
const picker = new Picker(grid, "tile", {
  columns: () => new Set(tiles.map((t) => t.x)).size, onChange: () => renderPanel() });
const selected = picker.selected;
// Captions typed into the panel and not saved yet, by tile: the box shows one tile at a time,
// so an edit belongs to the tile shown when it was typed, never to the rest of the selection.
const drafts = new Map();
let shown = null;
const captionBox = document.getElementById("tile-caption");
const savedCaption = (t) => t.prompt || t.caption || "";

const base = jobBase(jobId);
const outputSize = () => job.output
  ? { width: job.output.width, height: job.output.height } : plannedSize();

function plannedSize() {
  const p = job.params, w = job.input.width, h = job.input.height;
  if (p.width && p.height) return { width: p.width, height: p.height };
  if (p.width) return { width: p.width, height: Math.max(1, Math.round(h * p.width / w)) };
  if (p.height) return { width: Math.max(1, Math.round(w * p.height / h)), height: p.height };
  return { width: Math.round(w * p.scale), height: Math.round(h * p.scale) };
}

function preview(which, max, box) {
  let url = `${base}/preview/${which}?max=${max}`;
  if (box) url += `&x=${box.x}&y=${box.y}&w=${box.w}&h=${box.h}`;
  return url;
}

// ---- status line -----------------------------------------------------------------------------

function renderJob() {
  const size = outputSize();
  const facts = [
    ["Input", `${job.input.width}×${job.input.height} ${job.input.format}`],
    ["Output", `${size.width}×${size.height}${job.output ? " " + job.output.format : ""}`],
    costFact(job.cost),
    ["Seed", String(job.params.seed ?? "")],
  ];
  if (job.output && job.output.delivered_path) facts.push(["Delivered to", `${job.target.repo}: ${job.output.delivered_path}`]);
  renderStatus(job, facts);
}

// ---- tile grid -------------------------------------------------------------------------------

// Each tile is a button over its hit area (hitBoxes: the overlaps with its neighbours cut at
// their midlines, so a click selects the tile under it, never a neighbour drawn on top), with
// the tile's full outline drawn by a child that takes no clicks.
function drawTiles() {
  const size = outputSize();
  const hits = hitBoxes(tiles);
  grid.replaceChildren(...tiles.map((t, i) => {
    const hit = hits[i];
    const outline = placeBox(el("span", { class: "outline" }),
                             { x: t.x - hit.x, y: t.y - hit.y, w: t.w, h: t.h }, { width: hit.w, height: hit.h });
    return placeBox(
      el("button", { type: "button", class: "tile", "data-testid": "tile",
                     "data-index": t.index, "data-state": t.state,
                     "aria-label": `Tile ${t.index}, ${t.state}`, ...picker.attrs(t.index) }, outline),
      hit, size);
  }));
}

function setTileState(index, state) {
  const t = tiles[index];
  if (t) t.state = state;
  const node = grid.querySelector(`[data-index="${index}"]`);
  if (node && node.dataset.state !== state) {
    node.dataset.state = state;
    node.setAttribute("aria-label", `Tile ${index}, ${state}`);
  }
}

function renderPanel() {
  const chosen = [...selected].sort((a, b) => a - b);
  document.getElementById("panel-empty").hidden = chosen.length > 0;
  document.getElementById("panel-body").hidden = chosen.length === 0;
  if (!chosen.length) { shown = null; return; }
  // The panel shows the tile last picked (else the last of the selection).
  const t = tiles[selected.has(picker.focus) ? picker.focus : chosen[chosen.length - 1]];
  shown = t.index;
  document.getElementById("panel-which").textContent = chosen.length === 1
    ? `Tile ${t.index} at ${t.x},${t.y} (${t.w}×${t.h} px)`
    : `${chosen.length} tiles selected (${chosen.join(", ")}); showing tile ${t.index}`;
  const box = { x: t.x, y: t.y, w: t.w, h: t.h };
  document.getElementById("tile-before").src = preview("input", 512, box);
  const after = document.getElementById("tile-after");
  after.hidden = job.status !== "succeeded";
  if (job.status === "succeeded") after.src = preview("output", 512, box);
  captionBox.value = drafts.has(t.index) ? drafts.get(t.index) : savedCaption(t);
  const facts = [["State", t.state], ["Seed", t.seed ?? "not yet"],
                 ["Caption by the model", t.caption || "none"]];
  if (t.prompt) facts.push(["Your caption", t.prompt]);
  const tm = t.timings || {};
  for (const [stage, label] of [["caption", "Captioning"], ["refine", "Refining"]]) {
    if (tm[stage] === undefined) continue;
    const gpu = tm[`${stage}_gpu`] !== undefined ? ` (GPU ${seconds(tm[`${stage}_gpu`])})` : "";
    facts.push([label, `${seconds(tm[stage])}${gpu}`]);
  }
  if (t.state === "cached") facts.push(["Refining", "from the cache (no GPU time)"]);
  document.getElementById("tile-facts").replaceChildren(
    ...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
  document.getElementById("rerun-tiles").disabled = !TERMINAL.includes(job.status);
}

async function loadTiles() {
  tiles = (await api(`${base}/tiles`)).tiles;
  drawTiles();
  renderPanel();
}

// ---- images ----------------------------------------------------------------------------------

let panzoom = null;
let detail = 0;

function loadImages() {
  const done = job.status === "succeeded";
  const size = outputSize();
  const stage = document.getElementById("tile-stage");
  stage.style.maxWidth = `calc(65vh * ${size.width / size.height})`;
  stage.classList.toggle("pixelated", Math.max(job.input.width, job.input.height) <= 256);
  document.getElementById("compare-pan").style.setProperty("--fit-width", `calc(70vh * ${size.width / size.height})`);
  gridImage.src = preview(done ? "output" : "input", 1600);
  document.getElementById("compare-before").src = preview("input", 1600);
  const after = document.getElementById("compare-after");
  if (done) after.src = preview("output", 1600);
  else after.src = preview("input", 1600);
  detail = 1600;
}

function wireZoom() {
  const pan = document.getElementById("compare-pan");
  const slider = document.getElementById("compare-slider");
  panzoom = Panzoom(pan, { maxScale: 64, minScale: 0.1, canvas: true, handleStartEvent: (e) => {
    // Drag the divider with a plain drag; pan with Shift+drag or the middle button.
    if (!(e.shiftKey || e.button === 1)) throw new Error("not panning");
    e.preventDefault();
  } });
  document.getElementById("compare-frame").addEventListener("wheel", (e) => {
    panzoom.zoomWithWheel(e);
    moreDetail();
  });
  document.getElementById("zoom-in").addEventListener("click", () => { panzoom.zoomIn(); moreDetail(); });
  document.getElementById("zoom-out").addEventListener("click", () => panzoom.zoomOut());
  document.getElementById("zoom-fit").addEventListener("click", () => {
    slider.classList.remove("pixels");
    panzoom.reset();
  });
  document.getElementById("zoom-1to1").addEventListener("click", () => {
    // 1:1 = one image pixel per screen pixel, nearest-neighbour (pixel art stays crisp).
    const size = outputSize();
    const shown = slider.getBoundingClientRect().width / panzoom.getScale();
    slider.classList.add("pixels");
    panzoom.zoom(size.width / shown / devicePixelRatio, { animate: false });
    moreDetail(true);
  });
}

function moreDetail(full = false) {
  // Zooming in fetches a larger preview once (up to the full output size).
  if (!job || job.status !== "succeeded") return;
  const size = outputSize();
  const want = full ? Math.max(size.width, size.height)
    : Math.min(Math.max(size.width, size.height), Math.ceil(1600 * panzoom.getScale()));
  if (want <= detail * 1.2) return;
  detail = Math.min(16384, want);
  document.getElementById("compare-before").src = preview("input", detail);
  document.getElementById("compare-after").src = preview("output", detail);
}

// ---- live updates ----------------------------------------------------------------------------

function follow() {
  events = new EventSource(`${base}/events?tiles=true`);
  events.addEventListener("progress", (e) => {
    const before = job && job.status;
    job = JSON.parse(e.data);
    renderJob();
    if (before !== job.status && job.status === "succeeded") { loadImages(); loadTiles(); }
    else if (!tiles.length && job.stages && job.stages.plan) loadTiles();
  });
  events.addEventListener("tiles", (e) => {
    const changed = JSON.parse(e.data).tiles;
    if (changed.some((c) => !tiles[c.index])) { loadTiles(); return; }
    for (const c of changed) setTileState(c.index, c.state);
  });
  events.addEventListener("end", (e) => {
    job = JSON.parse(e.data);
    renderJob();
    events.close();
    loadTiles();
    renderPanel();
  });
}

// ---- actions ---------------------------------------------------------------------------------

async function saveCaptions(indices) {
  // PATCH each tile of indices whose draft differs from its saved caption (a failed PATCH keeps
  // its draft and stops).
  for (const i of indices) {
    if (!drafts.has(i)) continue;
    const prompt = drafts.get(i);
    if (tiles[i] && prompt !== savedCaption(tiles[i])) {
      const t = await api(`${base}/tiles/${i}`, { method: "PATCH", json: { prompt } });
      tiles[i] = { ...tiles[i], ...t };
    }
    drafts.delete(i);
  }
}

async function saveCaption() {
  if (shown === null) return;
  try {
    drafts.set(shown, captionBox.value);
    await saveCaptions([shown]);
    clearError();
    renderPanel();
  } catch (err) { showError(err); }
}

async function rerun() {
  try {
    await saveCaptions([...selected]);
    const next = await api(`${base}/rerun`, { method: "POST", json: { tiles: [...selected] } });
    location.href = `/jobs/${next.id}`;
  } catch (err) { showError(err); }
}

function wire() {
  captionBox.addEventListener("input", () => { if (shown !== null) drafts.set(shown, captionBox.value); });
  document.getElementById("save-caption").addEventListener("click", saveCaption);
  document.getElementById("rerun-tiles").addEventListener("click", rerun);
  wireCancelRetry(() => job, (j) => { job = j; renderJob(); });
}

async function start() {
  wire();
  wireZoom();
  try {
    job = await api(base);
    renderJob();
    loadImages();
    await loadTiles();
    if (!TERMINAL.includes(job.status)) follow();
  } catch (err) { showError(err); }
}

start();
