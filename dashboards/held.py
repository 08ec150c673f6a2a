"""The study's hold, on every page: a banner while the study is held, with a release button; the study
page's hold button.

The banner is part of the frame (`app.frame`), with its own poll (about once a
second) of `Control.held()` for the study in the URL, resolved as the router
resolves it. A hold or a release is applied at once by the control plane, so
the banner follows the click in the same round trip.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, ctx, dcc, html

from steer.actions import ACTIONS
from steer.dashboards import ids, views
from steer.dashboards.polling import ask, digest, skip_when_database_busy, study_in
from steer.dashboards.studies import Studies
from steer.errors import UserError

HELD_POLL_MS = 1000
# button -> action; a button's id is {"type": ids.STUDY_BUTTON, "button": key}
BUTTONS = {ids.HOLD: "hold", ids.RELEASE: "release"}
HIDDEN = {"display": "none"}


def button(key: str, held: bool | None = None) -> html.Button:
    """The hold (study page) or release (banner) button, labelled and explained by its action's row."""
    action = ACTIONS[BUTTONS[key]]
    return html.Button(action.label, id={"type": ids.STUDY_BUTTON, "button": key}, n_clicks=0,
                       className="btn" + (" danger" if key == ids.HOLD else ""), title=action.help,
                       style=style(key, held) if held is not None else None)


def style(key: str, held: bool) -> dict[str, str] | None:
    """Hold shows while the study is free, release while it is held."""
    return None if held == (key == ids.RELEASE) else HIDDEN


def banner() -> list:
    """The frame's part: hidden until the first poll finds the study held."""
    return [
        dcc.Interval(id=ids.HELD_TICK, interval=HELD_POLL_MS),
        dcc.Store(id=ids.HELD_SEEN, data=""),
        html.Div([html.Span(id=ids.HELD_TEXT), button(ids.RELEASE, True)], id=ids.HELD_BANNER,
                 className="held-banner", style=HIDDEN),
        html.Div(id=ids.HELD_STATUS, className="held-status"),
    ]


def register(app: dash.Dash, studies: Studies) -> None:
    @app.callback(
        Output(ids.HELD_TEXT, "children"), Output(ids.HELD_BANNER, "style"),
        Output({"type": ids.STUDY_BUTTON, "button": ALL}, "style"), Output(ids.HELD_SEEN, "data"),
        Output(ids.HELD_STATUS, "children"),
        Input(ids.HELD_TICK, "n_intervals"), Input(ids.URL, "search"),
        Input({"type": ids.STUDY_BUTTON, "button": ALL}, "n_clicks"), State(ids.HELD_SEEN, "data"),
    )
    @skip_when_database_busy
    def poll(_n: int, search: str | None, _clicks: list[int | None], seen: str):
        try:
            name = studies.resolve(study_in(search))
        except UserError:  # no study to show (the router says why)
            name = None
        trigger = ctx.triggered_id
        status: Any = dash.no_update
        if isinstance(trigger, dict) and ctx.triggered[0]["value"] and name is not None:
            cmd = ask(studies.control(name), BUTTONS[trigger["button"]])
            status = f"{cmd.action}: {cmd.reason}" if cmd.state == "rejected" else ""
        held = studies.control(name).held() if name is not None else None
        fingerprint = digest([name, held])
        if trigger == ids.HELD_TICK and fingerprint == seen:
            raise dash.exceptions.PreventUpdate
        styles = [style(o["id"]["button"], held is not None) for o in ctx.outputs_list[2]]
        return views.held_words(held) or "", None if held else HIDDEN, styles, fingerprint, status
