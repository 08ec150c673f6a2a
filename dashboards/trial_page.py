"""The trial page: target and live prediction, loss and PSNR curves, the steering controls, the log.

Three callbacks. `tick` polls the control plane (about 2 Hz; faster while a
request of this browser is pending) and sends only what changed: the image URL
when a new preview exists, new metric rows as a patch that extends the curves,
the requests and interventions when they changed, and the trial's newest LR
range test (`find_lr`: the curve travels in the command's result); it also
renews the trial's watch (`Control.watch`), so its worker does not prune it
while the page is open. `send` turns a control the person touched into one
`Control.request`, and keeps the command's id in the browser (`MY_COMMANDS`),
where the requests list marks it. `edit_lr` is the LR control: slider,
steppers, the typed value and the range test's *apply suggested LR* change the
LR shown (exactly what is sent), checked by the action table's rules with the
server's message, and it asks to confirm big changes; it records nothing.
`edit_fork` is the fork card's: its own log LR slider and steppers write the
fork's LR box, and what is typed there is checked the same way (`send` sends
the fork with only the fields filled in). The tick also overlays the trial's
relatives on its curves (a fork's parent, its own forks: `views.relatives`),
each read from where the browser's copy ends, and says what became of this
browser's latest fork ("forked as trial M", a link) and of the latest undo.

The controls show the value last set by hand (by anyone: another browser, the
CLI); the LR control shows the trial's current LR whenever nothing is being
edited. When a poll moves a control to such a value, `send` (or `edit_lr`)
fires too, sees the value it already knows (`KNOWN`) and asks for nothing.

A poll never writes a control a person touches. Its answer is computed from
the page as it was when the poll left, and a person may have stepped, typed
or picked since: written back, that answer would put the old value over the
new one. (Dash holds a callback back while one in flight may still change
what it reads, so a value picked while a poll is out is sent after that
poll's answer is applied, as that answer left the control: when the poll
wrote the controls, it put the old value back and nothing was sent.) So
`tick` only reports what it read (`POLLED`), and two clientside callbacks
apply it in the browser against what the page shows *when the answer
arrives*: `SYNC_SHOW` moves a value control to the value last set by hand
unless the person changed it and that change is on its way (or not yet
refused), and `LR_SHOW` shows the trial's LR again only when the edit shown
is still the one whose request is done (every LR edit has an id,
`LR_PENDING`).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import dash
from dash import ALL, Input, Output, State, ctx, dcc, html
from optuna.trial import TrialState

from steer import record
from steer.actions import ACTIONS, PINNABLE, SETTING_ACTIONS
from steer.dashboards import components as C
from steer.dashboards import figures, ids, views
from steer.dashboards.polling import ask, digest, skip_when_database_busy
from steer.dashboards.studies import Studies
from steer.spec import DEFAULT_PARAMS, PARAMS

# How the built-in names read in a dropdown; a trial's own names (steer.steering(optimizers=...)) read as given.
NAME_LABELS = {"adam": "Adam", "sgd": "SGD (momentum 0.9)", "adamw": "AdamW", "mse": "MSE", "l1": "L1",
               "huber": "Huber (delta 0.1)"}
LR_STEPS = {f"{ids.LR_STEP}-{key}": step for key, step in views.LR_STEPS.items()}  # stepper id -> (label, factor)
# A control that sends a setting -> the setting. The LR is sent from its typed value (Enter), its send
# button or its confirmation, always as the value `views.check_lr` makes of it.
VALUE_CONTROLS = {ids.LR_INPUT: "lr", ids.OPTIMIZER: "optimizer", ids.LOSS: "loss", ids.WEIGHT_DECAY: "weight_decay"}
SYNCED = {cid: p for cid, p in VALUE_CONTROLS.items() if p != "lr"}  # `tick` sets these to the value last set by hand
LR_SENDERS = (ids.LR_INPUT, ids.LR_SEND, ids.LR_CONFIRM, ids.FIND_LR_APPLY)  # FIND_LR_APPLY: the range test's LR
# button -> action (the fork button sends the fork card's fields with it: `request_for`)
BUTTONS = {ids.PRUNE: "prune", ids.RESET: "reset", ids.PROMOTE: "promote", ids.PAUSE: "pause",
           ids.RESUME: "resume", ids.KEEP: "keep", ids.FIND_LR: "find_lr", ids.UNDO: "undo", ids.FORK_SEND: "fork"}
FORK_LR_STEPS = {f"{ids.FORK_LR_STEP}-{key}": step for key, step in views.LR_STEPS.items()}  # as LR_STEPS
FORK_FIELDS = (ids.FORK_LR, ids.FORK_OPTIMIZER, ids.FORK_LOSS, ids.FORK_WEIGHT_DECAY)  # sent with the fork button
RUNNING_ONLY = (ids.LR_SLIDER, ids.LR_INPUT, ids.LR_SEND, ids.LR_REVERT, *LR_STEPS, ids.FIND_LR, ids.FIND_LR_APPLY,
                ids.OPTIMIZER, ids.LOSS, ids.WEIGHT_DECAY, ids.PRUNE_BUTTON, ids.RESET_BUTTON, ids.PAUSE,
                ids.RESUME, ids.UNDO, *FORK_FIELDS, ids.FORK_LR_SLIDER, *FORK_LR_STEPS, ids.FORK_LR_KEEP,
                ids.FORK_SEND)  # controls that change a running trial (or fork it): disabled once it ends
SHOWN_REQUESTS = 12
FAST_POLL_MS = 150  # while a request of this browser waits for the worker: the click shows applied sooner
WATCH_S, WATCH_RENEW_S = 6.0, 2.0  # the page keeps its trial watched for 6 s, renewed every 2 s
SENT_MARGIN_S = 2.0  # an edit made by send: a request at most this long before the edit is the one it sent
HIDDEN = {"display": "none"}
# `ids.TRIAL_POLLED` is written by `tick` only: what the poll read for the controls; `SYNC_SHOW` and `LR_SHOW`
# apply it against what the page shows when it arrives.
POLLED = ids.TRIAL_POLLED


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
    rec = record.read(trial)
    shown = {**views.synced_controls(current, rec.interventions), "lr": current["lr"]}
    choices = {s: record.choices(trial, s) for s in ("optimizer", "loss")}
    return build(study, number, shown, views.total_steps(control), trial.state == TrialState.RUNNING,
                 choices, images=control.has_target(), paused=rec.paused is not None, kept=rec.kept,
                 searched=views.lr_search(trial))


def validation_layout() -> html.Div:
    return build("", 0, {k: DEFAULT_PARAMS[k] for k in views.CONTROLLED}, None, True, {}, images=True)


def build(study: str, number: int, shown: dict[str, Any], steps: int | None, running: bool,
          choices: dict[str, tuple[str, ...] | None], images: bool, paused: bool = False, kept: bool = False,
          searched: tuple[float, float] | None = None) -> html.Div:
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
                                         "value_label": value_label,
                                         "lr_search": list(searched) if searched else None}),
        dcc.Store(id=ids.TRIAL_CURSOR, data={}),
        dcc.Store(id=ids.KNOWN, data=shown),
        dcc.Store(id=POLLED, data=None),
        dcc.Store(id=ids.FIND_LR_RESULT, data=None),
        dcc.Interval(id=ids.TRIAL_TICK, interval=C.POLL_MS),
        html.Div([html.H2(f"Trial {number}"), html.Div(id=ids.TRIAL_HEADER)]),
        html.Div([
            html.Div([
                first_card,
                C.card(f"Loss and {value_label}", dcc.Graph(
                    id=ids.CURVES, config={"displaylogo": False},
                    figure=figures.curves_figure(views.curve_points([]), [], value_label))),
                range_test_card(),
                # what became of the requests, under the curves: the controls' column (steer, fork) is as long
                C.card("Requests to this trial", html.Ul(id=ids.REQUESTS, className="status-list")),
                html.Div([
                    html.Div([html.H3("Intervention log", className="card-title"),
                              html.Span(id=ids.UNDO_STATUS, className="muted undo-status"),
                              html.Button(ACTIONS["undo"].label, id=ids.UNDO, n_clicks=0, className="btn",
                                          disabled=not running, title=ACTIONS["undo"].help)],
                             className="card-head"),
                    html.Div(id=ids.INTERVENTIONS),
                ], className="card"),
            ], className="grow"),
            html.Div([C.card("Steer this trial", controls(number, shown, running, choices, images, paused, kept),
                             class_name="controls"),
                      C.card("Fork this trial", fork_card(shown["lr"], not running, choices, images),
                             class_name="controls fork-card")],
                     style={"flex": "0 1 420px"}),
        ], className="row"),
    ], className="page")


def lr_slider(slider: str, steps: dict[str, tuple[str, float]], lr: float, off: bool, title: str,
              **button: Any) -> list:
    """A log LR slider over x/÷10 around `lr`, and its steppers (`steps`: id -> (label, factor)); `title`
    says what a stepper does, with `{label}` in it; `button` are more attributes of each stepper."""
    shown = views.round_lr(lr)
    low, high = views.lr_window(shown)
    return [
        dcc.Slider(id=slider, min=low, max=high, step=10.0 ** -views.LR_GRID, value=views.lr_to_slider(shown),
                   updatemode="mouseup", allow_direct_input=False, marks=views.lr_marks(low, high), disabled=off),
        html.Div([html.Button(label, id=cid, n_clicks=0, className="btn step", disabled=off,
                              title=title.format(label=label), **{k: v.format(label=label) for k, v in button.items()})
                  for cid, (label, _) in steps.items()], className="btn-row steps"),
    ]


def lr_control(lr: float, off: bool) -> list:
    """The LR: the number that `send` sends, a log slider over x/÷10 around it, steppers, a typed value."""
    shown = views.round_lr(lr)
    return [
        html.Label("Learning rate", className="field"),
        html.Div([html.Div(views.fmt_lr(shown), id=ids.LR_VALUE, className="lr-value"),
                  html.Span(lr_hint(None, False, lr, not off), id=ids.LR_HINT, className="muted")],
                 className="line"),
        *lr_slider(ids.LR_SLIDER, LR_STEPS, lr, off, "the LR shown {label} (sent with send)"),
        html.Div([dcc.Input(id=ids.LR_INPUT, type="text", placeholder="exact LR, e.g. 3e-4", debounce=True,
                            disabled=off),
                  html.Button("send", id=ids.LR_SEND, n_clicks=0, className="btn primary", disabled=off,
                              title=f"{ACTIONS['set_lr'].help}: the LR shown; a change of more than 10x, or "
                                    "outside the searched range, asks first"),
                  html.Button("revert", id=ids.LR_REVERT, n_clicks=0, className="btn", disabled=off,
                              title="show the trial's current LR again; nothing is sent")],
                 className="line"),
        html.Div(id=ids.LR_ERROR, className="field-error"),
        dcc.ConfirmDialog(id=ids.LR_CONFIRM),
        dcc.Store(id=ids.LR_PENDING, data=None),
    ]


def range_test_card() -> html.Div:
    """The trial's latest LR range test (find LR): hidden until it has one; `tick` fills it."""
    return C.card("LR range test", dcc.Graph(id=ids.FIND_LR_GRAPH, config={"displaylogo": False},
                                             figure=figures.lr_range_figure(None)),
                  html.Div(id=ids.FIND_LR_TEXT, className="range-test-text"),
                  html.Button("Apply suggested LR", id=ids.FIND_LR_APPLY, n_clicks=0, className="btn primary",
                              style=HIDDEN, title="an LR edit to the suggestion, sent as the LR control sends it "
                                                  "(a change of more than 10x, or outside the searched range, asks "
                                                  "first)"),
                  id=ids.FIND_LR_CARD, style=HIDDEN)


