/* Review at the speed of labelling: on the first open disagreement, 1–9 accept that annotator's
   label (the page then shows the next disagreement first); M shows or hides the mask. */
(function () {
  "use strict";
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target && ["INPUT", "SELECT", "TEXTAREA"].includes(target.tagName)) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const current = document.querySelector(".review-item.current");
    if (!current) return;
    if (/^[1-9]$/.test(event.key)) {
      const button = current.querySelector(`[data-accept="${event.key}"]`);
      if (button) { event.preventDefault(); button.click(); }
    } else if (event.key === "m" || event.key === "M") {
      current.querySelectorAll("img.mask").forEach((m) => { m.hidden = !m.hidden; });
      event.preventDefault();
    }
  });
})();
