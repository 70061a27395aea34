/* Progress bars drawn by the server: <div data-percent="42"> gets width 42%. Set here, not in a
   style= attribute, because the Content-Security-Policy allows styles from 'self' only (a style
   set from script is allowed). Pages that poll (benchmarks.js) keep the width up to date. */
(function () {
  "use strict";
  document.querySelectorAll("[data-percent]").forEach((bar) => {
    const percent = Number(bar.dataset.percent);
    if (Number.isFinite(percent)) bar.style.width = `${Math.min(100, Math.max(0, percent))}%`;
  });
})();
