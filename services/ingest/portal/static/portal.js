// clickhook portal: the little script the pages use. No framework, no build step.
"use strict";

// Live refresh: an element with data-refresh="<url>" gets its content fetched again every
// data-every seconds (3 by default), while the page is visible and, if data-live names a
// checkbox, while that box is ticked. The server renders (and escapes) the fragment.
for (const element of document.querySelectorAll("[data-refresh]")) {
  const everyMs = Number(element.dataset.every || 3) * 1000;
  const toggle = element.dataset.live ? document.getElementById(element.dataset.live) : null;
  const tick = async () => {
    if (!document.hidden && (!toggle || toggle.checked)) {
      try {
        const response = await fetch(element.dataset.refresh, {
          credentials: "same-origin",
          headers: { accept: "text/html" },
        });
        if (response.ok) {
          element.innerHTML = await response.text();
        }
      } catch (error) {
        // Offline or the server restarting: try again at the next tick.
      }
    }
    setTimeout(tick, everyMs);
  };
  setTimeout(tick, everyMs);
}

// Destructive buttons ask first.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

// A revealed secret is selected when focused, ready to copy.
for (const input of document.querySelectorAll("input.secret")) {
  input.addEventListener("focus", () => input.select());
}

// Preview as you type: on the edit page, the format and template are posted (with the CSRF
// token, on the session cookie) to the portal's preview route at most every 400 ms of quiet;
// the server renders the fragment (escaped) and nothing is sent to the endpoint.
const preview = document.getElementById("preview");
if (preview) {
  const form = preview.closest("form");
  let timer = null;
  let latest = 0;
  const refresh = async () => {
    const asked = ++latest;
    const body = new URLSearchParams({
      csrf: preview.dataset.csrf,
      format: form.elements.format.value,
      template: form.elements.template.value,
    });
    try {
      const response = await fetch(preview.dataset.preview, {
        method: "POST",
        credentials: "same-origin",
        headers: { accept: "text/html" },
        body,
      });
      if (asked === latest) {
        preview.innerHTML = await response.text();
      }
    } catch (error) {
      // Offline or the server restarting: the next keystroke tries again.
    }
  };
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 400);
  };
  form.elements.template.addEventListener("input", later);
  form.elements.format.addEventListener("change", later);
  refresh();
}
