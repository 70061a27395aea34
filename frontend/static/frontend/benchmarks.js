/* Benchmark pages: live subset counts on the launch form, polling progress on the runs console
   and the results page, cancel / retry buttons. No framework, no build step. */
(function () {
  "use strict";
  const POLL_MS = 1000;
  const ACTIVE = ["queued", "running"];

  function csrf() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }
  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) throw new Error(`${response.status} ${url}`);
    return response.json();
  }
  async function post(url) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRFToken": csrf(), Accept: "application/json" },
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || `${response.status}`);
    return body;
  }
  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 90) return `${seconds.toFixed(0)} s`;
    const m = Math.floor(seconds / 60), s = Math.round(seconds % 60);
    return m < 90 ? `${m} min ${s} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
  }
  function label(status) { return status.charAt(0).toUpperCase() + status.slice(1); }

  function paintRow(el, run) {
    el.dataset.status = run.status;
    const set = (field, fn) => el.querySelectorAll(`[data-field=${field}]`).forEach(fn);
    set("status", (n) => { n.className = `status ${run.status}`; n.textContent = label(run.status); });
    set("bar", (n) => { n.style.width = `${Math.round(run.progress)}%`; });
    set("percent", (n) => { n.textContent = `${Math.round(run.progress)}%`; });
    set("stage", (n) => {
      n.textContent = run.stage + (run.status === "failed" && run.error && !el.querySelector("[data-field=error]") ? ` — ${run.error.slice(0, 80)}` : "");
    });
    set("duration", (n) => { n.textContent = fmtDuration(run.duration_seconds); });
    set("error", (n) => { n.textContent = run.error || ""; n.hidden = !run.error; });
    const active = ACTIVE.includes(run.status);
    el.querySelectorAll("[data-action=cancel]").forEach((b) => { b.hidden = !active; b.disabled = run.cancel_requested; });
    el.querySelectorAll("[data-action=retry]").forEach((b) => { b.hidden = active; });
  }

  function wireActions(scope, idOf) {
    scope.addEventListener("click", async (event) => {
      const button = event.target.closest("[data-action]");
      if (!button) return;
      const id = idOf(button);
      button.disabled = true;
      try {
        const run = await post(`/api/benchmarks/runs/${id}/${button.dataset.action}/`);
        if (button.dataset.action === "retry") window.location.href = `/benchmarks/${run.id}/`;
      } catch (error) {
        alert(error.message);
      } finally {
        button.disabled = false;
      }
    });
  }

  /* Runs console: poll the list every second while any run is active. */
  function initConsole(table) {
    wireActions(table, (b) => b.closest("tr").dataset.run);
    async function tick() {
      try {
        const data = await getJSON(`${table.dataset.api}?page_size=200`);
        const runs = data.results || data;
        const rows = new Map([...table.querySelectorAll("tr[data-run]")].map((r) => [r.dataset.run, r]));
        let unknown = false;
        for (const run of runs) {
          const row = rows.get(String(run.id));
          if (row) paintRow(row, run); else if (ACTIVE.includes(run.status)) unknown = true;
        }
        if (unknown) { window.location.reload(); return; }
        // Every second while something runs; every 5 s otherwise (to notice runs launched elsewhere).
        const busy = runs.some((run) => ACTIVE.includes(run.status));
        setTimeout(tick, busy ? POLL_MS : 5 * POLL_MS);
        return;
      } catch (error) { /* keep polling */ }
      setTimeout(tick, POLL_MS);
    }
    tick();
  }

  /* Results page: poll while the run is active, reload once it ends to show the results. */
  function initRun(card) {
    wireActions(document, (b) => b.dataset.run);
    const initial = card.dataset.status;
    async function tick() {
      try {
        const run = await getJSON(card.dataset.api);
        paintRow(document.body, run);
        if (!ACTIVE.includes(run.status)) {
          if (ACTIVE.includes(initial)) window.location.reload();
          return;
        }
      } catch (error) { /* keep polling */ }
      setTimeout(tick, POLL_MS);
    }
    if (ACTIVE.includes(initial)) tick();
  }

  /* Launch form: products of the chosen dataset only, live counts as the form changes. */
  function initLaunch(form) {
    const dataset = form.querySelector("#id_dataset");
    const out = form.querySelector("#subset-counts");
    const button = form.querySelector("#launch-button");
    let seq = 0;
    function showProducts() {
      form.querySelectorAll("label[data-dataset]").forEach((l) => {
        const mine = l.dataset.dataset === dataset.value;
        l.hidden = !mine;
        if (!mine) l.querySelector("input").checked = false;
      });
      // a model's own settings show while that model is ticked
      const models = [...form.querySelectorAll("input[name=models]:checked")].map((i) => i.value);
      form.querySelectorAll("[data-model]").forEach((l) => {
        l.hidden = !l.dataset.model.split(" ").some((m) => models.includes(m));
      });
    }
    async function refresh() {
      const params = new URLSearchParams();
      params.set("dataset", dataset.value);
      const checked = (name) => [...form.querySelectorAll(`input[name=${name}]:checked`)].map((i) => i.value);
      const products = checked("products");
      params.set("products", products.join(","));
      params.set("categories", checked("categories").join(","));
      params.set("background", (checked("background")[0]) || "any");
      params.set("techniques", checked("techniques").join(","));
      const mine = ++seq;
      if (!products.length) {
        out.innerHTML = '<span class="muted">Pick products to see how many images match.</span>';
        return;
      }
      out.classList.add("loading");
      try {
        const counts = await getJSON(`${form.getAttribute("data-counts")}?${params}`);
        if (mine !== seq) return;
        const t = counts.total;
        const perProduct = counts.products.map((p) =>
          `<li><strong>${p.name}</strong>: ${p.train_good} defect-free train, ${p.test_good} defect-free test, ${p.anomalous} anomalous</li>`).join("");
        const problems = counts.problems.map((p) => `<li>${p}</li>`).join("");
        out.innerHTML =
          `<p class="summary" data-field="summary">${counts.summary}</p>` +
          `<p class="muted">${t.train_good} defect-free training images · ${t.test_good} defect-free test images always included` +
          (t.excluded ? ` · ${t.excluded} anomalous images filtered out` : "") + `</p>` +
          `<ul class="per-product">${perProduct}</ul>` +
          (problems ? `<ul class="problems">${problems}</ul>` : "");
        button.disabled = !counts.ok;
      } catch (error) {
        out.innerHTML = `<span class="error">Could not count images (${error.message}).</span>`;
      } finally {
        out.classList.remove("loading");
      }
    }
    form.addEventListener("change", (event) => {
      if (event.target === dataset || event.target.name === "models") showProducts();
      refresh();
    });
    showProducts();
    refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const table = document.getElementById("runs-console");
    if (table) initConsole(table);
    const card = document.getElementById("run-status");
    if (card) initRun(card);
    const form = document.getElementById("launch-form");
    if (form) initLaunch(form);
  });
})();
