// Refresh each element that names a data-refresh URL every 5 seconds, so the
// overview's counters stay live without reloading the page. A failed fetch
// keeps the old numbers; the loop stops after an hour to bound an idle tab.
(function () {
  const intervalMs = 5000;
  const maxRounds = 720;
  let rounds = 0;
  async function refresh() {
    rounds += 1;
    for (const element of document.querySelectorAll("[data-refresh]")) {
      try {
        const response = await fetch(element.dataset.refresh, { credentials: "same-origin" });
        if (!response.ok) continue;
        const holder = document.createElement("div");
        holder.innerHTML = await response.text();
        const fresh = holder.firstElementChild;
        if (fresh) element.replaceWith(fresh);
      } catch (error) {
        // A network error leaves the last numbers in place until the next round.
      }
    }
    if (rounds < maxRounds) setTimeout(refresh, intervalMs);
  }
  if (document.querySelector("[data-refresh]")) setTimeout(refresh, intervalMs);
})();
