"use strict";
(() => {
  const form = document.getElementById("pick");
  async function load() {
    const query = new URLSearchParams();
    if (form.elements.day.value) query.set("day", form.elements.day.value);
    const chart = document.getElementById("zip-chart");
    try {
      const data = await SMW.getJSON("/api/zips?" + query);
      if (!form.elements.day.value) form.elements.day.value = data.day;
      if (data.zips.length) SMW.bars(chart, data.zips.map(z => z.zip), [{ label: "kWh per house", values: data.zips.map(z => z.kwh_per_house) }], { yLabel: "kWh per house" });
      else chart.textContent = "No zip totals on this day.";
      SMW.fill(document.getElementById("zips"), data.zips.map(z => SMW.row([z.zip, z.energy_kwh, z.houses, z.kwh_per_house])), "No data.", 4);
    } catch (error) { SMW.showError(chart, error); }
  }
  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  load();
})();
