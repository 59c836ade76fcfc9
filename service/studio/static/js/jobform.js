// What both job forms share (New job, Animate; templates/forms.html): the form, its drop zone
// and file input, its last settings restored, and a submit that sends once and shows why not.
import { clearError, fileDrop, showError } from "./api.js";
import { restore, store } from "./params.js";

// Wires the page's job form. `onFiles(FileList)` gets the files dropped or picked and enables
// the submit button when there is something to send; `send()` creates the job(s) and leaves
// the page. A submit does nothing while the button is disabled (no file yet, or a submit on
// its way); a failed one shows its error and enables the button again. `last` names the form's
// remembered settings (store.last). Returns the form, its file input and its submit button.
export function jobForm({ last = "", onFiles, send }) {
  const form = document.getElementById("job-form");
  const fileInput = document.getElementById("file");
  const submit = form.querySelector("button[type=submit]");
  restore(form, store.last(last));
  fileDrop(document.getElementById("dropzone"), fileInput, onFiles);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (submit.disabled) return;
    clearError();
    submit.disabled = true;
    try {
      await send();
    } catch (err) {
      showError(err);
      submit.disabled = false;
    }
  });
  return { form, fileInput, submit };
}
