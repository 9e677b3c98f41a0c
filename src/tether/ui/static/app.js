/* tether console: theme toggle, charts (uPlot), keyboard shortcuts, polling guards. */
(function () {
  "use strict";

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // ---------------------------------------------------------------- theme
  function currentTheme() {
    var set = document.documentElement.dataset.theme;
    if (set) return set;
    return window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  function toggleTheme() {
    var next = currentTheme() === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    try { localStorage.setItem("tether-theme", next); } catch (e) { /* private mode */ }
    drawCharts(document, true);
  }

  // ---------------------------------------------------------------- charts
  var PALETTE = ["#3b5bdb", "#0ca678", "#f08c00", "#ae3ec9", "#1098ad", "#e03131", "#5c940d", "#868e96"];

  function money(v) {
    if (v == null) return "";
    if (v >= 100) return "$" + v.toFixed(0);
    if (v >= 1) return "$" + v.toFixed(2);
    return "$" + v.toFixed(4);
  }

  function drawChart(el) {
    if (!window.uPlot) return;
    var spec = JSON.parse(el.dataset.chart);
    var days = spec.days.map(function (d) { return Date.parse(d + "T00:00:00Z") / 1000; });
    var names = Object.keys(spec.series);
    if (!names.length) return;
    var data = [days].concat(names.map(function (n) {
      return spec.series[n].map(function (v) { return v / 1e9; });
    }));
    var grid = { stroke: css("--line-2"), width: 1 };
    var axis = { stroke: css("--text-3"), grid: grid, ticks: { show: false }, font: "11px " + css("--sans") };
    var opts = {
      width: Math.max(el.clientWidth, 200),
      height: Number(el.dataset.height || 200),
      padding: [8, 20, 0, 0],
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: true } },
      axes: [
        Object.assign({}, axis, { space: 60 }),
        Object.assign({}, axis, { size: 60, values: function (u, vals) { return vals.map(money); } }),
      ],
      series: [{ label: "day", value: "{YYYY}-{MM}-{DD}" }].concat(names.map(function (n, i) {
        var c = PALETTE[i % PALETTE.length];
        return { label: n, stroke: c, width: 2, fill: c + "14", points: { size: 4 },
                 value: function (u, v) { return money(v); } };
      })),
    };
    el.innerHTML = "";
    el._plot = new uPlot(opts, data, el);
  }

  function drawCharts(root, force) {
    root.querySelectorAll("[data-chart]").forEach(function (el) {
      if (el._plot && !force) return;
      if (el._plot) { el._plot.destroy(); el._plot = null; }
      drawChart(el);
    });
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { drawCharts(document, true); }, 150);
  });

  // ---------------------------------------------------------------- polling guard
  // A polled region is not swapped while someone is typing in a form inside it.
  window.tetherIdle = function (selector) {
    var region = document.querySelector(selector);
    var active = document.activeElement;
    if (!region || !active) return true;
    if (!region.contains(active)) return true;
    return !(active.matches("input, textarea, select"));
  };

  // ---------------------------------------------------------------- keyboard
  document.addEventListener("keydown", function (e) {
    if (e.target.matches("input, textarea, select") || e.metaKey || e.ctrlKey || e.altKey) return;
    if (e.key === "/") {
      var search = document.querySelector("[data-search]");
      if (search) { e.preventDefault(); search.focus(); }
    }
  });

  // ---------------------------------------------------------------- boot
  document.addEventListener("DOMContentLoaded", function () {
    var t = document.getElementById("theme-toggle");
    if (t) t.addEventListener("click", toggleTheme);
    drawCharts(document, false);
    if (window.htmx) {
      htmx.onLoad(function (el) { drawCharts(el, false); });
    }
  });
})();
