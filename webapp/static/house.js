"use strict";
(() => {
  const form = document.getElementById("range");
  const house = form.dataset.house;
  const base = "/api/houses/" + encodeURIComponent(house);

  async function load() {
    const query = new URLSearchParams();
    for (const name of ["from", "to"]) if (form.elements[name].value) query.set(name, form.elements[name].value);
    document.getElementById("csv").href = base + "/daily.csv?" + query;
    const chart = document.getElementById("daily-chart");
    try {
      const daily = await SMW.getJSON(base + "/daily?" + query);
      if (!form.elements.from.value) form.elements.from.value = daily.from;
      if (!form.elements.to.value) form.elements.to.value = daily.to;
      const labels = daily.days.map(d => d.day.slice(5));
      const series = daily.appliances.map(name => ({ label: name, values: daily.days.map(d => d.appliances[name] || 0) }));
      series.push({ label: "untracked", colour: "#3b3b3b", values: daily.days.map(d => Math.max(d.untracked_kwh || 0, 0)) });
      if (daily.days.length) SMW.bars(chart, labels, series, { yLabel: "kWh", xLabel: "local day (" + form.dataset.tz + ")" });
      else chart.textContent = "No daily energy in this range.";
      const t = daily.totals;
      const rows = daily.appliances.map(name => SMW.row([
        // the cross-house appliance page is for admins
        document.body.dataset.role === "admin" ? SMW.link("/appliances/" + encodeURIComponent(name), name) : name,
        t.by_appliance[name], SMW.pct(t.share_of_mains[name])]));
      rows.push(SMW.row(["untracked", t.untracked_kwh, SMW.pct(t.untracked_share)]));
      rows.push(SMW.row(["mains", t.mains_kwh, SMW.pct(t.mains_kwh > 0 ? 1 : null)]));
      SMW.fill(document.getElementById("shares"), rows, "No data.", 3);
    } catch (error) { SMW.showError(chart, error); }
    try {
      const cost = await SMW.getJSON(base + "/cost?" + query);
      const rows = cost.appliances.map(a => SMW.row([a.appliance, a.energy_kwh, a.cost]));
      rows.push(SMW.row(["untracked", cost.untracked.energy_kwh, cost.untracked.cost]));
      rows.push(SMW.row(["mains (total)", cost.mains.energy_kwh, cost.mains.cost]));
      SMW.fill(document.getElementById("cost"), rows, "No data.", 3);
      document.getElementById("cost-currency").textContent = cost.currency;
      const versions = cost.tariffs.filter(v => v.priced_hours + v.estimated_days > 0).length;
      const periods = cost.by_period.map(p => `${p.period} ${SMW.fmt(p.energy_kwh, 1)} kWh at ${p.rate_per_kwh}/kWh`).join(" · ");
      document.getElementById("cost-note").textContent = (periods ? "Mains by period: " + periods + ". " : "") +
        (versions > 1 ? "Priced at " + versions + " successive tariffs. " : "") +
        (cost.estimated_days ? cost.estimated_days + " day(s) without hourly data priced at the standard rate." : "");
    } catch (error) { SMW.showError(document.getElementById("cost-note"), error); }
  }
  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  load();
})();
