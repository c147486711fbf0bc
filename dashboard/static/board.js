// The farm board's pages: tables from the JSON API, and the run chart on a <canvas>.
// No library: the board must work on a head with no internet access.
"use strict";

const POLL_MS = 2000;
const $ = (sel) => document.querySelector(sel);

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
function text(value) {  // safe in element text and in quoted attributes
  const s = value === null || value === undefined ? "-" : String(value);
  return s.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}
const pct = (v) => (v === null || v === undefined ? "-" : (v * 100).toFixed(2) + " %");
const num = (v, d = 4) => (v === null || v === undefined ? "-" : Number(v).toPrecision(d));
const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "-");

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

// ---------------------------------------------------------------- runs list

async function refreshRuns() {
  const data = await getJSON("/api/runs");
  const rows = data.runs.map((r) => `<tr data-run="${text(r.id)}">
    <td><a href="/runs/${encodeURIComponent(r.id)}">${text(r.id)}</a></td>
    <td><span class="state ${text(r.state)}">${text(r.state)}</span></td>
    <td>${text(r.host)}</td>
    <td class="num">${text(r.iteration)}/${text(r.max_batches)}</td>
    <td class="num">${num(r.avg_loss)}</td>
    <td class="num">${pct(r.best_map)}${r.best_screens_map == null ? "" : ` <span class="muted" title="screens mAP">/ ${pct(r.best_screens_map)} screens</span>`}</td>
    <td class="num">${text(r.attempts)}</td>
    <td>${when(r.created_at)}</td>
    <td class="muted">${text(r.message)}</td></tr>`);
  $("#runs tbody").innerHTML = rows.join("");
  const running = data.runs.filter((r) => r.state === "running").length;
  $("#summary").textContent = `${data.runs.length} runs, ${running} running`;
}

// ---------------------------------------------------------------- run page

const board = (window.farmBoard = { version: null, chart: null, draws: 0, log: 0 });

async function refreshRun(runId) {
  const run = await getJSON(`/api/runs/${encodeURIComponent(runId)}`);
  $("#state").textContent = run.state;
  $("#state").className = `state ${run.state}`;
  $("#message").textContent = run.message || "";
  const best = run.best;
  const facts = [
    ["iteration", `${run.iteration}/${run.max_batches}`],
    ["avg loss", num(run.avg_loss)],
    ["learning rate", num(run.rate, 3)],
    ["best mAP", best ? `${pct(best.map)} at iteration ${best.iteration}` +
      ("screens_map" in best ? ` (screens mAP ${pct(best.screens_map)})` : "") : "-"],
    ["best weights", best ? best.best_weights : "-"],
    ["host", `${run.host || "-"} (${run.worker || "no worker yet"})`],
    ["data", run.data], ["cfg", run.cfg],
  ];
  let html = facts.map(([k, v]) => `<dt>${text(k)}</dt><dd>${text(v)}</dd>`).join("");
  if (run.flower_url) {
    html += `<dt>task</dt><dd><a id="flower-link" href="${text(run.flower_url)}">${text(run.task_id)}</a> in Flower</dd>`;
  }
  $("#facts").innerHTML = html;
  $("#attempts tbody").innerHTML = run.attempts.map((a) => {
    const changes = Object.entries(a.changes || {}).map(([k, [b, c]]) => `${k} ${b} → ${c}`).join(", ");
    return `<tr class="attempt"><td>${a.number}</td><td>${text(a.reason)}</td><td>${text(changes || "-")}</td>
      <td class="outcome-${text(a.outcome)}">${text(a.outcome || "running")}<br><span class="muted small">${text(a.message)}</span></td>
      <td class="num">${text(a.start_iteration)} → ${text(a.last_iteration)}</td><td>${text(a.host)}</td>
      <td>${when(a.ended_at)}</td></tr>`;
  }).join("");
  $("#checkpoints tbody").innerHTML = run.checkpoints.map((c) => {
    const e = c.evaluation;
    const prf = e && !e.error ? `${num(e.precision, 2)} / ${num(e.recall, 2)} / ${num(e.f1, 2)}` : "-";
    let map = e ? (e.error ? `<span title="${text(e.error)}">error</span>` : pct(e.map)) : "…";
    if (e && "screens_map" in e) map += ` / ${e.screens_error ? "error" : pct(e.screens_map)} screens`;
    return `<tr class="checkpoint"><td class="num">${c.iteration}</td><td class="num">${c.attempt}</td>
      <td>${c.finite ? "yes" : "poisoned"}</td><td class="num">${map}</td><td class="num">${prf}</td>
      <td>${text(e && e.evaluator)}</td><td class="muted small">${text(c.path)}</td></tr>`;
  }).join("");
  if (run.log_total !== board.log) {
    board.log = run.log_total;
    const log = $("#log");
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = run.log.join("\n");
    if (atEnd) log.scrollTop = log.scrollHeight;
    $("#log-note").textContent = `last ${run.log.length} of ${run.log_total} lines`;
  }
}

