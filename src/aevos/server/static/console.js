// The console's script: its charts, and the searchable list of a long choice field. The
// charts' data comes from <script type="application/json"> elements (no inline script: the
// console runs under a strict Content-Security-Policy).
//
// The run page's timeline: one horizontal bar per step, from its start to its finish.
(function () {
  "use strict";
  var COLORS = { SUCCEEDED: "#3c9d5d", FAILED: "#c0392b" };

  function drawTimeline() {
    var source = document.getElementById("timeline-data");
    var canvas = document.getElementById("timeline");
    if (!source || !canvas || typeof Chart === "undefined") return;
    var steps = JSON.parse(source.textContent);
    document.getElementById("timeline-box").style.height = 60 + 26 * steps.length + "px";
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: steps.map(function (s) { return s.label; }),
        datasets: [{
          label: "step",
          data: steps.map(function (s) { return [s.start, s.end]; }),
          backgroundColor: steps.map(function (s) { return COLORS[s.status] || "#7b8794"; }),
          minBarLength: 3,
          borderSkipped: false,
        }],
      },
      options: {
        indexAxis: "y",
        animation: false,
        maintainAspectRatio: false,
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              label: function (item) {
                var s = steps[item.dataIndex];
                return s.status + ": " + s.start.toFixed(3) + " s to " + s.end.toFixed(3) + " s";
              },
            },
          },
        },
        scales: { x: { beginAtZero: true, title: { display: true, text: "seconds" } } },
      },
    });
  }

  // The dashboard: one chart per series of aevos.metrics.dashboard, from
  // <script type="application/json" id="dashboard-data">. A null is a bucket without data:
  // lines bridge it rather than drop to zero.
  var PALETTE = ["#2457c5", "#d97706", "#7c3aed", "#0f9d8a", "#c0392b", "#5d6875"];

  function line(label, data, color, extra) {
    var set = {
      label: label,
      data: data,
      borderColor: color,
      backgroundColor: color,
      borderWidth: 2,
      pointRadius: 3,
      spanGaps: true,
      clip: 6, // a point on the chart's edge (the newest bucket, 100%) is drawn whole
    };
    for (var key in extra || {}) set[key] = extra[key];
    return set;
  }

  function percent(values) {
    return values.map(function (v) { return v === null ? null : v * 100; });
  }

  function options(yTitle, extra) {
    var y = { beginAtZero: true, title: { display: true, text: yTitle } };
    for (var key in extra || {}) y[key] = extra[key];
    return {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      scales: { x: { ticks: { maxRotation: 0, autoSkipPadding: 12 } }, y: y },
    };
  }

  function drawDashboard() {
    var source = document.getElementById("dashboard-data");
    if (!source || typeof Chart === "undefined") return;
    var d = JSON.parse(source.textContent);
    var labels = d.labels;
    var pct = { max: 100, ticks: { callback: function (v) { return v + "%"; } } };

    var stacked = options("runs", { stacked: true, ticks: { precision: 0 } });
    stacked.scales.x.stacked = true;
    new Chart(document.getElementById("chart-throughput"), {
      type: "bar",
      data: {
        labels: labels,
        datasets: [
          { label: "automated", data: d.automated, backgroundColor: "#3c9d5d", stack: "runs" },
          { label: "with a person", data: d.asked, backgroundColor: "#d97706", stack: "runs" },
        ],
      },
      options: stacked,
    });
    new Chart(document.getElementById("chart-latency"), {
      type: "line",
      data: {
        labels: labels,
        datasets: [
          line("p50", d.p50, PALETTE[0]),
          line("p95", d.p95, PALETTE[1]),
          line("p99", d.p99, PALETTE[4]),
        ],
      },
      options: options("seconds"),
    });
    new Chart(document.getElementById("chart-automation"), {
      type: "line",
      data: { labels: labels, datasets: [line("automated", percent(d.automation_rate), "#3c9d5d")] },
      options: options("% of finished runs", pct),
    });
    new Chart(document.getElementById("chart-overrides"), {
      type: "line",
      data: {
        labels: labels,
        datasets: [line("overridden", percent(d.override_rate), PALETTE[4])],
      },
      options: options("% of decisions", pct),
    });
    new Chart(document.getElementById("chart-cost"), {
      type: "line",
      data: { labels: labels, datasets: [line("cost per run", d.cost_per_decision, PALETTE[2])] },
      options: options("cost"),
    });

    var drift = Object.keys(d.drift).map(function (model, i) {
      return line(model, d.drift[model], PALETTE[i % PALETTE.length]);
    });
    var flat = function (value) { return labels.map(function () { return value; }); };
    var guide = { borderDash: [6, 4], borderWidth: 1, pointRadius: 0 };
    drift.push(line("0.1 (stable below)", flat(0.1), "#9aa5b1", guide));
    drift.push(line("0.25 (shift above)", flat(0.25), "#c0392b", guide));
    new Chart(document.getElementById("chart-drift"), {
      type: "line",
      data: { labels: labels, datasets: drift },
      options: options("PSI"),
    });
  }

  // A model's page: one line per version in each chart, from
  // <script type="application/json" id="model-data"> (aevos.metrics.model_metrics).
  function drawModel() {
    var source = document.getElementById("model-data");
    if (!source || typeof Chart === "undefined") return;
    var d = JSON.parse(source.textContent);
    var pct = { max: 100, ticks: { callback: function (v) { return v + "%"; } } };
    function per(key, transform) {
      return d.versions.map(function (ref, i) {
        var values = d[key][ref];
        return line(ref, transform ? transform(values) : values, PALETTE[i % PALETTE.length]);
      });
    }
    var charts = [
      ["model-calls", per("calls"), options("calls", { ticks: { precision: 0 } })],
      ["model-p95", per("p95"), options("ms")],
      ["model-confidence", per("confidence"), options("confidence", { max: 1 })],
      ["model-overrides", per("overrides", percent), options("% of decisions", pct)],
    ];
    charts.forEach(function (c) {
      new Chart(document.getElementById(c[0]), {
        type: "line",
        data: { labels: d.labels, datasets: c[1] },
        options: c[2],
      });
    });
  }

  document.addEventListener("DOMContentLoaded", drawTimeline);
  document.addEventListener("DOMContentLoaded", drawModel);
  document.addEventListener("DOMContentLoaded", drawDashboard);
})();

