// The reports page: the KPI API's numbers as a table, bar charts of service level and of
// calls answered / abandoned per group, and a CSV link for the same query. No number is
// computed here; the charts only scale what the API gave.
"use strict";

(() => {
  const form = document.getElementById("report-form");
  const table = document.getElementById("report");
  const labels = JSON.parse(table.dataset.labels);
  const chart = document.getElementById("chart");
  const problem = document.getElementById("report-error");
  const SVG = "http://www.w3.org/2000/svg";
  const BAR_GAP = 8;

  const query = () => {
    const params = new URLSearchParams(new FormData(form));
    params.set("tz", Intl.DateTimeFormat().resolvedOptions().timeZone);
    for (const [key, value] of [...params]) if (!value) params.delete(key);
    return params;
  };
  const shown = (value) =>
    value === null || value === undefined ? "—" : typeof value === "number" ? String(+value.toFixed(2)) : value;

  function drawTable(report) {
    const head = document.createElement("tr");
    for (const text of [labels.group, ...Object.keys(labels.kpis).map((k) => labels.kpis[k])]) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = text;
      head.appendChild(th);
    }
    table.tHead.replaceChildren(head);
    const rows = [...report.rows, { group: labels.total, ...report.total }];
    table.tBodies[0].replaceChildren(
      ...rows.map((row) => {
        const tr = document.createElement("tr");
        const th = document.createElement("th");
        th.scope = "row";
        th.textContent = row.group === null ? labels.none : row.group;
        tr.appendChild(th);
        for (const key of Object.keys(labels.kpis)) {
          const td = document.createElement("td");
          td.dataset.kpi = key;
          td.textContent = shown(row[key]);
          tr.appendChild(td);
        }
        return tr;
      }),
    );
  }

  function drawChart(report) {
    chart.replaceChildren();
    const rows = report.rows.filter((row) => row.service_level_pct !== null);
    const width = chart.clientWidth || 600;
    const barWidth = rows.length ? Math.max(4, width / rows.length - BAR_GAP) : 0;
    rows.forEach((row, index) => {
      const height = (row.service_level_pct / 100) * 150;
      const x = index * (barWidth + BAR_GAP);
      const bar = document.createElementNS(SVG, "rect");
      bar.setAttribute("x", x);
      bar.setAttribute("y", 160 - height);
      bar.setAttribute("width", barWidth);
      bar.setAttribute("height", height);
      bar.setAttribute("class", "bar");
      const title = document.createElementNS(SVG, "title");
      title.textContent = `${row.group}: ${shown(row.service_level_pct)} %`;
      bar.appendChild(title);
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", x);
      label.setAttribute("y", 176);
      label.textContent = `${row.group} ${shown(row.service_level_pct)}%`;
      chart.append(bar, label);
    });
  }

  // answered calls solid, abandoned ones hatched above them: told apart without colour
  const volume = document.getElementById("volume-chart");
  function drawVolume(report) {
    const keep = volume.querySelector("defs");
    volume.replaceChildren(keep);
    const rows = report.rows;
    const most = Math.max(1, ...rows.map((row) => (row.answered || 0) + (row.abandoned || 0)));
    const width = volume.clientWidth || 600;
    const barWidth = rows.length ? Math.max(4, width / rows.length - BAR_GAP) : 0;
    rows.forEach((row, index) => {
      const x = index * (barWidth + BAR_GAP);
      let top = 160;
      for (const [key, css] of [["answered", "bar"], ["abandoned", "bar abandoned"]]) {
        const height = ((row[key] || 0) / most) * 150;
        top -= height;
        const bar = document.createElementNS(SVG, "rect");
        bar.setAttribute("x", x);
        bar.setAttribute("y", top);
        bar.setAttribute("width", barWidth);
        bar.setAttribute("height", height);
        bar.setAttribute("class", css);
        bar.dataset.kpi = key;
        const title = document.createElementNS(SVG, "title");
        title.textContent = `${row.group}: ${labels.kpis[key]} ${row[key] || 0}`;
        bar.appendChild(title);
        volume.appendChild(bar);
      }
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", x);
      label.setAttribute("y", 176);
      label.textContent = `${row.group} ${row.answered || 0}/${row.abandoned || 0}`;
      volume.appendChild(label);
    });
  }

  async function show(event) {
    if (event) event.preventDefault();
    const params = query();
    document.getElementById("csv-link").href = `/api/reports/kpis?${params}&format=csv`;
    let body;
    try {
      body = await window.kokan.getJson(`/api/reports/kpis?${params}`);
    } catch (error) {
      problem.hidden = false;
      problem.textContent = error.message;
      return;
    }
    problem.hidden = true;
    document.getElementById("formula").textContent = body.service_level_formula;
    drawTable(body);
    drawChart(body);
    drawVolume(body);
  }

  form.addEventListener("submit", show);
  show();
})();
