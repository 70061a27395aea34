/* Destructive or far-reaching actions ask first: any element with data-confirm="question" runs
   only when the person says OK. Listening in the capture phase, before the page's own handlers
   (benchmarks.js posts a cancel on click), so a "Cancel" in the dialog stops everything. */
(function () {
  document.addEventListener("click", (event) => {
    const el = event.target.closest("[data-confirm]");
    if (el && !el.disabled && !window.confirm(el.dataset.confirm)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);
})();
