"""The Dash steering app: `create_app(storage_url)` builds one, registering nothing globally.

    from steer.dashboards.app import create_app
    app = create_app("sqlite:///studies/quick.db")
    app.run(port=8050)          # or serve it with steer.dashboards.server.serve(app, ...)

Pages (the study is always in the query, `?study=NAME`):
    /            the study: trials, best-so-far PSNR, pins
    /trial/N     one trial: target and live prediction, curves, the controls, its interventions
    /wall        every running trial's live prediction

Every page polls the control plane (about 2 Hz) and keeps nothing on the
server: see docs/app.md. The frame around every page shows whether the study
is held (`held.py`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from typing import Any
from urllib.parse import urlencode

import dash
import flask
from dash import Input, Output, State, dcc, html
from sqlalchemy.exc import SQLAlchemyError

from steer.dashboards import components as C
from steer.dashboards import guard, held
from steer.dashboards import ids
from steer.dashboards import study_page
from steer.dashboards import trial_page
from steer.dashboards import wall_page
from steer.dashboards.polling import study_in
from steer.dashboards.studies import Studies
from steer.dashboards.users import User, require_users
from steer.dashboards.users import current as current_user
from steer.errors import UserError
from steer.storage import ControlError

INDEX = """<!DOCTYPE html>
<html>
    <head>
        {%metas%}
        <title>{%title%}</title>
        {%favicon%}
        {%css%}
        <style>""" + C.CSS + """</style>
    </head>
    <body>
        {%app_entry%}
        <footer>
            {%config%}
            {%scripts%}
            {%renderer%}
        </footer>
    </body>
</html>"""

PAGES = (study_page, trial_page, wall_page)


def create_app(storage_url: str, study_name: str | None = None, token: str | None = None,
               users: dict[str, User] | None = None, user_header: str | None = None) -> dash.Dash:
    """A Dash app on the studies of `storage_url` (`study_name`: the one shown by default).

    With named `users` (`users.load_users`), every request must come from one
    of them (see `users.require_users`; `user_header`: the name comes from
    that header, set by a trusted proxy). With a `token`, every HTTP request
    must carry it (see `require_token`). Without either, only requests
    addressed to a loopback host are answered.
    """
    studies = Studies(storage_url, study_name)
    server = flask.Flask(__name__, static_folder=None)
    if users is not None or user_header is not None:
        require_users(server, users or {}, user_header)
    elif token:
        require_token(server, token)
    else:
        require_loopback_host(server)
    serve_images(server, studies)
    app = dash.Dash(__name__, server=server, title="steer", update_title=None, index_string=INDEX,
                    serve_locally=True)
    app.layout = frame  # built per page load: it shows who is signed in
    app.validation_layout = html.Div([frame(), *(page.validation_layout() for page in PAGES)])
    register_router(app, studies)
    held.register(app, studies)
    for page in PAGES:
        page.register(app, studies)
    guard.answer_malformed_callbacks(app)
    return app


def frame() -> html.Div:
    """What every page shares: the URL, the top bar, the held-study banner, this browser's command ids, the page."""
    return html.Div([
        dcc.Location(id=ids.URL, refresh="callback-nav"),
        dcc.Store(id=ids.MY_COMMANDS, storage_type="session", data=[]),
        html.Div([
            html.Span("steer", className="brand"),
            html.Div(id=ids.NAV, className="nav-links"),
            html.Span(className="spacer"),
            html.Div(dcc.Dropdown(id=ids.STUDY_PICKER, options=[], clearable=False, placeholder="pick a study"),
                     id=ids.STUDY_PICKER_BOX, className="picker", style={"display": "none"}),
            html.Span(f"live, polling every {C.POLL_MS / 1000:g} s", className="live-dot"),
            *signed_in(current_user()),
        ], className="nav"),
        *held.banner(),
        html.Div(id=ids.PAGE),
    ])


def signed_in(user: User | None) -> list:
    """Who is signed in, in the top bar (nothing without named users)."""
    if user is None:
        return []
    role = "steers" if user.may_steer else "watches only"
    return [html.Span([html.B(user.name), f" ({role})"], id=ids.SIGNED_IN, className="signed-in")]


def nav(study: str | None, page: str) -> list:
    """The top bar's links: the study's name, its pages."""
    if study is None:
        return []
    return [html.Span(study, className="study-name"),
            dcc.Link("Study", href=C.href("/", study), className="active" if page == "study" else ""),
            dcc.Link("Wall", href=C.href("/wall", study), className="active" if page == "wall" else "")]


TRIAL_PATH = re.compile(r"/trial/(\d+)/?")


