"use strict";
(async () => {
  try {
    const data = await SMW.getJSON("/api/overview");
    document.getElementById("houses-count").textContent = data.houses.length;
    document.getElementById("total-kwh").textContent = SMW.fmt(data.total_kwh, 1) + " kWh";
    document.getElementById("open-count").textContent = data.open_alerts.length;
    SMW.fill(document.getElementById("houses"), data.houses.map(h => SMW.row([
      SMW.link("/houses/" + encodeURIComponent(h.house_id), h.house_id), h.zip, h.day,
      h.mains_kwh, h.circuits_kwh, h.untracked_kwh, h.open_alerts,
      SMW.link("/houses/" + encodeURIComponent(h.house_id) + "/live", "live")])), "No houses yet.", 8);
    SMW.fill(document.getElementById("open-alerts"), data.open_alerts.slice(0, 15).map(a => SMW.row([
      SMW.link("/houses/" + encodeURIComponent(a.house_id), a.house_id), a.appliance, a.kind, a.peak_w, SMW.tsText(a.start_ts_s)])),
      "No open alerts.", 5);
    const top = data.top_consumers;
    if (top.length) SMW.bars(document.getElementById("top-chart"), top.map(h => h.house_id),
      [{ label: "mains kWh", values: top.map(h => h.mains_kwh) }], { yLabel: "kWh", height: 260 });
    else document.getElementById("top-chart").textContent = "No daily totals for yesterday yet.";
  } catch (error) { SMW.showError(document.querySelector("main"), error); }
})();
