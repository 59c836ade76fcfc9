// Job options <-> the form, presets (the watch folders' .aat.toml keys) and the last settings.

const LAST_KEY = "aat.studio.last";
const PRESETS_KEY = "aat.studio.presets";
const TARGET_KEYS = ["repo", "target_dir", "naming", "mirror_dir"];

export function paramInputs(form) {
  return [...form.querySelectorAll("[data-param]")];
}

function readInput(input) {
  const kind = input.dataset.kind;
  if (kind === "checkbox") return input.checked;
  if (kind === "tristate") return input.value === "" ? null : input.value === "true";
  if (kind === "integer" || kind === "number") {
    if (input.value.trim() === "") return null;
    return kind === "integer" ? parseInt(input.value, 10) : parseFloat(input.value);
  }
  return input.value;
}

function writeInput(input, value) {
  if (input.dataset.kind === "checkbox") input.checked = value === true || value === "true";
  else if (input.dataset.kind === "tristate") input.value = value === null || value === undefined ? "" : String(value);
  else input.value = value === null || value === undefined ? "" : String(value);
}

// The size part of UpscaleParams from the size controls (needs the input size for "long:").
export function sizeParams(form, inputSize) {
  const mode = form.querySelector("#size-mode").value;
  if (mode.startsWith("scale:")) return { scale: parseFloat(mode.slice(6)) };
  if (mode.startsWith("long:")) {
    const side = parseInt(mode.slice(5), 10);
    if (!inputSize) return { width: side };
    return inputSize.width >= inputSize.height ? { width: side } : { height: side };
  }
  const w = parseInt(form.querySelector("#width").value, 10);
  const h = parseInt(form.querySelector("#height").value, 10);
  const out = {};
  if (w > 0) out.width = w;
  if (h > 0) out.height = h;
  return Object.keys(out).length ? out : { scale: 2 };
}

// Whether `value` (as read from `input`) is the control's default: numbers compare as numbers
// (the schema's default 7.0 is written "7.0", the field reads 7).
function isDefault(input, value) {
  const dflt = input.dataset.default;
  if (typeof value === "number" && dflt !== undefined && dflt.trim() !== "") return value === Number(dflt);
  return String(value) === dflt;
}

// The form's generated controls that differ from their defaults (only those are sent).
export function changedParams(form) {
  const params = {};
  for (const input of paramInputs(form)) {
    const value = readInput(input);
    if (value === null || value === "" || isDefault(input, value)) continue;
    params[input.dataset.param] = value;
  }
  return params;
}

// UpscaleParams from the form.
export function readParams(form, inputSize, loras) {
  const params = { ...sizeParams(form, inputSize), ...changedParams(form) };
  if (loras.length) params.loras = loras;
  return params;
}

// The target in a repo for the file `filename`, one of `count` sent together (null: download
// only). The path in the repo is where the source sits: empty = the file's own name at the
// repo's top; ending in "/" = a folder, the file keeps its own name in it. With several files
// the path is always a folder, and one naming a file (textures/rock.png) is refused: every
// result would aim at that one file. A form without naming controls (Animate) sends the repo
// and path alone.
export function readTarget(form, filename, count = 1) {
  const value = (sel) => { const n = form.querySelector(sel); return n ? n.value.trim() : ""; };
  const repo = value("#target_repo");
  if (!repo) return null;
  const path = value("#target_path");
  const last = path.split("/").pop();
  if (count > 1 && /\.[^.]+$/.test(last)) {
    throw new Error(`Path in repo "${path}" names one file, but ${count} images were chosen: ` +
                    `give a folder (e.g. "${path.slice(0, path.length - last.length) || "textures/"}") ` +
                    "and each image keeps its own name in it");
  }
  let where = path || filename;
  if (path && (path.endsWith("/") || count > 1)) {
    const folder = path.replace(/\/+$/, "");
    where = folder ? `${folder}/${filename}` : filename;
  }
  const target = { repo, path: where };
  for (const [key, sel] of [["naming", "#naming"], ["mirror_dir", "#mirror_dir"]]) {
    if (value(sel)) target[key] = value(sel);
  }
  return target;
}