def range_test_text(find: dict[str, Any] | None) -> list:
    """The words under the range test's curve: the suggestion, when and by whom, the rule, the reason."""
    test = (find or {}).get("test")
    if not test:
        return []
    found = views.fmt_lr(test["suggestion"]) if test["suggestion"] else "none"
    when = f"run at step {test['step']}" if test["step"] is not None else "run"
    then = f" · the trial's LR then {views.fmt_lr(test['lr_then'])}" if test["lr_then"] else ""
    return [html.Div([html.B(f"Suggested LR: {found}"),
                      html.Span(f" · {when} by {test['by']} at {views.clock(test['at'])}, {test['steps']} steps on a "
                                f"copy{then}", className="muted")]),
            html.Div([html.Span("rule: ", className="muted"), test["rule"]]),
            html.Div([html.Span("stopped: ", className="muted"), test["reason"]])]


def lr_hint(pending: dict[str, Any] | None, sent: bool, now: float | None, running: bool) -> str:
    """What the LR shown is: the trial's, an edit not sent yet (and how it compares), or sent."""
    if pending is None:
        return "the trial's LR now" if running else "the trial's last LR"
    if sent:
        return "sent: waiting for the trial's next step boundary"
    change = views.lr_change(pending["value"], now, named=False)
    return f"not sent yet: {change}" if change else "not sent yet"


