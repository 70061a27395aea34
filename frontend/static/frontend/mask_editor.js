/* DefectBench mask editor: plain JS, no dependencies.
 *
 * The mask is one byte per image pixel (1 = defect); the mask canvas has the image's own size,
 * so at 1:1 one image pixel is one canvas pixel is one screen pixel. Every tool is hard-edged
 * (no antialiasing), so what is saved is exactly what was drawn:
 *  - brush / eraser: every pixel whose centre lies within size/2 of the stroke (the segments
 *    between successive pointer positions, each snapped to the centre of the pixel under it);
 *  - polygon: pixel centres inside the polygon (scanline, crossings half-open in y, both ends of
 *    a span included) plus its outline (centres within 0.5 px of an edge);
 *  - fill: the 4-connected region of the clicked pixel's value is flipped (fills an outline's
 *    inside, or clears a region of the mask).
 * Undo / redo keep the changed rectangle of each operation. Save sends a PNG (white = defect,
 * black = not) of the image's size; the server checks it and keeps it as a new revision.
 */
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("mask-editor-config").textContent);
  const $ = (id) => document.getElementById(id);
  const W = config.width;
  const H = config.height;
  const SIZES = [1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 100, 128, 160, 200];
  const UNDO_BYTES = 256 * 1024 * 1024; // before and after of the kept operations
  const COLOUR = [255, 40, 90];

  const editor = $("mask-editor");
  const viewport = $("me-viewport");
  const stage = $("me-stage");
  const maskCanvas = $("me-mask");
  const overlay = $("me-overlay");
  const maskContext = maskCanvas.getContext("2d");
  const overlayContext = overlay.getContext("2d");
  const pixels = maskContext.createImageData(W, H);

  const mask = new Uint8Array(W * H);
  const state = {
    tool: "brush",
    size: 12,
    scale: 1,
    start: { kind: "empty", revision: null, note: "", pixels: new Uint8Array(W * H) },
    undo: [],
    redo: [],
    operation: null, // the stroke being drawn: {snapshot, box, value, last}
    polygon: [],     // corners of the polygon being drawn
    cursor: null,    // pixel under the pointer
    overlayBox: null,
    proposal: null,
    saving: false,
    pendingStart: null, // a start button clicked once over unsaved changes
    history: config.history || [],
  };

  // --- messages and small helpers ------------------------------------------------------------
  function message(text, kind) {
    const box = $("me-message");
    box.hidden = !text;
    box.className = `notice ${kind || "info"}`;
    box.textContent = text || "";
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  // --- drawing the mask on its canvas ------------------------------------------------------------
  function paint(box) {
    const x0 = Math.max(0, box.x0), y0 = Math.max(0, box.y0);
    const x1 = Math.min(W, box.x1), y1 = Math.min(H, box.y1);
    if (x1 <= x0 || y1 <= y0) return;
    const data = pixels.data;
    for (let y = y0; y < y1; y++) {
      let i = y * W + x0;
      let p = i * 4;
      for (let x = x0; x < x1; x++, i++, p += 4) {
        if (mask[i]) { data[p] = COLOUR[0]; data[p + 1] = COLOUR[1]; data[p + 2] = COLOUR[2]; data[p + 3] = 255; }
        else { data[p + 3] = 0; }
      }
    }
    maskContext.putImageData(pixels, 0, 0, x0, y0, x1 - x0, y1 - y0);
  }

  const whole = () => ({ x0: 0, y0: 0, x1: W, y1: H });

  function grow(box, other) {
    if (!box) return { ...other };
    return { x0: Math.min(box.x0, other.x0), y0: Math.min(box.y0, other.y0),
             x1: Math.max(box.x1, other.x1), y1: Math.max(box.y1, other.y1) };
  }

  function clip(box) {
    return { x0: Math.max(0, box.x0), y0: Math.max(0, box.y0), x1: Math.min(W, box.x1), y1: Math.min(H, box.y1) };
  }

  // --- operations and undo -----------------------------------------------------------------------
  function begin() {
    state.operation = { snapshot: mask.slice(), box: null };
  }

  function cut(source, box) {
    const w = box.x1 - box.x0;
    const out = new Uint8Array(w * (box.y1 - box.y0));
    for (let y = box.y0; y < box.y1; y++) out.set(source.subarray(y * W + box.x0, y * W + box.x1), (y - box.y0) * w);
    return out;
  }

  function put(part, box) {
    const w = box.x1 - box.x0;
    for (let y = box.y0; y < box.y1; y++) mask.set(part.subarray((y - box.y0) * w, (y - box.y0 + 1) * w), y * W + box.x0);
  }

  function finish() {
    const operation = state.operation;
    state.operation = null;
    if (!operation || !operation.box) return;
    const box = clip(operation.box);
    if (box.x1 <= box.x0 || box.y1 <= box.y0) return;
    const before = cut(operation.snapshot, box);
    const after = cut(mask, box);
    let same = true;
    for (let i = 0; i < before.length; i++) { if (before[i] !== after[i]) { same = false; break; } }
    if (same) return;
    state.undo.push({ box, before, after });
    state.redo = [];
    let bytes = 0;
    for (let k = state.undo.length - 1; k >= 0; k--) {
      bytes += state.undo[k].before.length * 2;
      if (bytes > UNDO_BYTES) { state.undo.splice(0, k + 1); break; }
    }
    changed();
  }

  function undo() {
    const step = state.undo.pop();
    if (!step) return;
    put(step.before, step.box);
    paint(step.box);
    state.redo.push(step);
    changed();
  }

  function redo() {
    const step = state.redo.pop();
    if (!step) return;
    put(step.after, step.box);
    paint(step.box);
    state.undo.push(step);
    changed();
  }

  function touched(box) {
    if (state.operation) state.operation.box = grow(state.operation.box, box);
    paint(box);
  }

  // --- the tools ---------------------------------------------------------------------------------
  // Pixels whose centre lies within `radius` of the segment a-b (pixel indices, i.e. centres).
  function capsule(a, b, radius, value) {
    const r2 = radius * radius;
    const box = clip({ x0: Math.floor(Math.min(a.x, b.x) - radius), y0: Math.floor(Math.min(a.y, b.y) - radius),
                       x1: Math.ceil(Math.max(a.x, b.x) + radius) + 1, y1: Math.ceil(Math.max(a.y, b.y) + radius) + 1 });
    const dx = b.x - a.x, dy = b.y - a.y;
    const length2 = dx * dx + dy * dy;
    for (let y = box.y0; y < box.y1; y++) {
      for (let x = box.x0; x < box.x1; x++) {
        let t = length2 ? ((x - a.x) * dx + (y - a.y) * dy) / length2 : 0;
        if (t < 0) t = 0; else if (t > 1) t = 1;
        const qx = a.x + t * dx, qy = a.y + t * dy;
        const d2 = (x - qx) * (x - qx) + (y - qy) * (y - qy);
        if (d2 <= r2) mask[y * W + x] = value;
      }
    }
    touched(box);
  }

  function fillPolygon(points) {
    let y0 = H, y1 = -1;
    for (const p of points) { y0 = Math.min(y0, p.y); y1 = Math.max(y1, p.y); }
    y0 = Math.max(0, y0); y1 = Math.min(H - 1, y1);
    let x0 = W, x1 = -1;
    for (let y = y0; y <= y1; y++) {
      const crossings = [];
      for (let k = 0; k < points.length; k++) {
        const a = points[k], b = points[(k + 1) % points.length];
        if ((a.y > y) !== (b.y > y)) crossings.push(a.x + (y - a.y) * (b.x - a.x) / (b.y - a.y));
      }
      crossings.sort((p, q) => p - q);
      for (let k = 0; k + 1 < crossings.length; k += 2) {
        const from = Math.max(0, Math.ceil(crossings[k])), to = Math.min(W - 1, Math.floor(crossings[k + 1]));
        for (let x = from; x <= to; x++) mask[y * W + x] = 1;
        if (from <= to) { x0 = Math.min(x0, from); x1 = Math.max(x1, to); }
      }
    }
    if (x1 >= x0) touched({ x0, y0, x1: x1 + 1, y1: y1 + 1 });
    for (let k = 0; k < points.length; k++) capsule(points[k], points[(k + 1) % points.length], 0.5, 1);
  }

  function floodFill(start) {
    const from = mask[start.y * W + start.x];
    const to = from ? 0 : 1;
    const stack = [start.y * W + start.x];
    let x0 = start.x, x1 = start.x, y0 = start.y, y1 = start.y;
    mask[start.y * W + start.x] = to;
    while (stack.length) {
      const i = stack.pop();
      const x = i % W, y = (i - x) / W;
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
      if (x > 0 && mask[i - 1] === from) { mask[i - 1] = to; stack.push(i - 1); }
      if (x < W - 1 && mask[i + 1] === from) { mask[i + 1] = to; stack.push(i + 1); }
      if (y > 0 && mask[i - W] === from) { mask[i - W] = to; stack.push(i - W); }
      if (y < H - 1 && mask[i + W] === from) { mask[i + W] = to; stack.push(i + W); }
    }
    touched({ x0, y0, x1: x1 + 1, y1: y1 + 1 });
  }

  function closePolygon() {
    const points = state.polygon.filter((p, k, all) => k === 0 || p.x !== all[k - 1].x || p.y !== all[k - 1].y);
    if (points.length > 1 && points[0].x === points[points.length - 1].x && points[0].y === points[points.length - 1].y) points.pop();
    state.polygon = [];
    if (points.length < 3) {
      drawOverlay();
      message("A polygon needs at least three corners.", "warn");
      return;
    }
    begin();
    fillPolygon(points);
    finish();
    drawOverlay();
  }

  // --- the overlay: brush outline and the polygon being drawn --------------------------------------
  function drawOverlay() {
    if (state.overlayBox) {
      const b = clip(state.overlayBox);
      overlayContext.clearRect(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0);
    }
    state.overlayBox = null;
    const line = Math.max(1, 1 / state.scale);
    overlayContext.lineWidth = line;
    if (state.polygon.length) {
      const points = state.cursor ? [...state.polygon, state.cursor] : state.polygon;
      overlayContext.strokeStyle = "#ffd60a";
      overlayContext.beginPath();
      points.forEach((p, k) => (k ? overlayContext.lineTo(p.x + 0.5, p.y + 0.5) : overlayContext.moveTo(p.x + 0.5, p.y + 0.5)));
      overlayContext.stroke();
      for (const p of points) state.overlayBox = grow(state.overlayBox, { x0: p.x - 3, y0: p.y - 3, x1: p.x + 4, y1: p.y + 4 });
      for (const p of state.polygon) overlayContext.strokeRect(p.x - 1.5, p.y - 1.5, 4, 4);
    }
    if (state.cursor && (state.tool === "brush" || state.tool === "eraser")) {
      const r = state.size / 2;
      const c = state.cursor;
      overlayContext.strokeStyle = state.tool === "eraser" ? "#ffffff" : "#ffd60a";
      overlayContext.beginPath();
      overlayContext.arc(c.x + 0.5, c.y + 0.5, Math.max(r, 1), 0, 2 * Math.PI);
      overlayContext.stroke();
      state.overlayBox = grow(state.overlayBox, { x0: Math.floor(c.x - r - 3), y0: Math.floor(c.y - r - 3),
                                                   x1: Math.ceil(c.x + r + 4), y1: Math.ceil(c.y + r + 4) });
    }
  }

  // --- pointer ---------------------------------------------------------------------------------
  function pixelAt(event) {
    const rect = overlay.getBoundingClientRect();
    const x = Math.floor((event.clientX - rect.left) / state.scale);
    const y = Math.floor((event.clientY - rect.top) / state.scale);
    return { x: Math.min(W - 1, Math.max(0, x)), y: Math.min(H - 1, Math.max(0, y)) };
  }

  overlay.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    viewport.focus({ preventScroll: true });
    const p = pixelAt(event);
    state.cursor = p;
    if (state.tool === "brush" || state.tool === "eraser") {
      overlay.setPointerCapture(event.pointerId);
      begin();
      state.operation.value = state.tool === "brush" ? 1 : 0;
      state.operation.last = p;
      capsule(p, p, state.size / 2, state.operation.value);
    } else if (state.tool === "polygon") {
      state.polygon.push(p);
    } else if (state.tool === "fill") {
      begin();
      floodFill(p);
      finish();
    }
    drawOverlay();
  });

  overlay.addEventListener("pointermove", (event) => {
    const operation = state.operation;
    if (operation && operation.last) {
      // Every position the pointer passed (the browser may merge several into one event).
      const passed = (event.getCoalescedEvents && event.getCoalescedEvents().length) ? event.getCoalescedEvents() : [event];
      for (const each of passed) {
        const q = pixelAt(each);
        if (q.x !== operation.last.x || q.y !== operation.last.y) {
          capsule(operation.last, q, state.size / 2, operation.value);
          operation.last = q;
        }
      }
    }
    const p = pixelAt(event);
    state.cursor = p;
    $("me-cursor").textContent = `x ${p.x}, y ${p.y}`;
    drawOverlay();
  });

  function endStroke() {
    if (state.operation && state.operation.last) finish();
  }
  overlay.addEventListener("pointerup", endStroke);
  overlay.addEventListener("pointercancel", endStroke);
  overlay.addEventListener("pointerleave", () => { state.cursor = null; drawOverlay(); });
  overlay.addEventListener("dblclick", (event) => {
    event.preventDefault();
    if (state.tool === "polygon") closePolygon();
  });

  // --- tools, size, zoom, opacity ----------------------------------------------------------------
  function setTool(tool) {
    if (tool !== "polygon" && state.polygon.length) { state.polygon = []; }
    state.tool = tool;
    document.querySelectorAll("[data-tool]").forEach((b) => b.classList.toggle("active", b.dataset.tool === tool));
    editor.dataset.tool = tool;
    drawOverlay();
  }

  function setSize(size) {
    state.size = size;
    $("me-size").textContent = `Brush ${size} px`;
    editor.dataset.brushSize = String(size);
    drawOverlay();
  }

  function stepSize(direction) {
    const next = direction > 0 ? SIZES.find((s) => s > state.size) : [...SIZES].reverse().find((s) => s < state.size);
    if (next !== undefined) setSize(next);
  }

  function setScale(scale, anchor) {
    const old = state.scale;
    state.scale = Math.min(16, Math.max(0.02, scale));
    // Keep the image point under the anchor (the viewport's centre by default) where it was.
    const ax = anchor ? anchor.x : viewport.clientWidth / 2;
    const ay = anchor ? anchor.y : viewport.clientHeight / 2;
    const ix = (viewport.scrollLeft + ax) / old, iy = (viewport.scrollTop + ay) / old;
    stage.style.width = `${W * state.scale}px`;
    stage.style.height = `${H * state.scale}px`;
    stage.classList.toggle("pixelated", state.scale >= 1);
    viewport.scrollLeft = ix * state.scale - ax;
    viewport.scrollTop = iy * state.scale - ay;
    $("me-zoom").textContent = `${Math.round(state.scale * 1000) / 10}%`;
    editor.dataset.scale = String(state.scale);
    drawOverlay();
  }

  function fitScale() {
    return Math.min(viewport.clientWidth / W, viewport.clientHeight / H);
  }

  function setOpacity() {
    maskCanvas.style.opacity = String($("me-opacity").value / 100);
  }

  document.querySelectorAll("[data-tool]").forEach((button) => button.addEventListener("click", () => setTool(button.dataset.tool)));
  $("me-size-down").addEventListener("click", () => stepSize(-1));
  $("me-size-up").addEventListener("click", () => stepSize(1));
  $("me-undo").addEventListener("click", undo);
  $("me-redo").addEventListener("click", redo);
  $("me-clear").addEventListener("click", () => {
    begin();
    mask.fill(0);
    touched(whole());
    finish();
  });
  $("me-opacity").addEventListener("input", setOpacity);
  $("me-zoom-in").addEventListener("click", () => setScale(state.scale * 1.25));
  $("me-zoom-out").addEventListener("click", () => setScale(state.scale / 1.25));
  $("me-zoom-fit").addEventListener("click", () => setScale(fitScale()));
  $("me-zoom-native").addEventListener("click", () => setScale(1));
  viewport.addEventListener("wheel", (event) => {
    if (!event.ctrlKey) return; // plain wheel scrolls; Ctrl+wheel zooms at the cursor
    event.preventDefault();
    const rect = viewport.getBoundingClientRect();
    setScale(state.scale * (event.deltaY < 0 ? 1.25 : 0.8), { x: event.clientX - rect.left, y: event.clientY - rect.top });
  }, { passive: false });

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) return;
    const key = event.key;
    if ((event.ctrlKey || event.metaKey) && (key === "z" || key === "Z")) {
      event.preventDefault();
      if (event.shiftKey) redo(); else undo();
      return;
    }
    if ((event.ctrlKey || event.metaKey) && (key === "y" || key === "Y")) { event.preventDefault(); redo(); return; }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const tools = { b: "brush", e: "eraser", p: "polygon", f: "fill" };
    if (tools[key.toLowerCase()]) { setTool(tools[key.toLowerCase()]); event.preventDefault(); }
    else if (key === "[") { stepSize(-1); event.preventDefault(); }
    else if (key === "]") { stepSize(1); event.preventDefault(); }
    else if (key === "Enter" && state.tool === "polygon" && state.polygon.length) { closePolygon(); event.preventDefault(); }
    else if (key === "Escape" && state.polygon.length) { state.polygon = []; drawOverlay(); }
    else if (key === "0") setScale(fitScale());
    else if (key === "1") setScale(1);
    else if (key === "+" || key === "=") setScale(state.scale * 1.25);
    else if (key === "-") setScale(state.scale / 1.25);
  });

  // --- starting points -----------------------------------------------------------------------------
  function isChanged() {
    const start = state.start.pixels;
    for (let i = 0; i < mask.length; i++) { if (mask[i] !== start[i]) return true; }
    return false;
  }

  function changed() {
    editor.dataset.changed = isChanged() ? "1" : "0";
    $("me-undo").disabled = !state.undo.length;
    $("me-redo").disabled = !state.redo.length;
  }

  async function maskFrom(url) {
    const picture = new Image();
    picture.src = url;
    await picture.decode();
    if (picture.naturalWidth !== W || picture.naturalHeight !== H) {
      throw new Error(`The mask is ${picture.naturalWidth}×${picture.naturalHeight}, the image ${W}×${H}.`);
    }
    const canvas = document.createElement("canvas");
    canvas.width = W;
    canvas.height = H;
    const context = canvas.getContext("2d");
    context.drawImage(picture, 0, 0);
    const data = context.getImageData(0, 0, W, H).data;
    const out = new Uint8Array(W * H);
    for (let i = 0; i < out.length; i++) out[i] = data[i * 4] > 127 ? 1 : 0;
    return out;
  }

  function startFrom(kind, values, { revision = null, note = "", text = "" } = {}) {
    mask.set(values);
    state.start = { kind, revision, note, pixels: values.slice() };
    state.undo = [];
    state.redo = [];
    state.polygon = [];
    state.pendingStart = null;
    paint(whole());
    drawOverlay();
    editor.dataset.start = kind;
    $("me-start").textContent = text;
    changed();
  }

  // Replacing unsaved work takes a second click on the same button.
  function confirmReplace(which) {
    if (!isChanged() || state.pendingStart === which) return true;
    state.pendingStart = which;
    message("This replaces your unsaved changes; click again to do so (or Undo is lost).", "warn");
    return false;
  }

  async function startCurrent() {
    const values = await maskFrom(config.maskUrl);
    const current = state.history.find((r) => r.id === config.currentRevision);
    startFrom("mask", values, { revision: current ? current.id : null,
      text: current ? `Revision ${current.number} (${current.originLabel.toLowerCase()}, ${current.by})` : "The mask the dataset came with" });
  }

  async function startRevision(revision) {
    const values = await maskFrom(revision.url);
    startFrom("mask", values, { revision: revision.id,
      text: `Revision ${revision.number} (${revision.originLabel.toLowerCase()}, ${revision.by}, ${revision.at})` });
  }

  async function startProposal() {
    const proposal = state.proposal;
    const values = await maskFrom(proposal.maskPng);
    startFrom("proposal", values, { note: proposal.source, text: `The model's proposal: ${proposal.source}` });
  }

  function startEmpty() {
    startFrom("empty", new Uint8Array(W * H), { text: "An empty mask" });
  }

  function guarded(which, action) {
    return async () => {
      if (!confirmReplace(which)) return;
      try { await action(); message(""); }
      catch (error) { message(error.message, "error"); }
    };
  }

  $("me-start-proposal").addEventListener("click", guarded("proposal", startProposal));
  $("me-start-empty").addEventListener("click", guarded("empty", async () => startEmpty()));
  if ($("me-start-current")) $("me-start-current").addEventListener("click", guarded("current", startCurrent));

  function showProposal(proposal) {
    const box = $("me-proposal");
    box.replaceChildren();
    if (!proposal.available) {
      box.append(element("p", "muted", proposal.detail || "No proposal."));
      return;
    }
    const regions = proposal.regions;
    box.append(element("p", "", proposal.source));
    box.append(element("p", "", regions.length
      ? `${regions.length} region${regions.length === 1 ? "" : "s"}, ${proposal.defectPixels.toLocaleString("en")} pixels`
      : "The model finds no defect region at its threshold."));
    if (regions.length) {
      const list = element("ol", "me-regions");
      list.id = "me-regions";
      for (const region of regions.slice(0, 20)) {
        const [x0, y0, x1, y1] = region.bbox;
        list.append(element("li", "", `${region.area.toLocaleString("en")} px at x ${x0}–${x1 - 1}, y ${y0}–${y1 - 1}`));
      }
      box.append(list);
      if (regions.length > 20) box.append(element("p", "muted", `and ${regions.length - 20} more`));
    }
  }

  async function fetchProposal() {
    try {
      const response = await fetch(config.proposalUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      const payload = await response.json();
      state.proposal = payload;
    } catch (error) {
      state.proposal = { available: false, detail: "The proposal could not be fetched." };
    }
    showProposal(state.proposal);
    const usable = state.proposal.available && state.proposal.defectPixels > 0;
    $("me-start-proposal").disabled = !usable;
    return usable;
  }

  // --- history -------------------------------------------------------------------------------------
  function renderHistory() {
    const list = $("me-history");
    list.replaceChildren();
    if (!state.history.length) {
      list.append(element("li", "muted", config.maskIsDatasets ? "The mask the dataset came with; no revision yet." : "No mask saved yet."));
      return;
    }
    state.history.forEach((revision, index) => {
      const item = element("li", "me-revision");
      item.dataset.revision = String(revision.number);
      item.append(element("b", "", `#${revision.number} ${revision.originLabel}`));
      item.append(document.createTextNode(` · ${revision.by} · ${revision.at}`));
      if (index === 0) item.append(element("span", "tag", "current"));
      if (revision.startedFrom) item.append(element("div", "muted", `from ${revision.startedFrom}`));
      const open = element("button", "secondary tiny", "Start from this");
      open.type = "button";
      open.addEventListener("click", guarded(`revision-${revision.id}`, () => startRevision(revision)));
      item.append(" ", open);
      list.append(item);
    });
  }

  // --- saving --------------------------------------------------------------------------------------
  function png() {
    const canvas = document.createElement("canvas");
    canvas.width = W;
    canvas.height = H;
    const context = canvas.getContext("2d");
    const out = context.createImageData(W, H);
    const data = out.data;
    for (let i = 0, p = 0; i < mask.length; i++, p += 4) {
      const v = mask[i] ? 255 : 0;
      data[p] = v; data[p + 1] = v; data[p + 2] = v; data[p + 3] = 255;
    }
    context.putImageData(out, 0, 0);
    return new Promise((resolve, reject) => canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("The mask could not be encoded."))), "image/png"));
  }

  async function save() {
    if (state.saving) return;
    if (state.polygon.length) closePolygon();
    state.saving = true;
    $("me-save-button").disabled = true;
    editor.dataset.saving = "1";
    message("Saving…", "info");
    try {
      const query = new URLSearchParams({ start: state.start.kind, changed: isChanged() ? "1" : "0" });
      if (state.start.revision) query.set("revision", String(state.start.revision));
      if (state.start.note) query.set("note", state.start.note);
      const body = await png();
      let response;
      try {
        response = await fetch(`${config.saveUrl}?${query}`, {
          method: "POST", credentials: "same-origin", body,
          headers: { "Content-Type": "image/png", "X-CSRFToken": csrfToken(), Accept: "application/json" },
        });
      } catch (error) {
        throw new Error("Network error: the server could not be reached; the mask is still here, save again.");
      }
      let payload = null;
      try { payload = await response.json(); } catch (error) { payload = null; }
      if (!response.ok) throw new Error((payload && payload.detail) || `Server error ${response.status}.`);
      const revision = payload.revision;
      state.history = payload.history;
      config.currentRevision = revision.id;
      config.maskUrl = payload.maskUrl;
      config.maskIsDatasets = false;
      renderHistory();
      startFrom("mask", mask.slice(), { revision: revision.id,
        text: `Revision ${revision.number} (${revision.originLabel.toLowerCase()}, ${revision.by})` });
      message(`Saved as revision ${revision.number} (${revision.originLabel.toLowerCase()}).` +
              (config.workspaceUrl ? " The image can be labelled now." : ""), "ok");
      if ($("me-label")) $("me-label").hidden = false;
      editor.dataset.saved = String(revision.number);
    } catch (error) {
      message(error.message, "error");
    } finally {
      state.saving = false;
      $("me-save-button").disabled = !config.mayDraw;
      editor.dataset.saving = "0";
    }
  }

  $("me-save-button").addEventListener("click", save);

  // --- start ---------------------------------------------------------------------------------------
  async function init() {
    setTool("brush");
    setSize(state.size);
    setOpacity();
    renderHistory();
    const picture = $("me-image");
    picture.src = config.imageUrl;
    try { await picture.decode(); } catch (error) { message("The image could not be loaded.", "error"); }
    setScale(Math.min(1, fitScale()));
    changed();
    const proposed = fetchProposal();
    try {
      if (config.hasMask) {
        await startCurrent();
        await proposed;
      } else if (await proposed) {
        await startProposal();
        message("Started from the model's proposal: save it as it is to accept it, or correct it first.", "info");
      } else {
        startEmpty();
      }
    } catch (error) {
      startEmpty();
      message(error.message, "error");
    }
    if (!config.mayDraw) {
      $("me-save-button").disabled = true;
      message(config.refusal, "warn");
    }
    editor.dataset.ready = "1";
  }

  init();
})();
