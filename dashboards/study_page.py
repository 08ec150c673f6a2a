"""The study page: summary, best-so-far PSNR, the active pins (with unpin), the hints and the search space
later trials draw from (with their forms and history), every trial, and the hold button (its callback, with
the held-study banner every page shows, is in `held.py`)."""

from __future__ import annotations

import time
from typing import Any

import dash
from dash import ALL, Input, Output, State, ctx, dcc, html

from steer import actions, record
from steer.actions import ACTIONS, HINT_DEFAULTS
from steer.dashboards import components as C
from steer.dashboards import figures, held, ids, views
from steer.dashboards.polling import ask, digest, skip_when_database_busy
from steer.dashboards.studies import Studies

# button -> action: the hint form's button, each hint's unhint button (a pattern id of that type), the space
# form's two buttons
BUTTONS = {ids.HINT_SEND: "hint", ids.UNHINT: "unhint", ids.SPACE_APPLY: "space", ids.SPACE_RESET: "space"}
HINT_EXPLAINED = ("Later trials draw the parameter near the value with a probability that starts at the strength "
                  "and falls to 0 over the trials; otherwise the sampler draws it. A pin wins over a hint.")


def layout(studies: Studies, study: str) -> html.Div:
    control = studies.control(study)
    return build(study, control.has_target(), control.held() is not None,
                 list(control.space()))  # the first poll fills it


def validation_layout() -> html.Div:
    return build("", True, False, [])


def build(study: str, images: bool, is_held: bool, searched: list[str]) -> html.Div:
    value = views.value_name(images)
    return html.Div([
        dcc.Store(id=ids.PAGE_CTX, data={"study": study, "images": images}),
        dcc.Store(id=ids.STUDY_SEEN, data={}),
        dcc.Store(id=ids.SPACE_SEEN, data={}),
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
        html.Div([
            C.card("Hints for later trials", html.P(HINT_EXPLAINED, className="muted explain"),
                   html.Div(id=ids.HINTS), hint_form(searched), html.Div(id=ids.HINT_STATUS, className="form-status"),
                   class_name="grow"),
            C.card("Search space of later trials", html.Div(id=ids.SPACE), space_form(searched),
                   html.Div(id=ids.SPACE_STATUS, className="form-status"), class_name="grow"),
        ], className="row"),
        C.card("Hints and space edits, newest first", html.Ul(id=ids.SPACE_HISTORY, className="status-list")),
    ], className="page")


def summary(rows: list[dict[str, Any]], best: dict[str, list[Any]], value: views.ValueName = views.PSNR) -> list:
    stats = [html.Div([html.Div(shown, className="value"), html.Div(label, className="label")], className="stat")
             for label, shown in views.summary_stats(rows, best, value)]
    number = best.get("best_number")
    top = next((r for r in rows if r["number"] == number), None)
    if top is not None and top["steered"]:  # the sampler does not learn from it: say how to get it again
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
        steered = (f"yes ({r['interventions']})" if r["steered"] else  # else a promoted, forked or retried run
                   f"replays {len(r['changes'])} change{'s' * (len(r['changes']) > 1)}" if r["changes"] else "")
        origin = ["baseline"] if r["baseline"] else []
        if r["promoted_from"] is not None:
            origin.append(f"promoted from #{r['promoted_from']}")
        if r["promoted_as"]:
            origin.append("promoted as " + ", ".join(f"#{n}" for n in r["promoted_as"]))
        if r.get("paused") is not None:
            origin.append(f"paused at step {r['paused']}")
        if r.get("kept"):
            origin.append("kept")
        if r.get("hinted"):
            origin.append("hinted " + ", ".join(r["hinted"]))  # drawn near a person's hint
        origin = [*family_words(r, study), *origin]  # where it came from first: fork of #N, retry of #N
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
            html.Td(joined([*origin, r["note"]]), className="muted"),
        ], className="best" if r["number"] == best_number else ""))
    if not body:
        body = [html.Tr(html.Td("No trial yet: start a worker with `steer run SPEC`.", colSpan=12,
                                className="muted"))]
    return html.Table([html.Thead(head), html.Tbody(body)], className="data")


