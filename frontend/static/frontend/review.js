/* Review at the speed of labelling: on the first open disagreement, 1–9 accept that annotator's
   label (the page then shows the next disagreement first); M shows or hides the mask; Z (or the
   1:1 button) shows the original files' own pixels; holding V (or the Blink button) shows the
   defect-free reference in the image's place, as the labelling workspace does. */
(function () {
  "use strict";
  const current = document.querySelector(".review-item.current");
  if (!current) return;
  const picture = current.querySelector("img.picture");
  const zoomButton = current.querySelector("[data-review-zoom]");
  const blinkButton = current.querySelector("[data-review-blink]");
  const views = current.querySelectorAll(".review-views img");
  // Each picture's display copy, kept so that zooming back and blinking restore it.
  views.forEach((img) => { img.dataset.display = img.getAttribute("src"); });
  let native = false;

  function shownSrc(img) {
    return native ? img.dataset.native : img.dataset.display;
  }
  function setNative(on) {
    native = on;
    current.classList.toggle("native", on);
    if (zoomButton) zoomButton.setAttribute("aria-pressed", String(on));
    views.forEach((img) => { img.src = shownSrc(img); });
  }
  function blink(on) {
    if (!picture || !picture.dataset.reference) return;
    picture.src = on ? (native ? picture.dataset.referenceNative : picture.dataset.reference) : shownSrc(picture);
    current.classList.toggle("blinking", on);
    current.querySelectorAll(".stack img.mask").forEach((m) => { m.classList.toggle("blink-hidden", on); });
    if (blinkButton) blinkButton.setAttribute("aria-pressed", String(on));
  }
  if (zoomButton) zoomButton.addEventListener("click", () => setNative(!native));
  if (blinkButton) {
    blinkButton.addEventListener("pointerdown", () => blink(true));
    ["pointerup", "pointerleave"].forEach((name) => blinkButton.addEventListener(name, () => blink(false)));
  }

  function typing(target) {
    return target && ["INPUT", "SELECT", "TEXTAREA"].includes(target.tagName);
  }
  document.addEventListener("keydown", (event) => {
    if (typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key.toLowerCase();
    if (/^[1-9]$/.test(key)) {
      const button = current.querySelector(`[data-accept="${key}"]`);
      if (button) { event.preventDefault(); button.click(); }
    } else if (key === "m") {
      current.querySelectorAll("img.mask").forEach((m) => { m.hidden = !m.hidden; });
      event.preventDefault();
    } else if (key === "z") {
      setNative(!native);
      event.preventDefault();
    } else if (key === "v" && !event.repeat) {
      blink(true);
      event.preventDefault();
    }
  });
  document.addEventListener("keyup", (event) => {
    if (event.key.toLowerCase() === "v") blink(false);
  });
})();