def controls(number: int, shown: dict[str, Any], running: bool, choices: dict[str, tuple[str, ...] | None],
             images: bool = True, paused: bool = False, kept: bool = False) -> html.Div:
    off = not running
    return html.Div([
        html.Div(id=ids.CURRENT, className="muted"),
        *lr_control(shown["lr"], off),
        html.Div([html.Button(ACTIONS["find_lr"].label, id=ids.FIND_LR, n_clicks=0, className="btn", disabled=off,
                              title=ACTIONS["find_lr"].help + "; about 100 steps"),
                  html.Span(id=ids.FIND_LR_STATUS, className="muted")], className="line find-lr"),
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
        html.Label("The person's pace", className="field"),
        html.Div([
            html.Button(ACTIONS["pause"].label, id=ids.PAUSE, n_clicks=0, className="btn", disabled=off,
                        title=ACTIONS["pause"].help, style=HIDDEN if paused else None),
            html.Button(ACTIONS["resume"].label, id=ids.RESUME, n_clicks=0, className="btn primary", disabled=off,
                        title=ACTIONS["resume"].help, style=None if paused else HIDDEN),
            html.Button(keep_label(kept), id=ids.KEEP, n_clicks=0, className="btn", disabled=off or kept,
                        title=ACTIONS["keep"].help),
        ], className="btn-row"),
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


def fork_card(lr: float, off: bool, choices: dict[str, tuple[str, ...] | None], images: bool = True) -> html.Div:
    """The fork card: the steering controls' settings for a new trial that starts from this one's state now.
    Every field may stay empty (the parent's value); the LR is a log slider with steppers writing the typed
    value, as in the LR control. `edit_fork` checks what is typed; `send` sends the fork."""
    keep = "this trial's"
    return html.Div([
        html.P("A new trial from this one's weights, optimizer state and step now; this trial goes on untouched. "
               "Empty fields keep this trial's settings.", className="muted explain"),
        html.Label("Learning rate", className="field"),
        html.Div([dcc.Input(id=ids.FORK_LR, type="text", placeholder=f"{keep} (e.g. 3e-4)", debounce=True,
                            disabled=off),
                  html.Button(f"use {keep}", id=ids.FORK_LR_KEEP, n_clicks=0, className="btn", disabled=off,
                              title="empty the fork's LR: it starts with this trial's LR at the fork")],
                 className="line"),
        # (its steppers' names are not the LR control's "÷2" for a reader, nor for the tests' role lookups)
        *lr_slider(ids.FORK_LR_SLIDER, FORK_LR_STEPS, lr, off, "the fork's LR {label} (this trial's when empty)",
                   **{"aria-label": "fork LR {label}"}),
        html.Div([
            html.Div([html.Label("Optimizer", className="field"),
                      dcc.Dropdown(id=ids.FORK_OPTIMIZER, options=options("optimizer", choices.get("optimizer"), images),
                                   value=None, placeholder=keep, searchable=False, disabled=off)], className="grow"),
            html.Div([html.Label("Loss", className="field"),
                      dcc.Dropdown(id=ids.FORK_LOSS, options=options("loss", choices.get("loss"), images), value=None,
                                   placeholder=keep, searchable=False, disabled=off)], className="grow"),
        ], className="pair"),
        html.Label("Weight decay", className="field"),
        html.Div([dcc.Input(id=ids.FORK_WEIGHT_DECAY, type="text", placeholder=keep, debounce=True, disabled=off),
                  html.Button("Fork", id=ids.FORK_SEND, n_clicks=0, className="btn primary", disabled=off,
                              title=ACTIONS["fork"].help)], className="line"),
        html.Div(id=ids.FORK_ERROR, className="field-error"),
        html.Div(id=ids.FORK_STATUS, className="fork-status"),
        html.Div(id=ids.FORKS, className="forks"),
    ])


def keep_label(kept: bool) -> str:
    return "kept" if kept else ACTIONS["keep"].label


# ---- what a touched control asks for ------------------------------------------- #


def request_for(trigger: str | dict[str, Any] | None, value: Any, known: dict[str, Any],
                shown_lr: str | None = None, searched: list[float] | None = None,
                suggested: float | None = None, fork: tuple[Any, ...] = ()) -> dict[str, Any] | None:
    """The `Control.request` arguments for the control that fired, or None when there is nothing to ask.

    A value control that fired with the value it already shows (because `tick`
    synced it) asks for nothing; buttons ask only when clicked. The LR is sent
    as `views.check_lr` makes it of the typed value (Enter) or of the LR shown
    (`shown_lr`: send, or the confirmation), or the range test's `suggested` LR
    (its apply button): nothing when it is malformed or out of range (`edit_lr`
    shows why), nor when it needs a confirmation not given. The fork button
    sends the fork card's fields (`fork`: `FORK_FIELDS`' values) that are
    filled in, as `views.fork_form` checks them: nothing when one is refused
    (`edit_fork` shows why).
    """
    if trigger in LR_SENDERS:
        if trigger == ids.LR_INPUT:
            asked = (value or "").strip()
        elif trigger == ids.FIND_LR_APPLY:
            asked = suggested if value else None
        else:
            asked = shown_lr if value else None
        if not asked:
            return None
        check = views.check_lr(asked, known.get("lr"), searched)
        if check.value is None or (check.confirm and trigger != ids.LR_CONFIRM):
            return None
        if trigger != ids.LR_INPUT and known.get("lr") and check.value == views.round_lr(known["lr"]):
            return None  # the LR the trial has
        return {"action": "set_lr", "value": check.value}
    if isinstance(trigger, str) and trigger in SYNCED:
        param = SYNCED[trigger]
        if value is None:
            return None
        if views.same_value(param, value, known.get(param)):
            return None
        return {"action": SETTING_ACTIONS[param].name, "value": value}
    if not value:  # a button drawn, not clicked
        return None
    if isinstance(trigger, dict) and trigger.get("type") == ids.PIN:
        return {"action": "pin", "param": trigger["param"]}
    if trigger == ids.FORK_SEND:
        form = views.fork_form(*(*fork, None, None, None, None)[:len(FORK_FIELDS)])
        return None if form.error else {"action": "fork", "value": form.changes}
    if trigger in BUTTONS:
        return {"action": BUTTONS[trigger], **({"reason": "from the dash app"} if trigger == ids.PRUNE else {})}
    return None


def lr_edit(trigger: str, fired: Any, shown_lr: str | None, pending: dict[str, Any] | None, now: float | None,
            searched: list[float] | None, window: tuple[float, float] | None,
            trial: int | None = None, suggested: float | None = None) -> dict[str, Any] | None:
    """What touching the LR control does to the LR shown, as plain data (None: nothing).

    `shown_lr` is the LR shown (text: steppers scale it), `pending` the LR
    being edited (`LR_PENDING`), `now` the trial's current LR, `window` the
    slider's range, `suggested` the LR range test's suggestion (its apply
    button shows and sends it as send does). Keys: `error` (refused: the
    server's message, nothing else changes), `value` (the new LR shown),
    `window` (a new slider range, or None), `position` (the slider's new
    position, or None), `confirm` (the question to ask before it is sent),
    `send` (this touch sends it), `revert`.
    """
    try:
        base = float(shown_lr) if shown_lr else None
    except ValueError:
        base = None
    base = base or (views.round_lr(now) if now else None)
    if trigger == ids.LR_REVERT:
        if not fired or not now:
            return None
        value = views.round_lr(now)
        return {"revert": True, "value": value, **views.slider_to(value, window)}
    if trigger == ids.LR_SLIDER:
        if fired is None:
            return None
        asked: Any = views.slider_to_lr(fired)
        held = pending["value"] if pending else views.round_lr(now) if now else None
        if held is not None and views.same_value("lr", asked, held):
            return None  # `tick` moved the slider to the LR being edited, or to the trial's
    elif trigger in LR_STEPS:
        if not fired or base is None:
            return None
        asked = base * LR_STEPS[trigger][1]
    elif trigger == ids.LR_INPUT:
        asked = (fired or "").strip()
        if not asked:
            return None
    elif trigger == ids.LR_SEND:
        if not fired:
            return None
        asked = shown_lr
        if not asked or (now and base == views.round_lr(now)):
            return {"error": "Nothing to send: this is the trial's LR. Move the slider, step or type an LR first."}
    elif trigger == ids.FIND_LR_APPLY:
        if not fired:
            return None
        if not suggested:
            return {"error": "No suggested LR to apply: the range test gave none."}
        asked = suggested
        if now and views.round_lr(asked) == views.round_lr(now):
            return {"error": f"Nothing to send: the trial's LR is already the suggested {views.fmt_lr(now)}."}
    else:
        return None
    check = views.check_lr(asked, now, searched)
    if check.value is None:
        return {"error": check.error}
    moved = trigger != ids.LR_SLIDER
    out = {"value": check.value, "error": None, "send": trigger in (ids.LR_INPUT, ids.LR_SEND, ids.FIND_LR_APPLY),
           **(views.slider_to(check.value, window) if moved else {"position": None, "window": None}),
           "confirm": None}
    if out["send"] and check.confirm:
        out["send"] = False
        out["confirm"] = check.question(trial, now)
    return out


def fork_lr_edit(trigger: str, fired: Any, typed: Any, now: float | None,
                 window: tuple[float, float] | None) -> dict[str, Any] | None:
    """What touching the fork card's LR does, as plain data (None: nothing).

    `typed` is the fork's LR as its box shows it ("" or None: this trial's LR,
    `now`), `window` the slider's range. Keys: `text` (the box's new text, or
    None to leave it), `position` and `window` (the slider's, or None),
    `error` (refused: the server's message; "" clears it).
    """
    def slider_at(lr: float | None) -> dict[str, Any]:
        return views.slider_to(lr, window) if lr else {"position": None, "window": None}

    text = typed.strip() if isinstance(typed, str) else ""
    if trigger == ids.FORK_LR_KEEP:
        return {"text": "", "error": "", **slider_at(now)} if fired else None
    if trigger == ids.FORK_LR_SLIDER:
        if fired is None:
            return None
        lr = views.slider_to_lr(fired)
        return {"text": views.fmt_lr(lr), "error": "", "position": None, "window": None}
    if trigger == ids.FORK_LR:
        if not text:  # emptied: this trial's LR
            return {"text": None, "error": "", **slider_at(now)}
        check = views.check_lr(text, None, None)
        if check.value is None:
            return {"text": None, "error": check.error, "position": None, "window": None}
        return {"text": views.fmt_lr(check.value), "error": "", **slider_at(check.value)}
    if trigger in FORK_LR_STEPS:
        if not fired:
            return None
        base = views.check_lr(text, None, None).value if text else (views.round_lr(now) if now else None)
        if base is None:
            return {"text": None, "error": "Type an LR the steps can scale first (e.g. 3e-4), or empty the box.",
                    "position": None, "window": None}
        check = views.check_lr(base * FORK_LR_STEPS[trigger][1], None, None)
        if check.value is None:
            return {"text": None, "error": check.error, "position": None, "window": None}
        return {"text": views.fmt_lr(check.value), "error": "", **slider_at(check.value)}
    return None


def family_cursor(value: Any) -> list[list[int]]:
    """The relatives the browser's figure shows, [[trial, its last step there], ...] in trace order (the
    cursor's `family`); a malformed one (a forged request: no page writes it) reads as none."""
    if not isinstance(value, list):
        return []
    if not all(isinstance(m, list) and len(m) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                           for x in m) for m in value):
        return []
    return [list(m) for m in value][:views.MAX_FAMILY]


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
    paused = views.paused_words(rec.paused) if trial.state == TrialState.RUNNING else None
    if paused:
        parts += [" · ", html.Span(paused, className="note-paused")]
    if rec.kept:
        parts += [" · ", html.Span("kept", className="note-kept", title=ACTIONS["keep"].help)]
    if rec.spared:
        parts.append(html.Span(f" · {rec.spared}", className="muted"))
    n = rec.steering_count
    if n:
        parts.append(f" · steered ({n} intervention{'s' if n != 1 else ''})")
    if rec.origin:
        parts.append(f" · {rec.origin}")
    if rec.note:
        parts.append(html.Span(f" · {rec.note}", className="muted"))
    chips = [html.Span("sampled ", className="muted")]
    chips += [html.Span(f"{k}={views.fmt_param(k, v)}", className="chip") for k, v in trial.params.items()]
    chips += [html.Span(f"pinned {k}={views.fmt_param(k, v)}", className="chip pin")
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
                  + views.clock(s["at"]), className="muted"),
    ], className=f"cmd-{s['state']}", **{"data-command": str(s["id"])}) for s in statuses]


