// Shared helpers: every value reaches the page through textContent, never as HTML.
"use strict";
const SMW = (() => {
  const palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
                   "#ff9da7", "#9c755f", "#bab0ac", "#86bcb6", "#d37295", "#8cd17d", "#499894"];

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      if (cell instanceof Node) { const td = el("td"); td.appendChild(cell); tr.appendChild(td); }
      else if (typeof cell === "number") tr.appendChild(el("td", fmt(cell), "num"));
      else tr.appendChild(el("td", cell === null || cell === undefined ? "–" : cell));
    }
    return tr;
  }

  function link(href, text) { const a = el("a", text); a.href = href; return a; }

  function fmt(value, digits = 2) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
  }

  function pct(value) { return value === null || value === undefined ? "–" : (value * 100).toFixed(1) + " %"; }

  // A timestamp with its zone: in `tz` (a house's data in the house's zone) when given, else UTC.
  function tsText(epochS, tz) {
    if (epochS === null || epochS === undefined) return "";
    const date = new Date(epochS * 1000);
    if (!tz) return date.toISOString().replace("T", " ").slice(0, 19) + " UTC";
    const parts = Object.fromEntries(new Intl.DateTimeFormat("en-CA", {
      timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
      second: "2-digit", hourCycle: "h23", timeZoneName: "short" }).formatToParts(date).map(p => [p.type, p.value]));
    return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second} ${parts.timeZoneName}`;
  }

  // n colours, all different: the palette while it lasts, else hues spread evenly.
  function colours(n) {
    if (n <= palette.length) return palette.slice(0, n);
    return Array.from({ length: n }, (_, i) => `hsl(${Math.round(i * 360 / n)}, 55%, ${i % 2 ? 45 : 60}%)`);
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  function fill(tbody, rows, emptyText, columns) {
    tbody.replaceChildren();
    if (!rows.length) { const tr = row([emptyText]); tr.firstChild.colSpan = columns; tbody.appendChild(tr); return; }
    for (const r of rows) tbody.appendChild(r);
  }

  function width(container) { return Math.max(320, container.clientWidth - 10); }

  // A bar chart over categories (x = index) with one or more stacked series. Values from
  // zero; category labels turn when they would overlap; a series may bring its own colour.
  function bars(container, labels, series, opts = {}) {
    container.replaceChildren();
    const stacked = opts.stacked !== false;
    const data = [labels.map((_, i) => i)];
    const acc = labels.map(() => 0);
    const drawn = [];
    for (const s of series) {           // stacked: each series is drawn as the running sum
      const values = s.values.map((v, i) => (stacked ? (acc[i] += v || 0) : v));
      drawn.push({ label: s.label, values });
    }
    drawn.reverse();                      // tallest first so shorter bars paint on top
    for (const s of drawn) data.push(s.values);
    const barPaths = uPlot.paths.bars({ size: [0.7, 60] });
    const own = colours(series.filter(s => !s.colour).length);
    let next = 0;
    const fills = series.map(s => s.colour || own[next++]).reverse();
    const chartWidth = width(container);
    const longest = Math.max(1, ...labels.map(l => String(l).length));
    const turned = labels.length * (longest * 7 + 8) > chartWidth - 80;
    return new uPlot({
      width: chartWidth, height: (opts.height || 320) + (turned ? longest * 5 : 0),
      scales: { x: { time: false, range: [-0.5, labels.length - 0.5] },
                y: { range: (u, min, max) => [0, max > 0 ? max * 1.05 : 1] } },
      axes: [{ values: (u, ticks) => ticks.map(t => labels[t] ?? ""), space: turned ? 14 : 40,
               rotate: turned ? -60 : 0, size: turned ? longest * 6 + 20 : 50, label: opts.xLabel || "" },
             { label: opts.yLabel || "", size: 60 }],
      legend: { show: series.length > 1 },
      series: [{ label: opts.xLabel || "" }].concat(drawn.map((s, i) => ({
        label: s.label, fill: fills[i], stroke: fills[i], paths: barPaths, points: { show: false } }))),
    }, data, container);
  }

  // A time chart: x in epoch seconds, one line per series; times in `opts.tz` (labelled)
  // when given, else UTC.
  function lines(container, xs, series, opts = {}) {
    container.replaceChildren();
    const tz = opts.tz || "UTC";
    const strokes = colours(series.length);
    return new uPlot({
      width: width(container), height: opts.height || 300,
      tzDate: ts => uPlot.tzDate(new Date(ts * 1000), tz),
      scales: { x: { time: true } },
      axes: [{ label: "time (" + tz + ")" }, { label: opts.yLabel || "W", size: 60 }],
      series: [{ label: "time (" + tz + ")" }].concat(series.map((s, i) => ({ label: s.label, stroke: strokes[i], width: 1.5, spanGaps: false }))),
    }, [xs].concat(series.map(s => s.values)), container);
  }

  // Align several [[ts, value], ...] series on the union of their timestamps.
  function align(seriesMap) {
    const keys = Object.keys(seriesMap);
    const xs = [...new Set(keys.flatMap(k => seriesMap[k].map(p => p[0])))].sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const out = keys.map(k => { const v = xs.map(() => null); for (const p of seriesMap[k]) v[index.get(p[0])] = p[1]; return { label: "meter " + k, values: v }; });
    return [xs, out];
  }

  function showError(container, error) { container.replaceChildren(el("p", error.message, "error")); }

  // A page of one day, picked in form#pick: loads `url` for that day (no day: the server's
  // default, which then fills the picker) and hands the data to render(data, chart); errors
  // go in the #chartId element. Reloads when the form is submitted.
  function dayPage(url, chartId, render) {
    const form = document.getElementById("pick");
    async function load() {
      const query = new URLSearchParams();
      if (form.elements.day.value) query.set("day", form.elements.day.value);
      const chart = document.getElementById(chartId);
      try {
        const data = await getJSON(url + "?" + query);
        if (!form.elements.day.value) form.elements.day.value = data.day;
        render(data, chart);
      } catch (error) { showError(chart, error); }
    }
    form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
    load();
  }

  return { el, row, link, fmt, pct, tsText, getJSON, fill, bars, lines, align, showError, dayPage, palette, colours };
})();
