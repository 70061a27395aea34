/* Inspect page: drop images, send them to the inspect API, draw each image with its anomaly map
   and the predicted-mask outline; the threshold slider re-segments every map in the browser. The
   map PNG is 8-bit grey over [map_low, map_high] (given per image by the API). No framework. */
(function () {
  "use strict";
  const panel = document.getElementById("deployed");
  if (!panel) return;
  const api = panel.dataset.api;
  const deployed = parseFloat(panel.dataset.pixelThreshold);
  const slider = document.getElementById("threshold");
  const out = document.getElementById("threshold-value");
  const mark = document.getElementById("deployed-mark");
  const status = document.getElementById("inspect-status");
  const results = document.getElementById("results");
  const showMap = document.getElementById("show-map");
  const cards = [];

  function csrf() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }
  function setRange(high) {
    slider.max = String(Math.max(high, deployed * 2));
    slider.step = String(parseFloat(slider.max) / 1000);
    mark.style.left = `${(100 * deployed) / parseFloat(slider.max)}%`;
  }
  setRange(deployed * 2);
  slider.value = String(deployed);
  out.textContent = deployed.toFixed(4);

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

  function draw(card) {
    const t = parseFloat(slider.value);
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
    card.area.textContent = `${((100 * area) / (w * h)).toFixed(2)} % of the image above ${t.toFixed(4)}`;
  }
  function redraw() {
    out.textContent = parseFloat(slider.value).toFixed(4);
    cards.forEach(draw);
  }
  slider.addEventListener("input", redraw);
  showMap.addEventListener("change", redraw);
  document.getElementById("reset-threshold").addEventListener("click", () => {
    slider.value = String(deployed);
    redraw();
  });

  async function addCard(r) {
    const fig = document.createElement("figure");
    fig.className = `inspected ${r.verdict}`;
    fig.dataset.name = r.name;
    fig.dataset.verdict = r.verdict;
    const canvas = document.createElement("canvas");
    const cap = document.createElement("figcaption");
    const verdict = document.createElement("strong");
    verdict.className = "verdict";
    verdict.textContent = r.verdict === "defective" ? "Defective" : "Good";
    const name = document.createElement("span");
    name.textContent = ` ${r.name}`;
    const score = document.createElement("div");
    score.className = "score";
    score.textContent = `image score ${r.score.toFixed(4)} ${r.verdict === "defective" ? "≥" : "<"} threshold ${r.image_threshold.toFixed(4)}`
      + ` · ${r.components.length} region${r.components.length === 1 ? "" : "s"} at the deployed threshold`
      + ` · ${r.inference_ms.toFixed(0)} ms`;
    const area = document.createElement("div");
    area.className = "area";
    const links = document.createElement("div");
    for (const [label, key] of [["anomaly map", "map"], ["predicted mask", "mask"]]) {
      const a = document.createElement("a");
      a.href = r.urls[key]; a.textContent = label; a.target = "_blank";
      links.append(a, " ");
    }
    cap.append(verdict, name, score, area, links);
    fig.append(canvas, cap);
    results.append(fig);
    const [image, grey] = await Promise.all([loadImage(r.urls.image), loadImage(r.urls.map)]);
    canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
    const card = { r, image: pixels(image), grey: pixels(grey), canvas, area };
    cards.push(card);
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
    const high = Math.max(...body.results.map((r) => r.map_high), parseFloat(slider.max) / 2);
    setRange(high);
    await Promise.all(body.results.map(addCard));
    redraw();
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