def intervention_table(marks: list[dict[str, Any]]) -> Any:
    if not marks:
        return html.P("No intervention yet: this trial trains as the sampler suggested.", className="muted")
    head = html.Tr([html.Th(h) for h in ("step", "action", "change", "by", "at")])
    rows = [html.Tr([html.Td(m["step"], className="num"), html.Td(m["action"]), html.Td(m["change"]),
                     html.Td(m["by"]), html.Td(views.clock(m["at"]) if m["at"] else "")])
            for m in reversed(marks)]
    return html.Table([html.Thead(head), html.Tbody(rows)], className="data")


def undo_line(status: dict[str, Any] | None) -> Any:
    """Beside the undo button: what became of the trial's latest undo (a refusal in the server's words, red)."""
    if status is None:
        return ""
    return html.Span(status["text"], className="field-error" if status["state"] in ("rejected", "expired") else None)


def fork_line(status: dict[str, Any] | None, study: str) -> Any:
    """Under the fork button: what became of this browser's latest fork, "forked as trial M" linking to M."""
    if status is None:
        return ""
    if status["state"] == "pending":
        return html.Span("fork sent: waiting for the trial's next step boundary", className="muted")
    if status["state"] != "applied" or status["trial"] is None:
        return html.Span(f"fork {status['state']}: {status['reason']}" if status["reason"] else
                         f"fork {status['state']}", className="field-error")
    return html.Span(["forked as ", dcc.Link(f"trial {status['trial']}",
                                             href=C.href(f"/trial/{status['trial']}", study)),
                      f" at step {status['step']} {views.fork_changes_words(status['changes'])}"],
                     className="fork-made")