def family_words(r: dict[str, Any], study: str) -> list:
    """A row's family in the note column, trials as links: "fork of #0 at step 1425", "forks: #5, #7", "retry of
    #3 from step 1200" (its worker died), "retried as #8"."""
    def links(numbers: list[int]) -> list:
        out: list = []
        for n in numbers:
            out += [", " if out else "", dcc.Link(f"#{n}", href=C.href(f"/trial/{n}", study))]
        return out

    words = []
    if r.get("fork_of") is not None:
        words.append(html.Span(["fork of ", *links([r["fork_of"]]), f" at step {r.get('resumed_at')}"]))
    if r.get("retry_of") is not None:
        words.append(html.Span(["retry of ", *links([r["retry_of"]]), f" from step {r.get('resumed_at')}"],
                               title="its worker died; this trial carried it on from its last checkpoint"))
    if r.get("forks"):
        words.append(html.Span(["forks: ", *links(r["forks"])]))
    if r.get("retried_as"):
        words.append(html.Span(["retried as ", *links(r["retried_as"])]))
    return words


def joined(parts: list) -> list:
    """The note column's parts (text or components), "; " between them, empty ones left out."""
    out: list = []
    for part in filter(None, parts):
        out += ["; " if out else "", part]
    return out


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


def field(label: str, component: Any, width: str | None = None) -> html.Label:
    """One labelled box of a form."""
    return html.Label([html.Span(label), component], className="form-field", style={"flex": f"0 1 {width}"}
                      if width else None)


def param_options(searched: list[str]) -> list[dict[str, str]]:
    return [{"label": p, "value": p} for p in searched]


def hint_form(searched: list[str]) -> html.Div:
    return html.Div([
        field("parameter", dcc.Dropdown(id=ids.HINT_PARAM, options=param_options(searched),
                                        value=searched[0] if searched else None, clearable=False,
                                        searchable=False), "150px"),
        field("value", dcc.Input(id=ids.HINT_VALUE, type="text", placeholder="e.g. 1e-3"), "170px"),
        field("strength", dcc.Input(id=ids.HINT_STRENGTH, type="text", value=f"{HINT_DEFAULTS['strength']:g}"),
              "80px"),
        field("trials", dcc.Input(id=ids.HINT_TRIALS, type="text", value=str(HINT_DEFAULTS["trials"])), "70px"),
        html.Button(ACTIONS["hint"].label, id=ids.HINT_SEND, n_clicks=0, className="btn primary",
                    title=ACTIONS["hint"].help),
    ], className="form-row")


def space_form(searched: list[str]) -> html.Div:
    return html.Div([
        field("parameter", dcc.Dropdown(id=ids.SPACE_PARAM, options=param_options(searched),
                                        value=searched[0] if searched else None, clearable=False,
                                        searchable=False), "130px"),
        field("low", dcc.Input(id=ids.SPACE_LOW, type="text"), "82px"),
        field("high", dcc.Input(id=ids.SPACE_HIGH, type="text"), "82px"),
        field("or choices", dcc.Input(id=ids.SPACE_CHOICES, type="text", placeholder="a,b (categorical)"), "130px"),
        html.Button("apply", id=ids.SPACE_APPLY, n_clicks=0, className="btn primary", title=ACTIONS["space"].help),
        html.Button("reset to spec", id=ids.SPACE_RESET, n_clicks=0, className="btn",
                    title="later trials draw this parameter from the spec's range again"),
    ], className="form-row")


def hints_list(hints: list[dict[str, Any]]) -> list:
    if not hints:
        return [html.P("No hints. Give one below: a soft pin for the next few trials.", className="muted")]
    return [html.Div([
        html.Span(h["shown"], className="chip hint"),
        html.Span(f"{h['left_words']} · by {h['by']}", className="muted"),
        html.Button(ACTIONS["unhint"].label, id={"type": ids.UNHINT, "param": h["param"]}, className="btn",
                    n_clicks=0, title=ACTIONS["unhint"].help),
    ], className="pin-row") for h in hints]


