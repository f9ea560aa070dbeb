"use strict";
// Live alerts over Server-Sent Events. EventSource reconnects by itself and sends
// Last-Event-ID, so the server replays whatever changed while the page was away.
(() => {
  const tbody = document.getElementById("alerts");
  const status = document.getElementById("feed-status");
  const house = tbody.dataset.house;
  const rows = new Map();      // alert id -> { tr, updated }

  function render(alert) {
    const known = rows.get(alert.id);
    const updated = alert.updated_ts_s || alert.start_ts_s || 0;
    if (known && known.updated > updated) return;
    const tr = SMW.row([SMW.tsText(alert.start_ts_s),
      SMW.link("/houses/" + encodeURIComponent(alert.house_id), alert.house_id), alert.meter, alert.appliance,
      alert.kind, alert.severity, alert.state, alert.peak_w, alert.threshold_w, SMW.tsText(alert.end_ts_s)]);
    tr.dataset.alertId = alert.id;
    tr.classList.add(alert.state === "open" ? "open" : "closed", "fresh");
    if (known) known.tr.replaceWith(tr);
    else tbody.prepend(tr);
    rows.set(alert.id, { tr, updated });
  }

  const source = new EventSource("/alerts/stream" + (house ? "?house_id=" + encodeURIComponent(house) : ""));
  source.addEventListener("open", () => { status.textContent = "live"; status.className = "status live"; });
  source.addEventListener("error", () => { status.textContent = "reconnecting…"; status.className = "status down"; });
  source.addEventListener("alert", (event) => render(JSON.parse(event.data)));
})();
