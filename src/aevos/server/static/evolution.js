// The evolution page's charts (/console/evolution), from
// <script type="application/json" id="evolution-data"> (aevos.telemetry.report). Every chart
// shares the buckets' time axis; the markers (version changes, rollouts, retrainings, drift
// alerts) are vertical lines drawn by the "markers" plugin at their time on that axis.
(function () {
  "use strict";
  var PALETTE = ["#2457c5", "#d97706", "#7c3aed", "#0f9d8a", "#c0392b", "#5d6875"];

  function colorOf(kind) {
    if (kind === "model.rolled_back" || kind === "rollout.rolled_back" ||
        kind === "rollout.aborted" || kind === "rollout.failed" ||
        kind === "retraining.failed") return "#c0392b";
    if (kind === "monitor.alerted") return "#d97706";
    if (kind === "model.promoted" || kind === "rollout.promoted" ||
        kind === "model.alias_moved") return "#3c9d5d";
    if (kind.indexOf("retraining.") === 0) return "#7c3aed";
    return "#2457c5";
  }

  // A marker at position p (0 = the first bucket's point, 1 the second's ...) is drawn
  // where p falls between the points, clamped to the plot area.
  var markersPlugin = {
    id: "markers",
    afterDatasetsDraw: function (chart, _args, options) {
      var items = (options && options.items) || [];
      var x = chart.scales.x;
      var area = chart.chartArea;
      if (!x || !items.length) return;
      var first = x.getPixelForValue(0);
      var step = chart.data.labels.length > 1 ? x.getPixelForValue(1) - first : 0;
      var ctx = chart.ctx;
      ctx.save();
      ctx.font = "11px system-ui, sans-serif";
      items.forEach(function (m, i) {
        var px = Math.min(area.right, Math.max(area.left, first + m.position * step));
        ctx.strokeStyle = colorOf(m.kind);
        ctx.fillStyle = colorOf(m.kind);
        ctx.lineWidth = 1.5;
        ctx.setLineDash(m.kind === "monitor.alerted" ? [4, 3] : []);
        ctx.beginPath();
        ctx.moveTo(px, area.top);
        ctx.lineTo(px, area.bottom);
        ctx.stroke();
        ctx.fillText(m.label, Math.min(px + 3, area.right - 60), area.top + 11 + (i % 4) * 12);
      });
      ctx.restore();
    },
  };

  function line(label, data, color, extra) {
    var set = {
      label: label,
      data: data,
      borderColor: color,
      backgroundColor: color,
      borderWidth: 2,
      pointRadius: 3,
      spanGaps: true,
      clip: 6,
    };
    for (var key in extra || {}) set[key] = extra[key];
    return set;
  }

  function percent(values) {
    return values.map(function (v) { return v === null ? null : v * 100; });
  }

  function options(yTitle, markers, extra) {
    var y = { beginAtZero: true, title: { display: true, text: yTitle } };
    for (var key in extra || {}) y[key] = extra[key];
    return {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      plugins: {
        legend: { position: "bottom", labels: { boxWidth: 12 } },
        markers: { items: markers },
      },
      scales: { x: { ticks: { maxRotation: 0, autoSkipPadding: 12 } }, y: y },
    };
  }

  function draw() {
    var source = document.getElementById("evolution-data");
    if (!source || typeof Chart === "undefined") return;
    var d = JSON.parse(source.textContent);
    var labels = d.labels;
    var marks = d.markers;
    var pct = { max: 100, ticks: { callback: function (v) { return v + "%"; } } };
    var band = { borderDash: [6, 4], borderWidth: 1, pointRadius: 0 };
    var flat = function (value) { return labels.map(function () { return value; }); };

    function chart(id, datasets, opts) {
      new Chart(document.getElementById(id), {
        type: "line",
        data: { labels: labels, datasets: datasets },
        options: opts,
        plugins: [markersPlugin],
      });
    }

    chart("evolution-automation",
      [line("automated", percent(d.automation_rate), "#3c9d5d")],
      options("% of cases", marks, pct));
    chart("evolution-precision", [
      line("precision", percent(d.precision), PALETTE[0]),
      line("95% low", percent(d.precision_low), "#9aa5b1", band),
      line("95% high", percent(d.precision_high), "#9aa5b1", band),
    ], options("% of QA-sampled decisions", marks, pct));
    chart("evolution-reviews",
      [line("reviews + QA per 100", d.reviews_per_100, PALETTE[1])],
      options("per 100 cases", marks));
    chart("evolution-cost",
      [line("cost per decision", d.cost_per_decision, PALETTE[2])],
      options("cost", marks));
    var drift = Object.keys(d.drift).map(function (name, i) {
      return line(name, d.drift[name], PALETTE[i % PALETTE.length]);
    });
    Object.keys(d.thresholds).forEach(function (name, i) {
      drift.push(line(name + " threshold", flat(d.thresholds[name]),
        PALETTE[i % PALETTE.length], band));
    });
    chart("evolution-drift", drift, options("distance", marks));
  }

  document.addEventListener("DOMContentLoaded", draw);
})();