def space_list(rows: list[dict[str, Any]]) -> list:
    if not rows:
        return [html.P("No searched parameter yet: the space shows once `steer run` records its spec (or a trial "
                       "draws a parameter).", className="muted")]
    out = []
    for r in rows:
        words: list = [html.B(r["param"]), f" {r['now']}"]
        if r["spec"] is not None:
            words += [html.Span(f" (spec: {r['spec']})", className="muted"),
                      html.Span(f" · edited by {r['by']}", className="note-edited")]
        out.append(html.Div(words, className="space-row" + (" edited" if r["spec"] is not None else "")))
    return out


def history_list(rows: list[dict[str, Any]]) -> list:
    if not rows:
        return [html.Li("No hint or space edit yet.", className="muted")]
    return [html.Li([
        C.badge(r["state"], C.COMMAND_COLORS.get(r["state"], "#6b7280")), " ",
        html.Span(views.clock(r["at"]), className="muted"), f" {r['by']}: ", html.B(r["what"]),
        *([f" · {r['change']}"] if r["change"] else []),
    ], className=f"cmd-{r['state']}") for r in rows]


def command_line(cmd: Any) -> html.Span:
    """What became of a hint, unhint or space request this browser just made, as the history says it: what
    changed, or the rejection in the server's words (in red)."""
    if cmd.state != "applied":
        return html.Span(f"{cmd.state}: {cmd.reason}" if cmd.reason else cmd.state, className="field-error")
    row = views.space_history([cmd], limit=None)[0]
    return html.Span(f"{row['what']}: applied · {row['change']}", className="muted")


def given(text: str | None) -> str | None:
    """A form's box: its text, or None when it is left empty (a hint's strength and trials then default)."""
    return text.strip() if isinstance(text, str) and text.strip() else None


