"""The trial page: target and live prediction, loss and PSNR curves, the steering controls, the log.

Two callbacks. `tick` polls the control plane (about 2 Hz) and sends only what
changed: the image URL when a new preview exists, new metric rows as a patch
that extends the curves, the requests and interventions when they changed.
`send` turns a control the person touched into one `Control.request`, and
keeps the command's id in the browser (`MY_COMMANDS`), where the requests list
marks it.

The controls show the value last set by hand (by anyone: another browser, the
CLI). When `tick` moves a control to such a value, `send` fires too, sees the
value it already knows (`KNOWN`) and asks for nothing.
"""

from __future__ import annotations

import time
from typing import Any

import dash
from dash import ALL, Input, Output, State, ctx, dcc, html
from optuna.trial import TrialState

from steer import record
from steer.actions import PINNABLE, SETTING_ACTIONS
from steer.dashboards import components as C
from steer.dashboards import figures, ids, views
from steer.dashboards.polling import digest, requester, skip_when_database_busy
from steer.dashboards.studies import Studies
from steer.spec import DEFAULT_PARAMS, PARAMS

# How the built-in names read in a dropdown; a trial's own names (steer.steering(optimizers=...)) read as given.
NAME_LABELS = {"adam": "Adam", "sgd": "SGD (momentum 0.9)", "adamw": "AdamW", "mse": "MSE", "l1": "L1",
               "huber": "Huber (delta 0.1)"}
RUNNING_ONLY = (ids.LR_SLIDER, ids.LR_INPUT, ids.OPTIMIZER, ids.LOSS, ids.WEIGHT_DECAY, ids.PRUNE_BUTTON,
                ids.RESET_BUTTON)  # controls that change a running trial: disabled once it ends
VALUE_CONTROLS = {ids.LR_SLIDER: "lr", ids.OPTIMIZER: "optimizer", ids.LOSS: "loss", ids.WEIGHT_DECAY: "weight_decay"}
BUTTONS = {ids.PRUNE: "prune", ids.RESET: "reset", ids.PROMOTE: "promote"}  # button -> action
SHOWN_REQUESTS = 12


def options(setting: str, names: tuple[str, ...] | None, builtin: bool) -> list[dict[str, str]]:
    """A dropdown's options: the names the trial recorded it can switch to, else the spec's.
    The built-in objective's (an image study's) read as `NAME_LABELS` say."""
    names = PARAMS[setting].choices if names is None else names
    return [{"label": NAME_LABELS.get(n, n) if builtin else n, "value": n} for n in names]


def layout(studies: Studies, study: str, number: int) -> html.Div:
    control = studies.control(study)
    trial = views.load_trial(control, number)
    if trial is None:
        return C.message_page("No such trial", f"study {study!r} has no trial {number}.", study)
    current = views.current_settings(trial, views.latest_metric(control, control.live(number)))
    shown = views.synced_controls(current, record.read(trial).interventions)
    choices = {s: record.choices(trial, s) for s in ("optimizer", "loss")}
    return build(study, number, shown, views.total_steps(control), trial.state == TrialState.RUNNING,
                 choices, images=control.has_target())


def validation_layout() -> html.Div:
    return build("", 0, {k: DEFAULT_PARAMS[k] for k in views.CONTROLLED}, None, True, {}, images=True)


