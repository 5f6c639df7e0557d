// The run page's timeline: one horizontal bar per step, from its start to its finish.
// The data comes from <script type="application/json" id="timeline-data"> (no inline script:
// the console runs under a strict Content-Security-Policy).
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

  document.addEventListener("DOMContentLoaded", drawTimeline);
})();
