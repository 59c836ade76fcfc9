// Animate job view: the frames as a strip (each cell cut from the sheet, its state live from
// SSE), a preview playing them at the animation's FPS, per-frame regenerate, the sheet and its
// metadata files to download, cancel and retry.
//
// Frames are the job's tiles (GET .../tiles: index = frame, state); their cells on the sheet
// and the timing come from the sheet's own Aseprite JSON, so the page does no layout maths.
import { TERMINAL, api, clearError, el, jobBase, showError } from "./api.js";
import { Picker, costFact, renderStatus, wireCancelRetry } from "./jobview.js";

const strip = document.getElementById("frame-strip");
const preview = document.getElementById("animation-preview");
const playButton = document.getElementById("play-pause");
const fpsInput = document.getElementById("preview-fps");
const regenerate = document.getElementById("regenerate-frames");
const STATE_WORDS = { queued: "queued", captioning: "generating", refining: "generating",
                      done: "done", cached: "kept", failed: "failed", canceled: "canceled" };
// Cell height in the strip and the preview's size: 8 and 16 rem (the page scales with the screen).
const rem = () => parseFloat(getComputedStyle(document.documentElement).fontSize) || 16;

let job = null;
let frames = [];      // the job's tiles: [{ index, state, caption, prompt, ... }]
let sheet = null;     // { image, rects: [[x, y, w, h]] in the image's pixels, fps, loop }
let placeholder = null;  // the input sprite, drawn faintly in cells not generated yet
let events = null;
const picker = new Picker(strip, "frame", {
  // Up/Down move by one row of the strip as it wraps on screen.
  columns: () => [...strip.children].filter((n) => n.offsetTop === strip.children[0].offsetTop).length,
  onChange: renderSelection });

// ---- the job ---------------------------------------------------------------------------------

function renderJob() {
  const a = job.animation || {};
  const facts = [
    ["Motion", a.motion_text ? `${a.motion} — ${a.motion_text}` : a.motion],
    ["Frames", `${a.frames}, facing ${a.facing}, ${a.layout === "grid" ? "grid" : "one row"}` +
               (a.frame_size ? `, ${a.frame_size.replace("x", "×")} px each` : "")],
  ];
  if (sheet) facts.push(["Playback", `${sheet.fps} fps, ${sheet.loop ? "loops" : "plays once"}`]);
  if (job.output) facts.push(["Sheet", `${job.output.width}×${job.output.height} ${job.output.format}`]);
  facts.push(["Sprite", `${job.input.width}×${job.input.height} ${job.input.format}`]);
  facts.push(costFact(job.cost));
  facts.push(["Seed", String(a.seed ?? "")]);
  if (job.output && job.output.delivered_path) {
    facts.push(["Delivered to", `${job.target.repo}: ` +
      [job.output.delivered_path, ...(job.output.sidecars || [])].join(", ")]);
  }
  renderStatus(job, facts);
  const links = document.getElementById("companion-links");
  const files = job.status === "succeeded" && job.output ? Object.keys(job.output.files || {}) : [];
  links.replaceChildren(...files.map((name) => el("a", {
    class: "button", href: `${jobBase(job.id)}/files/${encodeURIComponent(name)}`, download: name,
    "data-testid": "download-file", "data-name": name, text: fileLabel(name) })));
  const upscale = document.getElementById("upscale-sheet");  // the new-job form, sheet taken
  upscale.hidden = !files.length;
  upscale.href = `/?sheet_of=${encodeURIComponent(job.id)}`;
  renderSelection();
}

function fileLabel(name) {
  const ext = name.slice(name.lastIndexOf("."));
  return { ".json": "Aseprite JSON", ".tres": "Godot SpriteFrames", ".webp": "Animated WebP",
           ".gif": "Animated GIF" }[ext] || name;
}

// ---- frames ----------------------------------------------------------------------------------

async function loadFrames() {
  const listed = (await api(`${jobBase(job.id)}/tiles`)).tiles;
  frames = listed.length ? listed : counted();
  drawStrip();
}

// A job stored before frames were tiles lists none: their states from the job's status.
function counted() {
  const state = { succeeded: "done", failed: "failed", running: "refining" }[job.status] || "queued";
  return Array.from({ length: job.animation.frames }, (_, i) => ({ index: i, state, counted: true }));
}

function cellSize() {
  if (sheet) return { w: sheet.rects[0][2], h: sheet.rects[0][3] };
  const size = (job.animation && job.animation.frame_size) || `${job.input.width}x${job.input.height}`;
  const [w, h] = size.split("x").map(Number);
  return { w, h };
}