async function refreshChart(runId) {
  const since = board.version ? `?since=${encodeURIComponent(board.version)}` : "";
  const data = await getJSON(`/api/runs/${encodeURIComponent(runId)}/chart${since}`);
  if (data.unchanged) return;
  board.version = data.version;
  board.chart = data;
  drawChart($("#chart"), data);
  const ips = data.iterations_per_second ? `, ${data.iterations_per_second.toFixed(1)} it/s` : "";
  const behind = data.behind ? `, ${data.behind} iterations still being read` : "";
  $("#chart-note").textContent = `${data.n} iterations in ${data.buckets.length} buckets${ips}${behind}`;
}

// ---------------------------------------------------------------- the chart

// Bucket fields, as farm/chart.py folds them.
const A = 0, FIRST = 1, LAST = 2, LMIN = 3, LMAX = 4, ALAST = 7, RATE = 8, BAD = 9;
const COLOURS = { band: "#a0cceb", avg: "#003ca0", rate: "#289628", map: "#dc1e1e",
  darknet: "#ff8c00", restart: "#e6aa00", bad: "#c82828", grid: "#e8e8e8", axis: "#5a5a5a" };

function drawChart(canvas, data) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "12px sans-serif";
  const b = data.buckets;
  board.draws += 1;
  if (!b.length) {
    ctx.fillStyle = COLOURS.axis;
    ctx.fillText("no iterations yet", W / 2 - 50, H / 2);
    return;
  }
  const main = { x0: 70, y0: 20, x1: W - 60, y1: H - 130 };
  const strip = { x0: 70, y0: H - 100, x1: W - 60, y1: H - 30 };
  let xLo = Infinity, xHi = -Infinity, yLo = Infinity, yHi = -Infinity, rHi = 0;
  const losses = [];
  for (const k of b) {
    xLo = Math.min(xLo, k[FIRST]); xHi = Math.max(xHi, k[LAST]);
    for (const v of [k[LMIN], k[LMAX], k[ALAST]]) if (v !== null && v > 0) losses.push(v);
    if (k[RATE] !== null) rHi = Math.max(rHi, k[RATE]);
  }
  for (const [it] of data.evaluations) xHi = Math.max(xHi, it);
  if (xHi <= xLo) xHi = xLo + 1;
  losses.sort((p, q) => p - q);
  if (losses.length) { yLo = losses[0]; yHi = losses[Math.floor((losses.length - 1) * 0.995)]; }
  else { yLo = 0.01; yHi = 1; }
  if (yHi <= yLo) yHi = yLo * 10;
  const log = yHi / yLo > 20;
  const X = (it) => main.x0 + ((it - xLo) / (xHi - xLo)) * (main.x1 - main.x0);
  const Y = (v) => {
    const f = log ? (Math.log10(Math.max(v, yLo)) - Math.log10(yLo)) / (Math.log10(yHi) - Math.log10(yLo))
                  : (v - yLo) / (yHi - yLo);
    return main.y1 - Math.min(Math.max(f, 0), 1) * (main.y1 - main.y0);
  };
  const R = (v) => strip.y1 - (rHi > 0 ? v / rHi : 0) * (strip.y1 - strip.y0);
  const M = (m) => main.y1 - m * (main.y1 - main.y0);
  frame(ctx, main, log ? "loss (log)" : "loss", (k) => {
    const f = k / 5;
    return log ? Math.pow(10, Math.log10(yHi) - f * (Math.log10(yHi) - Math.log10(yLo))) : yHi - f * (yHi - yLo);
  }, xLo, xHi);
  frame(ctx, strip, "learning rate", (k) => rHi - (k / 5) * rHi, xLo, xHi, 2);
  // loss band, then avg loss and learning rate, one path per attempt
  ctx.strokeStyle = COLOURS.band; ctx.lineWidth = 1;
  ctx.beginPath();
  for (const k of b) {
    if (k[LMIN] === null || k[LMAX] === null) continue;
    const x = X((k[FIRST] + k[LAST]) / 2);
    ctx.moveTo(x, Y(k[LMIN])); ctx.lineTo(x, Y(k[LMAX]));
  }
  ctx.stroke();
  polyline(ctx, b, ALAST, (k) => X((k[FIRST] + k[LAST]) / 2), Y, COLOURS.avg, 2);
  polyline(ctx, b, RATE, (k) => X((k[FIRST] + k[LAST]) / 2), R, COLOURS.rate, 2);
  ctx.fillStyle = COLOURS.bad;
  for (const k of b) if (k[BAD] > 0) ctx.fillRect(X((k[FIRST] + k[LAST]) / 2) - 1, main.y1 - 10, 2, 10);
  // restarts: where each attempt after the first starts
  ctx.setLineDash([4, 4]); ctx.strokeStyle = COLOURS.restart; ctx.fillStyle = COLOURS.restart;
  const about = Object.fromEntries(data.attempts.map((a) => [a.number, a]));
  for (let i = 1; i < b.length; i++) {
    if (b[i][A] === b[i - 1][A]) continue;
    const x = X(b[i][FIRST]);
    ctx.beginPath(); ctx.moveTo(x, main.y0); ctx.lineTo(x, strip.y1); ctx.stroke();
    const a = about[b[i][A]] || {};
    const changes = Object.entries(a.changes || {}).map(([k, [p, q]]) => `${k} ${p}→${q}`).join(", ");
    ctx.fillText(`attempt ${b[i][A]}${changes ? ": " + changes : ""}`, x + 4, main.y0 + 14 + 14 * (b[i][A] % 3));
  }
  ctx.setLineDash([]);
  points(ctx, data.darknet_maps, X, M, COLOURS.darknet);
  points(ctx, data.evaluations, X, M, COLOURS.map);
  ctx.fillStyle = COLOURS.map;
  for (let k = 0; k <= 5; k++) ctx.fillText(`${100 - 20 * k}%`, main.x1 + 6, main.y0 + (k / 5) * (main.y1 - main.y0) + 4);
  canvas.dataset.n = String(data.n);
  canvas.dataset.lastIteration = String(b[b.length - 1][LAST]);
  canvas.dataset.attempts = String(new Set(b.map((k) => k[A])).size);
  canvas.dataset.maps = String(data.evaluations.length);
}

