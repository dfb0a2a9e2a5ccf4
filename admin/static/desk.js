// The agent's desk: their status, and the screen pop the moment a call is offered (who is
// calling, their open tickets and latest contacts on any channel). The agent's own event
// stream is the cue; the JSON API gives the facts.
"use strict";

(() => {
  const script = document.currentScript;
  const liveUrl = script.dataset.liveUrl;
  const statusLine = document.getElementById("my-status");
  const pop = document.getElementById("screen-pop");
  const TIMELINE_ITEMS = 10; // enough to see the thread, short enough to read at a glance
  let wrapUntil = 0;
  let shownCall = null;
  let drawing = 0;

  const { getJson, request, postJson } = window.kokan;
  const item = (parent, text) => {
    const li = document.createElement("li");
    li.textContent = text;
    parent.appendChild(li);
  };

  async function showStatus() {
    const me = await getJson("/api/acd/me");
    statusLine.dataset.status = me.status;
    wrapUntil = me.status === "wrap-up" ? me.wrap_until_ms : 0;
    statusLine.textContent = me.reason ? `${me.status} (${me.reason})` : me.status;
    tick();
    for (const task of me.tasks || []) await showCall(task);
  }

  function tick() {
    if (wrapUntil > Date.now()) {
      const left = Math.ceil((wrapUntil - Date.now()) / 1000);
      statusLine.textContent = statusLine.dataset.wrapUp.replace("{seconds}", left);
    }
  }

  async function showCall(callId) {
    // several cues can arrive together (offer, answer, status): only the newest draws
    const mine = ++drawing;
    const call = await getJson(`/api/acd/calls/${encodeURIComponent(callId)}`);
    const number = call.callback_number || call.caller || "";
    let customer = null;
    let history = { items: [] };
    if (number.startsWith("+")) {
      const found = await getJson(`/api/customers?phone=${encodeURIComponent(number)}`);
      customer = (found.customers || [])[0] || null;
      if (customer) {
        history = await getJson(
          `/api/customers/${customer.id}/timeline?limit=${TIMELINE_ITEMS}`,
        );
      }
    }
    if (mine !== drawing) return;
    if (shownCall !== callId) wrapState.textContent = "";
    shownCall = callId;
    pop.hidden = false;
    wrapForm.hidden = wrapForm.dataset.ready !== "yes";
    pop.dataset.call = callId;
    document.getElementById("pop-state").textContent = `(${call.state}, ${call.queue})`;
    document.getElementById("pop-caller").textContent = number || "?";
    document.getElementById("pop-name").textContent = customer
      ? customer.display_name || `#${customer.id}`
      : number.startsWith("+") ? script.dataset.unknown : "";
    const tickets = document.createElement("ul");
    const timeline = document.createElement("ol");
    for (const ticket of customer ? customer.tickets : []) {
      if (["solved", "closed"].includes(ticket.status)) continue;
      item(tickets, `#${ticket.id} ${ticket.channel} · ${ticket.status} · ${ticket.subject}`);
    }
    for (const contact of history.items) {
      const when = new Date(contact.created_at).toLocaleString();
      item(timeline, `${when} · ${contact.channel} · ${contact.direction} · ${contact.body}`);
    }
    document.getElementById("pop-tickets").replaceChildren(...tickets.childNodes);
    document.getElementById("pop-timeline").replaceChildren(...timeline.childNodes);
    showTicketWork(customer);
  }

  // -- working the caller's ticket: fields, internal notes, replies ----------------------
  const work = document.getElementById("ticket-work");
  const picker = document.getElementById("work-ticket");
  const workState = document.getElementById("work-state");
  let shownCustomer = null;

  function showTicketWork(customer) {
    shownCustomer = customer;
    const open = customer ? customer.tickets.filter((t) => t.status !== "closed") : [];
    work.hidden = open.length === 0;
    const chosen = picker.value;
    picker.replaceChildren(
      ...open.map((ticket) => {
        const option = document.createElement("option");
        option.value = ticket.id;
        option.textContent = `#${ticket.id} ${ticket.channel} · ${ticket.subject}`;
        return option;
      }),
    );
    if (open.some((ticket) => String(ticket.id) === chosen)) picker.value = chosen;
    fillFields();
  }

  function fillFields() {
    const ticket = shownCustomer && shownCustomer.tickets.find((t) => String(t.id) === picker.value);
    if (!ticket) return;
    const form = document.getElementById("fields-form");
    form.elements.status.value = ticket.status;
    form.elements.priority.value = ticket.priority;
  }

  async function send(method, path, body) {
    let saved = true;
    try {
      await request(method, path, body);
      workState.textContent = script.dataset.saved;
    } catch (error) {
      workState.textContent = error.message;
      saved = false;
    }
    if (shownCall) showCall(shownCall).catch(() => {});
    return saved;
  }

  picker.addEventListener("change", fillFields);
  document.getElementById("fields-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const tags = String(form.get("tags") || "").split(",").map((t) => t.trim()).filter(Boolean);
    const body = { status: form.get("status"), priority: form.get("priority") };
    if (tags.length) body.tags = tags;
    send("PATCH", `/api/tickets/${picker.value}`, body);
  });
  for (const [id, path] of [["note-form", "notes"], ["reply-form", "replies"]]) {
    document.getElementById(id).addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = event.target;
      const text = new FormData(form).get("body");
      if (await send("POST", `/api/tickets/${picker.value}/${path}`, { body: text })) form.reset();
    });
  }

  // -- the wrap-up code: what the call was, from the site's list (none listed: no form) --
  const wrapForm = document.getElementById("wrapup-form");
  const wrapState = document.getElementById("wrapup-state");
  getJson("/api/acd/wrapup-codes").then((listed) => {
    const options = listed.codes.map(({ code, label }) => {
      const option = document.createElement("option");
      option.value = code;
      option.textContent = label;
      return option;
    });
    wrapForm.elements.code.replaceChildren(...options);
    wrapForm.dataset.ready = options.length ? "yes" : "no";
    wrapForm.hidden = !(options.length && shownCall);
  }).catch(() => {});
  wrapForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { code: wrapForm.elements.code.value, note: wrapForm.elements.note.value };
    try {
      await postJson(`/api/acd/calls/${encodeURIComponent(shownCall)}/wrapup`, body);
      wrapState.textContent = script.dataset.saved;
    } catch (error) {
      wrapState.textContent = error.message;
    }
  });

  function onEvent(message) {
    const event = JSON.parse(message.data);
    if (event.type === "offer" || event.type === "answer") {
      showCall(event.call).catch(() => {});
    } else if (["no-answer", "abandon", "end"].includes(event.type) && event.call === shownCall) {
      document.getElementById("pop-state").textContent = `(${event.type})`;
    }
    showStatus().catch(() => {});
  }

  document.getElementById("status-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const body = { status: event.submitter.value };
    const reason = new FormData(form).get("reason");
    if (body.status === "break" && reason) body.reason = reason;
    try {
      await postJson("/api/acd/me/status", body);
    } catch (error) {
      alert(error.message);
    }
    showStatus().catch(() => {});
  });

  const stream = new EventSource(`${liveUrl}/api/acd/me/events`, { withCredentials: true });
  stream.addEventListener("acd", onEvent);
  stream.addEventListener("open", () => {
    document.body.dataset.live = "yes";
  });
  setInterval(tick, 1000);
  showStatus().catch((error) => {
    statusLine.textContent = String(error);
  });
})();
