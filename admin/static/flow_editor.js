// The flow editor: YAML in a textarea with line numbers; the flows API checks, diffs,
// tests, simulates, publishes and rolls back. Problems are marked at their line in the
// gutter with "▶" (not colour alone) and listed; a click on one puts the caret there.
"use strict";

(() => {
  const flow = document.currentScript.dataset.flow;
  const base = `/api/flows/${encodeURIComponent(flow)}`;
  const texts = document.getElementById("texts").dataset;
  const source = document.getElementById("source");
  const gutter = document.getElementById("gutter");
  const problems = document.getElementById("problems");
  const state = document.getElementById("flow-state");
  let marked = new Set();

  const fill = (template, values) =>
    template.replace(/\{(\w+)\}/g, (_, key) => String(values[key] ?? ""));

  // the page shows refusals (errors at their lines, failed tests) as results, not failures
  async function call(method, path, body) {
    try {
      return { ok: true, status: 200, data: await window.kokan.request(method, `${base}${path}`, body) };
    } catch (error) {
      return { ok: false, status: error.status, data: error.body || {} };
    }
  }

  function drawGutter() {
    const lines = source.value.split("\n").length;
    const numbers = [];
    for (let line = 1; line <= lines; line += 1) {
      numbers.push(`${marked.has(line) ? "▶" : " "}${String(line).padStart(4, " ")}`);
    }
    gutter.textContent = numbers.join("\n");
    gutter.scrollTop = source.scrollTop;
  }

  function goTo(line) {
    const lines = source.value.split("\n");
    const offset = lines.slice(0, line - 1).reduce((sum, text) => sum + text.length + 1, 0);
    source.focus();
    source.setSelectionRange(offset, offset + (lines[line - 1] || "").length);
  }

  function showProblems(errors) {
    marked = new Set(errors.map((error) => error.line));
    problems.replaceChildren(
      ...errors.map((error) => {
        const item = document.createElement("li");
        item.dataset.line = error.line;
        const where = document.createElement("button");
        where.type = "button";
        where.textContent = fill(texts.line, error);
        where.addEventListener("click", () => goTo(error.line));
        item.append(where, ` ${error.message}`);
        return item;
      }),
    );
    document.getElementById("no-problems").hidden = errors.length > 0;
    drawGutter();
  }

  async function check() {
    const { ok, data } = await call("POST", "/check", { source: source.value });
    if (ok) showProblems(data.errors);
    else state.textContent = data.message || "";
    return ok && data.ok;
  }

  async function load() {
    const { ok, data } = await call("GET", "");
    if (!ok) {
      state.textContent = data.message || "";
      return;
    }
    source.value = data.source;
    drawGutter();
    const versions = document.getElementById("versions");
    versions.replaceChildren(
      ...(data.versions || []).map((version) => {
        const item = document.createElement("li");
        item.dataset.version = version.version;
        item.textContent = `v${version.version} · ${new Date(version.published_at).toLocaleString()} · ${version.published_by || ""}`;
        if (version.active) {
          item.append(` (${texts.active})`);
        } else {
          const back = document.createElement("button");
          back.type = "button";
          back.textContent = texts.rollback;
          back.addEventListener("click", () => rollback(version.version));
          item.append(" ", back);
        }
        return item;
      }),
    );
    const audit = await window.kokan
      .getJson(`/api/flows/audit?flow=${encodeURIComponent(flow)}`)
      .catch(() => ({ entries: [] }));
    document.getElementById("audit").replaceChildren(
      ...audit.entries.map((entry) => {
        const item = document.createElement("li");
        item.textContent = `${new Date(entry.at).toLocaleString()} · ${entry.actor} · ${entry.action} · v${entry.version ?? ""}`;
        return item;
      }),
    );
  }

  async function rollback(version) {
    const { ok, data } = await call("POST", "/rollback", { version });
    state.textContent = ok ? fill(texts.rolledBack, { version: data.active_version }) : data.message;
    await load();
  }

  source.addEventListener("input", drawGutter);
  source.addEventListener("scroll", () => {
    gutter.scrollTop = source.scrollTop;
  });
  document.getElementById("check").addEventListener("click", check);
  document.getElementById("diff").addEventListener("click", async () => {
    const { data } = await call("POST", "/diff", { source: source.value });
    document.getElementById("diff-text").textContent = data.diff ?? data.message ?? "";
  });
  document.getElementById("run-tests").addEventListener("click", async () => {
    const { ok, data } = await call("POST", "/tests", { source: source.value });
    document.getElementById("tests-summary").textContent = ok ? fill(texts.passed, data) : data.message;
    document.getElementById("tests-results").replaceChildren(
      ...(data.results || []).map((result) => {
        const item = document.createElement("li");
        item.textContent = `${result.ok ? "✓" : "✗"} ${result.file} ${result.name} ${result.message || ""}`;
        return item;
      }),
    );
  });
  document.getElementById("simulate").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const body = {
      source: source.value,
      inputs: String(form.get("inputs") || "").split(",").map((key) => key.trim()).filter(Boolean),
    };
    if (form.get("from")) body.from = form.get("from");
    if (form.get("at")) body.at = form.get("at");
    const { data } = await call("POST", "/simulate", body);
    document.getElementById("simulation").textContent = JSON.stringify(data, null, 2);
  });
  document.getElementById("publish").addEventListener("click", async () => {
    const note = document.getElementById("note").value;
    const { ok, data } = await call("POST", "/publish", note ? { source: source.value, note } : { source: source.value });
    if (ok) {
      state.textContent = fill(texts.published, data);
      showProblems([]);
      await load();
    } else {
      if (data.errors) showProblems(data.errors);
      state.textContent = data.message || "";
    }
  });
  load();
})();
