"""The morning report as one self-contained HTML file (farm.sweeps.report holds the data).

It must open anywhere, offline, from a file:// URL or a mail attachment: the CSS is
inline, the charts are inline SVG drawn by farm.plot (the board's drawing code), and
there is no script at all; the page's Content-Security-Policy tells the browser to fetch
nothing and run nothing. Every text that came from a person or a log (sweep and trial
names, parameters, messages, paths, hosts) goes through `_e` (farm.plot escapes the text
inside its SVG the same way), so a trial named `<script>` is shown, never run.
"""
from __future__ import annotations

import html
import os
import time
from pathlib import Path

from farm.errors import BadInput
from farm.runs.progress import format_duration, format_map
from farm.sweeps import controller as ctl
from farm.sweeps.report import GPU_TIME_RULE, SweepReport, TrialReport, fmt_hours, trial_colour

#: nothing fetched, nothing run: inline styles (and SVG's) only
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;color:#222;margin:0 auto;max-width:1180px;
 padding:16px 24px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 8px;
 border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:16px;margin:18px 0 6px}
code,.mono{font-family:ui-monospace,monospace;font-size:12.5px}
.muted{color:#777}.small{font-size:12px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:8px 0}
dl.facts dt{color:#666}dl.facts dd{margin:0}
table{border-collapse:collapse;margin:6px 0;width:100%}
th,td{border-bottom:1px solid #e6e6e6;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f6f6f6;font-weight:600;font-size:12.5px}
td.num,th.num{text-align:right;white-space:nowrap}
.state{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;
 background:#eee}
.state-completed,.state-done,.state-delivered{background:#dff3df;color:#1b5e20}
.state-failed{background:#fde0e0;color:#b71c1c}
.state-stopped,.state-stopping,.state-cancelled{background:#fff1d6;color:#8a5300}
.state-running,.state-queued{background:#e0ecfb;color:#0d47a1}
.outcome-diverged,.outcome-crashed,.outcome-stalled,.outcome-lost,.outcome-bad_input,
.outcome-out_of_memory{color:#b71c1c;font-weight:600}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;
 vertical-align:-1px;margin-right:4px}
.reason{color:#8a1c1c}
.chart svg{max-width:100%;height:auto;border:1px solid #eee}
table.lineage td:nth-child(3){white-space:nowrap}
section.trial-section+section.trial-section{border-top:1px solid #ddd;margin-top:14px}
ul.failures li{margin:4px 0}
footer{margin:32px 0 12px;color:#777;font-size:12px}
"""


def _e(value) -> str:
    """Text (from anywhere) as HTML: every <, >, &, " and ' escaped."""
    return html.escape("" if value is None else str(value), quote=True)


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))


def _state(state: str) -> str:
    return f'<span class="state state-{_e(state)}">{_e(state)}</span>'


def render(rep: SweepReport) -> str:
    sw, spec = rep.sweep, rep.spec
    name = sw.name or sw.id
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(name)}: sweep report</title><style>{_CSS}</style></head><body>",
           f'<header><h1>Sweep <span class="sweep-name">{_e(name)}</span> '
           f"<code>{_e(sw.id)}</code> {_state(sw.state.value)}</h1>"]
    if sw.message:
        out.append(f'<p class="sweep-message">{_e(sw.message)}</p>')
    out.append("</header>")
    out += _summary(rep)
    out += _leaderboard(rep)
    out.append('<section id="curves"><h2>Every trial overlaid</h2>')
    out.append(f'<p class="muted small">avg loss along the lineage that made each '
               f"trial's weights, and mAP@0.50 of its evaluations; {rep.overlaid} of "
               f"{len(rep.trials)} trial(s) drawn (at most the best 50). Hover a line for "
               "the trial.</p>")
    out.append(f'<div class="chart overlay">{rep.overlay_svg}</div></section>')
    out += _failures(rep)
    out.append('<section id="trials"><h2>Each trial</h2>')
    for t in sorted(rep.trials, key=lambda t: t.row.trial):
        out += _trial(t, spec.objective)
    out.append("</section>")
    out.append(f"<footer>Written by <code>farm sweep report {_e(sw.id)}</code> at "
               f"{_e(_when(rep.generated_at))}. GPU time: {_e(GPU_TIME_RULE)}</footer>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _summary(rep: SweepReport) -> list[str]:
    sw, spec = rep.sweep, rep.spec
    better = "higher" if spec.goal == "max" else "lower"
    counts = ", ".join(f"{n} {s}" for s, n in sorted(rep.counts.items()))
    wall = format_duration(rep.wall_seconds) + ("" if sw.ended_at else " so far")
    hosts = ", ".join(f"{_e(h)} {_e(fmt_hours(s))}" for h, s in sorted(rep.gpu_by_host.items()))
    attempts = sum(len(t.attempts) for t in rep.trials)
    top = rep.trials[0] if rep.trials and rep.trials[0].row.best is not None else None
    rows = [("objective", _e(f"{ctl.objective_label(spec.objective)} ({spec.objective}, "
                             f"{better} is better)")),
            ("trials", _e(f"{len(rep.trials)}: {counts or 'none'}")),
            ("submitted", _e(f"{_when(sw.created_at)} on {sw.host}")),
            ("ended", _e(_when(sw.ended_at) if sw.ended_at else "not yet")),
            ("wall time", f'<span class="wall-time">{_e(wall)}</span> '
                          '<span class="muted small">(submitted to closed)</span>'),
            ("GPU time", f'<span class="gpu-time">{_e(fmt_hours(rep.gpu_seconds))}</span> '
                         f"in {attempts} attempt(s)" + (f": {hosts}" if hosts else "")
                         + f'<br><span class="muted small">{_e(GPU_TIME_RULE)}</span>'),
            ("concurrency", _e(f"{spec.concurrency} trial(s) at a time"
                               + (f", budget {spec.budget.iterations} iterations"
                                  if spec.budget.iterations else "")))]
    if top is not None:
        rows.append(("best", _e(f"trial {top.row.trial} ({ctl.describe(top.row.params)}): "
                                f"{ctl.format_value(spec.objective, top.row.best)} at "
                                f"iteration {top.row.best_iteration}")))
    for warning in sw.warnings:
        rows.append(("warning", _e(warning)))
    return ['<section id="summary"><dl class="facts">']  + [
        f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows] + ["</dl></section>"]


def _leaderboard(rep: SweepReport) -> list[str]:
    objective = rep.spec.objective
    own = objective != "map50"  # the objective is not the mAP: both columns
    screens = any(t.screens_map is not None for t in rep.trials)
    head = ["rank", "trial", "state"] + ([ctl.objective_label(objective)] if own else []) \
        + ["best mAP@0.50"] + (["screens mAP@0.50"] if screens else []) \
        + ["iterations", "restarts", "trained with", "wall", "GPU", "parameters"]
    out = ['<section id="leaderboard"><h2>Leaderboard</h2><table class="leaderboard">',
           "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for t in rep.trials:
        r = t.row
        best = (f"{ctl.format_value(objective, r.best)} @{r.best_iteration}"
                if r.best is not None else "-")
        mapped = (f"{format_map(t.best_map[0])} @{t.best_map[1]}" if t.best_map else "-")
        restarts = f"{r.restarts}" + (f" ({r.divergences} diverged)" if r.divergences else "")
        its = f"{r.iterations}" + (f"/{t.max_batches}" if t.max_batches else "")
        cells = [f'<td class="num">{_e(r.rank or "-")}</td>',
                 f'<td><span class="swatch" style="background:{_e(trial_colour(t))}"></span>'
                 f'<a href="#trial-{r.trial}">#{r.trial}</a>'
                 f'<br><code class="small">{_e(r.run_id or "no run")}</code></td>',
                 f"<td>{_state(r.state)}</td>"]
        if own:
            cells.append(f'<td class="num">{_e(best)}</td>')
        cells.append(f'<td class="num best-map">{_e(mapped)}</td>')
        if screens:
            cells.append(f'<td class="num">{_e(format_map(t.screens_map))}</td>')
        cells += [f'<td class="num">{_e(its)}</td>', f'<td class="num">{_e(restarts)}</td>',
                  f'<td class="trained-with">{_e(t.trained_with or "-")}</td>',
                  f'<td class="num">{_e(format_duration(r.wall_time))}</td>',
                  f'<td class="num">{_e(format_duration(t.gpu_seconds))}</td>',
                  f"<td>{_e(ctl.describe(r.params))}"
                  + (f'<br><span class="reason small">{_e(r.note)}</span>'
                     if r.note and r.state in ("failed", "stopped", "stopping", "cancelled")
                     else "") + "</td>"]
        out.append(f'<tr class="trial-row" data-trial="{r.trial}" data-state="{_e(r.state)}">'
                   + "".join(cells) + "</tr>")
    out.append("</tbody></table></section>")
    return out


def _failures(rep: SweepReport) -> list[str]:
    bad = rep.failures
    out = ['<section id="failures"><h2>Failures</h2>']
    if not bad:
        return out + ['<p class="muted">Every trial completed without a restart.</p>'
                      "</section>"]
    out.append('<ul class="failures">')
    for t in bad:
        r = t.row
        words = [f'<a href="#trial-{r.trial}">trial {r.trial}</a> '
                 f"({_e(ctl.describe(r.params))}) {_state(r.state)}"]
        if r.note and r.state != "completed":
            words.append(f': <span class="reason">{_e(r.note)}</span>')
        sub = [f"<li>attempt {a.number} <span class=\"outcome-{_e(a.outcome)}\">"
               f"{_e(a.outcome)}</span>"
               + (f": {_e(a.message)}" if a.message else
                  f" at iteration {a.last_iteration}" if a.last_iteration is not None else "")
               + "</li>"
               for a in t.attempts if a.outcome not in ("completed", "running")]
        out.append(f'<li class="failure" data-trial="{r.trial}">' + "".join(words)
                   + (f"<ul>{''.join(sub)}</ul>" if sub else "") + "</li>")
    out.append("</ul></section>")
    return out


def _trial(t: TrialReport, objective: str) -> list[str]:
    r = t.row
    out = [f'<section class="trial-section" id="trial-{r.trial}" data-trial="{r.trial}" '
           f'data-state="{_e(r.state)}">',
           f'<h3><span class="swatch" style="background:{_e(trial_colour(t))}"></span>'
           f"Trial {r.trial} {_state(r.state)} "
           f'<span class="params">{_e(ctl.describe(r.params))}</span></h3>']
    facts = [("run", f"<code>{_e(r.run_id or 'none (never submitted)')}</code>")]
    if r.note and r.state == "completed":
        facts.append(("note", _e(r.note)))
    elif r.note:
        facts.append(("why", f'<span class="reason">{_e(r.note)}</span>'))
    if r.best is not None:
        facts.append((f"best {ctl.objective_label(objective)}",
                      _e(f"{ctl.format_value(objective, r.best)} at iteration "
                         f"{r.best_iteration}")))
    if t.best_map and objective != "map50":
        facts.append(("best mAP@0.50", _e(f"{format_map(t.best_map[0])} at iteration "
                                           f"{t.best_map[1]}")))
    if t.screens_map is not None:
        facts.append(("screens mAP@0.50", _e(format_map(t.screens_map))))
    if t.trained_with:
        facts.append(("trained with", _e(t.trained_with)))
    facts.append(("time", _e(f"wall {format_duration(r.wall_time)}, "
                             f"{fmt_hours(t.gpu_seconds)}")))
    out.append('<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>"
                                             for k, v in facts) + "</dl>")
    if t.attempts:
        out += _lineage(t)
    if t.evaluations:
        out += _evaluations(t)
    if t.chart_svg:
        out.append(f'<div class="chart lineage-chart">{t.chart_svg}</div>')
    out.append("</section>")
    return out


def _lineage(t: TrialReport) -> list[str]:
    out = ['<table class="lineage"><thead><tr><th>attempt</th><th>host</th><th>started</th>'
           '<th class="num">ran</th><th class="num">iterations</th><th>outcome</th>'
           "<th>why it started</th><th>what changed</th><th>trained with</th>"
           "<th>how it ended</th></tr></thead><tbody>"]
    for a in t.attempts:
        its = f"{a.start_iteration} → {a.last_iteration if a.last_iteration is not None else '-'}"
        changed = ", ".join(f"{k} {v[0]} → {v[1]}" for k, v in a.changes.items()) or "-"
        hyper = ", ".join(f"{k}={v}" for k, v in sorted(a.hyper.items())) or "-"
        bad = f" at {a.first_bad_iteration}" if a.first_bad_iteration is not None else ""
        out.append(
            f'<tr class="attempt" data-attempt="{a.number}" data-outcome="{_e(a.outcome)}">'
            f'<td class="num">{a.number}</td><td>{_e(a.host)}</td>'
            f"<td>{_e(_when(a.started_at))}</td>"
            f'<td class="num">{_e(format_duration(a.seconds))}</td>'
            f'<td class="num">{_e(its)}</td>'
            f'<td class="outcome-{_e(a.outcome)}">{_e(a.outcome + bad)}</td>'
            f"<td>{_e(a.reason or '-')}</td><td>{_e(changed)}</td>"
            f'<td class="small mono">{_e(hyper)}</td><td>{_e(a.message or "-")}</td></tr>')
    out.append("</tbody></table>")
    return out


def _evaluations(t: TrialReport) -> list[str]:
    out = ['<table class="evaluations"><thead><tr><th class="num">iteration</th>'
           '<th class="num">mAP@0.50</th><th class="num">P</th><th class="num">R</th>'
           '<th class="num">F1</th><th>evaluator</th></tr></thead><tbody>']
    best = t.best_map[1] if t.best_map else None
    for e in t.evaluations:
        mark = " (best)" if e.iteration == best else ""
        if e.error:
            out.append(f'<tr><td class="num">{_e(e.iteration)}</td>'
                       f'<td colspan="5" class="reason">failed: {_e(e.error)}</td></tr>')
            continue
        prf = "".join(f'<td class="num">{_e(_fraction(v))}</td>'
                      for v in (e.precision, e.recall, e.f1))
        out.append(f'<tr><td class="num">{_e(e.iteration)}</td>'
                   f'<td class="num">{_e(format_map(e.map or 0.0) + mark)}</td>{prf}'
                   f"<td>{_e(e.evaluator or '?')}</td></tr>")
    out.append("</tbody></table>")
    return out


def _fraction(value) -> str:
    return "-" if value is None else f"{float(value):.2f}"


def write(rep: SweepReport, path: str | os.PathLike) -> Path:
    """Write the report to `path` whole or not at all (a temporary file beside it, then
    renamed): a half-written report is never left where a person would open it."""
    out = Path(path)
    if not out.parent.is_dir():
        raise BadInput(f"the folder {out.parent} does not exist", path=str(out),
                       hint="create it, or give -o a file in an existing folder")
    text = render(rep)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BadInput(f"cannot write the report: {e.strerror or e}", path=str(out),
                       hint="give -o a file you may write") from None
    return out
