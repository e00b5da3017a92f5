// The console's only script: progressive enhancement. Every page works
// without it. (1) A part marked data-live (a command until it settles) is
// refetched each second and swapped in place, until it is no longer
// marked. (2) A button with data-copy copies the text of the element it
// names (the installer's command, a new API key).
(function () {
  "use strict";
  var live = document.querySelector("[data-live]");
  if (live && window.fetch && window.DOMParser) {
    var ticks = 0;
    var timer = setInterval(function () {
      ticks += 1;
      if (ticks > 600) { clearInterval(timer); return; }
      fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (text) {
          var next = new DOMParser().parseFromString(text, "text/html").getElementById("live");
          if (!next) { return; }
          live.replaceWith(next);
          live = next;
          if (!next.hasAttribute("data-live")) { clearInterval(timer); }
        })
        .catch(function () { /* the next tick tries again */ });
    }, 1000);
  }
  Array.prototype.forEach.call(document.querySelectorAll("button[data-copy]"), function (b) {
    var source = document.getElementById(b.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) { return; }
    b.hidden = false;
    b.addEventListener("click", function () {
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        b.textContent = "Copied";
      });
    });
  });
})();
