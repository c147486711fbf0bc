// The farm board's pages: tables from the JSON API; charts come drawn (SVG) from the
// server (farm/plot), so the board, `farm chart` and reports draw the same picture.
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

// Requests go to the origin, never relative to the page's address: a page opened as
// http://farm:PASSWORD@host/ has credentials in its address, and browsers refuse to fetch
// a URL built from it.
async function getJSON(path) {
  const response = await fetch(new URL(path, location.origin),
                               { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) {  // the session ended (expired, logged out elsewhere)
    location.assign(`${location.origin}/login?next=${encodeURIComponent(location.pathname + location.search)}`);
  }
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
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
  showSupervision(data.farm);
}

function showSupervision(farm) {
  // `farm up`'s word on its children: a crash loop it gave up on is a banner, not a log line
  $("#given-up").innerHTML = farm.given_up.map((e) => `<div class="banner given-up">
    <b>${text(e.child)} is down</b> since ${when(e.at)}: farm up gave up on it after a crash
    loop and does not restart it. <pre class="small">${text(e.message)}</pre></div>`).join("");
  $("#farm-events").hidden = farm.events.length === 0;
  $("#farm-note").textContent = farm.down ? "(down)"
    : `${farm.deaths} death(s) of a child since it came up`;
  $("#events tbody").innerHTML = farm.events.map((e) => `<tr class="event event-${text(e.event)}">
    <td>${when(e.at)}</td><td>${text(e.child)}</td><td>${text(e.event)}</td>
    <td class="muted">${text((e.message || "").split("\n")[0])}</td></tr>`).join("");
}

// ---------------------------------------------------------------- run page

const board = (window.farmBoard = { version: null, chart: null, eta: null, draws: 0, log: 0 });

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
    ["trained with", run.effective ? run.effective.text : "-"],
    ["ETA", run.state !== "running" || !board.eta ? "-" : `${duration(board.eta)} (${new Date(Date.now() + board.eta * 1000).toLocaleTimeString()})`],
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
    let map = e ? (e.error ? `<span title="${text(e.error)}">error</span>` : pct(e.map))
      : c.pending ? `<span title="waiting for its evaluation">…</span>`
      : `<span title="not evaluated (off the eval_every ${text(run.eval_every)} cadence)">-</span>`;
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
  board.chart = data.chart;
  board.eta = data.eta;
  board.draws += 1;
  $("#chart").innerHTML = data.svg;  // drawn by farm/plot/runchart.py, every text escaped
  const eta = data.eta ? `, ETA ${duration(data.eta)}` : "";
  const behind = data.behind ? `, ${data.behind} iterations still being read` : "";
  $("#chart-note").textContent = `${data.n} iterations, ${data.chart.attempts.length} attempt(s)${eta}${behind}`;
}

function duration(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// ---------------------------------------------------------------- sweeps

function refreshSweeps() {
  for (const cell of document.querySelectorAll("td.when")) cell.textContent = when(Number(cell.dataset.t));
  return Promise.resolve();
}

const sweepPage = (window.farmSweep = { page: 1, per: 25, pages: 1, draws: 0 });

async function refreshSweep(sweepId) {
  const data = await getJSON(`/api/sweeps/${encodeURIComponent(sweepId)}?page=${sweepPage.page}&per=${sweepPage.per}`);
  sweepPage.pages = data.pages;
  sweepPage.draws += 1;
  $("#state").textContent = data.sweep.state;
  $("#state").className = `state ${data.sweep.state}`;
  $("#message").textContent = [data.sweep.message, ...data.sweep.warnings.map((w) => `warning: ${w}`)].filter(Boolean).join(" · ");
  $("#counts").innerHTML = `${data.total} trials: ` + Object.entries(data.counts)
    .map(([state, n]) => `<span class="state ${text(state)}">${n} ${text(state)}</span>`).join(" ");
  const map = data.objective !== "min_avg_loss";
  $("#objective-head").textContent = {map50: "best mAP", screens_map50: "best screens mAP"}[data.objective] || "best avg loss";
  const first = (data.page - 1) * data.per;
  $("#page-note").textContent = `rows ${first + 1}-${first + data.rows.length} of ${data.total} (page ${data.page} of ${data.pages})`;
  $("#prev").disabled = data.page <= 1;
  $("#next").disabled = data.page >= data.pages;
  $("#overlay").innerHTML = data.svg;  // drawn by farm/plot/overlay.py, every text escaped
  $("#overlay-note").textContent = `${data.overlay.curves.length} trial(s) of this page`;
  $("#leaderboard tbody").innerHTML = data.rows.map((r) => {
    const params = Object.entries(r.params).map(([k, v]) =>
      `${text(k)}=${text(v)}${k in r.effective ? ` <b title="what the run trained with after its restarts">→ ${text(r.effective[k])}</b>` : ""}`).join(" ");
    const best = r.best === null ? "-" : (map ? pct(r.best) : num(r.best));
    const swatch = r.colour ? `<span class="swatch" style="background:${text(r.colour)}"></span>` : "";
    const trial = r.run_id ? `<a href="/runs/${encodeURIComponent(r.run_id)}" title="run ${text(r.run_id)}">${r.trial}</a>` : String(r.trial);
    const note = r.note ? `<br><span class="muted small">${text(r.note)}</span>` : "";
    return `<tr class="trial-row" data-trial="${r.trial}"><td>${swatch}</td><td>${text(r.rank)}</td><td>${trial}</td>
      <td class="params">${params}${note}</td><td><span class="state ${text(r.state)}">${text(r.state)}</span></td>
      <td class="num">${best}</td><td class="num">${text(r.best_iteration)}</td>
      <td class="num">${r.tile_map === null ? "-" : pct(r.tile_map)}</td><td class="num">${r.screens_map === null ? "-" : pct(r.screens_map)}</td><td class="num">${r.iterations}</td>
      <td class="num">${r.restarts}${r.divergences ? ` (${r.divergences} nan)` : ""}</td>
      <td class="num">${r.wall_time === null ? "-" : duration(r.wall_time)}</td></tr>`;
  }).join("");
}

function linkTrials() {  // a row and its curves light up together
  const hot = (trial, on) => {
    const svg = $("#overlay svg");
    if (svg) svg.classList.toggle("faded", on);
    for (const el of document.querySelectorAll(`[data-trial="${trial}"]`)) el.classList.toggle("hot", on);
  };
  for (const box of [$("#overlay"), $("#leaderboard")]) {
    box.addEventListener("mouseover", (e) => { const t = e.target.closest("[data-trial]"); if (t) hot(t.dataset.trial, true); });
    box.addEventListener("mouseout", (e) => { const t = e.target.closest("[data-trial]"); if (t) hot(t.dataset.trial, false); });
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
if (page === "sweeps") refreshSweeps();
if (page === "sweep") {
  const sweepId = document.body.dataset.sweep;
  linkTrials();
  $("#prev").addEventListener("click", () => { sweepPage.page = Math.max(1, sweepPage.page - 1); refreshSweep(sweepId); });
  $("#next").addEventListener("click", () => { sweepPage.page = Math.min(sweepPage.pages, sweepPage.page + 1); refreshSweep(sweepId); });
  every(5000, () => refreshSweep(sweepId));
}
