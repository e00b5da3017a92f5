// The console's only script: progressive enhancement. Every page works
// without it. (1) A part marked data-live (a command until it settles) is
// refetched each second and swapped in place, until it is no longer
// marked. (2) A button with data-copy copies the text of the element it
// names (the installer's command, a new API key). (3) A table's column
// heads become buttons that sort the page's rows by that column (times
// by their datetime, fill bars by their value, numbers as numbers).
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
  function key(cell) {
    var t = cell.querySelector("time[datetime]");
    if (t) { return t.getAttribute("datetime"); }
    var m = cell.querySelector("meter");
    if (m) { return parseFloat(m.getAttribute("value")); }
    var text = cell.textContent.trim();
    var n = parseFloat(text.replace(/[\s,]/g, ""));
    return isNaN(n) || !/^[-+]?[\d\s,.]+/.test(text) ? text.toLowerCase() : n;
  }
  function compare(a, b) {
    if (typeof a === typeof b) { return a < b ? -1 : a > b ? 1 : 0; }
    return typeof a === "number" ? -1 : 1;
  }
  Array.prototype.forEach.call(document.querySelectorAll(".table-wrap table"), function (table) {
    var body = table.tBodies[0];
    if (!body || body.rows.length < 2 || !table.tHead) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "sort";
      b.textContent = th.textContent;
      th.textContent = "";
      th.appendChild(b);
      b.addEventListener("click", function () {
        var up = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", up ? "ascending" : "descending");
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r1, r2) {
          var c = compare(key(r1.cells[col] || r1), key(r2.cells[col] || r2));
          return up ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