def build(study: str, number: int, shown: dict[str, Any], steps: int | None, running: bool,
          choices: dict[str, tuple[str, ...] | None], images: bool) -> html.Div:
    """The page. A study without images (a training loop that publishes no preview, no target)
    keeps the image elements, hidden, so the polling callback has the same outputs."""
    pictures = html.Div([
        html.Figure([html.Img(src=C.href("/steer/target.png", study) if images else None, alt="target",
                              id=ids.TARGET_IMG), html.Figcaption("target")]),
        html.Figure([html.Img(id=ids.LIVE_IMG, alt="waiting for the first preview"),
                     html.Figcaption("prediction", id=ids.LIVE_CAPTION)]),
    ], className="images", style=None if images else {"display": "none"})
    value_label = "PSNR (dB)" if images else "reported value"
    first_card = C.card("Target and live prediction", pictures) if images else C.card(
        None, html.P("This study has no images: its trials are steered by their curves.", className="muted"),
        pictures)
    return html.Div([
        dcc.Store(id=ids.PAGE_CTX, data={"study": study, "trial": number, "steps": steps,
                                         "value_label": value_label}),
        dcc.Store(id=ids.TRIAL_CURSOR, data={}),
        dcc.Store(id=ids.KNOWN, data=shown),
        dcc.Interval(id=ids.TRIAL_TICK, interval=C.POLL_MS),
        html.Div([html.H2(f"Trial {number}"), html.Div(id=ids.TRIAL_HEADER)]),
        html.Div([
            html.Div([
                first_card,
                C.card(f"Loss and {value_label}", dcc.Graph(
                    id=ids.CURVES, config={"displaylogo": False},
                    figure=figures.curves_figure(views.curve_points([]), [], value_label))),
            ], className="grow"),
            html.Div([C.card("Steer this trial", controls(number, shown, running, choices, images),
                            class_name="controls")],
                     style={"flex": "0 1 380px"}),
        ], className="row"),
        html.Div([
            C.card("Requests to this trial", html.Ul(id=ids.REQUESTS, className="status-list"), class_name="grow"),
            C.card("Intervention log", html.Div(id=ids.INTERVENTIONS), class_name="grow"),
        ], className="row"),
    ], className="page")


def controls(number: int, shown: dict[str, Any], running: bool,
             choices: dict[str, tuple[str, ...] | None], images: bool = True) -> html.Div:
    off = not running
    return html.Div([
        html.Div(id=ids.CURRENT, className="muted"),
        html.Label("Learning rate (log scale)", className="field"),
        html.Div(views.fmt_lr(views.slider_to_lr(views.lr_to_slider(shown["lr"]))), id=ids.LR_VALUE,
                 className="lr-value"),
        dcc.Slider(id=ids.LR_SLIDER, min=views.LR_MIN_LOG10, max=views.LR_MAX_LOG10, step=0.01,
                   value=views.lr_to_slider(shown["lr"]), updatemode="mouseup", allow_direct_input=False,
                   marks={i: f"1e{i}" if i else "1" for i in range(views.LR_MIN_LOG10, views.LR_MAX_LOG10 + 1)}, disabled=off),
        html.Div([dcc.Input(id=ids.LR_INPUT, type="text", placeholder="exact LR, e.g. 3e-4", debounce=True,
                            disabled=off),
                  html.Span("Enter sends it", className="muted")], className="line"),
        html.Label("Optimizer (weights kept, state reset)", className="field"),
        dcc.Dropdown(id=ids.OPTIMIZER, options=options("optimizer", choices.get("optimizer"), images),
                     value=shown["optimizer"], clearable=False,
                     searchable=False, disabled=off),
        html.Label("Loss (PSNR always from MSE)" if images else "Loss", className="field"),
        dcc.Dropdown(id=ids.LOSS, options=options("loss", choices.get("loss"), images), value=shown["loss"],
                     clearable=False, searchable=False, disabled=off),
        html.Label("Weight decay", className="field"),
        html.Div([dcc.Input(id=ids.WEIGHT_DECAY, type="number", step="any", debounce=True,
                            value=shown["weight_decay"], disabled=off),
                  html.Span("Enter sends it", className="muted")], className="line"),
        html.Label("Pin this trial's value for later trials", className="field"),
        html.Div([html.Button(f"pin {SETTING_ACTIONS[p].label}", id={"type": ids.PIN, "param": p}, n_clicks=0,
                              className="btn") for p in PINNABLE], className="btn-row"),
        html.Label("The whole trial", className="field"),
        html.Div([
            dcc.ConfirmDialogProvider(
                html.Button("prune", id=ids.PRUNE_BUTTON, className="btn danger", disabled=off), id=ids.PRUNE,
                message=f"Prune trial {number}? It stops at its next step and ends PRUNED."),
            dcc.ConfirmDialogProvider(
                html.Button("reset weights", id=ids.RESET_BUTTON, className="btn danger", disabled=off),
                id=ids.RESET, message=f"Reset trial {number}'s weights to a fresh random init (optimizer state too)?"),
            html.Button("promote", id=ids.PROMOTE, n_clicks=0, className="btn primary",
                        title="enqueue a fresh trial with this trial's current settings, so the sampler learns "
                              "from a clean run of them"),
        ], className="btn-row"),
    ])


