"use strict";
// The notification settings form (GET/PUT /api/me/notifications) and the delivery history.
(() => {
  const form = document.getElementById("notify-form");
  const fields = document.getElementById("notify-fields");
  const status = document.getElementById("save-status");
  const secretState = document.getElementById("secret-state");
  const deliveries = document.getElementById("deliveries");

  function csrfHeaders() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? { "X-CSRFToken": meta.content } : {};
  }

  function show(settings) {
    for (const box of form.querySelectorAll('input[name="kinds"]')) box.checked = settings.kinds.includes(box.value);
    form.min_severity.value = settings.min_severity;
    form.tz.value = settings.tz;
    form.quiet_on.checked = Boolean(settings.quiet_hours);
    if (settings.quiet_hours) { form.quiet_start.value = settings.quiet_hours.start; form.quiet_end.value = settings.quiet_hours.end; }
    form.email.value = settings.email || "";
    form.webhook_url.value = settings.webhook ? settings.webhook.url : "";
    form.webhook_secret.value = "";
    secretState.textContent = settings.webhook && settings.webhook.secret_set ? "a secret is stored (empty keeps it)" : "";
    if (form.all_houses) form.all_houses.checked = settings.all_houses;
  }

  function read() {
    const body = {
      kinds: [...form.querySelectorAll('input[name="kinds"]:checked')].map(box => box.value),
      min_severity: form.min_severity.value,
      tz: form.tz.value.trim() || "UTC",
      quiet_hours: form.quiet_on.checked ? { start: form.quiet_start.value, end: form.quiet_end.value } : null,
      email: form.email.value.trim() || null,
      webhook: null,
    };
    const url = form.webhook_url.value.trim();
    if (url) {
      body.webhook = { url };
      if (form.webhook_secret.value) body.webhook.secret = form.webhook_secret.value;
    }
    if (form.all_houses) body.all_houses = form.all_houses.checked;
    return body;
  }

  async function loadDeliveries() {
    try {
      const body = await SMW.getJSON("/api/me/deliveries?limit=100");
      SMW.fill(deliveries, body.deliveries.map(d => SMW.row([SMW.tsText(d.created_ts_s), d.house_id, d.appliance,
        d.kind, d.severity, d.state, d.channel + (d.target ? " · " + d.target : ""), d.status, d.attempts,
        SMW.tsText(d.delivered_ts_s), d.last_error])), "No deliveries yet.", 11);
    } catch (error) {
      SMW.fill(deliveries, [], "Could not load the deliveries: " + error.message, 11);
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.textContent = "saving…";
    try {
      const response = await fetch("/api/me/notifications", {
        method: "PUT", headers: { "Content-Type": "application/json", Accept: "application/json", ...csrfHeaders() },
        body: JSON.stringify(read()) });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || response.statusText);
      show(body);
      status.textContent = "saved";
    } catch (error) {
      status.textContent = "not saved: " + error.message;
    }
  });

  // The fields stay disabled until the saved settings fill them (or for good if they cannot be read:
  // saving would overwrite settings nobody has seen).
  SMW.getJSON("/api/me/notifications")
    .then(settings => { show(settings); fields.disabled = false; status.textContent = ""; })
    .catch(error => { status.textContent = "could not load: " + error.message + " (reload the page)"; });
  loadDeliveries();
})();