function drawStrip() {
  const { w, h } = cellSize();
  const tall = Math.round(8 * rem());
  const scale = h <= tall ? Math.max(1, Math.floor(tall / h)) : tall / h;
  strip.replaceChildren(...frames.map((f) => {
    const canvas = el("canvas", { width: w, height: h, class: scale >= 1 ? "pixelated" : null });
    canvas.style.width = `${Math.round(w * scale)}px`;
    canvas.style.height = `${Math.round(h * scale)}px`;
    const node = el("button", { type: "button", class: "frame", "data-testid": "frame",
                                "data-index": f.index, "data-state": f.state,
                                "aria-label": label(f), ...picker.attrs(f.index) },
                    canvas, el("span", { class: "frame-no", text: String(f.index + 1) }));
    paintCell(canvas, f.index);
    return node;
  }));
}

function label(f) {
  return `Frame ${f.index + 1}, ${STATE_WORDS[f.state] || f.state}`;
}

function paintCell(canvas, index) {
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const rect = sheet && sheet.rects[index];
  if (rect) {
    ctx.drawImage(sheet.image, rect[0], rect[1], rect[2], rect[3], 0, 0, canvas.width, canvas.height);
  } else if (placeholder) {  // not generated yet: the source sprite, fitted and faint
    const k = Math.min(canvas.width / placeholder.width, canvas.height / placeholder.height);
    const dw = placeholder.width * k, dh = placeholder.height * k;
    ctx.globalAlpha = 0.3;
    ctx.drawImage(placeholder, (canvas.width - dw) / 2, canvas.height - dh, dw, dh);
    ctx.globalAlpha = 1;
  }
}

function setFrameState(index, state) {
  const f = frames.find((x) => x.index === index);
  if (f) f.state = state;
  const node = strip.querySelector(`[data-index="${index}"]`);
  if (node && node.dataset.state !== state) {
    node.dataset.state = state;
    node.setAttribute("aria-label", label({ index, state }));
  }
}

function renderSelection() {
  const chosen = picker.chosen();
  const note = document.getElementById("selection-note");
  note.textContent = chosen.length === 0 ? "No frame selected."
    : `${chosen.length === 1 ? "Frame" : "Frames"} ${chosen.map((i) => i + 1).join(", ")} selected.`;
  regenerate.disabled = !job || !chosen.length || !TERMINAL.includes(job.status);
  // One frame's edit prompt can be changed before it is regenerated (each frame has its own).
  const one = chosen.length === 1 ? frames.find((f) => f.index === chosen[0]) : null;
  const row = document.getElementById("prompt-row");
  if (!one || one.counted) { row.hidden = true; return; }
  if (row.hidden || row.dataset.index !== String(one.index)) {
    row.dataset.index = String(one.index);
    document.getElementById("frame-prompt-label").textContent = `Edit prompt of frame ${one.index + 1}`;
    document.getElementById("frame-prompt").value = one.prompt || one.caption || "";
  }
  row.hidden = false;
}

// ---- the sheet and the preview ---------------------------------------------------------------

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`could not load ${url}`));
    img.src = url;
  });
}

// The sheet and its cells and timing from its Aseprite JSON. A sheet up to 1 Mpx (16 frames
// of 256x256) is drawn from the PNG itself, since a lossy preview would shift pixel-art
// colours; a larger one from a WebP preview.
async function loadSheet() {
  const out = job.output;
  const json = Object.keys(out.files || {}).find((n) => n.endsWith(".json"));
  const meta = await api(`${jobBase(job.id)}/files/${encodeURIComponent(json)}`);
  const full = out.width * out.height <= 1 << 20;
  const url = full ? `${jobBase(job.id)}/result?v=${out.sha256.slice(0, 12)}`
    : `${jobBase(job.id)}/preview/output?max=4096`;
  const image = await loadImage(url);
  const k = image.naturalWidth / out.width;
  const rects = meta.frames.map(({ frame: r }) => [r.x * k, r.y * k, r.w * k, r.h * k]);
  const tag = (meta.meta.frameTags || [])[0] || {};
  // The FPS asked for (the JSON's whole milliseconds round 60 fps to 59), else the motion's.
  const fps = job.animation.fps || Math.max(1, Math.round(1000 / (meta.frames[0].duration || 100)));
  sheet = { image, rects, fps, loop: tag.repeat === undefined };
  fpsInput.value = String(fps);
  preview.width = Math.round(rects[0][2]);
  preview.height = Math.round(rects[0][3]);
  const scale = Math.max(1, Math.floor(16 * rem() / Math.max(preview.width, preview.height)));
  preview.style.width = `${preview.width * scale}px`;
  preview.classList.toggle("pixelated", scale > 1 || out.width <= 2048);
  document.getElementById("player-empty").hidden = true;
  document.getElementById("player-note").textContent = sheet.loop ? ""
    : "This animation plays once in the game; the preview repeats it after a pause.";
  playButton.disabled = false;
  drawStrip();
  strip.dataset.sheet = out.sha256;  // which sheet the cells show (scripts can wait for it)
  renderJob();
  showFrame(Math.min(player.frame, rects.length - 1), true);  // at once, not at the next step
  play(true);
}