// Everything the form holds, as one flat object with the watch-folder preset's keys.
// (A form without some of these controls, like Animate's, leaves their keys out.)
export function snapshot(form, loras = []) {
  const value = (sel) => { const n = form.querySelector(sel); return n ? n.value.trim() : undefined; };
  const out = { size_mode: value("#size-mode") };
  const w = value("#width"), h = value("#height");
  if (w) out.width = parseInt(w, 10);
  if (h) out.height = parseInt(h, 10);
  for (const input of paramInputs(form)) out[input.dataset.param] = readInput(input);
  out.loras = loras.map((l) => `${l.name}:${l.weight}`);
  out.repo = value("#target_repo");
  out.target_path = value("#target_path");
  out.naming = value("#naming");
  out.mirror_dir = value("#mirror_dir");
  return out;
}

export function restore(form, values) {
  if (!values) return;
  const set = (sel, v) => { const n = form.querySelector(sel); if (n && v !== undefined) n.value = v; };
  set("#size-mode", values.size_mode);
  set("#width", values.width);
  set("#height", values.height);
  for (const input of paramInputs(form)) {
    if (input.dataset.param in values) writeInput(input, values[input.dataset.param]);
  }
  set("#target_repo", values.repo);
  set("#target_path", values.target_path);
  set("#naming", values.naming);
  set("#mirror_dir", values.mirror_dir);
}

export function resetDefaults(form) {
  form.querySelector("#size-mode").value = "scale:2";
  for (const input of paramInputs(form)) writeInput(input, input.dataset.default);
}

// A .aat.toml body for a watch folder with these settings (non-default values only).
export function toToml(values, form) {
  const lines = [];
  const mode = values.size_mode || "scale:2";
  if (mode.startsWith("scale:")) {
    if (mode !== "scale:2") lines.push(`scale = ${mode.slice(6)}`);  // 2 is the default
  } else if (mode.startsWith("long:")) {
    lines.push(`width = ${mode.slice(5)}  # long side; use height = for portrait images`);
  } else {
    if (values.width) lines.push(`width = ${values.width}`);
    if (values.height) lines.push(`height = ${values.height}`);
  }
  for (const input of paramInputs(form)) {
    const key = input.dataset.param, value = values[key];
    if (value === null || value === undefined || value === "" || isDefault(input, value)) continue;
    lines.push(`${key} = ${typeof value === "string" ? JSON.stringify(value) : value}`);
  }
  if (values.loras && values.loras.length) lines.push(`loras = ${JSON.stringify(values.loras)}`);
  if (values.repo) lines.push(`repo = ${JSON.stringify(values.repo)}`);
  if (values.naming && values.naming !== "suffix") lines.push(`naming = ${JSON.stringify(values.naming)}`);
  if (values.mirror_dir) lines.push(`mirror_dir = ${JSON.stringify(values.mirror_dir)}`);
  return lines.join("\n") + "\n";
}

export const store = {
  // `form` names another form's last settings (the Animate form's: "animate").
  last: (form = "") => JSON.parse(localStorage.getItem(LAST_KEY + (form && `.${form}`)) || "null"),
  saveLast: (values, form = "") => localStorage.setItem(LAST_KEY + (form && `.${form}`), JSON.stringify(values)),
  presets: () => JSON.parse(localStorage.getItem(PRESETS_KEY) || "{}"),
  savePreset(name, values) {
    const all = this.presets();
    all[name] = values;
    localStorage.setItem(PRESETS_KEY, JSON.stringify(all));
  },
  deletePreset(name) {
    const all = this.presets();
    delete all[name];
    localStorage.setItem(PRESETS_KEY, JSON.stringify(all));
  },
};

export { TARGET_KEYS };
