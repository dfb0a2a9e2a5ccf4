// Queues, skills and agents for the admin: the ACD's JSON API read into tables and forms,
// each save a PUT the server validates (the same rules as config.yaml). A form edits the
// fields it shows and sends back the rest of what it loaded untouched.
"use strict";

(() => {
  const { getJson, putJson, remove, showProblems, clearProblems, cell } = window.kokan;
  const labels = document.currentScript.dataset;
  const saved = document.getElementById("saved");
  const loaded = { queue: {}, agent: {} };

  const levels = (text) => {
    const skills = {};
    for (const part of text.split(",").map((piece) => piece.trim()).filter(Boolean)) {
      const [name, level = ""] = part.split(":").map((piece) => piece.trim());
      // the server says what is wrong with a level that is not a whole number
      skills[name] = /^-?\d+$/.test(level) ? Number(level) : level;
    }
    return skills;
  };
  const showLevels = (skills) =>
    Object.entries(skills || {}).map(([name, level]) => `${name}:${level}`).join(", ");
  const number = (value) => (value.trim() === "" ? null : /^-?\d+$/.test(value.trim()) ? Number(value) : value);
  const source = (inFile) => (inFile ? labels.file : labels.api);

  function button(row, text, action) {
    const holder = cell(row, "");
    const control = document.createElement("button");
    control.type = "button";
    control.textContent = text;
    control.addEventListener("click", action);
    holder.appendChild(control);
    return holder;
  }

  async function saving(form, line, work) {
    clearProblems(form, line);
    saved.hidden = true;
    try {
      await work();
      saved.hidden = false;
      await refresh();
    } catch (error) {
      showProblems(form, line, error);
    }
  }

  // -- skills --
  const skillForm = document.getElementById("skill-form");
  const skillError = document.getElementById("skill-error");
  skillForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = skillForm.elements.name.value.trim();
    const description = skillForm.elements.description.value.trim() || null;
    saving(skillForm, skillError, () => putJson(`/api/acd/skills/${encodeURIComponent(name)}`, { description }));
  });

  // -- queues --
  const queueForm = document.getElementById("queue-form");
  const queueError = document.getElementById("queue-error");
  function editQueue(name, config) {
    const f = queueForm.elements;
    f.name.value = name;
    f.priority.value = config.priority;
    f.strategy.value = config.strategy;
    f.skills.value = showLevels(config.skills);
    f.wrapup_seconds.value = config.wrapup_seconds;
    f.ring_timeout_seconds.value = config.ring_timeout_seconds;
    f.max_wait_seconds.value = config.max_wait_seconds ?? "";
    f.on_max_wait.value = config.on_max_wait.action;
    f.overflow_queue.value = config.on_max_wait.queue || "";
    f.short_abandon_seconds.value = config.short_abandon_seconds;
    f.preferred_agent_wait_seconds.value = config.preferred_agent_wait_seconds;
    f.autopause.checked = config.autopause;
    f.hold_music.value = config.hold_music || "";
    f.announce_every_seconds.value = config.announce_every_seconds ?? "";
    f.callback_key.value = config.callback_key || "";
    f.record.value = config.record || "never";
    f.sip_agent_leg.value = config.sip_agent_leg || "bridge";
    loaded.queue = { name, config };
    f.name.focus();
  }
  queueForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const f = queueForm.elements;
    const name = f.name.value.trim();
    const base = loaded.queue.name === name ? { ...loaded.queue.config } : {};
    const action = f.on_max_wait.value;
    const body = {
      ...base,
      priority: number(f.priority.value) ?? 0,
      strategy: f.strategy.value,
      skills: levels(f.skills.value),
      max_wait_seconds: number(f.max_wait_seconds.value),
      on_max_wait: action === "overflow" ? { action, queue: f.overflow_queue.value.trim() } : { action },
      autopause: f.autopause.checked,
      announce_every_seconds: number(f.announce_every_seconds.value),
      callback_key: f.callback_key.value.trim() || null,
      record: f.record.value,
      sip_agent_leg: f.sip_agent_leg.value,
    };
    // a new queue left empty keeps the default cadence; an edited one may turn it off
    if (body.announce_every_seconds === null && !("announce_every_seconds" in base)) {
      delete body.announce_every_seconds;
    }
    if (f.hold_music.value.trim()) body.hold_music = f.hold_music.value.trim();
    else delete body.hold_music;
    for (const field of ["wrapup_seconds", "ring_timeout_seconds", "short_abandon_seconds", "preferred_agent_wait_seconds"]) {
      const value = number(f[field].value);
      if (value === null) delete body[field];
      else body[field] = value;
    }
    saving(queueForm, queueError, () => putJson(`/api/acd/queues/${encodeURIComponent(name)}`, body));
  });

  // -- agents --
  const agentForm = document.getElementById("agent-form");
  const agentError = document.getElementById("agent-error");
  function editAgent(agentId, config) {
    const f = agentForm.elements;
    f.agent_id.value = agentId;
    f.name.value = config.name || "";
    f.user.value = config.user || "";
    f.skills.value = showLevels(config.skills);
    f.queues.value = (config.queues || []).join(", ");
    f["capacity.voice"].value = config.capacity.voice;
    f["capacity.chat"].value = config.capacity.chat;
    f["capacity.sms"].value = config.capacity.sms;
    f.sip_uri.value = config.sip_uri || "";
    f.twilio_identity.value = config.twilio_identity || "";
    f.phone.value = config.phone || "";
    loaded.agent = { agentId, config };
    f.agent_id.focus();
  }
  agentForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const f = agentForm.elements;
    const agentId = f.agent_id.value.trim();
    const base = loaded.agent.agentId === agentId ? { ...loaded.agent.config } : {};
    const text = (field) => f[field].value.trim() || null;
    const capacity = {};
    for (const channel of ["voice", "chat", "sms"]) {
      const value = number(f[`capacity.${channel}`].value);
      if (value !== null) capacity[channel] = value;
    }
    const body = {
      ...base,
      name: text("name"),
      user: text("user"),
      skills: levels(f.skills.value),
      queues: f.queues.value.split(",").map((queue) => queue.trim()).filter(Boolean),
      capacity,
      sip_uri: text("sip_uri"),
      twilio_identity: text("twilio_identity"),
      phone: text("phone"),
    };
    saving(agentForm, agentError, () => putJson(`/api/acd/agents/${encodeURIComponent(agentId)}`, body));
  });

  async function refresh() {
    const [skills, queues, agents] = await Promise.all([
      getJson("/api/acd/skills"),
      getJson("/api/acd/queues"),
      getJson("/api/acd/agents"),
    ]);
    const skillRows = skills.skills.map((skill) => {
      const row = document.createElement("tr");
      cell(row, skill.name, "th").scope = "row";
      cell(row, skill.description || "");
      cell(row, source(skill.in_config_file));
      if (skill.in_config_file) cell(row, "");
      else button(row, labels.delete, () => {
        if (window.confirm(labels.confirm)) {
          saving(skillForm, skillError, () => remove(`/api/acd/skills/${encodeURIComponent(skill.name)}`));
        }
      });
      return row;
    });
    document.querySelector("#skills tbody").replaceChildren(...skillRows);

    const queueRows = await Promise.all(queues.queues.map(async (queue) => {
      const found = await getJson(`/api/acd/queues/${encodeURIComponent(queue.name)}/config`);
      const config = found.config;
      const row = document.createElement("tr");
      row.dataset.queue = queue.name;
      cell(row, queue.name, "th").scope = "row";
      cell(row, config.strategy);
      cell(row, showLevels(config.skills));
      cell(row, config.max_wait_seconds ?? "—");
      cell(row, source(found.in_config_file));
      button(row, labels.edit, () => editQueue(queue.name, config));
      return row;
    }));
    document.querySelector("#queues tbody").replaceChildren(...queueRows);

    const agentRows = await Promise.all(agents.agents.map(async (agent) => {
      const found = await getJson(`/api/acd/agents/${encodeURIComponent(agent.agent_id)}/config`);
      const config = found.config;
      const row = document.createElement("tr");
      row.dataset.agent = agent.agent_id;
      cell(row, agent.agent_id, "th").scope = "row";
      cell(row, config.name || "");
      cell(row, showLevels(config.skills));
      cell(row, config.queues.join(", "));
      cell(row, source(found.in_config_file));
      const actions = button(row, labels.edit, () => editAgent(agent.agent_id, config));
      const drop = document.createElement("button");
      drop.type = "button";
      drop.textContent = labels.delete;
      drop.addEventListener("click", () => {
        if (window.confirm(labels.confirm)) {
          saving(agentForm, agentError, () => remove(`/api/acd/agents/${encodeURIComponent(agent.agent_id)}`));
        }
      });
      actions.appendChild(drop);
      return row;
    }));
    document.querySelector("#agents tbody").replaceChildren(...agentRows);
  }

  refresh().catch((error) => showProblems(queueForm, queueError, error));
})();
