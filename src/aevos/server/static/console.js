// The console's charts. Their data comes from <script type="application/json"> elements
// (no inline script: the console runs under a strict Content-Security-Policy).
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