const player = { playing: false, frame: 0, start: 0, raf: 0 };

function play(on) {
  player.playing = on;
  preview.dataset.playing = String(on);
  preview.setAttribute("aria-label", `The animation, ${on ? "playing" : "paused"}`);
  playButton.textContent = on ? "Pause" : "Play";
  playButton.setAttribute("aria-pressed", String(on));
  cancelAnimationFrame(player.raf);
  if (!on || !sheet) return;
  const fps = () => Math.min(60, Math.max(1, Number(fpsInput.value) || sheet.fps));
  player.start = performance.now() - player.frame * 1000 / fps();
  const tick = (now) => {
    const n = sheet.rects.length;
    const period = n + (sheet.loop ? 0 : 6);  // a non-looping one holds its last frame a while
    // (a frame's timestamp may be a little earlier than the start taken just before it)
    const step = Math.floor(Math.max(0, now - player.start) * fps() / 1000) % period;
    showFrame(Math.min(step, n - 1));
    player.raf = requestAnimationFrame(tick);
  };
  player.raf = requestAnimationFrame(tick);
}

function showFrame(index, force = false) {
  if (index === player.frame && !force) return;
  player.frame = index;
  const ctx = preview.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, preview.width, preview.height);
  const r = sheet.rects[index];
  ctx.drawImage(sheet.image, r[0], r[1], r[2], r[3], 0, 0, preview.width, preview.height);
  preview.dataset.frame = String(index);
  document.getElementById("player-frame").textContent = `frame ${index + 1} of ${sheet.rects.length}`;
}

// ---- live updates ----------------------------------------------------------------------------

function follow() {
  if (events) events.close();
  events = new EventSource(`${jobBase(job.id)}/events?tiles=true`);
  events.addEventListener("progress", (e) => {
    job = JSON.parse(e.data);
    renderJob();
    if (!frames.length) loadFrames().catch(showError);
    else if (frames[0].counted) for (const f of counted()) setFrameState(f.index, f.state);
  });
  events.addEventListener("tiles", (e) => {
    const changed = JSON.parse(e.data).tiles;
    if (changed.some((c) => !frames.find((f) => f.index === c.index))) { loadFrames().catch(showError); return; }
    for (const c of changed) setFrameState(c.index, c.state);
  });
  events.addEventListener("end", async (e) => {
    job = JSON.parse(e.data);
    events.close();
    events = null;
    renderJob();
    try {
      await loadFrames();
      if (job.status === "succeeded") await loadSheet();
    } catch (err) { showError(err); }
  });
}

// ---- actions ---------------------------------------------------------------------------------

// Regenerate the chosen frames: the service answers with the job that makes them (a new
// one from the same sprite, with the other frames kept); the page follows it in place,
// showing the current sheet's frames until the new sheet is in.
async function regenerateChosen() {
  const chosen = picker.chosen();
  if (!chosen.length) return;
  regenerate.disabled = true;
  try {
    const edited = document.getElementById("frame-prompt").value.trim();
    const one = chosen.length === 1 && frames.find((f) => f.index === chosen[0]);
    if (one && !one.counted && edited && edited !== (one.prompt || one.caption || "")) {
      await api(`${jobBase(job.id)}/tiles/${one.index}`, { method: "PATCH", json: { prompt: edited } });
    }
    const next = await api(`${jobBase(job.id)}/rerun`, { method: "POST", json: { tiles: chosen } });
    clearError();
    if (next.id !== job.id) {
      history.pushState(null, "", `/jobs/${next.id}`);
      document.body.dataset.jobId = next.id;
    }
    job = next;
    for (const i of chosen) setFrameState(i, "queued");
    picker.clear();
    renderJob();
    follow();
  } catch (err) {
    showError(err);
    renderSelection();
  }
}

function wire() {
  regenerate.addEventListener("click", regenerateChosen);
  playButton.addEventListener("click", () => play(!player.playing));
  fpsInput.addEventListener("change", () => { if (player.playing) play(true); });
  wireCancelRetry(() => job, (j) => { job = j; renderJob(); });
  addEventListener("popstate", () => location.reload());
}

async function start() {
  wire();
  try {
    job = await api(jobBase(document.body.dataset.jobId));
    renderJob();
    loadImage(`${jobBase(job.id)}/preview/input?max=256`)
      .then((img) => { placeholder = img; if (!sheet) drawStrip(); }).catch(() => {});
    await loadFrames();
    if (job.status === "succeeded") await loadSheet();
    else if (!TERMINAL.includes(job.status)) follow();
  } catch (err) { showError(err); }
}

start();
