"""The board's sweeps: a list of them, and a page per sweep with its trials overlaid
(farm.plot.overlay) beside a page of its leaderboard.

A sweep may hold 10 000 trials: the list shows each sweep's counts from three hash
lengths, and a sweep's page reads only the trials something happened to plus one page
of plans (farm.sweeps.service.standings), never the whole sweep.
"""
from __future__ import annotations

from farm.plot import axes, overlay
from farm.store import Store
from farm.sweeps import controller as ctl
from farm.sweeps.model import Sweep
from farm.sweeps.service import standings, trial_counts
from farm.sweeps.spec import JOINT

LIST_LIMIT = 20      #: sweeps in the list (newest first)
PER_PAGE = 25        #: leaderboard rows (and overlaid trials) per page
MAX_PER_PAGE = 200   #: the most rows a page may ask for


def find(store: Store, sweep_id: str) -> Sweep:
    return store.sweeps.find(sweep_id)


def sweeps_payload(store: Store, limit: int = LIST_LIMIT) -> list[dict]:
    """The newest sweeps: what each is, its state, and how many trials were submitted."""
    sweeps = store.sweeps
    recent = sweeps.recent(limit)
    sizes = sweeps.sizes([sw.id for sw in recent])
    return [{"id": sw.id, "name": sw.name or sw.id, "state": sw.state.value,
             "objective": sw.spec.get("objective"), "created_at": sw.created_at,
             "ended_at": sw.ended_at, "message": sw.message, "warnings": sw.warnings,
             "trials": sizes[sw.id][0], "submitted": sizes[sw.id][1]} for sw in recent]


def sweep_payload(store: Store, sweep_id: str, page: int = 1, per: int = PER_PAGE) -> dict:
    """Counts by state, one page of the leaderboard (each row with the settings its
    best weights were really trained with), and that page's trials overlaid as SVG."""
    st = standings(store, sweep_id, page, per)
    colours: dict[int, str] = {}
    curves = []
    rows = []
    screens = st.spec.objective == "screens_map50"  # then the mAP it ranks on is drawn
    for r in st.rows:
        seen = st.observed.get(r.trial)
        effective = effective_params(r)
        maps = (seen.screens if screens else seen.maps) if seen else ()
        if seen and (seen.loss or maps):
            colours[r.trial] = axes.trial_colour(len(curves))
            curves.append(overlay.Curve(key=r.trial, label=trial_label(r.trial, r.params,
                                                                       effective),
                                        about=_about(r, effective, st.spec.objective),
                                        loss=list(seen.loss), maps=list(maps),
                                        colour=colours[r.trial]))
        rows.append({**r.to_dict(), "effective": effective, "colour": colours.get(r.trial)})
    drawing = overlay.build(curves, max_batches=st.spec.budget.iterations or 0,
                            map_label=ctl.overlay_map_label(st.spec.objective))
    sw = st.sweep
    return {"sweep": {"id": sw.id, "name": sw.name or sw.id, "state": sw.state.value,
                      "message": sw.message, "warnings": sw.warnings,
                      "created_at": sw.created_at, "ended_at": sw.ended_at},
            "objective": st.spec.objective, "goal": st.spec.goal,
            "concurrency": st.spec.concurrency, "total": st.total, "counts": st.counts,
            "ranked": st.ranked, "page": st.page, "per": st.per, "pages": st.pages,
            "rows": rows, "svg": overlay.draw(drawing).to_svg(), "overlay": drawing.summary()}


def effective_params(row: ctl.Row) -> dict[str, str]:
    """The parameters whose value the trial's best weights were trained with differs
    from the spec's (restarts lower the learning rate), from farm.runs.effective: name
    -> what it really was."""
    changed = (row.settings or {}).get("changed") or {}
    out = {}
    for name in row.params:
        keys = JOINT.get(name, (name,))
        if any(k in changed for k in keys):
            out[name] = "/".join(str(changed[k][1]) if k in changed else
                                 str((row.settings or {}).get("effective", {}).get(k, "?"))
                                 for k in keys)
    return out


def trial_label(trial: int, params: dict[str, str], effective: dict[str, str]) -> str:
    words = [f"{k}={ctl.describe({k: v})[len(k) + 1:]}"
             + (f"→{effective[k]}" if k in effective else "") for k, v in params.items()]
    return f"#{trial} " + " ".join(words)


def _about(r: ctl.Row, effective: dict[str, str], objective: str) -> str:
    lines = [f"trial {r.trial} ({r.run_id or 'no run yet'}): {r.state}",
             "asked: " + ctl.describe(r.params)]
    if effective:
        lines.append("trained with: " + (r.settings or {}).get("text", ""))
    if r.best is not None:
        lines.append(f"best {ctl.objective_label(objective)} "
                     f"{ctl.format_value(objective, r.best)} at {r.best_iteration}")
    if r.note:
        lines.append(r.note)
    return "\n".join(lines)


def active_trial_counts(store: Store) -> dict[str, dict[str, int]]:
    """Trials by state of every sweep that still has work (Prometheus)."""
    return {sweep_id: trial_counts(store, sweep_id)[1]
            for sweep_id in store.sweeps.active_ids()}