function frame(ctx, f, label, yValue, xLo, xHi, lines = 5) {
  ctx.strokeStyle = COLOURS.grid; ctx.fillStyle = COLOURS.axis; ctx.lineWidth = 1;
  for (let k = 0; k <= lines; k++) {
    const y = f.y0 + (k / lines) * (f.y1 - f.y0);
    ctx.beginPath(); ctx.moveTo(f.x0, y); ctx.lineTo(f.x1, y); ctx.stroke();
    ctx.fillText(Number(yValue((k / lines) * 5)).toPrecision(3), 4, y + 4);
  }
  for (let k = 0; k <= 5; k++) {
    const x = f.x0 + (k / 5) * (f.x1 - f.x0);
    ctx.beginPath(); ctx.moveTo(x, f.y0); ctx.lineTo(x, f.y1); ctx.stroke();
    ctx.fillText(String(Math.round(xLo + (k / 5) * (xHi - xLo))), x - 12, f.y1 + 14);
  }
  ctx.strokeStyle = COLOURS.axis; ctx.strokeRect(f.x0, f.y0, f.x1 - f.x0, f.y1 - f.y0);
  ctx.fillText(label, f.x0 + 4, f.y0 - 4);
}

function polyline(ctx, b, field, xOf, yOf, colour, width) {
  ctx.strokeStyle = colour; ctx.lineWidth = width;
  ctx.beginPath();
  let open = false;
  for (let i = 0; i < b.length; i++) {
    const k = b[i];
    if (k[field] === null || (i > 0 && b[i - 1][A] !== k[A])) open = false;
    if (k[field] === null) continue;
    const x = xOf(k), y = yOf(k[field]);
    if (open) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    open = true;
  }
  ctx.stroke();
  ctx.lineWidth = 1;
}

function points(ctx, list, X, M, colour) {
  if (!list.length) return;
  const sorted = [...list].sort((p, q) => p[0] - q[0]);
  ctx.strokeStyle = colour; ctx.fillStyle = colour;
  ctx.beginPath();
  sorted.forEach(([it, m], i) => (i ? ctx.lineTo(X(it), M(m)) : ctx.moveTo(X(it), M(m))));
  ctx.stroke();
  for (const [it, m] of sorted) {
    ctx.beginPath(); ctx.arc(X(it), M(m), 4, 0, 2 * Math.PI); ctx.fill();
    ctx.fillText(`${(m * 100).toFixed(1)}%`, X(it) - 16, M(m) - 8);
  }
}

// ---------------------------------------------------------------- start

function every(ms, fn) {
  const tick = () => fn().catch((e) => console.warn(e)).finally(() => setTimeout(tick, ms));
  tick();
}

const page = document.body.dataset.page;
if (page === "runs") every(5000, refreshRuns);
if (page === "run") {
  const runId = document.body.dataset.run;
  every(POLL_MS, () => refreshRun(runId));
  every(POLL_MS, () => refreshChart(runId));
}
