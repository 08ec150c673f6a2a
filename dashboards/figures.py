"""Plotly figures from the plain data of `views.py`, and the patches that extend them while polling."""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import plotly.graph_objects as go
from dash import Patch

from steer.dashboards.views import PSNR, ValueName

LOSS_COLOR, PSNR_COLOR, MARK_COLOR = "#2563eb", "#16a34a", "#d97706"
LAYOUT = dict(template="plotly_white", margin=dict(l=55, r=55, t=30, b=40), height=320,
              legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0), hovermode="closest")


def trial_tick(last: int) -> int:
    """The step between trial-number ticks up to trial `last`: whole trials (Plotly's own pick put
    ticks at trial 0.5 and 1.5 when there were three), 1, 2 or 5 times a power of ten, at most 11 ticks."""
    for power in itertools.count():
        for mantissa in (1, 2, 5):
            if mantissa * 10**power * 10 >= last:
                return mantissa * 10**power
    raise AssertionError("unreachable")


def best_so_far_figure(data: dict[str, list[Any]], value: ValueName = PSNR) -> go.Figure:
    """Every completed trial's PSNR (or value; steered ones marked) and the best-so-far line."""
    steered = data["steered"]
    fig = go.Figure()
    fig.add_scatter(x=data["number"], y=data["best"], mode="lines", name="best so far", line_shape="hv",
                    line=dict(color=PSNR_COLOR, width=2), hovertemplate="best so far after trial %{x}: "
                    f"%{{y:{value.spec}}}{value.unit}<extra></extra>")
    for flag, name, symbol, color in ((False, "trial", "circle", "#64748b"), (True, "steered trial", "diamond",
                                                                            MARK_COLOR)):
        xs = [n for n, s in zip(data["number"], steered) if s == flag]
        ys = [v for v, s in zip(data["value"], steered) if s == flag]
        fig.add_scatter(x=xs, y=ys, mode="markers", name=name, marker=dict(symbol=symbol, size=8, color=color),
                        hovertemplate=f"trial %{{x}}: %{{y:{value.spec}}}{value.unit}<extra></extra>")
    fig.update_layout(**LAYOUT, uirevision="best", yaxis_title=value.axis,
                      xaxis=dict(title="trial", tick0=0, dtick=trial_tick(max(data["number"], default=0))))
    if not data["number"]:
        fig.add_annotation(text="no completed trial yet", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5, font=dict(color="#6b7280"))
    return fig


