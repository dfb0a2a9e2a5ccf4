// What every page's script needs from the JSON API: read, send with the CSRF token, and
// turn an error answer into words and the names of the fields it is about.
"use strict";

window.kokan = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.problems = (body && body.details && body.details.problems) || [];
      this.body = body;
    }
  }

  async function request(method, path, body) {
    const options = { method, credentials: "same-origin", headers: { "X-CSRFToken": csrf() } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const answer = await fetch(path, options);
    const text = await answer.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch (_) {
      parsed = null;
    }
    if (!answer.ok) throw new ApiError(answer.status, parsed);
    return parsed;
  }

  // Marks each field a problem names (aria-invalid + the message beside it) and shows the
  // whole message in `line`; fields of a form are found by their name attribute.
  function showProblems(form, line, error) {
    clearProblems(form, line);
    line.hidden = false;
    line.textContent = `${line.dataset.prefix || ""} ${error.message}`.trim();
    for (const problem of error.problems || []) {
      const top = String(problem.field || "").split(".")[0];
      const field = form.querySelector(`[name="${CSS.escape(problem.field)}"]`)
        || form.querySelector(`[name="${CSS.escape(top)}"]`);
      if (!field) continue;
      field.setAttribute("aria-invalid", "true");
      const said = document.createElement("span");
      said.className = "field-error";
      said.textContent = problem.message;
      field.insertAdjacentElement("afterend", said);
    }
  }

  function clearProblems(form, line) {
    line.hidden = true;
    line.textContent = "";
    for (const field of form.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
    for (const said of form.querySelectorAll(".field-error")) said.remove();
  }

  const cell = (row, text, tag = "td") => {
    const element = document.createElement(tag);
    element.textContent = text;
    row.appendChild(element);
    return element;
  };

  return {
    request,
    getJson: (path) => request("GET", path),
    putJson: (path, body) => request("PUT", path, body),
    postJson: (path, body) => request("POST", path, body),
    remove: (path) => request("DELETE", path),
    showProblems,
    clearProblems,
    cell,
  };
})();
