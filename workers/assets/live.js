// certflow console: live updates and copy buttons. The pages work without this script.
//
// Every element with data-live is refreshed in place: every two seconds (while the tab
// is visible) the browser asks its data-live URL with the data-hash it shows; the console
// answers 204 when nothing changed, or a fresh copy of the element, which replaces it.
(function () {
  "use strict";
  var PERIOD_MS = 2000;

  function refresh(el) {
    var url = el.getAttribute("data-live");
    if (!url || el.getAttribute("data-busy")) return;
    el.setAttribute("data-busy", "1");
    var sep = url.indexOf("?") >= 0 ? "&" : "?";
    var hash = el.getAttribute("data-hash") || "";
    fetch(url + sep + "h=" + encodeURIComponent(hash), {
      credentials: "same-origin",
      cache: "no-store",
    })
      .then(function (r) { return r.status === 200 ? r.text() : null; })
      .then(function (html) {
        if (html !== null) {
          var t = document.createElement("template");
          t.innerHTML = html.trim();
          var fresh = t.content.firstElementChild;
          if (fresh && fresh.id === el.id) {
            el.replaceWith(fresh);
            addCopyButtons(fresh);
            return;
          }
        }
        el.removeAttribute("data-busy");
      })
      .catch(function () { el.removeAttribute("data-busy"); });
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