// A task's long choice field (a <select data-searchable>, more than 12 choices): a searchable
// list over it, after the WAI-ARIA combobox pattern (an editable combobox whose listbox
// pops up). Typing filters the choices by substring, ignoring case, "_" matching a space;
// the first match is active. ArrowDown/ArrowUp move, Enter picks the active choice, Escape
// closes the list (and, when closed, clears the field). The select stays in the form,
// hidden, and is what the form posts: without this script it is the field itself.
(function () {
  "use strict";

  function words(text) {
    return text.toLowerCase().replace(/[_\s]+/g, " ").trim();
  }

  function element(tag, className, text) {
    var el = document.createElement(tag);
    if (className) el.className = className;
    if (text) el.textContent = text;
    return el;
  }

  function searchable(select) {
    var label = document.querySelector("label[for='" + select.id + "']");
    var box = element("div", "combobox");
    var input = element("input");
    var list = element("div", "listbox");
    var none = element("p", "hint combobox-none", "No choice matches.");
    var status = element("p", "visually-hidden");
    var options = [];
    var groups = [];
    var active = null;
    var searching = false;

    input.type = "text";
    input.id = select.id + "-search";
    input.autocomplete = "off";
    input.spellcheck = false;
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-expanded", "false");
    input.setAttribute("aria-controls", select.id + "-listbox");
    input.placeholder = "Type to search";
    ["aria-describedby", "aria-invalid"].forEach(function (name) {
      if (select.hasAttribute(name)) input.setAttribute(name, select.getAttribute(name));
    });
    list.id = select.id + "-listbox";
    list.setAttribute("role", "listbox");
    list.hidden = true;
    none.hidden = true;
    status.setAttribute("role", "status");
    if (label) {
      label.id = label.id || select.id + "-label";
      label.htmlFor = input.id;
      list.setAttribute("aria-labelledby", label.id);
    }

    Array.prototype.forEach.call(select.querySelectorAll("optgroup"), function (source, g) {
      var group = element("div", "group");
      var heading = element("div", "group-label", source.label);
      heading.id = list.id + "-group-" + g;
      heading.setAttribute("role", "presentation");
      group.setAttribute("role", "group");
      group.setAttribute("aria-labelledby", heading.id);
      group.appendChild(heading);
      Array.prototype.forEach.call(source.querySelectorAll("option"), function (choice) {
        var item = element("div", "option");
        item.id = list.id + "-" + options.length;
        item.setAttribute("role", "option");
        item.setAttribute("aria-selected", String(choice.value === select.value));
        item.appendChild(element("span", "value", choice.value));
        var percent = choice.getAttribute("data-percent");
        if (percent) item.appendChild(element("span", "percent", percent));
        group.appendChild(item);
        options.push({ value: choice.value, key: words(choice.value), el: item });
      });
      groups.push(group);
      list.appendChild(group);
    });

    function isOpen() {
      return !list.hidden;
    }

    function activate(option) {
      if (active) active.el.classList.remove("active");
      active = option;
      if (option) {
        option.el.classList.add("active");
        input.setAttribute("aria-activedescendant", option.el.id);
        option.el.scrollIntoView({ block: "nearest" });
      } else {
        input.removeAttribute("aria-activedescendant");
      }
    }

    function shown() {
      return options.filter(function (o) { return !o.el.hidden; });
    }

    // Until the person types, the box holds the chosen value, not a search: the list opened
    // on a choice already made shows every choice.
    function filter() {
      var query = searching ? words(input.value) : "";
      var count = 0;
      options.forEach(function (o) {
        o.el.hidden = o.key.indexOf(query) === -1;
        if (!o.el.hidden) count += 1;
      });
      groups.forEach(function (group) {
        group.hidden = !group.querySelector("[role=option]:not([hidden])");
      });
      none.hidden = count > 0 || !isOpen();
      status.textContent = count === 1 ? "1 choice" : count + " choices";
      return query;
    }

    function open() {
      list.hidden = false;
      input.setAttribute("aria-expanded", "true");
      filter();
    }

    function close() {
      list.hidden = true;
      none.hidden = true;
      input.setAttribute("aria-expanded", "false");
      activate(null);
    }

    // Back to the chosen value, all of it selected: typing replaces it with a search.
    function restore() {
      input.value = select.value;
      searching = false;
      close();
      if (document.activeElement === input) input.select();
    }

    function choose(option) {
      select.value = option ? option.value : "";
      options.forEach(function (o) { o.el.setAttribute("aria-selected", String(o === option)); });
      select.dispatchEvent(new Event("change", { bubbles: true }));
      restore();
    }

    function move(step) {
      var visible = shown();
      if (!visible.length) return;
      var at = visible.indexOf(active);
      if (at === -1) {
        var chosen = visible.filter(function (o) { return o.value === select.value; })[0];
        activate(chosen || visible[step > 0 ? 0 : visible.length - 1]);
      } else {
        activate(visible[(at + step + visible.length) % visible.length]);
      }
    }

    input.addEventListener("input", function () {
      searching = true;
      open();
      var visible = shown();
      activate(visible.length && input.value ? visible[0] : null);
    });
    input.addEventListener("click", function () {
      if (!isOpen()) open();
    });
    input.addEventListener("keydown", function (event) {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        if (!isOpen()) open();
        if (!event.altKey) move(event.key === "ArrowDown" ? 1 : -1);
      } else if (event.key === "Enter") {
        // An open list takes Enter: a half-typed search never submits the form.
        if (!isOpen()) return;
        event.preventDefault();
        var visible = shown();
        if (active) choose(active);
        else if (visible.length === 1) choose(visible[0]);
      } else if (event.key === "Escape") {
        if (isOpen()) {
          event.preventDefault();
          restore();
        } else if (input.value || select.value) {
          event.preventDefault();
          input.value = "";
          choose(null);
        }
      }
    });
    // Picking with the mouse must not blur the field first.
    list.addEventListener("mousedown", function (event) { event.preventDefault(); });
    list.addEventListener("click", function (event) {
      var item = event.target.closest("[role=option]");
      var option = options.filter(function (o) { return o.el === item; })[0];
      if (option) choose(option);
      input.focus();
    });
    input.addEventListener("focus", function () { input.select(); });
    input.addEventListener("blur", function () {
      input.value = select.value;
      searching = false;
      close();
    });

    input.value = select.value;
    select.hidden = true;
    select.tabIndex = -1;
    select.parentNode.insertBefore(box, select);
    box.appendChild(input);
    box.appendChild(list);
    box.appendChild(none);
    box.appendChild(status);
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("select[data-searchable]"), searchable);
  });
})();
