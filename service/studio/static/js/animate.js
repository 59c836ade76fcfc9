// Animate: pick one sprite, choose the motion and the sheet's layout, submit, open the job.
// The form remembers its last settings (apart from the upscale form's).
import { api, el } from "./api.js";
import { jobForm } from "./jobform.js";
import { changedParams, readTarget, snapshot, store } from "./params.js";

const { form, submit } = jobForm({ last: "animate", onFiles: setFile, send: sendAnimation });
const stage = document.getElementById("sprite-stage");
const sprite = document.getElementById("sprite-image");
let file = null;

function setFile(list) {
  file = [...list].find((f) => f.size > 0) || null;
  const picked = document.getElementById("picked");
  submit.disabled = !file;
  stage.hidden = true;
  if (!file) { picked.textContent = ""; return; }
  picked.textContent = `${file.name} (${Math.ceil(file.size / 1024)} KB)`;
  sprite.onload = () => {
    const w = sprite.naturalWidth, h = sprite.naturalHeight;
    picked.replaceChildren(`${file.name}: ${w}×${h} px sprite`,
                           el("span", { class: "muted", text: ` (${Math.ceil(file.size / 1024)} KB)` }));
    // Small sprites are drawn larger, pixel for pixel (nearest-neighbour).
    stage.style.maxWidth = `min(100%, calc(40vh * ${w / h}))`;
    stage.hidden = false;
  };
  sprite.onerror = () => { picked.append(" — the browser cannot draw this file."); };
  sprite.src = URL.createObjectURL(file);
}

async function sendAnimation() {
  const query = new URLSearchParams({ filename: file.name });
  for (const [k, v] of Object.entries(changedParams(form))) query.set(k, String(v));
  const target = readTarget(form, file.name);
  if (target) {
    query.set("target_repo", target.repo);
    query.set("target_path", target.path);
  }
  const job = await api(`/v1/animations?${query}`, {
    method: "POST", body: file,
    headers: { "Content-Type": file.type || "application/octet-stream" } });
  store.saveLast(snapshot(form), "animate");
  location.href = `/jobs/${job.id}`;
}
