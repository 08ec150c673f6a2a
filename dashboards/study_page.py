"""The study page: summary, best-so-far PSNR, the active pins (with unpin), every trial, and the hold button
(its callback, with the held-study banner every page shows, is in `held.py`)."""

from __future__ import annotations

import time
from typing import Any

import dash
from dash import ALL, Input, Output, State, ctx, dcc, html

from steer import record
from steer.dashboards import components as C
from steer.dashboards import figures, held, ids, views
from steer.dashboards.polling import ask, digest, skip_when_database_busy
from steer.dashboards.studies import Studies


def layout(studies: Studies, study: str) -> html.Div:
    control = studies.control(study)
    return build(study, control.has_target(), control.held() is not None)  # the first poll fills it


def validation_layout() -> html.Div:
    return build("", True, False)


def build(study: str, images: bool, is_held: bool) -> html.Div:
    value = views.value_name(images)
    return html.Div([
        dcc.Store(id=ids.PAGE_CTX, data={"study": study, "images": images}),
        dcc.Store(id=ids.STUDY_SEEN, data={}),
        dcc.Interval(id=ids.STUDY_TICK, interval=C.POLL_MS),
        html.Div([html.H2(f"Study {study}"), html.Span(className="spacer"), held.button(ids.HOLD, is_held)],
                 className="page-head"),
        # The first screen says what to do: a new user does not know the table's numbers are links.
        html.P([html.B("Click a running trial's # to steer it"),
                ": pause it, change its learning rate, optimizer or loss, keep it from being pruned. "
                "The wall shows every running trial at once."], id=ids.STUDY_HINT, className="lead"),
        C.card(None, html.Div(id=ids.STUDY_SUMMARY, className="stats")),
        html.Div([
            C.card(f"Best {value.name} so far", dcc.Graph(
                id=ids.BEST_FIGURE, config={"displaylogo": False},
                figure=figures.best_so_far_figure(views.best_so_far([]), value)),
                   class_name="grow"),
            C.card("Pinned for later trials", html.Div(id=ids.PINS), html.Div(id=ids.STUDY_STATUS, className="muted"),
                   style={"flex": "0 1 380px"}),
        ], className="row"),
        C.card("Trials", html.Div(id=ids.TRIALS_TABLE, className="scroll")),
    ], className="page")


def summary(rows: list[dict[str, Any]], best: dict[str, list[Any]], value: views.ValueName = views.PSNR) -> list:
    stats = [html.Div([html.Div(shown, className="value"), html.Div(label, className="label")], className="stat")
             for label, shown in views.summary_stats(rows, best, value)]
    number = best.get("best_number")
    top = next((r for r in rows if r["number"] == number), None)
    if top is not None and top["steered"]:  # its params do not say what trained: say how to get it again
        stats.append(html.Div([html.B(f"The best trial, #{number}: "), record.how_to_get_again(rows, number)],
                              id=ids.BEST_NOTE, className="best-note"))
    return stats


def trials_table(rows: list[dict[str, Any]], study: str, best_number: int | None,
                 value: views.ValueName = views.PSNR) -> html.Table:
    head = html.Tr([html.Th(h) for h in ("#", "state", value.axis, "lr", "optimizer", "loss", "weight decay",
                                          "searched params", "steered", "pinned", "duration", "note")])
    body = []
    for r in reversed(rows):  # newest first: running trials are where the action is
        p = r["params"]
        steered = f"yes ({r['interventions']})" if r["steered"] else ""
        origin = ["baseline"] if r["baseline"] else []
        if r["promoted_from"] is not None:
            origin.append(f"promoted from #{r['promoted_from']}")
        if r["promoted_as"]:
            origin.append("promoted as " + ", ".join(f"#{n}" for n in r["promoted_as"]))
        if r.get("paused") is not None:
            origin.append(f"paused at step {r['paused']}")
        if r.get("kept"):
            origin.append("kept")
        body.append(html.Tr([
            html.Td(dcc.Link(f"#{r['number']}", href=C.href(f"/trial/{r['number']}", study))),
            html.Td(C.state_badge(r["state"])),
            html.Td(f"{r['psnr']:{value.spec}}" if r["psnr"] is not None else
                    html.Span(f"{r['live_psnr']:{value.spec}} now", className="muted") if r["live_psnr"] is not None else "",
                    className="num"),
            html.Td(views.fmt_param("lr", p.get("lr")), className="num"),
            html.Td(p.get("optimizer", "")), html.Td(p.get("loss", "")),
            html.Td(views.fmt(p.get("weight_decay")), className="num"),
            html.Td([html.Span(f"{k}={views.fmt_param(k, v)}", className="chip") for k, v in r["searched"].items()]),
            html.Td(steered),
            html.Td([html.Span(f"{k}={views.fmt_param(k, v)}", className="chip pin") for k, v in r["pinned"].items()]),
            html.Td("" if r["duration_s"] is None else f"{r['duration_s']:.0f} s", className="num"),
            html.Td("; ".join(filter(None, [*origin, r["note"]])), className="muted"),
        ], className="best" if r["number"] == best_number else ""))
    if not body:
        body = [html.Tr(html.Td("No trial yet: start a worker with `steer run SPEC`.", colSpan=12,
                                className="muted"))]
    return html.Table([html.Thead(head), html.Tbody(body)], className="data")


