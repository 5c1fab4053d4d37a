/* SEF EMS dashboard: the live control target panel.
 *
 * GET control/target every few seconds: the target the live controller follows now (kW),
 * who set it through the API and when, or "the scenario's target" when none is set. An
 * operator sets a new one (PUT control/target, text/csv `time_s,kw` rows, Unix s) or goes
 * back to the scenario's ([] as JSON). Chart 1 draws that target against the net load
 * (GET control/series). Loaded after app.js. See docs/dashboard.md.
 */
"use strict";

(function targetPanel() {
  const TARGET_MS = 3000;
  const $ = (sel) => document.querySelector(sel);

  async function call(method, body, type) {
    const response = await fetch("control/target", {
      method,
      credentials: "same-origin",
      headers: {
        accept: "application/json",
        ...(method === "GET" ? {} : { "x-sef-csrf": "1", "content-type": type }),
      },
      body,
    });
    if (response.status === 401) window.location.replace("login");
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = { error: text };
    }
    if (!response.ok) throw new Error((data && data.error) || `${response.status}`);
    return data;
  }

  function show(target) {
    const info = $("#target-info");
    info.dataset.version = String(target.version);
    if (!target.points.length) {
      info.textContent = "The controller follows its scenario's target (none set here).";
      return;
    }
    const when = new Date(target.set_at * 1000).toISOString().replace("T", " ").slice(0, 19);
    const now = target.now_kw === null ? "not started yet (scenario's target until then)"
      : `${target.now_kw.toFixed(1)} kW now`;
    info.textContent = `Target set by ${target.set_by} at ${when} UTC: ` +
      `${target.points.length} points, ${now}.`;
  }

  function fail(error) {
    const box = $("#target-error");
    box.textContent = error ? String(error.message || error) : "";
    box.hidden = !error;
  }

  async function refresh() {
    try {
      show(await call("GET"));
    } catch (_) { /* the next refresh tries again */ }
  }

  $("#target-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    fail(null);
    try {
      show(await call("PUT", $("#target-points").value, "text/csv"));
    } catch (error) {
      fail(error);
    }
  });
  $("#target-clear").addEventListener("click", async () => {
    fail(null);
    try {
      show(await call("PUT", "[]", "application/json"));
    } catch (error) {
      fail(error);
    }
  });
  refresh();
  setInterval(refresh, TARGET_MS);
})();
