/* SEF EMS dashboard: the homes (gateways) panel and the agents table's home filter.
 *
 * GET homes every few seconds: each home with its uplink (up / down / unknown) and since
 * when (relative time, EMS clock), its agents (online of all), and its relay's queued and
 * dropped messages. The filter narrows the agents table to one home (GET agents?home=).
 * Loaded after app.js, whose window.sefDashboard it uses. See docs/dashboard.md.
 */
"use strict";

(function homesPanel() {
  const HOMES_MS = 3000;
  const dash = window.sefDashboard;
  const $ = (sel) => document.querySelector(sel);

  function node(tag, attrs, ...children) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "class") n.className = v;
      else n.setAttribute(k, v);
    }
    for (const child of children) n.append(child instanceof Node ? child : String(child));
    return n;
  }

  /** "42 s", "5 min", "3 h", "2 d" (a duration in s, roughly). */
  function ago(seconds) {
    const s = Math.max(0, seconds);
    if (s >= 86400) return `${Math.round(s / 86400)} d`;
    if (s >= 3600) return `${Math.round(s / 3600)} h`;
    if (s >= 60) return `${Math.round(s / 60)} min`;
    return `${Math.round(s)} s`;
  }

  /** The EMS clock now, as well as the page knows it (a scaled clock runs ahead). */
  function emsNow() {
    return Math.max(Date.now() / 1000, dash.state.lastEventTs || 0);
  }

  function homeItem(home) {
    const stats = home.stats || {};
    const parts = [`${home.online_agents}/${home.agents} agents online`];
    if (typeof stats.queued === "number") {
      parts.push(`queued ${stats.queued}` +
        (typeof stats.queue_limit === "number" ? `/${stats.queue_limit}` : ""));
    }
    if (typeof stats.dropped === "number") parts.push(`dropped ${stats.dropped}`);
    const since = new Date(home.since * 1000).toISOString().replace("T", " ").slice(0, 19);
    return node("li", {
      class: `home ${home.uplink}`,
      "data-home": home.home,
      "data-uplink": home.uplink,
    },
    node("strong", {}, home.home),
    node("span", { class: `badge ${home.uplink}`, "data-col": "uplink" }, home.uplink),
    node("span", { class: "muted", "data-col": "since", title: `since ${since} UTC` },
      `since ${ago(emsNow() - home.since)} ago`),
    node("span", { "data-col": "counts", class: stats.dropped ? "bad-text" : null },
      parts.join(" · ")));
  }

  function renderFilter(homes) {
    const select = $("#home-filter");
    const chosen = dash.state.home || "";
    const ids = homes.map((h) => h.home);
    if (chosen && !ids.includes(chosen)) ids.push(chosen);
    const options = [node("option", { value: "" }, "all")]
      .concat(ids.sort().map((id) => node("option", { value: id }, id)));
    select.replaceChildren(...options);
    select.value = chosen;
    select.closest("label").hidden = ids.length === 0;
  }

  async function refreshHomes() {
    try {
      const response = await fetch("homes", { headers: { accept: "application/json" } });
      if (response.status === 401) return window.location.replace("login");
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      const homes = await response.json();
      $("#homes").replaceChildren(...homes.map(homeItem));
      $("#homes-section").hidden = homes.length === 0;
      const down = homes.filter((h) => h.uplink === "down").length;
      $("#home-count").textContent = homes.length
        ? `${homes.length - down} of ${homes.length} up` : "";
      renderFilter(homes);
    } catch (error) {
      console.warn("homes", error.message);
    }
  }

  $("#home-filter").addEventListener("change", (e) => {
    dash.state.home = e.target.value || null;
    dash.turnPage(0); // back to the first page, with the filter
  });
  refreshHomes();
  setInterval(refreshHomes, HOMES_MS);
})();
