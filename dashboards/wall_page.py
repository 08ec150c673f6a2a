"""The wall: every running trial's live prediction, its PSNR and settings, each a link to its page, with a
pause / resume button."""

from __future__ import annotations

import time
from typing import Any

import dash
from dash import ALL, Input, Output, State, ctx, dcc, html

from steer import record
from steer.actions import ACTIONS
from steer.dashboards import components as C
from steer.dashboards import ids, views
from steer.dashboards.polling import ask, digest, skip_when_database_busy
from steer.dashboards.studies import Studies

STALE_S = 30  # a running trial silent this long is flagged: its worker may be gone
BUTTONS = {ids.WALL_PAUSE: ("pause", "resume")}  # a card's button: pause while the trial trains, resume while paused


def layout(studies: Studies, study: str) -> html.Div:
    return build(study, views.total_steps(studies.control(study)))


def validation_layout() -> html.Div:
    return build("", None)


def build(study: str, steps: int | None) -> html.Div:
    return html.Div([
        dcc.Store(id=ids.PAGE_CTX, data={"study": study, "steps": steps}),
        dcc.Store(id=ids.WALL_SEEN, data=""),
        dcc.Interval(id=ids.WALL_TICK, interval=C.POLL_MS),
        html.H2(f"Running trials of {study}"),
        html.Div(id=ids.WALL_STATUS, className="field-error"),
        html.Div(id=ids.WALL_GRID, className="wall"),
    ], className="page")


def target_card(study: str) -> html.Div:
    return html.Div([html.Img(src=C.href("/steer/target.png", study), alt="target"),
                     html.Div([html.Span("target")], className="title"),
                     html.Div("what every trial fits", className="meta")], className="wall-card target")


def wall_card(card: dict[str, Any], study: str, now: float, steps: int | None) -> html.Div:
    """The card (a link to the trial's page) and, over its corner, its pause or resume button."""
    n = card["trial"]
    paused = card.get("paused") is not None
    image = (html.Img(src=C.href("/steer/live.png", study, trial=n, v=f"{card['wall_time']:.3f}"),
                      alt=f"trial {n}") if card["has_image"] else html.Div("no preview yet", className="placeholder"))
    psnr = "" if card["psnr"] is None else f"{card['psnr']:.2f} dB"
    silent = now - card["wall_time"]
    where = f"paused at step {card['paused']}" if paused else f"step {card['step']}"
    meta = [html.Div(f"lr {views.fmt_lr(card['lr'])} · {card['optimizer'] or '-'} · {card['loss'] or '-'}"),
            html.Div(where + (f" of {steps}" if steps else "")
                     + (f" · no update for over {STALE_S} s" if silent > STALE_S and not paused else ""))]
    progress = ([html.Div(html.Div(style={"width": f"{min(100.0, 100.0 * card['step'] / steps):.1f}%"}),
                          className="progress")] if steps else [])
    title = [html.Span([f"trial {n}", *([" ", C.badge("paused", C.PAUSED_COLOR)] if paused else [])]),
             html.Span(psnr)]
    link = dcc.Link([image, html.Div(title, className="title"), html.Div(meta, className="meta"), *progress],
                    href=C.href(f"/trial/{n}", study), className="wall-card" + (" paused" if paused else ""),
                    id={"type": ids.WALL_CARD, "trial": n})
    action = BUTTONS[ids.WALL_PAUSE][1 if paused else 0]
    toggle = html.Button(ACTIONS[action].label, id={"type": ids.WALL_PAUSE, "trial": n, "action": action},
                         className="btn wall-pause" + (" primary" if paused else ""), title=ACTIONS[action].help)
    return html.Div([link, toggle], className="wall-cell")


def register(app: dash.Dash, studies: Studies) -> None:
    @app.callback(Output(ids.WALL_GRID, "children"), Output(ids.WALL_SEEN, "data"),
                  Input(ids.WALL_TICK, "n_intervals"), State(ids.PAGE_CTX, "data"), State(ids.WALL_SEEN, "data"))
    @skip_when_database_busy
    def tick(_n: int, page: dict[str, Any], seen: str):
        control = studies.control(page["study"])
        lives = control.live_all(running_only=True)
        paused = {}
        for live in lives:  # one trial's attributes each: is it paused?
            trial = control.trial(live.trial)
            paused[live.trial] = record.read(trial).paused if trial is not None else None
        cards = views.wall_cards(lives, {live.trial: views.latest_metric(control, live) for live in lives}, paused)
        now = time.time()
        fingerprint = digest([cards, [now - c["wall_time"] > STALE_S for c in cards]])
        if fingerprint == seen:
            raise dash.exceptions.PreventUpdate
        if not cards:
            return [html.P("No trial is running. Start workers with `steer run SPEC`; finished trials are on the "
                           "study page.", className="muted")], fingerprint
        return [target_card(page["study"]), *(wall_card(c, page["study"], now, page.get("steps")) for c in cards)], \
            fingerprint

    @app.callback(Output(ids.MY_COMMANDS, "data", allow_duplicate=True), Output(ids.WALL_STATUS, "children"),
                  Input({"type": ids.WALL_PAUSE, "trial": ALL, "action": ALL}, "n_clicks"),
                  State(ids.PAGE_CTX, "data"), State(ids.MY_COMMANDS, "data"), prevent_initial_call=True)
    def toggle(_clicks: list[int | None], page: dict[str, Any], mine: list[int] | None):
        if not isinstance(ctx.triggered_id, dict) or not ctx.triggered[0]["value"]:
            raise dash.exceptions.PreventUpdate  # the buttons were (re)drawn, not clicked
        n, action = ctx.triggered_id["trial"], ctx.triggered_id["action"]
        cmd = ask(studies.control(page["study"]), action, trial=n)
        status = f"trial {n}: {cmd.action} {cmd.state}: {cmd.reason}" if cmd.state == "rejected" else ""
        return [*(mine or []), cmd.id][-50:], status
