// The live floor: the JSON API draws the tables, the ACD's event stream says when to
// draw them again. Events are only a cue; the API stays the one source of the numbers.
"use strict";

(() => {
  const script = document.currentScript;
  const liveUrl = script.dataset.liveUrl;
  const queuesBody = document.querySelector("#queues tbody");
  const agentsBody = document.querySelector("#agents tbody");
  const state = document.getElementById("live-state");
  const template = document.getElementById("status-form");
  const REDRAW_AFTER_MS = 100; // a burst of events (one router tick) redraws once
  const REPORT_EVERY_MS = 60000; // service level today changes slowly
  let serviceLevels = {};
  let pending = null;

  const seconds = (ms) => {
    const s = Math.max(0, Math.round(ms / 1000));
    return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
  };
  const cell = (row, text) => {
    const td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  };
  const { getJson, postJson } = window.kokan;

  function drawQueues(queues) {
    queuesBody.replaceChildren();
    for (const queue of queues) {
      const row = document.createElement("tr");
      row.dataset.queue = queue.name;
      const name = document.createElement("th");
      name.scope = "row";
      name.textContent = queue.name;
      row.appendChild(name);
      cell(row, String(queue.waiting)).dataset.field = "waiting";
      cell(row, queue.waiting ? seconds(queue.longest_wait_ms) : "—");
      const level = serviceLevels[queue.name];
      cell(row, level === null || level === undefined ? "—" : `${level.toFixed(1)} %`);
      const byStatus = Object.entries(queue.agents_by_status || {})
        .filter(([, count]) => count > 0)
        .map(([status, count]) => `${status} ${count}`);
      cell(row, byStatus.join(", ") || "—");
      queuesBody.appendChild(row);
    }
  }

  function drawAgents(agents) {
    agentsBody.replaceChildren();
    const now = Date.now();
    for (const agent of agents) {
      const row = document.createElement("tr");
      row.dataset.agent = agent.agent_id;
      const name = document.createElement("th");
      name.scope = "row";
      name.textContent = agent.name || agent.agent_id;
      row.appendChild(name);
      cell(row, agent.reason ? `${agent.status} (${agent.reason})` : agent.status);
      cell(row, seconds(now - agent.since_ms));
      cell(row, (agent.tasks || []).join(", ") || "—");
      const load = Object.entries(agent.load || {}).map(([k, v]) => `${k} ${v}`);
      cell(row, load.join(", ") || "—");
      const form = template.content.firstElementChild.cloneNode(true);
      form.addEventListener("submit", (event) => setStatus(event, agent.agent_id, form));
      cell(row, "").appendChild(form);
      agentsBody.appendChild(row);
    }
  }

  async function redraw() {
    pending = null;
    try {
      const [queues, agents] = await Promise.all([
        getJson("/api/acd/queues"),
        getJson("/api/acd/agents"),
      ]);
      drawQueues(queues.queues);
      drawAgents(agents.agents);
    } catch (error) {
      state.textContent = String(error);
    }
  }

  function soon() {
    if (pending === null) pending = setTimeout(redraw, REDRAW_AFTER_MS);
  }

  async function loadServiceLevels() {
    const today = new Date();
    const tomorrow = new Date(today.getTime() + 86400000);
    const day = (d) => d.toLocaleDateString("sv-SE"); // YYYY-MM-DD in the browser's zone
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    const query = `start=${day(today)}&end=${day(tomorrow)}&by=queue&tz=${encodeURIComponent(zone)}`;
    try {
      const report = await getJson(`/api/reports/kpis?${query}`);
      serviceLevels = {};
      for (const row of report.rows || []) {
        serviceLevels[row.group] = row.service_level_pct;
      }
      soon();
    } catch (error) {
      serviceLevels = {};
    }
  }

  async function setStatus(event, agentId, form) {
    event.preventDefault();
    const data = new FormData(form);
    const body = { status: data.get("status") };
    if (data.get("reason")) body.reason = data.get("reason");
    try {
      await postJson(`/api/acd/agents/${encodeURIComponent(agentId)}/status`, body);
    } catch (error) {
      alert(error.message);
    }
    soon();
  }

  const stream = new EventSource(`${liveUrl}/api/acd/events`, { withCredentials: true });
  stream.addEventListener("open", () => {
    state.textContent = state.dataset.connected;
    state.dataset.live = "yes";
    soon();
  });
  stream.addEventListener("acd", soon);
  stream.addEventListener("error", () => {
    state.textContent = state.dataset.lost;
    state.dataset.live = "no";
  });
  loadServiceLevels();
  setInterval(loadServiceLevels, REPORT_EVERY_MS);
  setInterval(soon, 5000); // the "for" and "longest wait" columns tick on their own
  redraw();
})();