def _marker_trace(markers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return dict(x=[m["step"] for m in markers], y=[1.0] * len(markers),
                customdata=[[m["action"], m["change"], m["by"]] for m in markers])


def _marker_lines(markers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(type="line", x0=m["step"], x1=m["step"], xref="x", y0=0, y1=1, yref="paper",
                 line=dict(color=MARK_COLOR, width=1, dash="dot")) for m in markers]


# The trial's relatives (a fork's parent, its forks): one colour each, dashed, after the trial's own three
# traces (loss, value, markers), a pair each: value then loss (`relative_traces`).
PARENT_COLOR = "#64748b"
FORK_COLORS = ("#7c3aed", "#db2777", "#0891b2", "#ca8a04", "#0f766e", "#9333ea")
OWN_TRACES = 3


def relative_traces(member: dict[str, Any], k: int, points: dict[str, list[Any]] | None,
                    value_label: str = "PSNR (dB)") -> list[dict[str, Any]]:
    """The `k`-th relative's curves (`views.relatives`): its value on the right axis, dashed, named in the
    legend, and its loss on the left, dotted and fainter; one legend entry toggles both."""
    points = points or {"step": [], "loss": [], "psnr": []}
    color = PARENT_COLOR if member.get("role") == "parent" else FORK_COLORS[k % len(FORK_COLORS)]
    group = f"trial-{member['trial']}"
    unit = " dB" if value_label.startswith("PSNR") else ""
    return [
        dict(type="scatter", x=list(points["step"]), y=list(points["psnr"]), name=member["name"], mode="lines",
             yaxis="y2", legendgroup=group, connectgaps=True, line=dict(color=color, dash="dash", width=1.6),
             hovertemplate=f"trial {member['trial']}, step %{{x}}: %{{y:.2f}}{unit}<extra></extra>"),
        dict(type="scatter", x=list(points["step"]), y=list(points["loss"]), name=f"{member['name']}: loss",
             mode="lines", legendgroup=group, showlegend=False, opacity=0.55,
             line=dict(color=color, dash="dot", width=1),
             hovertemplate=f"trial {member['trial']}, step %{{x}}: loss %{{y:.3g}}<extra></extra>"),
    ]


def curves_figure(points: dict[str, list[Any]], markers: Sequence[dict[str, Any]],
                  value_label: str = "PSNR (dB)",
                  relatives: Sequence[tuple[dict[str, Any], dict[str, list[Any]]]] = ()) -> go.Figure:
    """Training loss (log axis, left) and PSNR (right) vs step; a dotted line and a hover marker per intervention;
    the curves of the trial's relatives (`relatives`: (member, points) pairs), dashed."""
    fig = go.Figure()
    fig.add_scatter(x=points["step"], y=points["loss"], name="loss", mode="lines", line=dict(color=LOSS_COLOR),
                    hovertemplate="step %{x}: loss %{y:.3g}<extra></extra>")
    fig.add_scatter(x=points["step"], y=points["psnr"], name=value_label, mode="lines", yaxis="y2",
                    line=dict(color=PSNR_COLOR), connectgaps=True,
                    hovertemplate="step %{x}: %{y:.2f} dB<extra></extra>")
    fig.add_scatter(**_marker_trace(markers), name="intervention", mode="markers", yaxis="y3",
                    marker=dict(symbol="triangle-down", size=12, color=MARK_COLOR),
                    hovertemplate="step %{x}<br>%{customdata[0]}: %{customdata[1]}<br>by %{customdata[2]}"
                                  "<extra></extra>")
    fig.update_layout(
        **LAYOUT, uirevision="curves", shapes=_marker_lines(markers),
        xaxis=dict(title="step"),
        yaxis=dict(title="loss", type="log", dtick="D2", color=LOSS_COLOR),
        yaxis2=dict(title=value_label, type="linear", tickmode="auto", overlaying="y", side="right", color=PSNR_COLOR,
                    showgrid=False),
        yaxis3=dict(type="linear", overlaying="y", range=[0, 1.04], visible=False, fixedrange=True),
    )
    for k, (member, member_points) in enumerate(relatives):
        for trace in relative_traces(member, k, member_points, value_label):
            fig.add_trace(go.Scatter(**{key: v for key, v in trace.items() if key != "type"}))
    return fig


def curves_patch(new_points: dict[str, list[Any]] | None, markers: Sequence[dict[str, Any]] | None,
                 relatives: dict[int, dict[str, list[Any]]] | None = None,
                 joined: Sequence[tuple[dict[str, Any], dict[str, list[Any]]]] = (), shown: int = 0,
                 value_label: str = "PSNR (dB)") -> Patch:
    """Extend the curves with new metric rows and/or replace the intervention markers, without resending the rest.

    `relatives`: the k-th relative shown -> its new rows; `joined`: relatives new to the figure, (member,
    points), appended after the `shown` ones already there."""
    patch = Patch()
    if new_points:
        for i, key in ((0, "loss"), (1, "psnr")):
            patch["data"][i]["x"].extend(new_points["step"])
            patch["data"][i]["y"].extend(new_points[key])
    if markers is not None:
        for key, value in _marker_trace(markers).items():
            patch["data"][2][key] = value
        patch["layout"]["shapes"] = _marker_lines(markers)
    for k, rows in (relatives or {}).items():
        value_trace = OWN_TRACES + 2 * k
        for i, key in ((value_trace, "psnr"), (value_trace + 1, "loss")):
            patch["data"][i]["x"].extend(rows["step"])
            patch["data"][i]["y"].extend(rows[key])
    for k, (member, member_points) in enumerate(joined, start=shown):
        for trace in relative_traces(member, k, member_points, value_label):
            patch["data"].append(trace)
    return patch


def lr_range_figure(test: dict[str, Any] | None) -> go.Figure:
    """An LR range test (`views.find_lr`'s `test`): the smoothed loss against the LR on a log axis, the
    suggested LR as a dashed line with a marker on the curve, and the LR the trial had then, dotted."""
    fig = go.Figure()
    test = test or {"lrs": [], "losses": [], "suggestion": None, "suggested_loss": None, "lr_then": None}
    fig.add_scatter(x=test["lrs"], y=test["losses"], name="smoothed loss", mode="lines",
                    line=dict(color=LOSS_COLOR, width=2), hovertemplate="lr %{x:.3g}: loss %{y:.3g}<extra></extra>")
    shapes = []
    if test["suggestion"]:
        shapes.append(dict(type="line", x0=test["suggestion"], x1=test["suggestion"], xref="x", y0=0, y1=1,
                           yref="paper", line=dict(color=MARK_COLOR, width=2, dash="dash")))
        fig.add_scatter(x=[test["suggestion"]], y=[test["suggested_loss"]], name="suggested", mode="markers",
                        marker=dict(symbol="circle", size=11, color=MARK_COLOR, line=dict(color="#fff", width=1)),
                        hovertemplate="suggested lr %{x:.3g}<extra></extra>")
    if test["lr_then"]:
        shapes.append(dict(type="line", x0=test["lr_then"], x1=test["lr_then"], xref="x", y0=0, y1=1, yref="paper",
                           line=dict(color="#64748b", width=1, dash="dot")))
        fig.add_scatter(x=[test["lr_then"]], y=[None], name="the trial's LR then", mode="lines",
                        line=dict(color="#64748b", width=1, dash="dot"), hoverinfo="skip")
    fig.update_layout(**{**LAYOUT, "height": 280}, uirevision=str(test.get("command")), shapes=shapes,
                      xaxis=dict(title="learning rate", type="log", dtick=1, exponentformat="power"),
                      yaxis=dict(title="smoothed loss", type="log", dtick="D2", color=LOSS_COLOR))
    return fig
