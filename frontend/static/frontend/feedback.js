/* Review marks on inspected images, on the inspect page (cards made by inspect.js, which calls
   DefectBenchFeedback.attach) and the batch gallery (figures carrying data-feedback-url).

   On a card: buttons Correct / False alarm / Missed defect, or the keys 1 / 2 / 3 while the card
   has the focus (Tab or a click on it); "Outline" (key O) turns drawing on: each click on the
   picture adds a point of a polygon around the defect, "Undo point" (Backspace) takes the last one
   back; a mark made with 3 points or more sends the outline with it. "Add to dataset" (key A)
   copies the marked image into the product's dataset. Each mark is a new row on the server: marking
   again supersedes the earlier mark for the rates and keeps both. DOM built with textContent only. */
(function () {
  "use strict";
  const KINDS = [["correct", "Correct", "1"], ["false_alarm", "False alarm", "2"], ["missed_defect", "Missed defect", "3"]];

  function csrf() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRFToken": csrf(), Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = data.detail || Object.entries(data).map(([k, v]) => `${k}: ${[].concat(v).join(" ")}`).join("; ");
      throw new Error(detail || `Refused (${response.status}).`);
    }
    return data;
  }

  function button(text, title) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "secondary small";
    b.textContent = text;
    if (title) b.title = title;
    return b;
  }

  /* fig: the card; options: {feedbackUrl, addUrl, surface (the element the picture fills),
     size() -> [width, height] of the picture in its own pixels, mark (a kind already marked)} */
  function attach(fig, options) {
    const { feedbackUrl, addUrl, surface, size } = options;
    fig.tabIndex = 0;
    const layer = document.createElement("canvas");
    layer.className = "outline-layer";
    surface.append(layer);
    const points = [];
    let drawing = false;

    const box = document.createElement("div");
    box.className = "feedback";
    const kindButtons = KINDS.map(([kind, label, key]) => {
      const b = button(`${key} ${label}`, `${label} (key ${key})`);
      b.dataset.kind = kind;
      b.setAttribute("aria-pressed", "false");
      b.addEventListener("click", (e) => { e.stopPropagation(); mark(kind); });
      return b;
    });
    const outline = button("Outline", "draw the defect's outline: click points on the picture (key O)");
    outline.classList.add("outline-toggle");
    outline.setAttribute("aria-pressed", "false");
    const undo = button("Undo point", "remove the last outline point (Backspace)");
    const add = button("Add to dataset", "copy this image into the product's dataset as the mark says (key A)");
    add.classList.add("add-to-dataset");
    add.disabled = !options.mark;
    const note = document.createElement("input");
    note.className = "feedback-note";
    note.placeholder = "note (optional)";
    note.maxLength = 500;
    const status = document.createElement("span");
    status.className = "feedback-status";
    status.setAttribute("aria-live", "polite");
    box.append(...kindButtons, outline, undo, add, note, status);
    fig.append(box);

    function say(text, error) {
      status.textContent = text;
      status.className = `feedback-status${error ? " error" : ""}`;
    }
    function pressed(kind) {
      kindButtons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.kind === kind)));
      if (kind) fig.dataset.mark = kind;
    }
    pressed(options.mark || "");

    function paint() {
      const [w, h] = size();
      if (layer.width !== w || layer.height !== h) { layer.width = w; layer.height = h; }
      const ctx = layer.getContext("2d");
      ctx.clearRect(0, 0, w, h);
      if (!points.length) return;
      ctx.lineWidth = Math.max(1, w / 150);
      ctx.strokeStyle = "#ffd400";
      ctx.fillStyle = "rgba(255, 212, 0, 0.25)";
      ctx.beginPath();
      points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      if (points.length > 2) { ctx.closePath(); ctx.fill(); }
      ctx.stroke();
      fig.dataset.outlinePoints = String(points.length);
    }
    function setDrawing(on) {
      drawing = on;
      fig.classList.toggle("drawing", on);
      outline.setAttribute("aria-pressed", String(on));
      paint();
    }
    layer.addEventListener("click", (e) => {
      if (!drawing) return;
      e.stopPropagation();
      const rect = layer.getBoundingClientRect();
      const [w, h] = size();
      points.push([Math.round(((e.clientX - rect.left) / rect.width) * w * 10) / 10,
                   Math.round(((e.clientY - rect.top) / rect.height) * h * 10) / 10]);
      paint();
    });
    outline.addEventListener("click", (e) => { e.stopPropagation(); setDrawing(!drawing); });
    undo.addEventListener("click", (e) => { e.stopPropagation(); points.pop(); paint(); });

    async function mark(kind) {
      const body = { kind, note: note.value };
      if (points.length >= 3 && kind !== "false_alarm") body.outline = points.map((p) => [...p]);
      try {
        const row = await post(feedbackUrl, body);
        pressed(row.kind);
        add.disabled = false;
        setDrawing(false);
        const label = KINDS.find(([k]) => k === row.kind)[1].toLowerCase();
        say(`Marked ${label}${row.has_outline ? " with an outline" : ""} by ${row.marked_by}.`);
      } catch (error) {
        say(error.message, true);
      }
    }
    async function addToDataset() {
      if (add.disabled) { say("Mark the image first: the mark says what it joins the dataset as.", true); return; }
      try {
        const added = await post(addUrl);
        add.disabled = true;
        fig.dataset.added = "yes";
        const what = added.is_anomalous ? `an anomalous ${added.split} image${added.with_mask ? " with its outline as mask" : " (no mask)"}`
          : `a defect-free ${added.split} image`;
        say(`Added to the dataset as ${what}.`);
      } catch (error) {
        say(error.message, true);
      }
    }
    add.addEventListener("click", (e) => { e.stopPropagation(); addToDataset(); });

    fig.addEventListener("keydown", (e) => {
      if (e.target === note || e.altKey || e.ctrlKey || e.metaKey) return;
      const kind = KINDS.find(([, , key]) => key === e.key);
      if (kind) { e.preventDefault(); mark(kind[0]); }
      else if (e.key === "o" || e.key === "O") { e.preventDefault(); setDrawing(!drawing); }
      else if (e.key === "Backspace" && points.length) { e.preventDefault(); points.pop(); paint(); }
      else if (e.key === "a" || e.key === "A") { e.preventDefault(); addToDataset(); }
    });
    fig.addEventListener("click", () => fig.focus());
    paint();
  }

  window.DefectBenchFeedback = { attach };

  // The batch gallery: figures rendered by the server.
  document.querySelectorAll("figure[data-feedback-url]").forEach((fig) => {
    const img = fig.querySelector(".stack img");
    const size = () => [img.naturalWidth || 1, img.naturalHeight || 1];
    attach(fig, { feedbackUrl: fig.dataset.feedbackUrl, addUrl: fig.dataset.addUrl, surface: fig.querySelector(".stack"),
      size, mark: fig.dataset.mark || "" });
  });
})();
