// Business hours and holidays per flow: the hours API read into one form per set; a save
// is a PUT the server checks like the YAML, then publishes as a new flow version.
"use strict";

(() => {
  const { getJson, putJson, showProblems, clearProblems } = window.kokan;
  const words = document.currentScript.dataset;
  const choice = document.getElementById("flow-name");
  const sets = document.getElementById("hours-sets");
  const saved = document.getElementById("saved");
  const template = document.getElementById("hours-template");

  const weeklyText = (weekly) => Object.entries(weekly).map(([days, ranges]) => `${days}: ${ranges}`).join("\n");
  function weeklyOf(text) {
    const weekly = {};
    for (const line of text.split("\n").map((each) => each.trim()).filter(Boolean)) {
      const at = line.indexOf(":");
      // a line without "days:" still goes to the server, which names the mistake
      if (at < 0) weekly[line] = "";
      else weekly[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    return weekly;
  }

  function testFailures(error, body) {
    if (!body || !body.results) return error;
    const failed = body.results.filter((result) => !result.ok).map((result) => `${result.name}: ${result.message}`);
    return { message: `${words.tests} ${failed.join(" / ")}`, problems: [] };
  }

  function drawSet(flow, hoursId, hours) {
    const form = template.content.firstElementChild.cloneNode(true);
    form.dataset.hours = hoursId;
    form.querySelector("legend").textContent = hoursId;
    const f = form.elements;
    f.timezone.value = hours.timezone || "";
    f.holidays.value = hours.holidays || "";
    f.weekly.value = weeklyText(hours.weekly);
    f.closed.value = (hours.closed || []).join("\n");
    const upcoming = form.querySelector(".upcoming");
    for (const day of hours.upcoming_closed_days) {
      const li = document.createElement("li");
      li.textContent = `${day.date} · ${day.kind === "public" ? words.public : words.closed} ${day.name}`;
      upcoming.appendChild(li);
    }
    const line = form.querySelector(".error");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearProblems(form, line);
      saved.hidden = true;
      const body = {
        weekly: weeklyOf(f.weekly.value),
        closed: f.closed.value.split(/[\s,]+/).filter(Boolean),
        timezone: f.timezone.value.trim() || null,
        holidays: f.holidays.value.trim() || null,
      };
      if (f.note.value.trim()) body.note = f.note.value.trim();
      try {
        const done = await putJson(`/api/flows/${encodeURIComponent(flow)}/hours/${encodeURIComponent(hoursId)}`, body);
        saved.textContent = words.saved.replace("{version}", done.version);
        saved.hidden = false;
        await load(flow);
      } catch (error) {
        showProblems(form, line, error.status === 422 ? testFailures(error, error.body) : error);
      }
    });
    return form;
  }

  async function load(flow) {
    const shown = await getJson(`/api/flows/${encodeURIComponent(flow)}/hours`);
    document.getElementById("flow-version").textContent = words.version.replace("{version}", shown.active_version ?? "—");
    sets.replaceChildren(...Object.entries(shown.hours).map(([hoursId, hours]) => drawSet(flow, hoursId, hours)));
  }

  async function start() {
    const flows = await getJson("/api/flows");
    for (const flow of flows.flows) {
      const option = document.createElement("option");
      option.value = option.textContent = flow.name;
      choice.appendChild(option);
    }
    choice.addEventListener("change", () => load(choice.value));
    if (choice.value) await load(choice.value);
  }

  start().catch((error) => {
    const problem = document.getElementById("load-error");
    problem.hidden = false;
    problem.textContent = String(error.message || error);
  });
})();