def searched_dimension(studies: Studies, study: str, param: str | None) -> Any:
    """The dimension later trials draw `param` from (None: not a searched parameter)."""
    return studies.control(study).space().get(param) if isinstance(param, str) else None


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

    @app.callback(
        Output(ids.HINTS, "children"), Output(ids.SPACE, "children"), Output(ids.SPACE_HISTORY, "children"),
        Output(ids.HINT_PARAM, "options"), Output(ids.SPACE_PARAM, "options"), Output(ids.SPACE_SEEN, "data"),
        Input(ids.STUDY_TICK, "n_intervals"), State(ids.PAGE_CTX, "data"), State(ids.SPACE_SEEN, "data"),
    )
    @skip_when_database_busy
    def guidance(_n: int, page: dict[str, Any], seen: dict[str, str]):
        """The same tick, for what a person set for later trials: the hints (how many trials each has left),
        the space later trials draw from, and the history of both."""
        control = studies.control(page["study"])
        spec, edits = control.spec_space(), control.space_edits()
        space = control.space(spec, edits)
        n_trials = control.storage.get_n_trials(control.study_id)  # the next trial's number
        parts = {"hints": views.hint_rows(control.hints(), n_trials),
                 "space": views.space_rows(spec, space, edits),
                 "history": views.space_history(control.commands(actions=actions.SPACE_ACTIONS)), "params": list(space)}
        now = {key: digest(value) for key, value in parts.items()}
        changed = {key: now[key] != (seen or {}).get(key) for key in now}
        if not any(changed.values()):
            raise dash.exceptions.PreventUpdate
        nu = dash.no_update
        options = param_options(parts["params"]) if changed["params"] else nu
        return (hints_list(parts["hints"]) if changed["hints"] else nu,
                space_list(parts["space"]) if changed["space"] else nu,
                history_list(parts["history"]) if changed["history"] else nu,
                options, options, now)

    @app.callback(Output(ids.STUDY_STATUS, "children"),
                  Input({"type": ids.UNPIN, "param": ALL}, "n_clicks"), State(ids.PAGE_CTX, "data"),
                  prevent_initial_call=True)
    def unpin(_clicks: list[int | None], page: dict[str, Any]):
        if not ctx.triggered_id or not ctx.triggered[0]["value"]:
            raise dash.exceptions.PreventUpdate  # the buttons were (re)drawn, not clicked
        control = studies.control(page["study"])
        cmd = ask(control, "unpin", param=ctx.triggered_id["param"])
        return views.command_status(cmd)["what"] + ": " + views.command_status(cmd)["status"]

    @app.callback(Output(ids.HINT_STATUS, "children"), Output(ids.HINT_VALUE, "placeholder"),
                  Output(ids.HINT_VALUE, "value"),
                  Input(ids.HINT_SEND, "n_clicks"), Input({"type": ids.UNHINT, "param": ALL}, "n_clicks"),
                  Input(ids.HINT_PARAM, "value"),
                  State(ids.HINT_VALUE, "value"), State(ids.HINT_STRENGTH, "value"), State(ids.HINT_TRIALS, "value"),
                  State(ids.PAGE_CTX, "data"))
    def hint(_send: int | None, _unhint: list[int | None], param: str | None, value: str | None,
             strength: str | None, trials: str | None, page: dict[str, Any]):
        """The hint form's button, an unhint button, or a parameter picked (the value box empties and says
        what it takes)."""
        trigger, nu = ctx.triggered_id, dash.no_update
        fired = ctx.triggered[0]["value"] if ctx.triggered else None
        if trigger is None or trigger == ids.HINT_PARAM:  # drawn, or a parameter picked
            placeholder = views.dimension_hint(searched_dimension(studies, page["study"], param)) or "value"
            return nu, placeholder, "" if trigger == ids.HINT_PARAM else nu
        if not fired:
            raise dash.exceptions.PreventUpdate  # the unhint buttons were (re)drawn, not clicked
        control = studies.control(page["study"])
        if isinstance(trigger, dict):
            cmd = ask(control, "unhint", param=trigger["param"])
        else:
            cmd = ask(control, "hint", param=param, value=given(value),
                      options={"strength": given(strength), "trials": given(trials)})
        return command_line(cmd), nu, nu

    @app.callback(Output(ids.SPACE_STATUS, "children"), Output(ids.SPACE_LOW, "placeholder"),
                  Output(ids.SPACE_HIGH, "placeholder"), Output(ids.SPACE_CHOICES, "placeholder"),
                  Output(ids.SPACE_LOW, "value"), Output(ids.SPACE_HIGH, "value"), Output(ids.SPACE_CHOICES, "value"),
                  Input(ids.SPACE_APPLY, "n_clicks"), Input(ids.SPACE_RESET, "n_clicks"),
                  Input(ids.SPACE_PARAM, "value"),
                  State(ids.SPACE_LOW, "value"), State(ids.SPACE_HIGH, "value"), State(ids.SPACE_CHOICES, "value"),
                  State(ids.PAGE_CTX, "data"))
    def edit_space(_apply: int | None, _reset: int | None, param: str | None, low: str | None, high: str | None,
                   choices: str | None, page: dict[str, Any]):
        """Apply or reset the space form's parameter. The boxes' placeholders show the range it is drawn from
        now (after an edit too); a parameter picked empties them."""
        trigger, nu = ctx.triggered_id, dash.no_update
        status: Any = nu
        if trigger in (ids.SPACE_APPLY, ids.SPACE_RESET):
            if not ctx.triggered[0]["value"]:
                raise dash.exceptions.PreventUpdate
            options = {"reset": True} if trigger == ids.SPACE_RESET else \
                {"low": given(low), "high": given(high), "choices": given(choices)}
            cmd = ask(studies.control(page["study"]), "space", param=param, options=options)
            status = command_line(cmd)
        emptied = ("", "", "") if trigger == ids.SPACE_PARAM else (nu, nu, nu)
        dim = searched_dimension(studies, page["study"], param)
        if dim is None:
            return status, "low", "high", "a,b (categorical)", *emptied
        if dim.kind == "categorical":
            return status, "n/a", "n/a", ",".join(map(str, dim.choices)), *emptied
        return status, f"{dim.low:g}", f"{dim.high:g}", "n/a", *emptied
