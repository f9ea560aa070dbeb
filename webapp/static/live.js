"use strict";
(() => {
  const form = document.getElementById("meters");
  const base = "/api/houses/" + encodeURIComponent(form.dataset.house) + "/power";
  const LIVE_SPAN_S = 20 * 60;
  let live = {};            // meter -> [[ts_s, power_w], ...] of the last 20 minutes
  let lastTs = null;
  let timer = null;

  function meters() { return form.elements.meter.value.trim() || "1,2"; }

  async function poll() {
    const now = Date.now() / 1000;
    const from = lastTs === null ? now - LIVE_SPAN_S : lastTs + 0.001;
    try {
      const data = await SMW.getJSON(`${base}?meter=${encodeURIComponent(meters())}&from_ts_s=${from.toFixed(3)}&to_ts_s=${(now + 1).toFixed(3)}`);
      for (const [meter, points] of Object.entries(data.series)) {
        live[meter] = (live[meter] || []).concat(points).filter(p => p[0] >= now - LIVE_SPAN_S);
        for (const p of points) lastTs = Math.max(lastTs ?? 0, p[0]);
      }
      if (lastTs === null) lastTs = from;
      const [xs, series] = SMW.align(live);
      const chart = document.getElementById("live-chart");
      if (xs.length) SMW.lines(chart, xs, series, { tz: form.dataset.tz });
      else chart.textContent = "No readings in the last 20 minutes.";
    } catch (error) { SMW.showError(document.getElementById("live-chart"), error); }
  }

  async function history(spanS) {
    const now = Date.now() / 1000;
    const chart = document.getElementById("history-chart");
    try {
      const data = await SMW.getJSON(`${base}?meter=${encodeURIComponent(meters())}&from_ts_s=${(now - spanS).toFixed(0)}&to_ts_s=${now.toFixed(0)}`);
      document.getElementById("resolution").textContent = "resolution: " + data.resolution;
      const [xs, series] = SMW.align(data.series);
      if (xs.length) SMW.lines(chart, xs, series, { tz: form.dataset.tz });
      else chart.textContent = "No data in this span.";
    } catch (error) { SMW.showError(chart, error); }
  }

  function restart() { live = {}; lastTs = null; clearInterval(timer); poll(); timer = setInterval(poll, 2000); history(86400); }
  form.addEventListener("submit", (event) => { event.preventDefault(); restart(); });
  for (const button of document.querySelectorAll("[data-span]")) button.addEventListener("click", () => history(Number(button.dataset.span)));
  restart();
})();