def register_router(app: dash.Dash, studies: Studies) -> None:
    @app.callback(Output(ids.PAGE, "children"), Output(ids.NAV, "children"), Output(ids.STUDY_PICKER, "options"),
                  Output(ids.STUDY_PICKER, "value"), Output(ids.STUDY_PICKER_BOX, "style"),
                  Input(ids.URL, "pathname"), Input(ids.URL, "search"))
    def route(pathname: str | None, search: str | None):
        names = studies.names()
        page, name, where = _page(pathname or "/", search, names)
        picker = {} if len(names) > 1 else {"display": "none"}
        return page, nav(name, where), names, name, picker

    def _page(pathname: str, search: str | None, names: list[str]) -> tuple[Any, str | None, str]:
        wanted = study_in(search)
        if wanted is None and studies.default is None and len(names) > 1:
            return C.message_page("Pick a study", "This storage holds several studies: pick one at the top "
                                  "right."), None, ""
        try:
            name = studies.resolve(wanted)
        except UserError as exc:
            return C.message_page("No such study", str(exc)), None, ""
        try:
            if pathname == "/":
                return study_page.layout(studies, name), name, "study"
            if pathname.rstrip("/") == "/wall":
                return wall_page.layout(studies, name), name, "wall"
            match = TRIAL_PATH.fullmatch(pathname)
            if match:
                return trial_page.layout(studies, name, int(match.group(1))), name, "trial"
        except (ControlError, SQLAlchemyError) as exc:
            return C.message_page("Database unavailable", str(exc).splitlines()[0], name), name, ""
        return C.message_page("Not found", f"There is no page {pathname}.", name), name, ""

    @app.callback(Output(ids.URL, "href"), Input(ids.STUDY_PICKER, "value"), State(ids.URL, "search"),
                  prevent_initial_call=True)
    def pick_study(name: str | None, search: str | None):
        current = study_in(search)
        try:
            shown = studies.resolve(current)  # a URL without ?study= shows the default study
        except UserError:
            shown = None
        if not name or name == shown:  # the router set the picker to the page's study: stay on the page
            raise dash.exceptions.PreventUpdate
        return C.href("/", name)


# ---- images ---------------------------------------------------------------------- #


def serve_images(server: flask.Flask, studies: Studies) -> None:
    """PNG routes: the study's target and a trial's latest prediction (the `v` query only busts caches)."""

    def png(data: bytes | None, cache_s: int) -> flask.Response:
        if data is None:
            return flask.Response("no image yet", status=404, mimetype="text/plain")
        response = flask.Response(data, mimetype="image/png")
        response.headers["Cache-Control"] = f"private, max-age={cache_s}"
        return response

    def control_for_request():
        try:
            return studies.control(studies.resolve(flask.request.args.get("study")))
        except UserError as exc:
            flask.abort(flask.Response(str(exc), status=404, mimetype="text/plain"))

    @server.route("/steer/target.png")
    def target_png():
        return png(control_for_request().target_png(), 3600)

    @server.route("/steer/live.png")
    def live_png():
        trial = flask.request.args.get("trial", "")
        if not trial.isdigit():
            return flask.Response("trial must be a trial number", status=400, mimetype="text/plain")
        live = control_for_request().live(int(trial))
        return png(live.png if live else None, 3600 if flask.request.args.get("v") else 0)


# ---- who may ask ------------------------------------------------------------------ #

COOKIE_PREFIX = "steer-auth-"


def _digest(token: str) -> str:
    return hashlib.sha256(f"steer-dash:{token}".encode()).hexdigest()


def require_token(server: flask.Flask, token: str) -> None:
    """Answer 401 to any request without the token.

    The token is accepted as `Authorization: Bearer TOKEN`, as a cookie the app
    sets itself, or once as `?token=TOKEN`: that answer sets the cookie
    (HttpOnly, SameSite=Strict) and redirects to the same URL without the
    token, so it leaves the address bar and the history.
    """
    digest = _digest(token)
    cookie = COOKIE_PREFIX + digest[:12]  # one cookie per token: two apps on one host don't clash

    @server.before_request
    def check_token():
        request = flask.request
        given = request.args.get("token")
        if given is not None and hmac.compare_digest(given.encode(), token.encode()):
            rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
            response = flask.redirect(request.path + (f"?{urlencode(rest)}" if rest else ""))
            response.set_cookie(cookie, digest, httponly=True, samesite="Strict")
            return response
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip().encode(), token.encode()):
            return None
        if hmac.compare_digest(request.cookies.get(cookie, "").encode(), digest.encode()):
            return None
        return flask.Response("401 Unauthorized: this steer app needs its token: open it once as "
                              "/?token=TOKEN, or send 'Authorization: Bearer TOKEN'.\n", status=401,
                              mimetype="text/plain", headers={"WWW-Authenticate": 'Bearer realm="steer"'})


def is_loopback(host: str) -> bool:
    """Whether a host name or address (no port) is this machine's loopback."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_loopback_host(server: flask.Flask) -> None:
    """Without a token, answer only requests addressed to a loopback host (stops DNS rebinding)."""

    @server.before_request
    def check_host():
        host = flask.request.host
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
        if not is_loopback(name):
            return flask.Response(f"403 Forbidden: this steer app runs without a token and answers only at "
                                  f"localhost, not {host!r}; start it with --token to serve other hosts.\n",
                                  status=403, mimetype="text/plain")
        return None
