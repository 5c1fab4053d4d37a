/* SEF EMS dashboard: the demand-response (OpenADR) panel.
 *
 * GET openadr/status every few seconds: hidden while no bridge runs ("configured": false);
 * else the programs of each adapter (VTN registered or not), then GET openadr/events: the
 * newest version of every event that is active or upcoming (and the last few that ended),
 * with its opt, status, requested vs delivered kW and reason. An operator opts out of an
 * event with its button (POST openadr/events/SOURCE/ID/opt, session cookie + CSRF header);
 * the API's refusal (a viewer: 403) is shown. Every value from the VTN is set as text.
 * Loaded after app.js. See docs/dashboard.md and docs/openadr.md.
 */
"use strict";

(function openadrPanel() {
  const REFRESH_MS = 3000;
  const RECENT = 5; /* events that ended, shown under the current ones */
  const OVER = new Set(["completed", "cancelled", "failed"]);
  const $ = (sel) => document.querySelector(sel);

  async function call(path, method, body) {
    const response = await fetch(path, {
      method: method || "GET",
      credentials: "same-origin",
      headers: {
        accept: "application/json",
        ...(body === undefined ? {} : { "x-sef-csrf": "1", "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
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

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined || text === "" ? "–" : String(text);
    if (cls) td.className = cls;
    return td;
  }

  const kw = (v) => (typeof v === "number" ? v.toFixed(1) : null);

  function span(seconds) {
    const s = Math.abs(seconds);
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }

  /* "active", "upcoming" or "over", from the status and the EMS clock. */
  function phase(e, now) {
    if (OVER.has(e.status)) return "over";
    if (e.end_s !== null && e.end_s <= now) return "over";
    if (e.start_s !== null && e.start_s > now) return "upcoming";
    return "active";
  }

  function when(e, now, state) {
    if (state === "upcoming") return `starts in ${span(e.start_s - now)}`;
    if (state === "active") return e.end_s === null ? "active" : `active, ends in ${span(e.end_s - now)}`;
    return e.end_s === null ? "ended" : `ended ${span(now - e.end_s)} ago`;
  }

  function delivered(e) {
    const d = kw(e.delivered_kw);
    if (d === null) return null;
    if (typeof e.requested_kw === "number" && e.requested_kw !== 0) {
      return `${d} (${Math.round((100 * e.delivered_kw) / e.requested_kw)} %)`;
    }
    return d;
  }

  function fail(error) {
    const box = $("#openadr-error");
    box.textContent = error ? String(error.message || error) : "";
    box.hidden = !error;
  }

  async function optOut(e, button) {
    fail(null);
    button.disabled = true;
    try {
      const path = `openadr/events/${encodeURIComponent(e.source)}/${encodeURIComponent(e.event_id)}/opt`;
      await call(path, "POST", { opt: "optOut", reason: "from the dashboard" });
      await refresh();
    } catch (error) {
      fail(error);
      button.disabled = false;
    }
  }

  function row(e, now) {
    const state = phase(e, now);
    const tr = document.createElement("tr");
    tr.dataset.event = e.event_id;
    tr.dataset.phase = state;
    tr.className = `dr-${state}`;
    tr.append(
      cell(e.event_id), cell(e.program), cell(e.signal), cell(when(e, now, state)),
      cell(e.status, e.status === "opted_out" ? "warn-text" : ""),
      cell(e.opt, e.opt === "optOut" ? "warn-text" : "ok-text"),
      cell(kw(e.requested_kw), "num"), cell(delivered(e), "num"), cell(e.reason),
    );
    const actions = document.createElement("td");
    if (state !== "over" && e.opt === "optIn") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "opt-out";
      button.textContent = "Opt out";
      button.addEventListener("click", () => optOut(e, button));
      actions.append(button);
    }
    tr.append(actions);
    return tr;
  }

  function showPrograms(adapters) {
    const parts = adapters.map((a) => {
      const programs = (a.programs || []).join(", ") || "no program yet";
      const link = a.registered ? "registered" : "not registered";
      const errors = a.errors ? `, ${a.errors} errors` : "";
      return `${a.source} (${link}${errors}): ${programs}`;
    });
    $("#openadr-programs").textContent = parts.length ? `Programs — ${parts.join("; ")}` : "No adapter.";
  }

  function showEvents(rows, now) {
    const newest = new Map();
    for (const e of rows) { /* newest first: the first version seen of each event wins */
      const key = `${e.source}\u0000${e.event_id}`;
      if (!newest.has(key)) newest.set(key, e);
    }
    const events = [...newest.values()];
    const current = events.filter((e) => phase(e, now) !== "over")
      .sort((a, b) => (a.start_s ?? 0) - (b.start_s ?? 0));
    const over = events.filter((e) => phase(e, now) === "over").slice(0, RECENT);
    $("#openadr-events tbody").replaceChildren(...[...current, ...over].map((e) => row(e, now)));
    const active = current.filter((e) => phase(e, now) === "active").length;
    $("#openadr-summary").textContent = `${active} active, ${current.length - active} upcoming`;
    $("#openadr-empty").hidden = current.length + over.length > 0;
  }

  async function refresh() {
    let status;
    try {
      status = await call("openadr/status");
    } catch (_) {
      return; /* the next refresh tries again */
    }
    const section = $("#openadr-section");
    section.hidden = !status.configured;
    if (!status.configured) return;
    showPrograms(status.adapters);
    try {
      showEvents(await call("openadr/events?limit=200"), status.now_s);
    } catch (error) {
      fail(error);
    }
  }

  refresh();
  setInterval(refresh, REFRESH_MS);
})();
