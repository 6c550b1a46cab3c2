// Live updates for imagegen's build pages: a build's state and clouds, and a
// cloud's log tail, over server-sent events. The pages work without it.
(function () {
  "use strict";
  var root = document.querySelector("[data-events]");
  if (!root || !window.EventSource) return;
  var es = new EventSource(root.getAttribute("data-events"));
  var note = document.getElementById("live-note");
  var log = document.getElementById("log");

  function atBottom(el) {
    return el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  }

  // Server-rendered, escaped HTML for states and rows.
  es.addEventListener("state", function (ev) {
    var d = JSON.parse(ev.data);
    var st = document.getElementById("build-state") || document.getElementById("cloud-state");
    if (st) st.innerHTML = d.html;
    var rows = document.getElementById("clouds");
    if (rows && d.rows) rows.innerHTML = d.rows;
  });

  // Log lines arrive as text and are added as text: nothing in a log is markup.
  es.addEventListener("line", function (ev) {
    if (!log) return;
    var d = JSON.parse(ev.data);
    var follow = atBottom(log);
    var ln = document.createElement("span");
    ln.className = "ln s-" + d.stream;
    var t = document.createElement("span");
    t.className = "t";
    t.textContent = d.time;
    var s = document.createElement("span");
    s.className = "s";
    s.textContent = "[" + d.stream + "]";
    ln.appendChild(t);
    ln.appendChild(document.createTextNode(" "));
    ln.appendChild(s);
    ln.appendChild(document.createTextNode(" " + d.text));
    log.appendChild(ln);
    log.appendChild(document.createTextNode("\n"));
    var empty = document.getElementById("log-empty");
    if (empty) empty.remove();
    if (follow) log.scrollTop = log.scrollHeight;
  });

  es.addEventListener("end", function (ev) {
    es.close();
    var d = JSON.parse(ev.data);
    if (note) note.textContent = "(finished)";
    if (d.error && !document.getElementById("cloud-error") && log) {
      var pre = document.createElement("pre");
      pre.className = "error";
      pre.id = "cloud-error";
      pre.textContent = d.error;
      log.parentNode.insertBefore(pre, log);
    }
  });
})();
