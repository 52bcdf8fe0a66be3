// lorakit ui: a little plain JavaScript over server-rendered pages. Charts are uPlot (vendored, offline).
"use strict";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];

function aligned(seriesByName) {
  // uPlot wants one x axis: the union of every series' steps, with null where a series has no point.
  const xs = [...new Set(Object.values(seriesByName).flatMap(points => points.map(p => p[0])))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = Object.values(seriesByName).map(points => {
    const column = new Array(xs.length).fill(null);
    points.forEach(([x, y]) => { column[index.get(x)] = y; });
    return column;
  });
  return [xs, ...ys];
}

function chart(element, title, seriesByName) {
  element.innerHTML = "";
  const names = Object.keys(seriesByName);
  if (!names.length) { element.textContent = title + ": nothing logged yet"; return null; }
  const opts = {
    title, width: Math.min(element.parentElement.clientWidth || 800, 900), height: 280,
    scales: {x: {time: false}},
    series: [{label: "step"}, ...names.map((name, i) => ({label: name, stroke: COLORS[i % COLORS.length],
                                                            spanGaps: true, points: {show: true, size: 4}}))],
  };
  return new uPlot(opts, aligned(seriesByName), element);
}

// -- the runs page -----------------------------------------------------------------------------------------------
function filterRuns() {
  const text = document.getElementById("search").value.toLowerCase();
  const status = document.getElementById("status").value;
  const model = document.getElementById("model").value;
  const sweep = document.getElementById("sweep").value;
  document.querySelectorAll("#runs tbody tr").forEach(row => {
    const show = (!text || row.dataset.text.includes(text)) && (!status || row.dataset.status === status) &&
                 (!model || row.dataset.model === model) && (!sweep || row.dataset.sweep === sweep);
    row.style.display = show ? "" : "none";
  });
}

function sortableTable(table) {
  table.querySelectorAll("th[data-key]").forEach(th => th.addEventListener("click", () => {
    const key = th.dataset.key, numeric = "num" in th.dataset;
    const down = th.dataset.dir !== "asc";
    th.dataset.dir = down ? "asc" : "desc";
    const rows = [...table.tBodies[0].rows];
    const value = row => numeric ? parseFloat(row.dataset[key] || "NaN") : (row.dataset[key] || "");
    rows.sort((a, b) => {
      const x = value(a), y = value(b);
      if (numeric) { return (isNaN(x) - isNaN(y)) || (down ? x - y : y - x); }
      return down ? x.localeCompare(y) : y.localeCompare(x);
    });
    rows.forEach(row => table.tBodies[0].appendChild(row));
  }));
}

function compareTicked() {
  const ids = [...document.querySelectorAll(".tick:checked")].map(box => "run=" + box.value);
  location.href = "/compare?" + ids.join("&");
}

// -- the run page ------------------------------------------------------------------------------------------------
async function act(id, what) {
  const body = what === "note" ? JSON.stringify({text: document.getElementById("note").value}) : "{}";
  const answer = await fetch(`/api/run/${id}/${what}`, {method: "POST", body,
    headers: {"Content-Type": "application/json", "X-Lorakit": "1"}});
  const said = await answer.json();
  document.getElementById("said").textContent = said.message;
  if (said.ok && what === "note") { setTimeout(() => location.reload(), 300); }
}

function liveRun(id) {
  const train = [], evaluation = [];
  let lossChart = null, metricChart = null;
  const draw = () => {
    const loss = {"train loss": train.filter(e => e.loss != null).map(e => [e.current_steps, e.loss])};
    const evalLoss = evaluation.filter(e => e.eval_loss != null).map(e => [e.current_steps, e.eval_loss]);
    if (evalLoss.length) { loss["eval loss"] = evalLoss; }
    const metrics = {};
    evaluation.forEach(e => Object.entries(e).forEach(([k, v]) => {
      if (k.startsWith("eval_") && k !== "eval_loss" && typeof v === "number") {
        (metrics[k] = metrics[k] || []).push([e.current_steps, v]);
      }
    }));
    lossChart = chart(document.getElementById("loss-chart"), "loss", loss);
    metricChart = chart(document.getElementById("metric-chart"), "validation metrics", metrics);
    document.getElementById("charts").dataset.points = String(train.length + evaluation.length);
    const last = train[train.length - 1];
    if (last) {
      document.getElementById("step").textContent = `${last.current_steps}/${last.total_steps}`;
      document.getElementById("tps").textContent = last.tokens_per_second ?? "-";
      document.getElementById("elapsed").textContent = last.elapsed_time ?? "-";
      document.getElementById("eta").textContent = last.remaining_time ?? "-";
      if (last.memory_gib != null) { document.getElementById("mem").textContent = `${last.memory_gib} GiB (peak)`; }
    }
  };
  const add = entry => (Object.keys(entry).some(k => k.startsWith("eval_")) ? evaluation : train).push(entry);
  fetch(`/api/run/${id}/log`).then(r => r.json()).then(log => {
    log.train.forEach(e => train.push(e));
    log.eval.forEach(e => evaluation.push(e));
    draw();
    const events = new EventSource(`/api/run/${id}/events?offset=${log.offset}`);
    let pending = null;
    events.addEventListener("line", message => {
      add(JSON.parse(message.data));
      clearTimeout(pending);
      pending = setTimeout(draw, 100);  // a burst of lines is drawn once
    });
    events.addEventListener("status", message => {
      const status = JSON.parse(message.data).status;
      const shown = document.getElementById("status");
      shown.textContent = status;
      shown.className = "status " + status;
      document.getElementById("stop").disabled = status !== "running";
    });
  });
}

// -- compare and sweep pages -------------------------------------------------------------------------------------
function overlay(elementId, curves, series) {
  const picked = {};
  Object.entries(curves).forEach(([run, byName]) => { if (byName[series]) { picked[run] = byName[series]; } });
  chart(document.getElementById(elementId), series, picked);
}

function overlayPoints(elementId, curves, label) {
  chart(document.getElementById(elementId), label || "value", curves);
}

function paramPlots(elementId, params, values) {
  const element = document.getElementById(elementId);
  const names = [...new Set(params.flatMap(p => Object.keys(p)))];
  names.forEach(name => {
    const box = document.createElement("div");
    element.appendChild(box);
    const points = params.map((p, i) => [p[name], values[i]]).filter(([x]) => typeof x === "number");
    const byX = {};
    points.forEach(([x, y]) => { byX[x] = y; });
    chart(box, name, {value: Object.entries(byX).map(([x, y]) => [Number(x), y])});
  });
}
