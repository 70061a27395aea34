/* Dataset admin, upload job page: follow the import job until it ends (status, stage, files, messages).
   A static file, not an inline script: the Content-Security-Policy allows scripts from 'self' only. */
(function () {
  "use strict";
  const page = document.querySelector("[data-job-status-url]");
  if (!page) return;
  const statusUrl = page.dataset.jobStatusUrl;
  const labels = { queued: "Queued", running: "Running", done: "Done", failed: "Failed", cancelled: "Cancelled" };
  function show(state) {
    document.getElementById("job-status").textContent = labels[state.status] || state.status;
    document.getElementById("job-stage").textContent = state.stage;
    document.getElementById("job-count").textContent = state.total ? `${state.done}/${state.total} files` : "";
    const bar = document.getElementById("job-progress");
    bar.max = state.total || 1;
    bar.value = state.finished && state.status === "done" ? bar.max : state.done;
    if (state.finished) {
      document.getElementById("job-cancel-form").hidden = true;
      document.getElementById("job-links").hidden = false;
      const list = document.getElementById("job-messages");
      list.replaceChildren();
      const item = document.createElement("li");
      item.className = state.status === "done" ? "success" : "error";
      for (const line of state.messages) {
        item.append(line);
        item.append(document.createElement("br"));
      }
      list.append(item);
    }
    return state.finished;
  }
  async function poll() {
    try {
      const response = await fetch(statusUrl, { credentials: "same-origin" });
      if (response.ok && show(await response.json())) return;
    } catch (error) { /* try again */ }
    setTimeout(poll, 1000);
  }
  if (!show(JSON.parse(document.getElementById("job-state").textContent))) setTimeout(poll, 500);
})();
