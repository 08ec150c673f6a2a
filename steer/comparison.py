"""Comparing a steered study, in optuna-dashboard and in the terminal.

What steer knows about a study is written where optuna-dashboard reads it,
so the comparison needs no steer process running:

- artifacts: each finished trial's final prediction and the study's target
  image (`steer.artifacts`);
- notes: each steered trial's intervention timeline (written by the trial side);
- a study-level Plotly figure: PSNR by trial, steered vs not, promoted trials marked.

In the terminal (`steer show --compare`) it also pairs each fork with its parent at equal steps.

`comparison(study)` extracts the data; `comparison_figure` draws it.
"""

from __future__ import annotations

import statistics
from typing import Any

import optuna
from optuna.trial import TrialState

from steer import record

FIGURE_ID = "steer-comparison"


# ---- the comparison -------------------------------------------------------- #


def _summary(values: list[float], count: int) -> dict[str, Any]:
    return {"count": count, "completed": len(values), "best": max(values) if values else None,
            "median": statistics.median(values) if values else None}


def comparison(study: optuna.Study) -> dict[str, Any]:
    """Steered vs unsteered trials, and each promoted trial beside its origin."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    by_number = {t.number: t for t in trials}
    records = [record.read(t) for t in trials]
    rows = [{
        "number": r.number, "state": r.state, "psnr": r.value, "steered": r.steered,
        "promoted_from": r.promoted_from, "baseline": r.baseline, "interventions": len(r.interventions),
        "hinted": sorted(r.hinted),
    } for r in records]
    groups = {}
    for name, steered in (("steered", True), ("unsteered", False)):
        group = [r for r in rows if r["steered"] == steered]
        done = [r["psnr"] for r in group if r["state"] == TrialState.COMPLETE.name and r["psnr"] is not None]
        groups[name] = _summary(done, len(group))
    # A person's hints (steer.search_space): the trials drawn near one against the sampler's own draws.
    for name, hinted in (("hinted", True), ("not_hinted", False)):
        group = [r for r in rows if bool(r["hinted"]) == hinted and r["promoted_from"] is None and not r["baseline"]]
        done = [r["psnr"] for r in group if r["state"] == TrialState.COMPLETE.name and r["psnr"] is not None]
        groups[name] = _summary(done, len(group))
    promoted = []
    for r in rows:
        if r["promoted_from"] is None:
            continue
        origin = by_number.get(r["promoted_from"])
        promoted.append({"trial": r["number"], "psnr": r["psnr"], "state": r["state"],
                         "origin": r["promoted_from"], "origin_psnr": origin.value if origin else None,
                         "origin_state": origin.state.name if origin else None})
    return {"study": study.study_name, "trials": rows, **groups, "promoted": promoted, "held_up": held_up(rows),
            "forks": forks(trials, records)}


def forks(trials: list[optuna.trial.FrozenTrial], records: list[record.TrialRecord]) -> list[dict[str, Any]]:
    """Each finished fork beside its parent at equal steps (a fork continues its parent's step count):
    the PSNR of both at the last report step they share, and at how many shared steps the fork was ahead."""
    by_number = {t.number: t for t in trials}
    out = []
    for t, r in zip(trials, records):
        parent = by_number.get(r.fork_of) if r.fork_of is not None else None
        if parent is None:
            continue
        shared = sorted(set(t.intermediate_values) & set(parent.intermediate_values))
        last = shared[-1] if shared else None
        out.append({"trial": r.number, "parent": parent.number, "step": r.resume["step"],
                    "changes": r.resume.get("changes") or {}, "state": r.state, "shared_steps": len(shared),
                    "at_step": last, "psnr": t.intermediate_values[last] if last is not None else None,
                    "parent_psnr": parent.intermediate_values[last] if last is not None else None,
                    "ahead": sum(t.intermediate_values[s] > parent.intermediate_values[s] for s in shared)})
    return out


def _beats(value: float | None, others: list[float]) -> float | None:
    """The share of `others` that `value` beats (ties count half), or None."""
    if value is None or not others:
        return None
    return (sum(v < value for v in others) + 0.5 * sum(v == value for v in others)) / len(others)


def held_up(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Did steering help? Each finished steered trial beside its clean, promoted re-runs, both placed among
    the completed unsteered trials (the re-runs themselves excluded): did the person's idea hold up on
    its own, as a plain trial?"""
    complete = TrialState.COMPLETE.name
    unsteered = [r["psnr"] for r in rows if not r["steered"] and r["promoted_from"] is None
                 and r["state"] == complete and r["psnr"] is not None]
    out = []
    for r in rows:
        if not r["steered"]:
            continue
        clean = [{"trial": c["number"], "psnr": c["psnr"], "state": c["state"],
                  "beats_unsteered": _beats(c["psnr"] if c["state"] == complete else None, unsteered)}
                 for c in rows if c["promoted_from"] == r["number"]]
        out.append({"trial": r["number"], "psnr": r["psnr"], "state": r["state"], "changes": r["interventions"],
                    "beats_unsteered": _beats(r["psnr"] if r["state"] == complete else None, unsteered),
                    "unsteered": len(unsteered), "clean": clean})
    return out


def comparison_figure(data: dict[str, Any]):
    """PSNR by trial number: steered / unsteered colours, promoted trials as stars linked to their origin."""
    import plotly.graph_objects as go

    fig = go.Figure()
    rows = [r for r in data["trials"] if r["psnr"] is not None]
    for name, steered, colour in (("not steered", False, "#7f8c8d"), ("steered", True, "#e67e22")):
        group = [r for r in rows if r["steered"] == steered]
        fig.add_trace(go.Scatter(
            x=[r["number"] for r in group], y=[r["psnr"] for r in group], mode="markers", name=name,
            marker={"color": colour, "size": 10,
                    "symbol": ["star" if r["promoted_from"] is not None else
                               "diamond" if r["baseline"] else "circle" for r in group]},
            text=[f"trial {r['number']} ({r['state']})" + (f", promoted from {r['promoted_from']}"
                  if r["promoted_from"] is not None else "") + (", baseline" if r["baseline"] else "")
                  + (f", {r['interventions']} interventions" if r["interventions"] else "")
                  + (f", drawn near a hint ({', '.join(r['hinted'])})" if r.get("hinted") else "") for r in group],
            hovertemplate="%{text}<br>PSNR %{y:.2f} dB<extra></extra>",
        ))
    by_number = {r["number"]: r for r in rows}
    for p in data["promoted"]:
        origin, child = by_number.get(p["origin"]), by_number.get(p["trial"])
        if origin and child:
            fig.add_trace(go.Scatter(x=[origin["number"], child["number"]], y=[origin["psnr"], child["psnr"]],
                                     mode="lines", line={"dash": "dot", "color": "#2980b9"}, showlegend=False,
                                     hoverinfo="skip"))
    for f in data.get("forks", []):  # a fork beside its parent: a dashed line from the parent's marker
        parent, child = by_number.get(f["parent"]), by_number.get(f["trial"])
        if parent and child:
            fig.add_trace(go.Scatter(x=[parent["number"], child["number"]], y=[parent["psnr"], child["psnr"]],
                                     mode="lines", line={"dash": "dash", "color": "#27ae60"}, showlegend=False,
                                     hoverinfo="skip"))
    unsteered = data["unsteered"]
    if unsteered["median"] is not None:  # where a steered trial and its clean run stand among the plain ones
        fig.add_hline(y=unsteered["median"], line={"dash": "dash", "color": "#7f8c8d", "width": 1},
                      annotation_text="unsteered median", annotation_position="bottom right")
    fig.update_layout(title=f"{data['study']}: PSNR by trial (stars: promoted, diamond: baseline; "
                            f"dashed green: a fork from its parent)",
                      xaxis_title="trial", yaxis_title="PSNR (dB)", template="plotly_white")
    return fig


def save_comparison(study: optuna.Study) -> None:
    """Write (or replace) the study's comparison figure for optuna-dashboard."""
    from optuna_dashboard import save_plotly_graph_object

    save_plotly_graph_object(study, comparison_figure(comparison(study)), graph_object_id=FIGURE_ID)


def format_comparison(data: dict[str, Any]) -> str:
    """The comparison as plain text for `steer show --compare`."""
    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = [f"study {data['study']}: steered vs not steered (best and median over completed trials, dB)",
             f"{'':12}{'trials':>8}{'completed':>11}{'best':>9}{'median':>9}"]
    for name in ("steered", "unsteered"):
        g = data[name]
        lines.append(f"{name:12}{g['count']:>8}{g['completed']:>11}{num(g['best']):>9}{num(g['median']):>9}")
    if data.get("hinted", {}).get("count"):
        lines.append("hinted vs drawn by the sampler (trials a person's hint drew, against the others):")
        for name in ("hinted", "not_hinted"):
            g = data[name]
            lines.append(f"{name.replace('_', ' '):12}{g['count']:>8}{g['completed']:>11}{num(g['best']):>9}"
                         f"{num(g['median']):>9}")
    share = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
    if data["held_up"]:
        lines.append(f"did steering help? each steered trial and its clean re-runs, with the share of the "
                     f"{data['held_up'][0]['unsteered']} completed unsteered trials each beats:")
    for h in data["held_up"]:
        line = f"  trial {h['trial']} ({h['state']}, {num(h['psnr'])} dB, steered): beats {share(h['beats_unsteered'])}"
        done = [c for c in h["clean"] if c["state"] == TrialState.COMPLETE.name and c["psnr"] is not None]
        for c in h["clean"]:
            line += f"; clean run #{c['trial']} ({c['state']}, {num(c['psnr'])} dB): beats {share(c['beats_unsteered'])}"
        if done and h["psnr"] is not None:
            gap = max(c["psnr"] for c in done) - h["psnr"]
            line += (" -> held up on its own" if gap >= -0.5 else f" -> {-gap:.2f} dB short on its own")
        elif not h["clean"]:
            line += f"; no clean run yet (steer ctl promote --trial {h['trial']})"
        lines.append(line)
    if data.get("forks"):
        lines.append("forks beside their parents at equal steps (PSNR at the last report both made, dB):")
        for f in data["forks"]:
            what = record.fmt(f["changes"]) or "no change"
            if f["at_step"] is None:
                lines.append(f"  trial {f['trial']} ({f['state']}), fork of #{f['parent']} at step {f['step']} "
                             f"({what}): no report shared with its parent")
                continue
            gap = f["psnr"] - f["parent_psnr"]
            lines.append(f"  trial {f['trial']} ({f['state']}), fork of #{f['parent']} at step {f['step']} ({what}): "
                         f"{num(f['psnr'])} vs {num(f['parent_psnr'])} at step {f['at_step']} ({gap:+.2f}); ahead at "
                         f"{f['ahead']} of {f['shared_steps']} shared reports")
    if data["promoted"]:
        lines.append("promoted trials:")
        for p in data["promoted"]:
            lines.append(f"  trial {p['trial']} ({p['state']}, {num(p['psnr'])} dB) from trial {p['origin']} "
                         f"({p['origin_state']}, {num(p['origin_psnr'])} dB)")
    else:
        lines.append("no promoted trials")
    return "\n".join(lines)