# ---- what a touched control asks for ------------------------------------------- #


def request_for(trigger: str | dict[str, Any] | None, value: Any, known: dict[str, Any]) -> dict[str, Any] | None:
    """The `Control.request` arguments for the control that fired, or None when there is nothing to ask.

    A value control that fired with the value it already shows (because `tick`
    synced it) asks for nothing; buttons ask only when clicked.
    """
    if isinstance(trigger, str) and trigger in VALUE_CONTROLS:
        param = VALUE_CONTROLS[trigger]
        if value is None:
            return None
        if trigger == ids.LR_SLIDER:
            value = views.slider_to_lr(value)
        if views.same_value(param, value, known.get(param)):
            return None
        return {"action": SETTING_ACTIONS[param].name, "value": value}
    if trigger == ids.LR_INPUT:
        text = (value or "").strip()
        return {"action": "set_lr", "value": text} if text else None
    if not value:  # a button drawn, not clicked
        return None
    if isinstance(trigger, dict) and trigger.get("type") == ids.PIN:
        return {"action": "pin", "param": trigger["param"]}
    if trigger in BUTTONS:
        return {"action": BUTTONS[trigger], **({"reason": "from the dash app"} if trigger == ids.PRUNE else {})}
    return None


# ---- polling -------------------------------------------------------------------- #


def header(trial: Any, latest_psnr: float | None, step: int | None, steps: int | None,
           images: bool = True) -> list:
    parts: list = [C.state_badge(trial.state.name)]
    shown = trial.value if trial.state == TrialState.COMPLETE and trial.values else latest_psnr
    if shown is not None:
        parts.append(html.B(f" PSNR {shown:.2f} dB" if images else f" value {shown:.4g}"))
    if step is not None:
        parts.append(f" · step {step}" + (f" of {steps}" if steps else ""))
    rec = record.read(trial)
    n = rec.steering_count
    if n:
        parts.append(f" · steered ({n} intervention{'s' if n != 1 else ''})")
    if rec.origin:
        parts.append(f" · {rec.origin}")
    if rec.note:
        parts.append(html.Span(f" · {rec.note}", className="muted"))
    chips = [html.Span("sampled ", className="muted")]
    chips += [html.Span(f"{k}={views.fmt(v)}", className="chip") for k, v in trial.params.items()]
    chips += [html.Span(f"pinned {k}={views.fmt(v)}", className="chip pin")
              for k, v in rec.pinned.items()]
    return [html.Div(parts), html.Div(chips, style={"marginTop": "6px"})]


def current_line(current: dict[str, Any]) -> str:
    return (f"Now: lr {views.fmt_lr(current['lr'])} · {current['optimizer']} · {current['loss']} · "
            f"weight decay {views.fmt(current['weight_decay'])}")


