"use strict";
(() => {
  const appliance = document.getElementById("pick").dataset.appliance;
  SMW.dayPage("/api/appliances/" + encodeURIComponent(appliance), "dist-chart", (data, chart) => {
    const stats = document.getElementById("stats");
    stats.replaceChildren();
    const s = data.stats || {};
    for (const [label, key] of [["Houses", "houses"], ["Median kWh", "median_kwh"], ["25th–75th pct kWh", null], ["Max kWh", "max_kwh"]]) {
      const card = SMW.el("div", null, "card");
      card.appendChild(SMW.el("div", label, "label"));
      card.appendChild(SMW.el("div", key ? SMW.fmt(s[key]) : `${SMW.fmt(s.p25_kwh)} – ${SMW.fmt(s.p75_kwh)}`, "value"));
      stats.appendChild(card);
    }
    if (data.houses.length) SMW.bars(chart, data.houses.map(h => h.house_id), [{ label: "kWh", values: data.houses.map(h => h.energy_kwh) }], { yLabel: "kWh" });
    else chart.textContent = "No data for this appliance on this day.";
    SMW.fill(document.getElementById("houses"), data.houses.map(h => SMW.row([
      SMW.link("/houses/" + encodeURIComponent(h.house_id), h.house_id), h.energy_kwh, SMW.pct(h.share_of_mains)])), "No houses.", 3);
  });
})();