def family_list(rec: record.TrialRecord, forks: list[dict[str, Any]], study: str) -> list:
    """The trial's family, as links: the trial it was forked from, and its own forks (newest last)."""
    def link(number: int) -> Any:
        return dcc.Link(f"#{number}", href=C.href(f"/trial/{number}", study))

    out = []
    if rec.fork_of is not None:
        r = rec.resume or {}
        out.append(html.Div(["Forked from ", link(rec.fork_of), f" at step {r.get('step')} ",
                             views.fork_changes_words(r.get("changes"))]))
    if forks:
        items = []
        for f in forks:
            items += [", " if items else "", link(f["trial"]), f" (step {f['step']}: "
                      f"{views.fork_changes_words(f['changes']).removeprefix('with ')})"]
        out.append(html.Div(["Forks of this trial: ", *items]))
    return out


def range_test_outputs(find: dict[str, Any] | None) -> dict[str, Any]:
    """The tick's outputs for the LR range test (`views.find_lr`): the status beside find LR, the card."""
    test = (find or {}).get("test")
    suggestion = test["suggestion"] if test else None
    return {"find_status": (find or {}).get("status", ""), "find_card": None if test else HIDDEN,
            "find_figure": figures.lr_range_figure(test), "find_text": range_test_text(find),
            "find_apply": f"Apply suggested LR ({views.fmt_lr(views.round_lr(suggestion))})" if suggestion
            else "Apply suggested LR", "find_apply_style": None if suggestion else HIDDEN,
            "find_result": {"command": test["command"], "suggestion": suggestion} if test else None}


def poll_ms(statuses: list[dict[str, Any]]) -> int:
    """How often the page polls: faster while a request of this browser waits for the worker."""
    return FAST_POLL_MS if any(s["mine"] and s["state"] == "pending" for s in statuses) else C.POLL_MS


def sent_lr(pending: dict[str, Any] | None, commands: list[Any], mine: set[int]) -> list[Any]:
    """This browser's set_lr requests that sent the LR shown (edited at `pending["at"]`).

    An edit made by send (or Enter) and its request are made by two callbacks
    at once, in either order: a request up to `SENT_MARGIN_S` older counts. An
    edit made by a step, the slider or a typed value not yet sent is sent
    later (send makes a new edit; a confirmation sends this one): only a later
    request counts, so an earlier request of the same LR does not end the edit.
    """
    if not pending:
        return []
    since = pending["at"] - (SENT_MARGIN_S if pending.get("sent", True) else 0.0)
    return [c for c in commands if c.id in mine and c.action == "set_lr" and c.args.get("value") == pending["value"]
            and c.requested_at >= since]


def new_edit(value: float, sent: bool) -> dict[str, Any]:
    """An LR edit (`LR_PENDING`): the value shown, when it was set, whether send made it (its request is made
    at the same time), and an id no other edit of the page has."""
    return {"id": uuid.uuid4().hex[:12], "value": value, "at": time.time(), "sent": sent}


def polled(shown: dict[str, Any], pending: dict[str, Any] | None, commands: list[Any], mine: list[int] | None,
           running: bool) -> dict[str, Any]:
    """What a poll tells the controls (`POLLED`), as plain data; `SYNC_SHOW` and `LR_SHOW` apply it.

    `known`: the values last set by hand (the LR: the trial's now), what the
    controls show and `KNOWN` holds; `waiting`: the settings this browser asked
    for that the worker has not applied yet; `refused`: setting -> the value
    of this browser's latest request for it, when that request was rejected
    (or expired); `mine`: the newest request of this browser the poll knew of
    (a newer one was sent while it was out); `lr`: `lr_polled`.
    """
    mine = list(mine or [])
    ours = set(mine)
    latest: dict[str, Any] = {}  # setting -> this browser's latest request for it
    waiting: set[str] = set()
    for c in commands:  # oldest first
        setting = ACTIONS[c.action].setting if c.id in ours and c.action in ACTIONS else None
        if setting in SYNCED.values():
            latest[setting] = c
            if not c.done:
                waiting.add(setting)
    refused = {p: c.args.get("value") for p, c in latest.items() if c.done and c.state != "applied"}
    return {"known": shown, "waiting": sorted(waiting), "refused": refused, "mine": max(mine, default=0),
            "lr": lr_polled(pending, commands, ours, shown["lr"], running)}


def lr_polled(pending: dict[str, Any] | None, commands: list[Any], mine: set[int], now: float,
              running: bool) -> dict[str, Any]:
    """What a poll tells the LR control (`POLLED`'s `lr`), as plain data; `LR_SHOW` applies it in the browser.

    `pending` is the edit the page showed when the poll left, maybe replaced
    since, so everything said of it is keyed by its id: `edit` and `hint` (what
    the hint says of that edit: not sent yet, or sent), `done` (that edit's
    command was applied or refused, or the trial ended: the control shows the
    trial's LR again, if that edit is still the one shown). `idle` is the
    control with nothing edited: the trial's LR now, its hint, the slider's
    position and the range around it.
    """
    target = views.round_lr(now)
    low, high = views.lr_window(target)
    out: dict[str, Any] = {"idle": {"value": views.fmt_lr(target), "hint": lr_hint(None, False, now, running),
                                    "position": views.lr_to_slider(target), "window": [low, high],
                                    "marks": views.lr_marks(low, high)},
                           "edit": None, "hint": None, "done": None}
    if pending and pending.get("id"):
        sent = sent_lr(pending, commands, mine)
        out["edit"] = pending["id"]
        if (sent and all(c.done for c in sent)) or not running:  # applied, refused or ended
            out["done"] = pending["id"]
        else:
            out["hint"] = lr_hint(pending, bool(sent), now, running)
    return out


