/* API token page: copy the token to the clipboard. */
(function () {
  "use strict";
  const button = document.getElementById("token-copy");
  if (!button) return;
  button.addEventListener("click", async () => {
    const input = document.getElementById("token-value");
    try { await navigator.clipboard.writeText(input.value); } catch (error) { input.select(); document.execCommand("copy"); }
    document.getElementById("token-copied").hidden = false;
  });
})();
