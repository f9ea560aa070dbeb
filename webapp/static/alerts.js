"use strict";
// Live alerts over Server-Sent Events. EventSource reconnects by itself and sends
// Last-Event-ID, so the server replays whatever changed while the page was away.
// Each row can be acknowledged, or its appliance or house muted (POST /api/alerts/<id>/ack,
// POST /api/mutes); the Marks column shows acknowledgements and the mutes covering an alert.
(() => {
  const tbody = document.getElementById("alerts");
  const status = document.getElementById("feed-status");
  const actionStatus = document.getElementById("action-status");
  const muteFor = document.getElementById("mute-for");
  const mutesBody = document.getElementById("mutes");
  const house = tbody.dataset.house;
  const rows = new Map();      // alert id -> { tr, updated, alert }
  const acks = new Map();      // alert id -> ack
  let mutes = [];
  let ackQueue = new Set();

  function csrfHeaders() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? { "X-CSRFToken": meta.content } : {};
  }

  async function send(method, url, body) {
    const response = await fetch(url, { method, headers: { Accept: "application/json", ...csrfHeaders(),
      ...(body ? { "Content-Type": "application/json" } : {}) }, body: body ? JSON.stringify(body) : undefined });
    if (response.status === 204) return null;
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    return answer;
  }

  function covering(alert) {
    const at = alert.updated_ts_s || alert.start_ts_s || Date.now() / 1000;
    return mutes.filter(m => m.house_id === alert.house_id && (m.appliance === null || m.appliance === alert.appliance)
      && m.from_ts_s <= at && at < m.until_ts_s);
  }

  function marks(alert) {
    const found = [];
    const ack = acks.get(alert.id);
    if (ack) found.push("acknowledged by " + ack.username);
    for (const m of covering(alert)) found.push("muted" + (m.appliance ? "" : " (house)") + " until " + SMW.tsText(m.until_ts_s));
    return found.join("; ");
  }

  function button(text, action) {
    const b = SMW.el("button", text);
    b.type = "button";
    b.addEventListener("click", async () => {
      b.disabled = true;
      actionStatus.textContent = "";
      try { await action(); } catch (error) { actionStatus.textContent = text + ": " + error.message; }
      b.disabled = false;
    });
    return b;
  }

  function mute(alert, appliance) {
    return async () => {
      await send("POST", "/api/mutes", { house_id: alert.house_id, appliance, duration_s: Number(muteFor.value) });
      await loadMutes();
    };
  }

  function actions(alert) {
    const cell = SMW.el("span");
    if (!acks.has(alert.id)) cell.append(button("Acknowledge", async () => {
      acks.set(alert.id, await send("POST", "/api/alerts/" + encodeURIComponent(alert.id) + "/ack"));
      redraw(alert.id);
    }), " ");
    if (alert.appliance) cell.append(button("Mute appliance", mute(alert, alert.appliance)), " ");
    cell.append(button("Mute house", mute(alert, null)));
    return cell;
  }

  function draw(alert) {
    const tr = SMW.row([SMW.tsText(alert.start_ts_s),
      SMW.link("/houses/" + encodeURIComponent(alert.house_id), alert.house_id), alert.meter, alert.appliance,
      alert.kind, alert.severity, alert.state, alert.peak_w, alert.threshold_w, SMW.tsText(alert.end_ts_s),
      marks(alert), actions(alert)]);
    tr.dataset.alertId = alert.id;
    tr.classList.add(alert.state === "open" ? "open" : "closed");
    if (covering(alert).length) tr.classList.add("muted");
    if (acks.has(alert.id)) tr.classList.add("acked");
    return tr;
  }

  function redraw(id) {
    const known = rows.get(id);
    if (!known) return;
    const tr = draw(known.alert);
    known.tr.replaceWith(tr);
    known.tr = tr;
  }

  function render(alert) {
    const known = rows.get(alert.id);
    const updated = alert.updated_ts_s || alert.start_ts_s || 0;
    if (known && known.updated > updated) return;
    const tr = draw(alert);
    tr.classList.add("fresh");
    if (known) known.tr.replaceWith(tr);
    else tbody.prepend(tr);
    rows.set(alert.id, { tr, updated, alert });
    if (!acks.has(alert.id)) { ackQueue.add(alert.id); scheduleAcks(); }
  }

  let ackTimer = null;
  function scheduleAcks() {
    if (ackTimer === null) ackTimer = setTimeout(loadAcks, 300);
  }

  async function loadAcks() {
    ackTimer = null;
    const ids = [...ackQueue].slice(0, 200);
    for (const id of ids) ackQueue.delete(id);
    if (!ids.length) return;
    try {
      const body = await SMW.getJSON("/api/acks?" + ids.map(id => "alert_id=" + encodeURIComponent(id)).join("&"));
      for (const ack of body.acks) { acks.set(ack.alert_id, ack); redraw(ack.alert_id); }
    } catch (error) {
      actionStatus.textContent = "acknowledgements: " + error.message;
    }
    if (ackQueue.size) scheduleAcks();
  }

  async function loadMutes() {
    try {
      const body = await SMW.getJSON("/api/mutes" + (house ? "?house_id=" + encodeURIComponent(house) : ""));
      mutes = body.mutes;
    } catch (error) {
      actionStatus.textContent = "mutes: " + error.message;
      return;
    }
    SMW.fill(mutesBody, mutes.map(m => SMW.row([m.house_id, m.appliance || "(whole house)", SMW.tsText(m.until_ts_s),
      m.created_by, button("Unmute", async () => { await send("DELETE", "/api/mutes/" + encodeURIComponent(m.id)); await loadMutes(); })])),
      "No mutes.", 5);
    for (const id of rows.keys()) redraw(id);
  }

  loadMutes();
  setInterval(loadMutes, 60000);
  // EventSource gives up on an answer that is not a stream (503 when the server holds as many
  // streams as it allows): open a new one after a while, resuming from the last event seen.
  let lastEventId = "";
  const connect = () => {
    const query = new URLSearchParams();
    if (house) query.set("house_id", house);
    if (lastEventId) query.set("last_event_id", lastEventId);
    const source = new EventSource("/alerts/stream" + (query.toString() ? "?" + query : ""));
    source.addEventListener("open", () => { status.textContent = "live"; status.className = "status live"; });
    source.addEventListener("error", () => {
      status.textContent = "reconnecting…"; status.className = "status down";
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 10000 + Math.random() * 5000);
    });
    source.addEventListener("alert", (event) => {
      if (event.lastEventId) lastEventId = event.lastEventId;
      render(JSON.parse(event.data));
    });
  };
  connect();
})();
