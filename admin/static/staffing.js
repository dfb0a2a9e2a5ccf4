// The Erlang C calculator: the staffing API computes, this page asks and shows.
"use strict";

(() => {
  const { getJson, postJson } = window.kokan;
  const form = document.getElementById("staffing-form");
  const measured = document.getElementById("measured-form");
  const result = document.getElementById("staffing-result");
  const problem = document.getElementById("staffing-error");
  const shown = (value) => (typeof value === "number" ? String(+value.toFixed(2)) : String(value));

  function fail(message) {
    problem.hidden = false;
    problem.textContent = message;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    for (const [key, value] of new FormData(form)) if (value !== "") body[key] = Number(value);
    let plan;
    try {
      plan = await postJson("/api/staffing/erlang-c", body);
    } catch (error) {
      return fail(error.message);
    }
    problem.hidden = true;
    result.hidden = false;
    for (const dd of result.querySelectorAll("dd")) dd.textContent = shown(plan[dd.dataset.field]);
  });

  measured.addEventListener("submit", async (event) => {
    event.preventDefault();
    const params = new URLSearchParams(new FormData(measured));
    params.set("tz", Intl.DateTimeFormat().resolvedOptions().timeZone);
    params.set("interval_minutes", form.elements.interval_minutes.value);
    for (const [key, value] of [...params]) if (!value) params.delete(key);
    let data;
    try {
      data = await getJson(`/api/staffing/measured?${params}`);
    } catch (error) {
      return fail(error.message);
    }
    problem.hidden = true;
    form.elements.calls_per_interval.value = +data.calls_per_interval.toFixed(2);
    if (data.average_handle_time_seconds !== null) {
      form.elements.average_handle_time_seconds.value = Math.round(data.average_handle_time_seconds);
    }
  });
})();
