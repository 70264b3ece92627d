// certflow console: live updates and copy buttons. The pages work without this script.
//
// Every element with data-live is refreshed in place: every two seconds (while the tab
// is visible) the browser asks its data-live URL with the data-hash it shows; the console
// answers 204 when nothing changed, or a fresh copy of the element, which replaces it.
// When the console cannot answer (credentials expired, the console stopped), the part
// says so and asks less often; when the job is gone (404), it stops asking.
(function () {
  "use strict";
  var PERIOD_MS = 2000;
  var MAX_BACKOFF_MS = 60000;

  function stale(el, text) {
    var note = el.querySelector(".stale");
    if (note) {
      note.textContent = text;
      note.hidden = !text;
    }
  }

  function refresh(el) {
    var url = el.getAttribute("data-live");
    if (!url || el.getAttribute("data-busy")) return;
    var next = Number(el.getAttribute("data-next") || 0);
    if (Date.now() < next) return;
    el.setAttribute("data-busy", "1");
    var sep = url.indexOf("?") >= 0 ? "&" : "?";
    var hash = el.getAttribute("data-hash") || "";
    function failed(why, stop) {
      var fails = Number(el.getAttribute("data-fails") || 0) + 1;
      el.setAttribute("data-fails", String(fails));
      el.setAttribute("data-next", String(Date.now() + Math.min(PERIOD_MS * Math.pow(2, fails), MAX_BACKOFF_MS)));
      if (stop) el.removeAttribute("data-live");
      stale(el, "Not updating: " + why + (stop ? "." : "; trying again."));
      el.removeAttribute("data-busy");
    }
    fetch(url + sep + "h=" + encodeURIComponent(hash), {
      credentials: "same-origin",
      cache: "no-store",
    })
      .then(function (r) {
        if (r.status === 204) {
          el.removeAttribute("data-fails");
          stale(el, "");
          el.removeAttribute("data-busy");
          return;
        }
        if (r.status !== 200) {
          failed("the console answered " + r.status + " " + r.statusText + " (reload for details)", r.status === 404);
          return;
        }
        return r.text().then(function (html) {
          var t = document.createElement("template");
          t.innerHTML = html.trim();
          var fresh = t.content.firstElementChild;
          if (fresh && fresh.id === el.id) {
            el.replaceWith(fresh);
            addCopyButtons(fresh);
          } else {
            failed("the console's answer was not this part of the page", false);
          }
        });
      })
      .catch(function () { failed("the console cannot be reached", false); });
  }

  function addCopyButtons(root) {
    if (!navigator.clipboard) return;
    root.querySelectorAll("code.cmd").forEach(function (code) {
      if (code.nextElementSibling && code.nextElementSibling.classList.contains("copy")) return;
      var b = document.createElement("button");
      b.type = "button";
      b.className = "copy";
      b.textContent = "copy";
      b.addEventListener("click", function () {
        navigator.clipboard.writeText(code.textContent).then(function () {
          b.textContent = "copied";
          setTimeout(function () { b.textContent = "copy"; }, 1500);
        });
      });
      code.after(b);
    });
  }

  document.addEventListener("DOMContentLoaded", function () { addCopyButtons(document); });
  setInterval(function () {
    if (document.hidden) return;
    document.querySelectorAll("[data-live]").forEach(refresh);
  }, PERIOD_MS);
})();
