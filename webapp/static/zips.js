"use strict";
SMW.dayPage("/api/zips", "zip-chart", (data, chart) => {
  if (data.zips.length) SMW.bars(chart, data.zips.map(z => z.zip), [{ label: "kWh per house", values: data.zips.map(z => z.kwh_per_house) }], { yLabel: "kWh per house" });
  else chart.textContent = "No zip totals on this day.";
  SMW.fill(document.getElementById("zips"), data.zips.map(z => SMW.row([z.zip, z.energy_kwh, z.houses, z.kwh_per_house])), "No data.", 4);
});