# Applies `POLLED` to the value controls and `KNOWN` in the browser, against the values shown when the
# poll's answer arrives. A control the person changed since the last sync (its value is not `KNOWN`'s)
# keeps their value: it is being sent (Dash sends it only after this poll: it reads what this callback
# leaves), or waits for the worker; only once refused does it show the value last set by hand again. An
# untouched control shows the value last set by hand. Outputs: `KNOWN`, then `SYNCED`'s values.
SYNC_SHOW = """function(polled, known, mine) {
    var values = Array.prototype.slice.call(arguments, 3);
    var nu = dash_clientside.no_update;
    var out = [nu].concat(values.map(function () { return nu; }));
    if (!polled) { return out; }
    var params = %s;
    var same = function (param, a, b) {
        if (a === null || a === undefined || b === null || b === undefined) { return a === b; }
        if (param === 'weight_decay') { return Math.abs(Number(a) - Number(b)) <= 1e-12 + 1e-6 * Math.abs(Number(b)); }
        return a === b;
    };
    known = known || {};
    var sending = Math.max.apply(null, [0].concat(mine || [])) > (polled.mine || 0);
    params.forEach(function (param, i) {
        var value = values[i], now = polled.known[param];
        if (value !== null && value !== undefined && !same(param, value, known[param])) {  // the person's
            var refused = polled.refused[param];
            if (sending || polled.waiting.indexOf(param) >= 0 || refused === undefined ||
                    !same(param, value, refused)) { return; }
        }
        if (!same(param, value, now)) { out[i + 1] = now; }
    });
    if (JSON.stringify(known) !== JSON.stringify(polled.known)) { out[0] = polled.known; }
    return out;
}""" % json.dumps(list(SYNCED.values()))

# Applies `POLLED`'s `lr` to the LR control in the browser, against the edit shown when the poll's answer
# arrives (not the one it was computed from): the one writer of the control besides the person's own
# touches (`edit_lr`) and the slider's drag.
LR_SHOW = """function(polled, pending, shown, hint, position, drag, low, high) {
    var nu = dash_clientside.no_update;
    var out = [nu, nu, nu, nu, nu, nu, nu];  // edit, value, hint, slider position, min, max, marks
    polled = polled && polled.lr;
    if (!polled) { return out; }
    if (pending && pending.id !== polled.done) {
        // an edit is shown: the poll may only say what became of it, and only of this very edit
        if (pending.id === polled.edit && polled.hint && polled.hint !== hint) { out[2] = polled.hint; }
        return out;
    }
    if (pending) { out[0] = null; }  // this edit's command is done: the trial's LR again
    var dragging = drag !== null && drag !== undefined && position !== null && position !== undefined &&
        Math.abs(drag - position) > 1e-9;
    if (dragging) { return out; }  // the number follows the drag
    var idle = polled.idle;
    if (shown !== idle.value) { out[1] = idle.value; }
    if (hint !== idle.hint) { out[2] = idle.hint; }
    if (position === null || position === undefined || !(Math.abs(position - idle.position) < 0.003)) {
        out[3] = idle.position;
        var quarter = (high - low) / 4;
        if (low === null || low === undefined || high === null || high === undefined ||
                !(low + quarter <= idle.position && idle.position <= high - quarter)) {
            out[4] = idle.window[0]; out[5] = idle.window[1]; out[6] = idle.marks;
        }
    }
    return out;
}"""


