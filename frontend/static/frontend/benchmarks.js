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
  /* The login ended (logged out elsewhere, session expired): say so instead of polling in silence. */
  class SessionEnded extends Error {}
  function sessionEnded(response) {
    return response.status === 401 || response.status === 403 ||
      (response.redirected && response.url.includes("/accounts/login/"));
  }
  function showSessionEnded() {
    if (document.getElementById("session-ended")) return;
    const note = document.createElement("div");
    note.id = "session-ended";
    note.className = "notice error session-ended";
    note.setAttribute("role", "alert");
    const login = document.createElement("a");
    login.href = `/accounts/login/?next=${encodeURIComponent(window.location.pathname + window.location.search)}`;
    login.textContent = "Log in again";
    note.append("Your session has ended, so this page stopped updating. ", login,
      " to keep watching; the run itself goes on.");
    (document.querySelector("main") || document.body).prepend(note);
  }
  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (sessionEnded(response)) throw new SessionEnded("session ended");
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

  function fmtNumber(x, digits) { return (x === null || x === undefined) ? "—" : Number(x).toFixed(digits); }

  /* One line for the current stage's sub-steps: epoch k/N with losses, items done, speed, time left. */
  function detailText(d) {
    if (!d) return "";
    const parts = [];
    if (d.epochs) {
      parts.push(`epoch ${d.epoch}/${d.epochs}`);
      if (d.train_loss !== null && d.train_loss !== undefined) parts.push(`train loss ${fmtNumber(d.train_loss, 4)}`);
      else if (d.running_train_loss !== undefined) parts.push(`train loss ${fmtNumber(d.running_train_loss, 4)} (this epoch so far)`);
      if (d.val_loss !== null && d.val_loss !== undefined) parts.push(`validation loss ${fmtNumber(d.val_loss, 4)}`);
    }
    parts.push(`${d.done}/${d.total} ${d.unit}`);
    if (d.rate) parts.push(`${d.rate >= 10 ? d.rate.toFixed(0) : d.rate.toFixed(2)} ${d.unit === "images" ? "images" : "it"}/s`);
    if (d.eta_seconds !== null && d.eta_seconds !== undefined) parts.push(`stage done in ${fmtDuration(d.eta_seconds)}`);
    return `${d.product ? d.product + " · " : ""}${d.stage}: ${parts.join(" · ")}`;
  }

  /* ETA of the whole run from its measured speed so far (progress per second since it started). */
  function etaText(run) {
    if (!ACTIVE.includes(run.status) || !run.duration_seconds || run.progress < 2 || run.progress >= 100) return "";
    const left = run.duration_seconds * (100 - run.progress) / run.progress;
    return `about ${fmtDuration(left)} left`;
  }

  /* An element built from data: text only ever through textContent, never parsed as markup. */
  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  const SVG_NS = "http://www.w3.org/2000/svg";
  function svgElement(tag, attributes, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /* CFLOW's loss per epoch, drawn as it arrives: train (solid) and validation (dashed). */
  function drawLoss(svg, history) {
    if (!svg) return;
    if (!history || !history.length) { svg.hidden = true; return; }
    svg.hidden = false;
    const W = 320, H = 140, P = 28;
    const series = [["train_loss", "loss-train"], ["val_loss", "loss-val"]];
    const values = history.flatMap((h) => series.map(([k]) => h[k]).filter((v) => v !== undefined && v !== null));
    const lo = Math.min(...values), hi = Math.max(...values);
    const n = Math.max(history.length, 2);
    const x = (i) => P + (W - 2 * P) * (i / (n - 1));
    const y = (v) => H - P - (H - 2 * P) * (hi > lo ? (v - lo) / (hi - lo) : 0.5);
    const body = [
      svgElement("line", { x1: P, y1: H - P, x2: W - P, y2: H - P, class: "axis" }),
      svgElement("line", { x1: P, y1: P, x2: P, y2: H - P, class: "axis" }),
      svgElement("text", { x: P, y: P - 8, class: "tick" }, hi.toFixed(3)),
      svgElement("text", { x: P, y: H - 6, class: "tick" }, `${lo.toFixed(3)} · epoch 1…${history.length}`),
    ];
    for (const [key, cls] of series) {
      const pts = history.map((h, i) => (h[key] === undefined || h[key] === null) ? null : [x(i).toFixed(1), y(h[key]).toFixed(1)]).filter(Boolean);
      if (pts.length) {
        body.push(svgElement("polyline", { class: cls, points: pts.map((p) => p.join(",")).join(" ") }));
        for (const [cx, cy] of pts) body.push(svgElement("circle", { class: cls, r: 2.5, cx, cy }));
      }
    }
    body.push(svgElement("text", { x: W - P, y: P - 8, class: "tick legend", "text-anchor": "end" }, "— train · - - validation"));
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.replaceChildren(...body);
    svg.dataset.epochs = String(history.length);
  }

  // Runs whose cancel this page asked for: a poll that left before the click must not paint
  // "Running" over "Cancelling…".
  const cancelAsked = new Set();

  function paintRow(el, run) {
    el.dataset.status = run.status;
    const set = (field, fn) => el.querySelectorAll(`[data-field=${field}]`).forEach(fn);
    const cancelling = (run.cancel_requested || cancelAsked.has(String(run.id))) && ACTIVE.includes(run.status);
    set("status", (n) => { n.className = `status ${run.status}${cancelling ? " cancelling" : ""}`; n.textContent = cancelling ? "Cancelling…" : label(run.status); });
    set("detail", (n) => { n.textContent = ACTIVE.includes(run.status) ? detailText(run.detail) : ""; });
    set("eta", (n) => { n.textContent = etaText(run); });
    set("loss", (n) => { drawLoss(n, run.detail && run.detail.history); });
    set("bar", (n) => { n.style.width = `${Math.round(run.progress)}%`; });
    set("percent", (n) => { n.textContent = `${Math.round(run.progress)}%`; });
    set("stage", (n) => {
      n.textContent = run.stage + (run.status === "failed" && run.error && !el.querySelector("[data-field=error]") ? ` — ${run.error.slice(0, 80)}` : "");
    });
    set("duration", (n) => { n.textContent = fmtDuration(run.duration_seconds); });
    set("error", (n) => { n.textContent = run.error || ""; n.hidden = !run.error; });
    const active = ACTIVE.includes(run.status);
    el.querySelectorAll("[data-action=cancel]").forEach((b) => { b.hidden = !active; b.disabled = run.cancel_requested; });
    // A succeeded run is not retried but run again: the button says which.
    el.querySelectorAll("[data-action=retry]").forEach((b) => {
      b.hidden = active;
      b.textContent = run.status === "succeeded" ? "Run again" : "Retry";
    });
  }

  function wireActions(scope, idOf) {
    scope.addEventListener("click", async (event) => {
      const button = event.target.closest("[data-action]");
      if (!button) return;
      const id = idOf(button);
      button.disabled = true;
      if (button.dataset.action === "cancel") {
        // Say so at once: the worker stops at its next batch, which can take a moment.
        cancelAsked.add(String(id));
        const scope = button.closest("tr") || document;
        scope.querySelectorAll("[data-field=status]").forEach((n) => { n.textContent = "Cancelling…"; n.classList.add("cancelling"); });
      }
      try {
        const run = await post(`/api/benchmarks/runs/${id}/${button.dataset.action}/`);
        if (button.dataset.action === "retry") window.location.href = `/benchmarks/${run.id}/`;
      } catch (error) {
        cancelAsked.delete(String(id));
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
      } catch (error) {
        if (error instanceof SessionEnded) { showSessionEnded(); return; }
      }
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
      } catch (error) {
        if (error instanceof SessionEnded) { showSessionEnded(); return; }
      }
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
      // The picked models: the counts warn when a position-specific one meets unaligned images.
      params.set("models", checked("models").join(","));
      const mine = ++seq;
      if (!products.length) {
        out.replaceChildren(element("span", "muted", "Pick products to see how many images match."));
        return;
      }
      out.classList.add("loading");
      try {
        const counts = await getJSON(`${form.getAttribute("data-counts")}?${params}`);
        if (mine !== seq) return;
        const t = counts.total;
        // Product names and problem texts come from dataset folders: text, never markup.
        const summary = element("p", "summary", counts.summary);
        summary.dataset.field = "summary";
        const totals = element("p", "muted", `${t.train_good} defect-free training images · ${t.test_good} defect-free test images always included` +
          (t.excluded ? ` · ${t.excluded} anomalous image${t.excluded === 1 ? "" : "s"} filtered out` : ""));
        const perProduct = element("ul", "per-product");
        for (const p of counts.products) {
          const item = element("li");
          item.append(element("strong", "", p.name),
            `: ${p.train_good} defect-free train, ${p.test_good} defect-free test, ${p.anomalous} anomalous`);
          perProduct.append(item);
        }
        const shown = [summary, totals, perProduct];
        if (counts.problems.length) {
          const problems = element("ul", "problems");
          for (const problem of counts.problems) problems.append(element("li", "", problem));
          shown.push(problems);
        }
        if (counts.warnings && counts.warnings.length) {
          const warnings = element("ul", "warnings");
          warnings.dataset.field = "warnings";
          for (const warning of counts.warnings) warnings.append(element("li", "", warning));
          shown.push(warnings);
        }
        out.replaceChildren(...shown);
        button.disabled = !counts.ok;
      } catch (error) {
        out.replaceChildren(element("span", "error", `Could not count images (${error.message}).`));
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

  /* Gallery: a tile opens large, the image with the outlines of the ground truth and the prediction. */
  function loadImage(url) {
    return new Promise((resolve, reject) => {
      if (!url) { resolve(null); return; }
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = reject;
      img.src = url;
    });
  }
  function outline(ctx, mask, w, h, rgb) {
    const off = document.createElement("canvas");
    off.width = w; off.height = h;
    const octx = off.getContext("2d");
    octx.drawImage(mask, 0, 0, w, h);
    const src = octx.getImageData(0, 0, w, h).data;
    const on = (x, y) => x >= 0 && y >= 0 && x < w && y < h && src[(y * w + x) * 4] > 127;
    const out = ctx.getImageData(0, 0, w, h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      if (on(x, y) && (!on(x - 1, y) || !on(x + 1, y) || !on(x, y - 1) || !on(x, y + 1))) {
        const i = (y * w + x) * 4;
        out.data[i] = rgb[0]; out.data[i + 1] = rgb[1]; out.data[i + 2] = rgb[2]; out.data[i + 3] = 255;
      }
    }
    ctx.putImageData(out, 0, 0);
  }
  function rgbOf(hex, fallback) {
    const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex || "");
    return m ? [1, 2, 3].map((k) => parseInt(m[k], 16)) : fallback;
  }
  function initGallery(dialog) {
    async function open(tile) {
      const canvas = document.getElementById("tile-canvas");
      const ctx = canvas.getContext("2d");
      const [image, truth, predicted] = await Promise.all(
        [tile.dataset.image, tile.dataset.truth, tile.dataset.predicted].map((u) => loadImage(u).catch(() => null)));
      const base = image || predicted;
      if (!base) return;
      canvas.width = base.naturalWidth; canvas.height = base.naturalHeight;
      ctx.drawImage(base, 0, 0);
      // the colours of the engine's outlined pictures (the dialog carries them)
      if (truth) outline(ctx, truth, canvas.width, canvas.height, rgbOf(dialog.dataset.truthColour, [40, 220, 90]));
      if (predicted) outline(ctx, predicted, canvas.width, canvas.height, rgbOf(dialog.dataset.predictionColour, [255, 0, 255]));
      dialog.querySelector("[data-field=tile-title]").textContent = tile.dataset.title || "";
      dialog.showModal();
      dialog.dataset.open = tile.dataset.title || "1";
    }
    document.querySelectorAll(".gallery .shot[data-image]").forEach((tile) => {
      tile.addEventListener("click", (e) => { if (!e.target.closest("a")) open(tile); });
      tile.addEventListener("keydown", (e) => { if (e.key === "Enter") open(tile); });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const dialog = document.getElementById("tile-dialog");
    if (dialog) initGallery(dialog);
    const table = document.getElementById("runs-console");
    if (table) initConsole(table);
    const card = document.getElementById("run-status");
    if (card) initRun(card);
    const form = document.getElementById("launch-form");
    if (form) initLaunch(form);
  });
})();