def requests_list(statuses: list[dict[str, Any]]) -> list:
    if not statuses:
        return [html.Li("No requests yet. Move a control: the request is recorded, then applied by the trial's "
                        "worker at its next step boundary.", className="muted")]
    return [html.Li([
        C.badge(s["state"], C.COMMAND_COLORS.get(s["state"], "#6b7280")), " ",
        html.B(s["what"]), f" · {s['status']}",
        html.Span(f" · #{s['id']} by {s['by']}" + (" (this browser)" if s["mine"] else "") + " at "
                  + time.strftime("%H:%M:%S", time.localtime(s["at"])), className="muted"),
    ], className=f"cmd-{s['state']}", **{"data-command": str(s["id"])}) for s in statuses]


def intervention_table(marks: list[dict[str, Any]]) -> Any:
    if not marks:
        return html.P("No intervention yet: this trial trains as the sampler suggested.", className="muted")
    head = html.Tr([html.Th(h) for h in ("step", "action", "change", "by", "at")])
    rows = [html.Tr([html.Td(m["step"], className="num"), html.Td(m["action"]), html.Td(m["change"]),
                     html.Td(m["by"]),
                     html.Td(time.strftime("%H:%M:%S", time.localtime(m["at"])) if m["at"] else "")])
            for m in reversed(marks)]
    return html.Table([html.Thead(head), html.Tbody(rows)], className="data")


