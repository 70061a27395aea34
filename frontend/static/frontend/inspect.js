/* Inspect page: drop images, send them to the inspect API, draw each image with its anomaly map
   and the predicted-mask outline. Two sliders, as the deployed model has two thresholds: the image
   threshold decides each card's verdict (its image score against it), the pixel threshold
   re-segments every map in the browser (outline, area, regions). Each card's verdict and numbers
   are recomputed from the sliders' current values, never left at the deployed ones. The map PNG
   is 8-bit grey over [map_low, map_high] (given per image by the API). No framework. */
(function () {
  "use strict";
  const panel = document.getElementById("deployed");
  if (!panel) return;
  const api = panel.dataset.api;
  const status = document.getElementById("inspect-status");
  const results = document.getElementById("results");
  const showMap = document.getElementById("show-map");
  const cards = [];

  /* One threshold control: a range input, its output, its deployed mark and its reset button. The
     exact value lives here, not in the input: a range input snaps what it is given to its step, and
     "back to deployed" must restore the stored value itself. */
  function thresholdControl(name, onChange) {
    const slider = document.getElementById(`${name}-threshold`);
    const out = document.getElementById(`${name}-threshold-value`);
    const mark = document.getElementById(`${name}-deployed-mark`);
    const deployed = parseFloat(slider.dataset.deployed);
    const control = { deployed, value: deployed };
    function show() {
      out.textContent = control.value.toFixed(4);
      out.dataset.value = String(control.value);
      slider.dataset.value = String(control.value);
    }
    control.setRange = (high) => {
      slider.max = String(Math.max(high, deployed * 2));
      mark.style.left = `${(100 * deployed) / parseFloat(slider.max)}%`;
      slider.value = String(control.value);
    };
    control.set = (value) => {
      control.value = value;
      slider.value = String(value);
      show();
      onChange();
    };
    slider.addEventListener("input", () => {
      control.value = parseFloat(slider.value);
      show();
      onChange();
    });
    document.getElementById(`reset-${name}-threshold`).addEventListener("click", () => control.set(deployed));
    control.setRange(deployed * 2);
    show();
    return control;
  }
  const imageThreshold = thresholdControl("image", () => cards.forEach(judge));
  const pixelThreshold = thresholdControl("pixel", () => cards.forEach(draw));
  const deployed = pixelThreshold.deployed;  // the map's colour scale stays fixed on the deployed value

  function csrf() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  // A perceptual-ish colour ramp (dark blue -> cyan -> yellow -> red) for the map overlay.
  function ramp(v) {
    const t = v / 255;
    return [Math.round(255 * Math.min(1, Math.max(0, 1.5 * t - 0.25) * 1.6)),
            Math.round(255 * Math.min(1, 2 * t) * (t < 0.75 ? 1 : 1 - (t - 0.75) * 4)),
            Math.round(255 * Math.max(0, 1 - 2 * t))];
  }
  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error(`cannot load ${url}`));
      img.src = url;
    });
  }
  function pixels(img) {
    const c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    return ctx.getImageData(0, 0, c.width, c.height);
  }

  /* Connected regions (8-connectivity, as the server counts them) of the pixels inside. */
  function countRegions(inside, w, h) {
    const seen = new Uint8Array(w * h);
    let regions = 0;
    const stack = [];
    for (let start = 0; start < w * h; start++) {
      if (seen[start] || !inside(start)) continue;
      regions++;
      seen[start] = 1;
      stack.push(start);
      while (stack.length) {
        const i = stack.pop(), x = i % w, y = (i - x) / w;
        for (let dy = -1; dy <= 1; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const nx = x + dx, ny = y + dy, j = ny * w + nx;
            if (nx < 0 || ny < 0 || nx >= w || ny >= h || seen[j] || !inside(j)) continue;
            seen[j] = 1;
            stack.push(j);
          }
        }
      }
    }
    return regions;
  }

  /* The verdict at the image slider's value: image score against the image threshold. */
  function judge(card) {
    const { r, fig, verdict, score } = card;
    const t = imageThreshold.value;
    const defective = r.score >= t;
    const word = defective ? "defective" : "good";
    fig.className = `inspected ${word}`;
    fig.dataset.verdict = word;
    verdict.textContent = defective ? "Defective" : "Good";
    score.textContent = `image score ${r.score.toFixed(4)} ${defective ? "≥" : "<"} image threshold ${t.toFixed(4)}`
      + ` · ${r.inference_ms.toFixed(0)} ms`;
  }

  function draw(card) {
    const t = pixelThreshold.value;
    const { r, image, grey, canvas } = card;
    const w = image.width, h = image.height;
    const ctx = canvas.getContext("2d");
    const frame = ctx.createImageData(w, h);
    const span = r.map_high - r.map_low;
    // grey >= level  <=>  score >= t (up to the PNG's 1/255 quantisation of the map's range)
    const level = span > 0 ? Math.ceil(((t - r.map_low) / span) * 255 - 1e-9) : (t <= r.map_low ? 0 : 256);
    const inside = (i) => grey.data[4 * i] >= level;
    let area = 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = y * w + x, p = 4 * i;
        let R = image.data[p], G = image.data[p + 1], B = image.data[p + 2];
        if (showMap.checked) {
          // one colour scale for every image: 0 .. twice the deployed threshold (mid-ramp = deployed)
          const score = r.map_low + (grey.data[p] / 255) * span;
          const [cr, cg, cb] = ramp(Math.max(0, Math.min(255, (255 * score) / (2 * deployed))));
          R = 0.6 * R + 0.4 * cr; G = 0.6 * G + 0.4 * cg; B = 0.6 * B + 0.4 * cb;
        }
        if (inside(i)) {
          area++;
          const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 || !inside(i - 1) || !inside(i + 1)
            || !inside(i - w) || !inside(i + w);
          if (edge) { R = 255; G = 0; B = 0; }
        }
        frame.data[p] = R; frame.data[p + 1] = G; frame.data[p + 2] = B; frame.data[p + 3] = 255;
      }
    }
    ctx.putImageData(frame, 0, 0);
    const regions = area ? countRegions(inside, w, h) : 0;
    card.area.textContent = `${((100 * area) / (w * h)).toFixed(2)} % of the image above pixel threshold `
      + `${t.toFixed(4)} · ${regions} region${regions === 1 ? "" : "s"}`;
  }
  showMap.addEventListener("change", () => cards.forEach(draw));

  async function addCard(r) {
    const fig = document.createElement("figure");
    fig.dataset.name = r.name;
    const canvas = document.createElement("canvas");
    const cap = document.createElement("figcaption");
    const verdict = document.createElement("strong");
    verdict.className = "verdict";
    const name = document.createElement("span");
    name.textContent = ` ${r.name}`;
    const score = document.createElement("div");
    score.className = "score";
    const area = document.createElement("div");
    area.className = "area";
    const links = document.createElement("div");
    for (const [label, key] of [["anomaly map", "map"], ["predicted mask", "mask"]]) {
      const a = document.createElement("a");
      a.href = r.urls[key]; a.textContent = label; a.target = "_blank";
      links.append(a, " ");
    }
    cap.append(verdict, name, score, area, links);
    const stack = document.createElement("div");
    stack.className = "stack";
    stack.append(canvas);
    fig.append(stack, cap);
    results.append(fig);
    if (r.verdict_id !== undefined && window.DefectBenchFeedback) {
      // Review marks (feedback.js): outlines are drawn in the kept picture's own pixels.
      fig.dataset.verdictId = String(r.verdict_id);
      window.DefectBenchFeedback.attach(fig, { feedbackUrl: r.urls.feedback, addUrl: r.urls.add_to_dataset,
        surface: stack, size: () => [canvas.width || 1, canvas.height || 1] });
    }
    const [image, grey] = await Promise.all([loadImage(r.urls.image), loadImage(r.urls.map)]);
    canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
    // Shown at the uploaded image's proportions: a squash model's map is square, the image is not
    // (a tiles or keep_aspect map is at the image's own size already).
    canvas.style.aspectRatio = `${r.width} / ${r.height}`;
    const card = { r, fig, verdict, score, image: pixels(image), grey: pixels(grey), canvas, area };
    cards.push(card);
    judge(card);
    draw(card);
  }

  async function send(files) {
    if (!files.length) return;
    const form = new FormData();
    for (const f of files) form.append("images", f, f.name);
    status.textContent = `Inspecting ${files.length} image${files.length === 1 ? "" : "s"}…`;
    const response = await fetch(api, {
      method: "POST", body: form, credentials: "same-origin",
      headers: { "X-CSRFToken": csrf(), Accept: "application/json" },
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      status.textContent = body.detail || `Refused (${response.status}).`;
      status.className = "error";
      return;
    }
    status.className = "muted";
    // Both ranges reach every score seen, and at least twice the deployed value.
    pixelThreshold.setRange(Math.max(...body.results.map((r) => r.map_high), ...cards.map((c) => c.r.map_high)));
    imageThreshold.setRange(1.1 * Math.max(...body.results.map((r) => r.score), ...cards.map((c) => c.r.score)));
    await Promise.all(body.results.map(addCard));
    status.textContent = `${body.results.length} image${body.results.length === 1 ? "" : "s"} inspected`
      + ` (${body.inference_ms_per_image.toFixed(0)} ms per image).`;
    results.dataset.done = String(cards.length);
  }

  const drop = document.getElementById("drop");
  const input = document.getElementById("files");
  input.addEventListener("change", () => send(Array.from(input.files)));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    send(Array.from(e.dataTransfer.files).filter((f) => f.type.startsWith("image/") || /\.(png|jpe?g|bmp|tiff?|webp)$/i.test(f.name)));
  });
})();
