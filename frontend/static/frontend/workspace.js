/* DefectBench labelling workspace: plain JS, no dependencies.
 *
 * Keyboard: 1–4 category (a dataset may offer a suggested category: pre-selected, marked as a
 * suggestion; Enter confirms it, 1–4 change it) · B with / N without background (one key per value, never a toggle;
 * once I have confirmed a product's background, its later images start with it selected) ·
 * Enter submit · S skip · Backspace/← back through my labels · → forward, then back to where I was ·
 * M mask · O outline/fill · R/[ ] references · +/−/0 zoom.
 * Correcting a label I gave earlier saves it and stays on that image (→ or ← move on); only
 * a new label moves to the next image of the queue.
 * A failed submit never loses the choice: it stays on screen with the error and a Retry button.
 */
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("workspace-config").textContent);
  const $ = (id) => document.getElementById(id);
  const DISPLAY_SIZE = 512;

  const state = {
    data: null,
    background: null,        // true / false
    bgConfirmed: false,      // a suggested value is shown but never submitted until confirmed
    bgCarried: false,        // selected from my previous label of this product; submitting confirms it
    category: null,
    suggestion: null,        // {category, probability, n_labels} suggested for this new label
    categorySuggested: false, // the selected category is the suggestion, untouched
    busy: false,
    saving: false,           // a label is on its way to the server
    refIndex: 0,
    view: { scale: 1, x: 0, y: 0 }, // shared by both viewports (pixels of a viewport)
    maskOn: true,
    maskMode: "outline",     // fine defects stay visible under an outline; O switches to fill
    finished: false,
    maskImage: null,
    mouse: null,             // the cursor over a viewport (its pixels), where keyboard zoom aims
    diffOn: false,
    native: false,           // the original file is shown (zoomed in past the display copy)
  };

  // --- HTTP ----------------------------------------------------------------------------------
  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function api(method, url, body) {
    const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.headers["X-CSRFToken"] = csrfToken();
      options.headers["X-Label-Source"] = "workspace";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (error) {
      throw new Error("Network error: the server could not be reached.");
    }
    if (response.status === 204) return null;
    let payload = null;
    try { payload = await response.json(); } catch (error) { payload = null; }
    if (!response.ok) {
      const detail = payload && (payload.detail || JSON.stringify(payload));
      const error = new Error(detail || `Server error ${response.status}.`);
      error.status = response.status;
      throw error;
    }
    return payload;
  }

  const workspaceUrl = (id) => config.api.workspace.replace("/0/", `/${id}/`);
  const pageUrl = (id) => config.workspaceUrl.replace("/0/", `/${id}/`) + (config.productId ? "?scope=product" : "");
  const fileUrl = (url) => `${url}?size=${DISPLAY_SIZE}`;

  // --- messages --------------------------------------------------------------------------------
  function message(text, kind, retry) {
    const box = $("ws-message");
    box.hidden = !text;
    box.className = `notice ${kind || "info"}`;
    box.textContent = text || "";
    if (retry) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "retry";
      button.textContent = "Retry";
      button.addEventListener("click", retry);
      box.append(" ", button);
    }
  }

  // --- rendering -------------------------------------------------------------------------------
  // Text from data (names, paths, who labelled) only ever as textContent, never parsed as markup.
  function textElement(tag, className, text) {
    const node = document.createElement(tag);
    node.className = className;
    node.textContent = text;
    return node;
  }

  function setProgress(prefix, progress) {
    $(`progress-${prefix}`).style.width = `${progress.percent}%`;
    $(`progress-${prefix}-text`).textContent = `${progress.done} / ${progress.total}`;
  }

  function render(data) {
    state.data = data;
    state.finished = false;
    document.getElementById("workspace").classList.remove("finished");
    $("btn-submit").disabled = false;
    $("btn-skip").disabled = false;
    const image = data.image;
    $("ws-dataset").textContent = data.product.dataset_name;
    $("ws-product").textContent = data.product.name;
    // A one-product dataset named after its product ("bottle"): its name once, not "bottle / bottle".
    $("ws-product-crumb").hidden = data.product.name === data.product.dataset_name;
    $("ws-list").href = config.listUrl.replace("/0/", `/${data.product.id}/`);
    $("ws-mask-editor").href = config.maskEditorUrl.replace("/0/", `/${image.id}/`);
    $("ws-path").textContent = image.path;
    // The defect folder can prime a category: a dataset may hide it.
    $("ws-defect").textContent = config.showDefectFolder ? image.defect_type : "";
    $("ws-defect").hidden = !config.showDefectFolder;
    $("ws-size").textContent = `${image.width}×${image.height}`;
    document.title = `Label ${image.path} · DefectBench`;
    setProgress("user", data.progress_user);
    setProgress("product", data.progress_product);
    $("history-link").href = `${$("history-link").pathname}?image=${image.id}`;
    document.getElementById("workspace").dataset.imageId = image.id;

    state.bgCarried = false;
    // A suggestion only for a new label (the server sends none once I have labelled the image).
    state.suggestion = data.my_label ? null : (data.suggestion || null);
    state.categorySuggested = false;
    if (data.my_label) {
      state.background = data.my_label.background;
      state.bgConfirmed = true;
      state.category = data.my_label.category;
    } else if (data.carried_background !== null && data.carried_background !== undefined) {
      // I confirmed this product's background before: it starts selected (B/N change it), so a
      // label is a category and Enter.
      state.background = data.carried_background;
      state.bgConfirmed = true;
      state.bgCarried = true;
      state.category = null;
    } else {
      state.background = data.product.suggested_background;
      state.bgConfirmed = false;
      state.category = null;
    }
    if (state.suggestion) {
      state.category = state.suggestion.category;
      state.categorySuggested = true;
    }
    renderChoices();
    renderHistory(data.history);

    const anomaly = $("img-anomaly");
    anomaly.hidden = false;
    $("img-reference").hidden = false;
    state.native = false;
    anomaly.src = fileUrl(image.image_url);
    setDiff(false);
    loadMask(image.mask_url);
    state.refIndex = 0;
    showReference();
    resetView();
    prefetch(data.upcoming || []);
    if (String(config.imageId) !== String(image.id)) {
      config.imageId = image.id;
      history.replaceState({ imageId: image.id }, "", pageUrl(image.id));
    }
    $("btn-back").disabled = previousId() === null;
    $("btn-forward").disabled = !data.labelled_ids.includes(image.id);
    if (book.category) loadBook(book.category);  // the book without this image
  }

  function renderChoices() {
    document.querySelectorAll("[data-background]").forEach((button) => {
      const value = button.dataset.background === "yes";
      const selected = state.background === value;
      button.classList.toggle("selected", selected && state.bgConfirmed);
      button.classList.toggle("suggested", selected && !state.bgConfirmed);
      button.classList.toggle("carried", selected && state.bgCarried);
      button.setAttribute("aria-pressed", String(selected && state.bgConfirmed));
    });
    const status = $("background-status");
    if (state.bgCarried) {
      const other = config.backgrounds.find((b) => b.value !== state.background).key.toUpperCase();
      status.textContent = `${state.background ? "With" : "Without"} background, as on your last label of this product — submitting confirms it; press ${other} to change.`;
      status.className = "status ok carried";
    } else if (state.bgConfirmed) {
      status.textContent = "Confirmed.";
      status.className = "status ok";
    } else {
      const key = config.backgrounds.find((b) => b.value === state.background).key.toUpperCase();
      status.textContent = `Suggested for this product: ${state.background ? "with" : "without"} background — not confirmed. Press ${key} or click to confirm.`;
      status.className = "status pending";
    }
    document.querySelectorAll("[data-category]").forEach((button) => {
      const selected = button.dataset.category === state.category;
      button.classList.toggle("selected", selected);
      button.classList.toggle("suggested", selected && state.categorySuggested);
      button.setAttribute("aria-pressed", String(selected));
    });
    renderSuggestion();
    const chosen = config.categories.find((c) => c.value === state.category);
    const help = $("category-help");
    help.replaceChildren();
    if (chosen) {
      const name = document.createElement("b");
      name.textContent = `${chosen.name}: `;
      help.append(name, chosen.help);
    } else {  // no category on this image: the general hint, not the previous image's definition
      help.append("Hover a category for its definition; press ");
      const keys = config.categories.map((c) => c.key);
      const first = document.createElement("kbd"), last = document.createElement("kbd");
      first.textContent = keys[0]; last.textContent = keys[keys.length - 1];
      help.append(first, "–", last, " to choose.");
    }
    const ready = state.bgConfirmed && state.category;
    $("btn-submit").classList.toggle("ready", Boolean(ready));
  }

  function renderSuggestion() {
    const status = $("category-status");
    const suggestion = state.suggestion;
    const note = state.data && !state.data.my_label ? state.data.suggestion_note : "";
    status.hidden = !suggestion && !note;
    if (!suggestion) {
      status.textContent = note || "";
      status.className = "status muted";
      return;
    }
    const name = (value) => config.categories.find((c) => c.value === value).name;
    const percent = Math.round(suggestion.probability * 100);
    if (state.categorySuggested) {
      status.textContent = `Suggested: ${name(suggestion.category)} (${percent} %, learned from ${suggestion.n_labels} labels of this dataset) — not your choice yet: Enter confirms it, 1–4 change it.`;
      status.className = "status suggestion";
    } else if (state.category === suggestion.category) {
      status.textContent = `${name(suggestion.category)}: as suggested, confirmed.`;
      status.className = "status ok";
    } else {
      status.textContent = `Suggested was ${name(suggestion.category)}; you chose ${state.category ? name(state.category) : "none"}.`;
      status.className = "status muted";
    }
  }

  function renderHistory(entries) {
    const list = $("ws-history");
    list.replaceChildren();
    if (!entries.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "No label yet.";
      list.append(li);
      return;
    }
    const describe = (v) => (v ? `${v.background ? "with" : "without"} bg · ${v.category}` : "—");
    for (const entry of entries) {
      const li = document.createElement("li");
      const when = new Date(entry.changed_at).toLocaleString();
      li.append(
        textElement("span", "when", when), " ",
        textElement("b", "who", entry.changed_by + (entry.source !== "workspace" ? ` (${entry.source})` : "")), " ",
        textElement("span", "what", entry.action === "created" ? describe(entry.after) : `${describe(entry.before)} → ${describe(entry.after)}`),
      );
      list.append(li);
    }
  }

  function showReference() {
    const refs = state.data.references;
    const img = $("img-reference");
    if (!refs.length) {
      img.removeAttribute("src");
      $("ref-counter").textContent = "(none in train/good)";
      return;
    }
    state.refIndex = (state.refIndex + refs.length) % refs.length;
    img.src = fileUrl(refs[state.refIndex].image_url);
    $("img-blink").src = fileUrl(refs[state.refIndex].image_url);
    $("ref-counter").textContent = `${state.refIndex + 1} / ${refs.length}` + (state.refIndex === 0 ? " · nearest" : "");
    if (state.diffOn) img.decode().then(drawDiff).catch(() => {});
    const next = refs[(state.refIndex + 1) % refs.length];
    new Image().src = fileUrl(next.image_url);
  }

  function prefetch(ids) {
    for (const id of ids) {
      new Image().src = `/files/images/${id}/image?size=${DISPLAY_SIZE}`;
      new Image().src = `/files/images/${id}/mask?size=${DISPLAY_SIZE}`;
    }
  }

  // --- mask overlay ----------------------------------------------------------------------------
  function loadMask(url) {
    const canvas = $("mask-canvas");
    state.maskImage = null;
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    if (!url) return;
    const mask = new Image();
    mask.onload = () => { state.maskImage = mask; drawMask(); };
    mask.src = fileUrl(url);
  }

  function drawMask() {
    const canvas = $("mask-canvas");
    const mask = state.maskImage;
    canvas.style.display = state.maskOn ? "" : "none";
    canvas.style.opacity = $("mask-opacity").value / 100;
    if (!mask) return;
    const w = mask.naturalWidth, h = mask.naturalHeight;
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(mask, 0, 0);
    const source = ctx.getImageData(0, 0, w, h);
    const out = ctx.createImageData(w, h);
    const on = (x, y) => x >= 0 && y >= 0 && x < w && y < h && source.data[(y * w + x) * 4] > 127;
    const radius = Math.max(1, Math.round(w / 256));
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (!on(x, y)) continue;
        let paint = true;
        if (state.maskMode === "outline") {
          paint = false;
          for (let d = 1; d <= radius && !paint; d++) {
            paint = !on(x - d, y) || !on(x + d, y) || !on(x, y - d) || !on(x, y + d);
          }
        }
        if (paint) {
          const i = (y * w + x) * 4;
          out.data[i] = 255; out.data[i + 1] = 45; out.data[i + 2] = 85;
          out.data[i + 3] = state.maskMode === "outline" ? 255 : 200;
        }
      }
    }
    ctx.putImageData(out, 0, 0);
  }

  // --- zoom and pan, in sync -----------------------------------------------------------------
  const viewports = [$("view-anomaly"), $("view-reference")];

  // Screen pixels per image pixel at a view scale (the image fills the square viewport at scale 1).
  function pixelRatio(scale) {
    const width = state.data ? state.data.image.width : DISPLAY_SIZE;
    return scale * viewports[0].clientWidth / width;
  }
  function maxScale() {
    const width = state.data ? state.data.image.width : DISPLAY_SIZE;
    return Math.max(16, 8 * width / viewports[0].clientWidth);  // up to 8 screen pixels per image pixel
  }

  function applyView() {
    const { scale, x, y } = state.view;
    for (const viewport of viewports) {
      viewport.querySelector(".stage").style.transform = `translate(${x}px, ${y}px) scale(${scale})`;
      viewport.classList.toggle("pixelated", pixelRatio(scale) >= 2);
    }
    const ratio = pixelRatio(scale);
    $("zoom-level").textContent = `${Math.round(scale * 100)}%` + (Math.abs(ratio - Math.round(ratio)) < 0.01 && ratio >= 1 ? ` · ${Math.round(ratio)}:1` : "");
    $("zoom-level").dataset.ratio = ratio.toFixed(3);
    // Past the display copy's resolution, show the original file (native pixels), in both views.
    const copyWidth = Math.min(DISPLAY_SIZE, state.data ? state.data.image.width : DISPLAY_SIZE);
    const wantNative = state.data && scale * viewports[0].clientWidth > copyWidth * 1.01;
    if (wantNative && !state.native) {
      state.native = true;
      $("img-anomaly").src = state.data.image.image_url;
      const ref = state.data.references[state.refIndex];
      if (ref) { $("img-reference").src = ref.image_url; $("img-blink").src = ref.image_url; }
    }
    document.getElementById("workspace").dataset.native = String(state.native);
  }

  function clampView() {
    const size = viewports[0].clientWidth;
    const v = state.view;
    v.scale = Math.min(maxScale(), Math.max(1, v.scale));
    v.x = Math.min(0, Math.max(size - size * v.scale, v.x));
    v.y = Math.min(0, Math.max(viewports[0].clientHeight - viewports[0].clientHeight * v.scale, v.y));
  }

  function zoomAt(factor, px, py) {
    const v = state.view;
    const next = Math.min(maxScale(), Math.max(1, v.scale * factor));
    v.x = px - (px - v.x) * (next / v.scale);
    v.y = py - (py - v.y) * (next / v.scale);
    v.scale = next;
    clampView();
    applyView();
  }

  function zoomCentre(factor) {
    zoomAt(factor, viewports[0].clientWidth / 2, viewports[0].clientHeight / 2);
  }

  // Keyboard zoom aims at the cursor when it is over a view, else at the centre.
  function zoomKey(factor) {
    if (state.mouse) zoomAt(factor, state.mouse.x, state.mouse.y);
    else zoomCentre(factor);
  }

  // Z: native pixels (1:1) at the cursor, then 2:1, 4:1, 8:1, then back to fit.
  function zoomNative() {
    const ratio = pixelRatio(state.view.scale);
    const steps = [1, 2, 4, 8];
    const target = steps.find((r) => r > ratio + 0.01);
    if (target === undefined) { resetView(); return; }
    zoomKey(target / ratio);
  }

  function pan(dx, dy) {
    state.view.x += dx;
    state.view.y += dy;
    clampView();
    applyView();
  }

  // --- difference view |image - reference| and blink -----------------------------------------
  function drawDiff() {
    const a = $("img-anomaly"), b = $("img-reference"), canvas = $("diff-canvas");
    if (!a.naturalWidth || !b.naturalWidth) return;
    const w = a.naturalWidth, h = a.naturalHeight;
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(b, 0, 0, w, h);
    const ref = ctx.getImageData(0, 0, w, h);
    ctx.drawImage(a, 0, 0, w, h);
    const img = ctx.getImageData(0, 0, w, h);
    for (let i = 0; i < img.data.length; i += 4) {
      for (let c = 0; c < 3; c++) img.data[i + c] = Math.abs(img.data[i + c] - ref.data[i + c]);
      img.data[i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    canvas.dataset.ready = "1";
  }

  function setDiff(on) {
    state.diffOn = on;
    $("diff-canvas").hidden = !on;
    $("diff-canvas").dataset.ready = "";
    $("diff-toggle").setAttribute("aria-pressed", String(on));
    $("diff-toggle").classList.toggle("active", on);
    if (on) Promise.all([$("img-anomaly").decode(), $("img-reference").decode()]).then(drawDiff).catch(() => {});
  }

  function blink(on) {
    $("img-blink").hidden = !on;
    document.getElementById("workspace").classList.toggle("blinking", on);
  }

  function resetView() {
    state.view = { scale: 1, x: 0, y: 0 };
    applyView();
  }

  for (const viewport of viewports) {
    viewport.addEventListener("wheel", (event) => {
      event.preventDefault();
      const rect = viewport.getBoundingClientRect();
      zoomAt(event.deltaY < 0 ? 1.2 : 1 / 1.2, event.clientX - rect.left, event.clientY - rect.top);
    }, { passive: false });
    viewport.addEventListener("pointerdown", (event) => {
      const start = { x: event.clientX, y: event.clientY, vx: state.view.x, vy: state.view.y };
      viewport.setPointerCapture(event.pointerId);
      viewport.classList.add("dragging");
      const move = (e) => {
        state.view.x = start.vx + e.clientX - start.x;
        state.view.y = start.vy + e.clientY - start.y;
        clampView();
        applyView();
      };
      const up = () => {
        viewport.classList.remove("dragging");
        viewport.removeEventListener("pointermove", move);
        viewport.removeEventListener("pointerup", up);
      };
      viewport.addEventListener("pointermove", move);
      viewport.addEventListener("pointerup", up);
    });
    viewport.addEventListener("dblclick", resetView);
    viewport.addEventListener("mousemove", (event) => {
      const rect = viewport.getBoundingClientRect();
      state.mouse = { x: event.clientX - rect.left, y: event.clientY - rect.top };
    });
    viewport.addEventListener("mouseleave", () => { state.mouse = null; });
  }

  // --- choices ---------------------------------------------------------------------------------
  function chooseBackground(value) {
    state.background = value;
    state.bgConfirmed = true;
    state.bgCarried = false;
    message("");
    renderChoices();
  }

  function chooseCategory(value) {
    state.category = value;
    state.categorySuggested = false;
    message("");
    renderChoices();
  }

  // --- navigation ------------------------------------------------------------------------------
  // Where a new label returns to (the labelling list): the server sends only an address on this
  // site; checked here once more so that the page never navigates off the site on its own.
  function returnTarget() {
    if (!config.returnTo) return null;
    try {
      const url = new URL(config.returnTo, window.location.origin);
      return url.origin === window.location.origin ? url.href : null;
    } catch (error) {
      return null;
    }
  }

  // Unsaved: a label still on its way to the server, or a choice on screen that is not the label
  // saved for this image. A submitted label is saved, so leaving after it never asks.
  function hasUnsavedChoice() {
    if (state.saving) return true;
    if (!state.data || state.finished) return false;
    const saved = state.data.my_label;
    if (saved) return state.background !== saved.background || state.category !== saved.category;
    return (state.bgConfirmed && !state.bgCarried) || (state.category !== null && !state.categorySuggested);
  }

  function previousId() {
    if (!state.data) return null;
    const ids = state.data.labelled_ids;
    if (state.finished) return ids.length ? ids[ids.length - 1] : null;
    const index = ids.indexOf(state.data.image.id);
    if (index === -1) return ids.length ? ids[ids.length - 1] : null;
    return index > 0 ? ids[index - 1] : null;
  }

  async function guarded(action) {
    if (state.busy) return;
    state.busy = true;
    document.body.classList.add("busy");
    try {
      await action();
    } finally {
      state.busy = false;
      document.body.classList.remove("busy");
    }
  }

  async function loadImage(id) {
    try {
      render(await api("GET", workspaceUrl(id)));
    } catch (error) {
      message(`Could not load the image: ${error.message}`, "error", () => guarded(() => loadImage(id)));
    }
  }

  async function loadNext() {
    const body = config.productId ? { product: config.productId } : { dataset: config.datasetId };
    try {
      const data = await api("POST", config.api.next, body);
      if (data === null) {
        finished();
        return;
      }
      render(data);
    } catch (error) {
      message(`Could not get the next image: ${error.message}`, "error", () => guarded(loadNext));
    }
  }

  function finished() {
    // The last image was labelled: it must not stay on screen looking unlabelled.
    state.finished = true;
    document.getElementById("workspace").classList.add("finished");
    document.getElementById("workspace").dataset.imageId = "";
    $("ws-path").textContent = "Nothing left to label";
    $("ws-defect").textContent = "";
    $("ws-defect").hidden = true;
    $("ws-size").textContent = "";
    $("ref-counter").textContent = "";
    for (const id of ["img-anomaly", "img-reference", "img-blink"]) { $(id).removeAttribute("src"); $(id).hidden = true; }
    setDiff(false);
    loadMask(null);
    state.background = null; state.bgConfirmed = false; state.bgCarried = false; state.category = null;
    state.suggestion = null; state.categorySuggested = false;
    $("category-status").hidden = true;
    $("category-help").textContent = "";
    document.querySelectorAll("[data-background], [data-category]").forEach((b) => {
      b.classList.remove("selected", "suggested"); b.setAttribute("aria-pressed", "false");
    });
    $("background-status").textContent = "";
    $("ws-history").replaceChildren();
    const done = state.data.progress_user;
    if (done) setProgress("user", { done: done.total, total: done.total, percent: 100 });
    message("All done: no image is waiting for your label. Press Backspace to revise your last labels.", "ok");
    const why = document.createElement("a");  // the queue's page says why (overlap, others' claims)
    why.id = "ws-why-done";
    why.href = config.doneUrl + (config.productId ? `?product=${config.productId}` : "");
    why.textContent = "Why?";
    $("ws-message").append(" ", why);
    $("btn-submit").disabled = true;
    $("btn-skip").disabled = true;
    $("btn-forward").disabled = true;
    $("btn-back").disabled = previousId() === null;
  }

  async function submit() {
    if (!state.bgConfirmed) {
      message("The background is only a suggestion: press B (or click) to confirm it before submitting.", "warn");
      return;
    }
    if (!state.category) {
      message("Choose a defect category (1–4) before submitting.", "warn");
      return;
    }
    const image = state.data.image.id;
    const correcting = state.data.labelled_ids.includes(image);
    const label = { image, background: state.background, category: state.category,
                    background_carried: state.bgCarried,
                    // What was suggested (shown pre-selected) for this new label; the server records it
                    // with whether it was taken.
                    suggested_category: !correcting && state.suggestion ? state.suggestion.category : "" };
    message("Saving…", "info");
    state.saving = true;
    try {
      await api("POST", config.api.labels, label);
    } catch (error) {
      if (error.status === 409) {
        // Someone else completed this image (e.g. the claim had expired): nothing to retry.
        message(`Not saved — ${error.message}`, "error");
        const next = document.createElement("button");
        next.type = "button";
        next.className = "retry";
        next.textContent = "Next image";
        next.addEventListener("click", () => guarded(loadNext));
        $("ws-message").append(" ", next);
        return;
      }
      // Keep everything on screen; Retry (or Enter) sends the same choice again.
      message(`Not saved — ${error.message} Your choice is kept.`, "error", () => guarded(submit));
      return;
    } finally {
      state.saving = false;
    }
    state.data.my_label = { background: label.background, category: label.category };
    if (correcting) {
      // A correction: stay here (history and progress refreshed); ← / → move on from here.
      await loadImage(image);
      message("Saved. ← / → move through your labels; → past the last one returns to where you were.", "ok");
      return;
    }
    if (!state.data.labelled_ids.includes(image)) state.data.labelled_ids.push(image);
    message("");
    const back = returnTarget();
    if (back) { window.location.href = back; return; }
    await loadNext();
  }

  async function skip() {
    const image = state.data.image.id;
    try {
      await api("POST", config.api.skip, { image });
    } catch (error) {
      message(`Could not skip: ${error.message}`, "error", () => guarded(skip));
      return;
    }
    message("");
    await loadNext();
  }

  async function back() {
    const id = previousId();
    if (id === null) {
      message("There is no earlier label to go back to.", "info");
      return;
    }
    message("");
    await loadImage(id);
  }

  async function forward() {
    if (!state.data || state.finished) return;
    const ids = state.data.labelled_ids;
    const index = ids.indexOf(state.data.image.id);
    if (index === -1) {
      message("This is where you were: the next image waiting for your label.", "info");
      return;
    }
    message("");
    if (index < ids.length - 1) await loadImage(ids[index + 1]);
    else if (returnTarget()) window.location.href = returnTarget();
    else await loadNext();  // past my last label: back to the queue, where I was
  }

  // --- defect book ---------------------------------------------------------------------------
  // A category's definition and the images reviewers pinned to it (examples, counter-examples,
  // borderline cases, with notes). Fetched only when the panel opens (hovering a category, or ?
  // for the selected one), never with the next image; the image on screen is left out by the
  // server (blind labelling). Reviewers and admins pin the image on screen from here.
  const BOOK_HOVER_MS = 400, BOOK_LEAVE_MS = 300;
  const book = {
    category: null,     // the category shown, null when closed
    held: false,        // opened with ? (or typed into): stays until Esc, ? or ×
    cache: new Map(),   // `${image}:${category}` -> the endpoint's answer
    hoverTimer: null,
    leaveTimer: null,
    asked: 0,           // answers to an older request are dropped
  };

  function bookUrl(category) {
    const url = new URL(config.defectBook.api, window.location.origin);
    url.searchParams.set("dataset", config.datasetId);
    url.searchParams.set("category", category);
    if (state.data && !state.finished) url.searchParams.set("exclude_image", state.data.image.id);
    return url.pathname + url.search;
  }

  function bookKey(category) {
    return `${state.data && !state.finished ? state.data.image.id : "none"}:${category}`;
  }

  function openBook(category, held) {
    clearTimeout(book.hoverTimer);
    clearTimeout(book.leaveTimer);
    const shown = config.categories.find((c) => c.value === category);
    if (!shown) return;
    book.held = book.held || held;
    const changed = book.category !== category;
    book.category = category;
    const panel = $("book-panel");
    panel.hidden = false;
    panel.dataset.category = category;
    document.getElementById("workspace").classList.add("book-open");
    $("book-title").textContent = `${shown.name} — defect book`;
    $("book-definition").textContent = shown.help;
    if (changed) $("book-entries").replaceChildren();
    loadBook(category);
  }

  function closeBook() {
    clearTimeout(book.hoverTimer);
    clearTimeout(book.leaveTimer);
    book.category = null;
    book.held = false;
    $("book-panel").hidden = true;
    $("book-panel").dataset.category = "";
    document.getElementById("workspace").classList.remove("book-open");
  }

  async function loadBook(category) {
    const key = bookKey(category);
    const asked = ++book.asked;
    let answer = book.cache.get(key);
    if (!answer) {
      $("book-status").textContent = "Loading the book…";
      try {
        answer = await api("GET", bookUrl(category));
      } catch (error) {
        if (asked === book.asked) $("book-status").textContent = `Could not load the book: ${error.message}`;
        return;
      }
      book.cache.set(key, answer);
    }
    if (asked !== book.asked || book.category !== category) return;
    renderBook(answer);
  }

  function bookThumb(entry) {
    const frame = document.createElement("div");
    frame.className = "book-thumb";
    const img = document.createElement("img");
    img.src = entry.thumbnail_url;
    img.alt = entry.image_path;
    img.loading = "lazy";
    frame.append(img);
    if (entry.mask_url) {
      const mask = document.createElement("img");
      mask.className = "mask";
      mask.src = entry.mask_url;
      mask.alt = "";
      frame.append(mask);
    }
    return frame;
  }

  function renderBook(answer) {
    const list = $("book-entries");
    list.replaceChildren();
    for (const entry of answer.entries) {
      const li = document.createElement("li");
      li.className = `book-entry kind-${entry.kind}`;
      li.dataset.entry = entry.id;
      li.dataset.kind = entry.kind;
      li.title = entry.image_path;
      li.append(bookThumb(entry), textElement("span", `book-kind kind-${entry.kind}`, entry.kind_label),
                textElement("p", "book-note", entry.note || "(no note)"));
      list.append(li);
    }
    const more = answer.total - answer.entries.length;
    $("book-status").textContent = !answer.total
      ? "Nothing pinned to this category yet."
      : (more > 0 ? `${answer.entries.length} of ${answer.total}; the whole book has the rest.` : "");
    $("book-page-link").href = answer.book_url;
    if (config.defectBook.canEdit) renderThisImage(answer.this_image);
  }

  function renderThisImage(entry) {
    const line = $("book-this-image");
    line.replaceChildren();
    const onScreen = state.data && !state.finished;
    $("book-pin").disabled = !onScreen;
    if (!onScreen) return;
    if (!entry) {
      line.textContent = "This image is not in this category's book.";
      $("book-note").value = "";
      return;
    }
    line.append(`This image is pinned here as ${entry.kind_label.toLowerCase()}`, entry.note ? `: “${entry.note}” ` : " ");
    const unpin = document.createElement("button");
    unpin.type = "button";
    unpin.className = "secondary tiny";
    unpin.id = "book-unpin";
    unpin.textContent = "Unpin";
    unpin.addEventListener("click", () => unpinThis(entry));
    line.append(unpin);
    $("book-kind").value = entry.kind;
    $("book-note").value = entry.note;
  }

  function bookChanged() {
    book.cache.clear();
    if (book.category) loadBook(book.category);
  }

  async function pinThis() {
    if (!book.category || !state.data || state.finished) return;
    const category = book.category;
    try {
      await api("POST", config.defectBook.api, {
        dataset: config.datasetId, image: state.data.image.id, category,
        kind: $("book-kind").value, note: $("book-note").value,
      });
    } catch (error) {
      $("book-status").textContent = `Not pinned — ${error.message}`;
      return;
    }
    bookChanged();
  }

  async function unpinThis(entry) {
    try {
      await api("DELETE", entry.url, {});
    } catch (error) {
      $("book-status").textContent = `Not unpinned — ${error.message}`;
      return;
    }
    bookChanged();
  }

  // Hovering: the panel opens after a short dwell (sweeping across the buttons fetches nothing)
  // and closes when the pointer leaves both the buttons and the panel, unless held open.
  function bookHover(category) {
    clearTimeout(book.leaveTimer);
    clearTimeout(book.hoverTimer);
    if (book.category) { openBook(category, false); return; }
    book.hoverTimer = setTimeout(() => openBook(category, false), BOOK_HOVER_MS);
  }

  function bookLeave() {
    clearTimeout(book.hoverTimer);
    if (book.held || !book.category) return;
    book.leaveTimer = setTimeout(() => { if (!book.held) closeBook(); }, BOOK_LEAVE_MS);
  }

  function toggleBookKey() {  // the ? key: the selected category's book, or closed again
    if (book.category && book.held) { closeBook(); return; }
    if (!state.category) {
      message("Choose a category (1–4) first: ? shows its defect book. Or hover a category.", "info");
      return;
    }
    openBook(state.category, true);
  }

  document.querySelectorAll("[data-category]").forEach((button) => {
    button.addEventListener("mouseenter", () => bookHover(button.dataset.category));
    button.addEventListener("mouseleave", bookLeave);
  });
  $("book-panel").addEventListener("mouseenter", () => clearTimeout(book.leaveTimer));
  $("book-panel").addEventListener("mouseleave", bookLeave);
  $("book-panel").addEventListener("focusin", () => { book.held = true; });
  $("book-close").addEventListener("click", closeBook);
  if (config.defectBook.canEdit) $("book-pin").addEventListener("click", pinThis);

  // --- wiring ----------------------------------------------------------------------------------
  document.querySelectorAll("[data-background]").forEach((button) =>
    button.addEventListener("click", () => chooseBackground(button.dataset.background === "yes")));
  document.querySelectorAll("[data-category]").forEach((button) =>
    button.addEventListener("click", () => chooseCategory(button.dataset.category)));
  $("btn-submit").addEventListener("click", () => guarded(submit));
  $("btn-skip").addEventListener("click", () => guarded(skip));
  $("btn-back").addEventListener("click", () => guarded(back));
  $("btn-forward").addEventListener("click", () => guarded(forward));
  $("mask-toggle").addEventListener("change", (e) => { state.maskOn = e.target.checked; drawMask(); });
  $("mask-opacity").addEventListener("input", () => { $("mask-canvas").style.opacity = $("mask-opacity").value / 100; });
  document.querySelectorAll("[data-mask-mode]").forEach((button) => button.addEventListener("click", () => setMaskMode(button.dataset.maskMode)));
  $("zoom-in").addEventListener("click", () => zoomCentre(1.25));
  $("zoom-out").addEventListener("click", () => zoomCentre(1 / 1.25));
  $("zoom-reset").addEventListener("click", resetView);
  $("zoom-native").addEventListener("click", zoomNative);
  $("diff-toggle").addEventListener("click", () => setDiff(!state.diffOn));
  $("ref-next").addEventListener("click", () => { state.refIndex += 1; showReference(); });
  $("ref-prev").addEventListener("click", () => { state.refIndex -= 1; showReference(); });

  function setMaskMode(mode) {
    state.maskMode = mode;
    document.querySelectorAll("[data-mask-mode]").forEach((b) => b.classList.toggle("active", b.dataset.maskMode === mode));
    drawMask();
  }

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target && (target.tagName === "TEXTAREA" || target.tagName === "SELECT" || (target.tagName === "INPUT" && target.type !== "range" && target.type !== "checkbox"))) {
      if (event.key === "Escape" && book.category) { target.blur(); closeBook(); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (target && target.type === "range" && event.key.startsWith("Arrow")) return; // the slider's own keys
    const key = event.key;
    if (event.shiftKey && key.startsWith("Arrow")) {  // pan a tenth of the view per press
      const step = viewports[0].clientWidth / 10;
      pan(key === "ArrowLeft" ? step : key === "ArrowRight" ? -step : 0,
          key === "ArrowUp" ? step : key === "ArrowDown" ? -step : 0);
      event.preventDefault();
      return;
    }
    const category = config.categories.find((c) => c.key === key);
    const background = config.backgrounds.find((b) => b.key === key.toLowerCase());
    let handled = true;
    if (state.finished && key !== "Backspace" && key !== "ArrowLeft") handled = false;
    else if (category) chooseCategory(category.value);
    else if (background) chooseBackground(background.value);
    else if (key === "Enter") guarded(submit);
    else if (key === "s" || key === "S") guarded(skip);
    else if (key === "Backspace" || key === "ArrowLeft") guarded(back);
    else if (key === "ArrowRight") guarded(forward);
    else if (key === "m" || key === "M") { $("mask-toggle").checked = !$("mask-toggle").checked; state.maskOn = $("mask-toggle").checked; drawMask(); }
    else if (key === "o" || key === "O") setMaskMode(state.maskMode === "outline" ? "fill" : "outline");
    else if (key === "r" || key === "R" || key === "]") { state.refIndex += 1; showReference(); }
    else if (key === "[") { state.refIndex -= 1; showReference(); }
    else if (key === "+" || key === "=") zoomKey(1.25);
    else if (key === "-") zoomKey(1 / 1.25);
    else if (key === "z" || key === "Z") zoomNative();
    else if (key === "d" || key === "D") setDiff(!state.diffOn);
    else if (key === "v" || key === "V") blink(true);
    else if (key === "0") resetView();
    else if (key === "?") toggleBookKey();
    else if (key === "Escape" && book.category) closeBook();
    else handled = false;
    if (handled) {
      event.preventDefault();
      if (target && target.blur && target !== document.body) target.blur();
    }
  });

  document.addEventListener("keyup", (event) => {
    if (event.key === "v" || event.key === "V") blink(false);
  });

  window.addEventListener("beforeunload", (event) => {
    if (hasUnsavedChoice()) { event.preventDefault(); event.returnValue = ""; }
  });

  guarded(() => loadImage(config.imageId));
})();