def register(app: dash.Dash, studies: Studies) -> None:
    app.clientside_callback(
        """function(drag, value) {
            var fired = dash_clientside.callback_context.triggered.map(function(t) { return t.prop_id; });
            var v = fired.indexOf('SLIDER_ID.drag_value') >= 0 ? drag : value;
            if (v === null || v === undefined) { return dash_clientside.no_update; }
            var lr = Number(Math.pow(10, v).toPrecision(3));
            return lr.toExponential(2).replace(/e([+-])0*(\\d)/, 'e$1$2');
        }""".replace("SLIDER_ID", ids.LR_SLIDER),
        Output(ids.LR_VALUE, "children"), Input(ids.LR_SLIDER, "drag_value"), Input(ids.LR_SLIDER, "value"),
        prevent_initial_call=True,
    )

    outputs = {
        "header": Output(ids.TRIAL_HEADER, "children"), "src": Output(ids.LIVE_IMG, "src"),
        "caption": Output(ids.LIVE_CAPTION, "children"), "figure": Output(ids.CURVES, "figure"),
        "current": Output(ids.CURRENT, "children"), "requests": Output(ids.REQUESTS, "children"),
        "log": Output(ids.INTERVENTIONS, "children"), "cursor": Output(ids.TRIAL_CURSOR, "data"),
        "known": Output(ids.KNOWN, "data"),
        **{f"value:{cid}": Output(cid, "value") for cid in VALUE_CONTROLS},
        **{f"disabled:{cid}": Output(cid, "disabled") for cid in RUNNING_ONLY},
    }

    @app.callback(output=outputs, inputs={
        "_n": Input(ids.TRIAL_TICK, "n_intervals"), "page": State(ids.PAGE_CTX, "data"),
        "cursor": State(ids.TRIAL_CURSOR, "data"), "known": State(ids.KNOWN, "data"),
        "mine": State(ids.MY_COMMANDS, "data"),
    })
    @skip_when_database_busy
    def tick(_n: int, page: dict[str, Any], cursor: dict[str, Any], known: dict[str, Any], mine: list[int]):
        control = studies.control(page["study"])
        number = page["trial"]
        trial = views.load_trial(control, number)
        if trial is None:
            raise dash.exceptions.PreventUpdate
        out: dict[str, Any] = {key: dash.no_update for key in outputs}
        cursor = cursor or {}
        first = not cursor
        new = dict(cursor)
        live = control.live(number)
        rows = control.metrics(number, after_step=cursor.get("step", -1))  # only rows the browser lacks
        if rows:
            new["step"] = rows[-1].step
            new["psnr"] = next((m.psnr for m in reversed(rows) if m.psnr is not None), cursor.get("psnr"))
        current = views.current_settings(trial, rows[-1]) if rows else cursor.get("current") or \
            views.current_settings(trial, None)
        new["current"] = current
        marks = views.interventions(trial)
        running = trial.state == TrialState.RUNNING

        # the curves: the whole figure once, then patches with the new rows / the new markers
        if first:
            out["figure"] = figures.curves_figure(views.curve_points(rows), marks,
                                                  page.get("value_label", "PSNR (dB)"))
        elif rows or len(marks) != cursor.get("n_int"):
            out["figure"] = figures.curves_patch(views.curve_points(rows, cap=None) if rows else None,
                                                 marks if len(marks) != cursor.get("n_int") else None)
        new["n_int"] = len(marks)

        # the prediction: a new URL only when a new preview was published
        if live is not None and live.png is not None:
            version = f"{live.wall_time:.3f}"
            if version != cursor.get("img"):
                out["src"] = C.href("/steer/live.png", page["study"], trial=number, v=version)
                out["caption"] = f"prediction at step {live.step}" + ("" if live.running else " (final)")
                new["img"] = version
        elif first:
            out["caption"] = "prediction: none published yet"

        # the controls: synced to values set by hand; disabled once the trial ends
        shown = views.synced_controls(current, record.read(trial).interventions)
        changed = {p: v for p, v in shown.items() if not views.same_value(p, v, known.get(p))}
        if changed:
            out["known"] = {**known, **changed}
            for cid, param in VALUE_CONTROLS.items():
                if param in changed:
                    out[f"value:{cid}"] = views.lr_to_slider(changed[param]) if cid == ids.LR_SLIDER else changed[param]
        if running != cursor.get("running"):
            for cid in RUNNING_ONLY:
                out[f"disabled:{cid}"] = not running
            new["running"] = running

        # the words: header, current settings, requests, log; each only when it changed
        statuses = views.request_statuses(control.commands(trial=number), mine or [])[:SHOWN_REQUESTS]
        parts = {
            "header": (lambda: header(trial, new.get("psnr"), live.step if live else None, page.get("steps"),
                                      page.get("value_label", "PSNR (dB)") == "PSNR (dB)"),
                       (trial.state.name, trial.value if trial.values else None, new.get("psnr"),
                        live.step if live else None, len(marks), trial.user_attrs.get(record.PRUNED_REASON))),
            "current": (lambda: current_line(current), current),
            "requests": (lambda: requests_list(statuses), statuses),
            "log": (lambda: intervention_table(marks), marks),
        }
        for key, (render, shown_data) in parts.items():
            fingerprint = digest(shown_data)
            if fingerprint != cursor.get(f"seen:{key}"):
                out[key] = render()
                new[f"seen:{key}"] = fingerprint
        if new != cursor:
            out["cursor"] = new
        if all(v is dash.no_update for v in out.values()):
            raise dash.exceptions.PreventUpdate
        return out

    @app.callback(
        Output(ids.MY_COMMANDS, "data"),
        Input(ids.LR_SLIDER, "value"), Input(ids.LR_INPUT, "value"), Input(ids.OPTIMIZER, "value"),
        Input(ids.LOSS, "value"), Input(ids.WEIGHT_DECAY, "value"), Input({"type": ids.PIN, "param": ALL}, "n_clicks"),
        Input(ids.PRUNE, "submit_n_clicks"), Input(ids.RESET, "submit_n_clicks"), Input(ids.PROMOTE, "n_clicks"),
        State(ids.PAGE_CTX, "data"), State(ids.KNOWN, "data"), State(ids.MY_COMMANDS, "data"),
        prevent_initial_call=True,
    )
    def send(*args: Any):
        page, known, mine = args[-3:]
        if not ctx.triggered:
            raise dash.exceptions.PreventUpdate
        ask = request_for(ctx.triggered_id, ctx.triggered[0]["value"], known or {})
        if ask is None:
            raise dash.exceptions.PreventUpdate
        cmd = studies.control(page["study"]).request(trial=page["trial"], by=requester(), **ask)
        return [*(mine or []), cmd.id][-50:]