def pins_list(pins: list[dict[str, Any]]) -> list:
    if not pins:
        return [html.P("No pins. Pin a value from a trial's page: trials that start later use it.",
                       className="muted")]
    out = []
    for p in pins:
        source = f" from trial {p['source_trial']}" if p["source_trial"] is not None else ""
        out.append(html.Div([
            html.Span(f"{p['param']} = {p['shown']}", className="chip pin"),
            html.Span(f"by {p['by']}{source}", className="muted"),
            html.Button("unpin", id={"type": ids.UNPIN, "param": p["param"]}, className="btn", n_clicks=0),
        ], className="pin-row"))
    return out


def register(app: dash.Dash, studies: Studies) -> None:
    @app.callback(
        Output(ids.STUDY_SUMMARY, "children"), Output(ids.TRIALS_TABLE, "children"),
        Output(ids.BEST_FIGURE, "figure"), Output(ids.PINS, "children"), Output(ids.STUDY_SEEN, "data"),
        Input(ids.STUDY_TICK, "n_intervals"), State(ids.PAGE_CTX, "data"), State(ids.STUDY_SEEN, "data"),
    )
    @skip_when_database_busy
    def tick(_n: int, page: dict[str, Any], seen: dict[str, str]):
        control = studies.control(page["study"])
        study = studies.study(page["study"])
        trials = study.get_trials(deepcopy=False)
        live = {s.trial: views.latest_metric(control, s) for s in control.live_all()}
        rows = views.trial_rows(trials, now=time.time(), live=live)
        for r in rows:  # whole seconds, 3 digits of a value: running trials change the table about once a second
            if r["duration_s"] is not None:
                r["duration_s"] = round(r["duration_s"])
            if r["live_psnr"] is not None:
                r["live_psnr"] = float(f"{r['live_psnr']:.3g}")
        best = views.best_so_far(trials, study.direction)
        pins = views.pin_rows(control.pins())
        parts = {"summary": (rows, best), "table": rows, "best": best, "pins": pins}
        now = {key: digest(value) for key, value in parts.items()}
        changed = {key: now[key] != (seen or {}).get(key) for key in now}
        if not any(changed.values()):
            raise dash.exceptions.PreventUpdate
        nu = dash.no_update
        value = views.value_name(page.get("images", True))
        return (summary(rows, best, value) if changed["summary"] else nu,
                trials_table(rows, page["study"], best["best_number"], value) if changed["table"] else nu,
                figures.best_so_far_figure(best, value) if changed["best"] else nu,
                pins_list(pins) if changed["pins"] else nu,
                now)

    @app.callback(Output(ids.STUDY_STATUS, "children"),
                  Input({"type": ids.UNPIN, "param": ALL}, "n_clicks"), State(ids.PAGE_CTX, "data"),
                  prevent_initial_call=True)
    def unpin(_clicks: list[int | None], page: dict[str, Any]):
        if not ctx.triggered_id or not ctx.triggered[0]["value"]:
            raise dash.exceptions.PreventUpdate  # the buttons were (re)drawn, not clicked
        control = studies.control(page["study"])
        cmd = ask(control, "unpin", param=ctx.triggered_id["param"])
        return views.command_status(cmd)["what"] + ": " + views.command_status(cmd)["status"]

