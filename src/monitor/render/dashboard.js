"use strict";
(function () {
  // Every value from the server is inserted with textContent or
  // setAttribute, never as HTML: an id is text, whatever it contains.
  var API = "api/v1/apps";
  var PAGE = 100; // rows a page, as the server's first paint
  var EVENTS = "api/v1/events";
  // the strip's svg and rect, parsed as SVG by the page itself
  var STRIP = document.getElementById("strip").content.firstChild;
  var PERIOD_MS = 2000;
  var LABELS = { ok: "OK", warning: "WARNING", critical: "CRITICAL", missing: "MISSING" };
  var STATES = ["ok", "warning", "critical", "missing"];
  var body = document.body;
  var lastGood = null; // Date of the last successful refresh
  var timer = null; // the next refresh
  var asked = 0; // refreshes asked for; only the latest one's answer is shown
  var cursors = []; // the cursors of the pages before this one (Prev)
  var next = null; // the cursor of the next page, from the last answer

  // The view lives in the location's hash, one URLSearchParams:
  // q (search), state (one state), after (a page's cursor), events + host
  // (the events panel). A hash change re-reads it.
  function view() { return new URLSearchParams(location.hash.replace(/^#/, "")); }
  function setView(changes) {
    var p = view();
    Object.keys(changes).forEach(function (k) {
      if (changes[k] == null || changes[k] === "") p.delete(k); else p.set(k, changes[k]);
    });
    location.hash = p.toString();
  }
  function apiUrl() {
    var p = view(), url = API + "?sort=overdue&limit=" + PAGE;
    if (p.get("state")) url += "&state=" + encodeURIComponent(p.get("state"));
    if (p.get("q")) url += "&q=" + encodeURIComponent(p.get("q"));
    if (p.get("after")) url += "&cursor=" + encodeURIComponent(p.get("after"));
    return url;
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.setAttribute("class", cls);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function state(s) { return LABELS.hasOwnProperty(s) ? s : "missing"; }
  // x >= 0 with `places` decimals, rounded as the server rounds (Math.round of x * 10^places).
  function fixed(x, places) {
    var p = Math.pow(10, places), n = Math.round(x * p), i = Math.floor(n / p), f = String(n % p);
    while (f.length < places) f = "0" + f;
    return places ? i + "." + f : String(i);
  }
  function num(x) { return typeof x === "number" && isFinite(x) && x >= 0; }
  function duration(ms) {
    if (!num(ms)) return "\u2014";
    if (ms < 1000) return Math.floor(ms) + " ms";
    if (ms % 1000 === 0) return (ms / 1000) + " s";
    return fixed(ms / 1000, 1) + " s";
  }
  function ago(ms) {
    if (!num(ms)) return "never";
    var s = Math.floor(ms / 1000);
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }
  function width(ratio, drop) {
    if (!num(ratio) || !num(drop) || drop === 0) return "width:0.0%";
    return "width:" + fixed(Math.min(ratio / drop, 1) * 100, 1) + "%";
  }

  function row(app, drop) {
    var s = state(app.state);
    var tr = el("tr", "app state-" + s);
    tr.setAttribute("data-key", String(app.key));
    tr.setAttribute("data-state", s);
    tr.appendChild(el("td", "app-id", String(app.id)));
    tr.appendChild(el("td", "app-host", app.host == null ? "\u2014" : String(app.host)));
    var st = el("td", "app-state");
    st.appendChild(el("span", "badge", LABELS[s]));
    if (typeof app.failed === "number") st.appendChild(el("span", "exit", "exit code " + app.failed));
    tr.appendChild(st);
    var od = el("td", "app-overdue");
    var bar = el("span", "bar");
    var fill = el("span", "fill");
    fill.setAttribute("style", width(app.overdue_ratio, drop));
    bar.appendChild(fill);
    od.appendChild(bar);
    od.appendChild(el("span", "ratio", num(app.overdue_ratio) ? fixed(app.overdue_ratio, 2) : "\u2014"));
    tr.appendChild(od);
    tr.appendChild(el("td", "app-granted", duration(app.granted_ms)));
    tr.appendChild(el("td", "app-seen", ago(app.last_seen_ago_ms)));
    tr.appendChild(history(app));
    return tr;
  }

  // the 24 h strip: one rect per run of equal slots, none for unknown ones
  function history(app) {
    var td = el("td", "app-history");
    var svg = STRIP.cloneNode(false);
    var slots = typeof app.strip_24h === "string" ? app.strip_24h : "";
    var first = 0;
    while (first < slots.length) {
      var run = 1;
      while (first + run < slots.length && slots[first + run] === slots[first]) run++;
      var cls = { o: "s-o", w: "s-w", c: "s-c" }[slots[first]];
      if (cls) {
        var rect = document.createElementNS(STRIP.namespaceURI, "rect");
        rect.setAttribute("class", cls);
        rect.setAttribute("x", String(first));
        rect.setAttribute("width", String(run));
        rect.setAttribute("height", "1");
        svg.appendChild(rect);
      }
      first += run;
    }
    td.appendChild(svg);
    var up = el("span", "uptime", percent(app.uptime_24h));
    up.setAttribute("title", "7 d: " + percent(app.uptime_7d));
    td.appendChild(up);
    return td;
  }
  function stateName(s) { return s == null ? "none" : String(s).toUpperCase(); }
  function percent(x) { return num(x) ? fixed(x * 100, 1) + "%" : "\u2014"; }

  // the events of one app (a click on its row, or #events=ID&host=HOST);
  // only the answer to the latest request is shown
  var eventsAsked = 0;
  function showEvents() {
    var asked = ++eventsAsked;
    var panel = document.getElementById("events");
    var args = view();
    if (!args.has("events")) { panel.hidden = true; return; }
    var app = args.get("events") || "", host = args.get("host");
    var url = EVENTS + "?app=" + encodeURIComponent(app) + "&limit=50" +
      (host ? "&host=" + encodeURIComponent(host) : "");
    document.getElementById("events-title").textContent =
      "Events of " + app + (host ? " on " + host : "");
    fetch(url, { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (data) {
        if (asked !== eventsAsked) return;
        var list = document.createDocumentFragment();
        (data.events || []).forEach(function (e) {
          var li = el("li", "event event-" + String(e.event));
          li.appendChild(el("time", null, String(e.at)));
          var what = String(e.event) + ": " + stateName(e.previous) + " \u2192 " + stateName(e.state);
          if (typeof e.exit_code === "number") what += " (exit code " + e.exit_code + ")";
          li.appendChild(document.createTextNode(what));
          list.appendChild(li);
        });
        if (!(data.events || []).length) list.appendChild(el("li", "event", "No events recorded."));
        document.getElementById("events-list").replaceChildren(list);
        panel.hidden = false;
        body.setAttribute("data-events", String((data.events || []).length));
      })
      .catch(function (err) {
        if (asked !== eventsAsked) return;
        document.getElementById("events-list").replaceChildren(el("li", "event", "Cannot read the events: " + err.message));
        panel.hidden = false;
      });
  }
  document.getElementById("apps").addEventListener("click", function (ev) {
    var tr = ev.target.closest ? ev.target.closest("tr.app") : null;
    if (!tr) return;
    var id = tr.querySelector(".app-id").textContent;
    var host = tr.querySelector(".app-host").textContent;
    var p = view();
    if (p.get("events") === id && (p.get("host") || "\u2014") === host) showEvents();
    else setView({ events: id, host: host === "\u2014" ? null : host });
  });
  // a count filters by its state (a second click shows every state again)
  document.getElementById("summary").addEventListener("click", function (ev) {
    var box = ev.target.closest ? ev.target.closest(".count") : null;
    var b = box ? box.querySelector("b[data-count]") : null;
    if (!b) return;
    var s = b.getAttribute("data-count");
    cursors = [];
    setView({ state: view().get("state") === s ? null : s, after: null });
  });
  var search = document.getElementById("search");
  var typing = null;
  search.value = view().get("q") || "";
  search.addEventListener("input", function () {
    clearTimeout(typing);
    typing = setTimeout(function () { cursors = []; setView({ q: search.value, after: null }); }, 300);
  });
  document.getElementById("next").addEventListener("click", function () {
    if (!next) return;
    cursors.push(view().get("after") || "");
    setView({ after: next });
  });
  document.getElementById("prev").addEventListener("click", function () {
    setView({ after: cursors.length ? cursors.pop() : null });
  });
  var shown = apiUrl();
  window.addEventListener("hashchange", function () {
    showEvents();
    if (apiUrl() !== shown) { clearTimeout(timer); refresh(); }
  });

  function summary(data) {
    var box = document.createDocumentFragment();
    var counts = data.counts || {};
    var only = view().get("state");
    STATES.forEach(function (s) {
      var c = el("div", "count state-" + s + (only === s ? " active" : ""));
      c.setAttribute("role", "button");
      c.setAttribute("aria-pressed", only === s ? "true" : "false");
      var b = el("b", null, String(num(counts[s]) ? counts[s] : 0));
      b.setAttribute("data-count", s);
      c.appendChild(b);
      c.appendChild(el("span", null, LABELS[s]));
      box.appendChild(c);
    });
    var t = data.thresholds || {};
    box.appendChild(el("p", "thresholds",
      "warning from od " + t.warn_ratio + ", critical from " + t.crit_ratio +
      ", dropped at " + t.drop_ratio + "; tolerance " + duration(t.tolerance_ms)));
    return box;
  }

  function render(data) {
    var drop = data.thresholds ? data.thresholds.drop_ratio : 0;
    var tbody = document.getElementById("apps");
    // a Map, not an object: a key such as "constructor" is just a key
    var before = new Map();
    Array.prototype.forEach.call(tbody.querySelectorAll("tr.app"), function (tr) {
      before.set(tr.getAttribute("data-key"), tr.getAttribute("data-state"));
    });
    var rows = document.createDocumentFragment();
    (data.apps || []).forEach(function (app) {
      var tr = row(app, drop);
      var was = before.get(String(app.key));
      if (was && was !== tr.getAttribute("data-state")) {
        tr.classList.add("changed");
        tr.setAttribute("data-previous-state", was);
      }
      rows.appendChild(tr);
    });
    if (!(data.apps || []).length) {
      var p = view(), filtered = p.get("q") || p.get("state") || p.get("after");
      var empty = el("tr", "empty");
      var td = el("td", null, filtered ? "No application matches." : "No applications yet.");
      td.setAttribute("colspan", "7");
      empty.appendChild(td);
      rows.appendChild(empty);
    }
    tbody.replaceChildren(rows);
    document.getElementById("summary").replaceChildren(summary(data));
    pager(data);
  }

  // "1–100 of 2 345" and the buttons, from the page's `page`
  function pager(data) {
    var page = data.page || {};
    var matched = num(page.matched) ? page.matched : (data.apps || []).length;
    var first = cursors.length * PAGE, n = (data.apps || []).length;
    next = typeof page.next_cursor === "string" ? page.next_cursor : null;
    document.getElementById("range").textContent = n
      ? (first + 1) + "\u2013" + (first + n) + " of " + matched
      : "0 of " + matched;
    document.getElementById("next").disabled = !next;
    document.getElementById("prev").disabled = !view().get("after");
    body.setAttribute("data-matched", String(matched));
  }

  function live() {
    var text = document.getElementById("live");
    if (!lastGood) return;
    var age = Date.now() - lastGood.getTime();
    if (body.classList.contains("stale")) {
      text.textContent = "stale: no answer from the server, last update " + ago(age);
    } else {
      text.textContent = "live, updated " + lastGood.toLocaleTimeString();
    }
  }

  function refresh() {
    var mine = ++asked, url = apiUrl();
    fetch(url, { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (data) {
        if (mine !== asked) return;
        shown = url;
        render(data);
        if (!document.getElementById("events").hidden) showEvents();
        lastGood = new Date();
        body.classList.remove("stale");
        body.removeAttribute("data-stale");
        body.setAttribute("data-refreshes", String(Number(body.getAttribute("data-refreshes")) + 1));
        live();
      })
      .catch(function () {
        if (mine !== asked) return;
        body.classList.add("stale");
        body.setAttribute("data-stale", "true");
        if (!lastGood) document.getElementById("live").textContent = "stale: no answer from the server";
        live();
      })
      .then(function () {
        if (mine === asked) { clearTimeout(timer); timer = setTimeout(refresh, PERIOD_MS); }
      });
  }
  showEvents();
  refresh();
})();
