// chute's page code: no inline script anywhere (the Content-Security-Policy forbids it).
// htmx's settings are in <meta name="htmx-config">; the CSRF header is in <body hx-headers>.
document.addEventListener("change", (event) => {
  // "select all" on the failures page ticks every run of the page.
  const all = event.target.closest("input[data-select-all]");
  if (!all) return;
  for (const box of document.querySelectorAll('form#retry-selected input[name="run"]')) box.checked = all.checked;
});

// A tab nobody looks at does not poll: the overview's live part is asked for only while it is visible,
// and once at once when the tab is shown again.
document.addEventListener("htmx:beforeRequest", (event) => {
  if (document.hidden && event.detail.elt.hasAttribute("hx-trigger")) event.preventDefault();
});
document.addEventListener("visibilitychange", () => {
  const live = document.getElementById("live");
  if (!document.hidden && live && window.htmx) window.htmx.trigger(live, "refresh");
});
