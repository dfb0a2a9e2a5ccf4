// The flow list: every flow with its active version, each linking to its editor.
"use strict";

(() => {
  const editor = document.currentScript.dataset.editor;
  const body = document.querySelector("#flows tbody");
  window.kokan
    .getJson("/api/flows")
    .then((data) => {
      for (const flow of data.flows) {
        const row = document.createElement("tr");
        const name = document.createElement("th");
        name.scope = "row";
        const link = document.createElement("a");
        link.href = editor.replace("__NAME__", encodeURIComponent(flow.name));
        link.textContent = flow.name;
        name.appendChild(link);
        const active = document.createElement("td");
        active.textContent = flow.active_version ?? "—";
        const count = document.createElement("td");
        count.textContent = String((flow.versions || []).length);
        row.append(name, active, count);
        body.appendChild(row);
      }
    })
    .catch((error) => {
      const problem = document.getElementById("flows-error");
      problem.hidden = false;
      problem.textContent = String(error);
    });
})();
