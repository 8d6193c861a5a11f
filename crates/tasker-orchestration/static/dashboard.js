// Tasker dashboard: confirmation of actions, live refresh of the #live region, and
// data-ready on <body> once the page is drawn. No dependencies, no build step.
(function () {
  "use strict";
  var body = document.body;

  // A form with data-confirm acts only after the operator agrees; the server then sees
  // confirmed=yes. Without this script the server answers with a confirmation page.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    var question = form.getAttribute("data-confirm");
    if (!question) return;
    if (!window.confirm(question)) {
      event.preventDefault();
      return;
    }
    var confirmed = form.querySelector('input[name="confirmed"]');
    if (confirmed) confirmed.value = "yes";
  });

  // Live refresh: fetch the page again and swap #live when it changed; paused while the tab
  // is hidden, and stopped when the session has gone (the fetch is redirected to login).
  var period = parseInt(body.getAttribute("data-live-refresh") || "0", 10);
  var busy = false;
  var stopped = false;
  var timer = null;

  function refresh() {
    var live = document.getElementById("live");
    if (busy || stopped || document.hidden || !live) return;
    busy = true;
    var controller = new AbortController();
    var timeout = setTimeout(function () { controller.abort(); }, period);
    fetch(window.location.href, { credentials: "same-origin", signal: controller.signal })
      .then(function (response) {
        if (response.redirected || !response.ok) {
          stopped = response.redirected;
          throw new Error("refresh answered " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (fresh && fresh.innerHTML !== live.innerHTML) {
          live.innerHTML = fresh.innerHTML;
        }
        body.setAttribute("data-refreshed", new Date().toISOString());
        body.removeAttribute("data-refresh-failed");
      })
      .catch(function () {
        body.setAttribute("data-refresh-failed", "true");
      })
      .finally(function () {
        clearTimeout(timeout);
        busy = false;
      });
  }

  if (period > 0) {
    timer = setInterval(refresh, period);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) refresh();
    });
    window.addEventListener("pagehide", function () { clearInterval(timer); });
  }
  body.setAttribute("data-ready", "true");
})();