def register(app: dash.Dash, studies: Studies) -> None:
    # While the slider is dragged, the number follows it (as `views.fmt_lr(views.slider_to_lr(x))` prints
    # it); a position set by a callback moves `drag_value` too, and leaves the number to that callback.
    app.clientside_callback(
        """function(drag, value) {
            if (drag === null || drag === undefined || drag === value) { return dash_clientside.no_update; }
            var lr = Number(Math.pow(10, drag).toPrecision(3));
            return lr.toExponential(2).replace(/e([+-])0*(\\d)/, 'e$1$2');
        }""",
        Output(ids.LR_VALUE, "children", allow_duplicate=True), Input(ids.LR_SLIDER, "drag_value"),
        State(ids.LR_SLIDER, "value"), prevent_initial_call=True,
    )

    outputs = {
        "header": Output(ids.TRIAL_HEADER, "children"), "src": Output(ids.LIVE_IMG, "src"),
        "caption": Output(ids.LIVE_CAPTION, "children"), "figure": Output(ids.CURVES, "figure"),
        "current": Output(ids.CURRENT, "children"), "requests": Output(ids.REQUESTS, "children"),
        "log": Output(ids.INTERVENTIONS, "children"), "cursor": Output(ids.TRIAL_CURSOR, "data"),
        "interval": Output(ids.TRIAL_TICK, "interval"), "polled": Output(POLLED, "data"),
        "pause_style": Output(ids.PAUSE, "style"), "resume_style": Output(ids.RESUME, "style"),
        "keep_label": Output(ids.KEEP, "children"), "keep_disabled": Output(ids.KEEP, "disabled"),
        "find_status": Output(ids.FIND_LR_STATUS, "children"), "find_card": Output(ids.FIND_LR_CARD, "style"),
        "find_figure": Output(ids.FIND_LR_GRAPH, "figure"), "find_text": Output(ids.FIND_LR_TEXT, "children"),
        "find_apply": Output(ids.FIND_LR_APPLY, "children"), "find_apply_style": Output(ids.FIND_LR_APPLY, "style"),
        "find_result": Output(ids.FIND_LR_RESULT, "data"),
        "undo_status": Output(ids.UNDO_STATUS, "children"), "fork_status": Output(ids.FORK_STATUS, "children"),
        "forks": Output(ids.FORKS, "children"),
        **{f"disabled:{cid}": Output(cid, "disabled") for cid in RUNNING_ONLY},
    }

    @app.callback(output=outputs, inputs={
        "_n": Input(ids.TRIAL_TICK, "n_intervals"), "every": State(ids.TRIAL_TICK, "interval"),
        "page": State(ids.PAGE_CTX, "data"),
        "cursor": State(ids.TRIAL_CURSOR, "data"), "mine": State(ids.MY_COMMANDS, "data"),
        "pending": State(ids.LR_PENDING, "data"),
    })
    @skip_when_database_busy
    def tick(_n: int, every: int | None, page: dict[str, Any], cursor: dict[str, Any], mine: list[int],
             pending: dict[str, Any] | None):
        number = page.get("trial")
        if number is None:  # a context from another page (forged): nothing to poll
            raise dash.exceptions.PreventUpdate
        control = studies.control(page["study"])
        # the commands before the trial: a worker records a change in the trial before it marks the command
        # applied, so a command read as applied has its change in the trial read next
        commands = control.commands(trial=number)
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
            new["base"] = views.metric_settings(rows[-1])
        current = views.current_settings(trial, new.get("base"))  # with changes applied since that row
        new["current"] = current
        rec = record.read(trial)
        marks = views.interventions(trial)
        running = trial.state == TrialState.RUNNING
        paused = rec.paused if running else None

        # the page is open: the trial's worker spares it (renewed from here, nothing kept in the app)
        now = time.time()
        if running and now - cursor.get("watched", 0.0) > WATCH_RENEW_S:
            control.watch(number, seconds=WATCH_S)
            new["watched"] = now

        # the trial's relatives (a fork's parent, its forks): their curves beside its own, each read from where
        # the browser's copy ends, one metrics read per relative per poll (`views.MAX_FAMILY` at most)
        shown_family = [] if first else family_cursor(cursor.get("family"))
        there = {t for t, _ in shown_family}
        joined = [m for m in views.relatives(rec, commands)
                  if m["trial"] not in there][:views.MAX_FAMILY - len(shown_family)]
        grown: dict[int, dict[str, list[Any]]] = {}
        family = []
        for k, (member, last) in enumerate(shown_family):
            more = control.metrics(member, after_step=last)
            if more:
                grown[k] = views.curve_points(more, cap=None)
            family.append([member, more[-1].step if more else last])
        joined_points = []
        for member in joined:
            more = control.metrics(member["trial"])
            joined_points.append((member, views.curve_points(more)))
            family.append([member["trial"], more[-1].step if more else -1])
        new["family"] = family

        # the curves: the whole figure once, then patches with the new rows / the new markers / relatives
        label = page.get("value_label", "PSNR (dB)")
        if first:
            out["figure"] = figures.curves_figure(views.curve_points(rows), marks, label, relatives=joined_points)
        elif rows or len(marks) != cursor.get("n_int") or grown or joined_points:
            out["figure"] = figures.curves_patch(views.curve_points(rows, cap=None) if rows else None,
                                                 marks if len(marks) != cursor.get("n_int") else None,
                                                 relatives=grown, joined=joined_points, shown=len(shown_family),
                                                 value_label=label)
        new["n_int"] = len(marks)

        # the prediction: a new URL only when a new preview was published
        caption = "prediction: none published yet"
        if live is not None and live.png is not None:
            version = f"{live.wall_time:.3f}"
            if version != cursor.get("img"):
                out["src"] = C.href("/steer/live.png", page["study"], trial=number, v=version)
                new["img"] = version
            caption = f"prediction at step {live.step}" + (" (paused)" if paused and live.running else "") + \
                ("" if live.running else " (final)")
        if caption != cursor.get("caption"):
            out["caption"] = caption
            new["caption"] = caption

        # the controls: disabled once the trial ends
        if running != cursor.get("running"):
            for cid in RUNNING_ONLY:
                out[f"disabled:{cid}"] = not running
            new["running"] = running
        buttons = (bool(paused), rec.kept, running)
        if list(buttons) != cursor.get("buttons"):
            out["pause_style"], out["resume_style"] = (HIDDEN, None) if paused else (None, HIDDEN)
            out["keep_label"], out["keep_disabled"] = keep_label(rec.kept), rec.kept or not running
            new["buttons"] = list(buttons)

        # the controls' values: those set by hand (the LR: the trial's now, or what became of the edit
        # shown). Reported, not written: `SYNC_SHOW` and `LR_SHOW` apply it to what the page shows when this
        # answer arrives (a person may have picked, typed or stepped since the poll left)
        shown = {**views.synced_controls(current, rec.interventions), "lr": current["lr"]}
        report = polled(shown, pending, commands, mine, running)
        fingerprint = digest(report)
        if fingerprint != cursor.get("seen:polled"):
            out["polled"] = report
            new["seen:polled"] = fingerprint

        # the words: header, current settings, requests, log; each only when it changed
        everything = views.request_statuses(commands, mine or [])
        statuses = everything[:SHOWN_REQUESTS]
        undo, forked, forks = views.undo_status(commands), views.fork_status(commands, mine), views.forks(commands)
        parts = {
            "header": (lambda: header(trial, new.get("psnr"), live.step if live else None, page.get("steps"),
                                      page.get("value_label", "PSNR (dB)") == "PSNR (dB)"),
                       (trial.state.name, trial.value if trial.values else None, new.get("psnr"),
                        live.step if live else None, len(marks), record.attrs(trial).get(record.PRUNED_REASON),
                        paused, rec.kept, rec.spared)),
            "current": (lambda: current_line(current), current),
            "requests": (lambda: requests_list(statuses), statuses),
            "log": (lambda: intervention_table(marks), marks),
            "undo_status": (lambda: undo_line(undo), undo),
            "fork_status": (lambda: fork_line(forked, page["study"]), forked),
            "forks": (lambda: family_list(rec, forks, page["study"]), (rec.resume, forks)),
        }
        for key, (render, shown_data) in parts.items():
            fingerprint = digest(shown_data)
            if fingerprint != cursor.get(f"seen:{key}"):
                out[key] = render()
                new[f"seen:{key}"] = fingerprint

        # the LR range test: what became of the latest find_lr, the newest curve
        find = views.find_lr(commands)
        fingerprint = digest(find)
        if fingerprint != cursor.get("seen:find"):
            out.update(range_test_outputs(find))
            new["seen:find"] = fingerprint

        interval = poll_ms(everything)  # a request sent makes it fast at once (see `register`)
        if interval != every:
            out["interval"] = interval
        if new != cursor:
            out["cursor"] = new
        if all(v is dash.no_update for v in out.values()):
            raise dash.exceptions.PreventUpdate
        return out

    app.clientside_callback(
        SYNC_SHOW, Output(ids.KNOWN, "data"), *(Output(cid, "value") for cid in SYNCED),
        Input(POLLED, "data"), State(ids.KNOWN, "data"), State(ids.MY_COMMANDS, "data"),
        *(State(cid, "value") for cid in SYNCED), prevent_initial_call=True,
    )

    app.clientside_callback(
        LR_SHOW,
        Output(ids.LR_PENDING, "data", allow_duplicate=True), Output(ids.LR_VALUE, "children", allow_duplicate=True),
        Output(ids.LR_HINT, "children", allow_duplicate=True), Output(ids.LR_SLIDER, "value", allow_duplicate=True),
        Output(ids.LR_SLIDER, "min", allow_duplicate=True), Output(ids.LR_SLIDER, "max", allow_duplicate=True),
        Output(ids.LR_SLIDER, "marks", allow_duplicate=True),
        Input(POLLED, "data"), State(ids.LR_PENDING, "data"), State(ids.LR_VALUE, "children"),
        State(ids.LR_HINT, "children"), State(ids.LR_SLIDER, "value"), State(ids.LR_SLIDER, "drag_value"),
        State(ids.LR_SLIDER, "min"), State(ids.LR_SLIDER, "max"), prevent_initial_call=True,
    )

    @app.callback(
        Output(ids.LR_PENDING, "data", allow_duplicate=True), Output(ids.LR_VALUE, "children", allow_duplicate=True),
        Output(ids.LR_HINT, "children", allow_duplicate=True), Output(ids.LR_ERROR, "children"),
        Output(ids.LR_SLIDER, "value", allow_duplicate=True), Output(ids.LR_SLIDER, "min", allow_duplicate=True),
        Output(ids.LR_SLIDER, "max", allow_duplicate=True), Output(ids.LR_SLIDER, "marks", allow_duplicate=True),
        Output(ids.LR_CONFIRM, "displayed"), Output(ids.LR_CONFIRM, "message"),
        Input(ids.LR_SLIDER, "value"), *(Input(cid, "n_clicks") for cid in LR_STEPS), Input(ids.LR_INPUT, "value"),
        Input(ids.LR_SEND, "n_clicks"), Input(ids.LR_REVERT, "n_clicks"), Input(ids.FIND_LR_APPLY, "n_clicks"),
        State(ids.LR_VALUE, "children"), State(ids.LR_PENDING, "data"), State(ids.KNOWN, "data"),
        State(ids.PAGE_CTX, "data"), State(ids.LR_SLIDER, "min"), State(ids.LR_SLIDER, "max"),
        State(ids.FIND_LR_RESULT, "data"),
        prevent_initial_call=True,
    )
    def edit_lr(*args: Any):
        shown_lr, pending, known, page, low, high, found = args[-7:]
        if not ctx.triggered_id:
            raise dash.exceptions.PreventUpdate
        now = (known or {}).get("lr")
        window = (low, high) if low is not None and high is not None else None
        edit = lr_edit(ctx.triggered_id, ctx.triggered[0]["value"], shown_lr, pending, now,
                       (page or {}).get("lr_search"), window, (page or {}).get("trial"),
                       (found or {}).get("suggestion"))
        if edit is None:
            raise dash.exceptions.PreventUpdate
        nu = dash.no_update
        if edit.get("error"):
            return nu, nu, nu, edit["error"], nu, nu, nu, nu, nu, nu
        value = edit["value"]
        pending = None if edit.get("revert") else new_edit(value, bool(edit.get("send")))
        hint = lr_hint(pending, bool(edit.get("send")), now, True)
        low_high = edit["window"]
        return (pending, views.fmt_lr(value), hint, "",
                nu if edit["position"] is None else edit["position"],
                low_high[0] if low_high else nu, low_high[1] if low_high else nu,
                views.lr_marks(*low_high) if low_high else nu,
                bool(edit.get("confirm")) or nu, edit.get("confirm") or nu)

    @app.callback(
        Output(ids.FORK_LR, "value"), Output(ids.FORK_LR_SLIDER, "value"), Output(ids.FORK_LR_SLIDER, "min"),
        Output(ids.FORK_LR_SLIDER, "max"), Output(ids.FORK_LR_SLIDER, "marks"), Output(ids.FORK_ERROR, "children"),
        Input(ids.FORK_LR_SLIDER, "value"), *(Input(cid, "n_clicks") for cid in FORK_LR_STEPS),
        Input(ids.FORK_LR_KEEP, "n_clicks"), Input(ids.FORK_LR, "value"), Input(ids.FORK_WEIGHT_DECAY, "value"),
        Input(ids.FORK_SEND, "n_clicks"),
        State(ids.FORK_OPTIMIZER, "value"), State(ids.FORK_LOSS, "value"), State(ids.KNOWN, "data"),
        State(ids.FORK_LR_SLIDER, "min"), State(ids.FORK_LR_SLIDER, "max"),
        prevent_initial_call=True,
    )
    def edit_fork(*args: Any):
        """The fork card: its LR (slider, steppers, typed, "use this trial's") and the checks of what is typed,
        with the server's messages; the fork button's check too (`send` sends nothing refused). Records nothing."""
        *_, typed, decay, _send, optimizer, loss, known, low, high = args
        trigger, nu = ctx.triggered_id, dash.no_update
        if trigger in (ids.FORK_WEIGHT_DECAY, ids.FORK_SEND):
            if trigger == ids.FORK_SEND and not ctx.triggered[0]["value"]:
                raise dash.exceptions.PreventUpdate
            return nu, nu, nu, nu, nu, views.fork_form(typed, optimizer, loss, decay).error or ""
        window = (low, high) if isinstance(low, (int, float)) and isinstance(high, (int, float)) else None
        edit = fork_lr_edit(trigger, ctx.triggered[0]["value"] if ctx.triggered else None, typed,
                            (known or {}).get("lr"), window)
        if edit is None:
            raise dash.exceptions.PreventUpdate
        moved = edit["window"]
        return (nu if edit["text"] is None else edit["text"], nu if edit["position"] is None else edit["position"],
                moved[0] if moved else nu, moved[1] if moved else nu, views.lr_marks(*moved) if moved else nu,
                edit["error"])

    # find LR clicked: say so at once (the tick says what became of it, from the request's own state)
    app.clientside_callback(
        """function(n) { return n ? 'range test running…' : dash_clientside.no_update; }""",
        Output(ids.FIND_LR_STATUS, "children", allow_duplicate=True), Input(ids.FIND_LR, "n_clicks"),
        prevent_initial_call=True,
    )

    # a request of this browser was sent: poll fast from now on, not from the next poll that finds it
    # waiting (up to `C.POLL_MS` later); the poll makes it slow again once nothing of this browser waits
    app.clientside_callback(
        f"function(mine) {{ return {FAST_POLL_MS}; }}",
        Output(ids.TRIAL_TICK, "interval", allow_duplicate=True), Input(ids.MY_COMMANDS, "data"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output(ids.MY_COMMANDS, "data"),
        Input(ids.LR_INPUT, "value"), Input(ids.LR_SEND, "n_clicks"), Input(ids.LR_CONFIRM, "submit_n_clicks"),
        Input(ids.OPTIMIZER, "value"), Input(ids.LOSS, "value"), Input(ids.WEIGHT_DECAY, "value"),
        Input({"type": ids.PIN, "param": ALL}, "n_clicks"),
        Input(ids.PAUSE, "n_clicks"), Input(ids.RESUME, "n_clicks"), Input(ids.KEEP, "n_clicks"),
        Input(ids.PRUNE, "submit_n_clicks"), Input(ids.RESET, "submit_n_clicks"), Input(ids.PROMOTE, "n_clicks"),
        Input(ids.FIND_LR, "n_clicks"), Input(ids.FIND_LR_APPLY, "n_clicks"),
        Input(ids.UNDO, "n_clicks"), Input(ids.FORK_SEND, "n_clicks"),
        *(State(cid, "value") for cid in FORK_FIELDS),
        State(ids.PAGE_CTX, "data"), State(ids.KNOWN, "data"), State(ids.MY_COMMANDS, "data"),
        State(ids.LR_VALUE, "children"), State(ids.FIND_LR_RESULT, "data"),
        prevent_initial_call=True,
    )
    def send(*args: Any):
        page, known, mine, shown_lr, found = args[-5:]
        fork = args[-5 - len(FORK_FIELDS):-5]
        if not ctx.triggered:
            raise dash.exceptions.PreventUpdate
        request = request_for(ctx.triggered_id, ctx.triggered[0]["value"], known or {}, shown_lr,
                              page.get("lr_search"), (found or {}).get("suggestion"), fork)
        if request is None or page.get("trial") is None:
            raise dash.exceptions.PreventUpdate
        cmd = ask(studies.control(page["study"]), trial=page["trial"], **request)
        return [*(mine or []), cmd.id][-50:]
