"""Helpers the pages' callbacks share.

Each page is one module (`study_page`, `trial_page`, `wall_page`) with its
layout and its callbacks side by side: `layout(studies, study, ...)`,
`validation_layout()` (every id its callbacks use, for Dash's checks) and
`register(app, studies)`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from typing import Any, Callable
from urllib.parse import parse_qs

import dash
import flask
from sqlalchemy.exc import SQLAlchemyError

from steer.control import Command, Control
from steer.dashboards import users
from steer.storage import ControlError

log = logging.getLogger("steer.dashboards")


def digest(value: Any) -> str:
    """A short fingerprint of what a part of a page shows: unchanged parts are not sent again."""
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def skip_when_database_busy(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A poll that cannot read the database changes nothing on the page; the next poll tries again."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ControlError, SQLAlchemyError) as exc:
            log.warning("%s: skipped a poll: %s", fn.__name__, str(exc).splitlines()[0])
            raise dash.exceptions.PreventUpdate from None

    return wrapper


def study_in(search: str | None) -> str | None:
    """The study a URL's query names (`?study=NAME`), or None: the router resolves it (`Studies.resolve`)."""
    return parse_qs((search or "").lstrip("?")).get("study", [None])[0]


def requester() -> str:
    """Who asks, as recorded with every command: the signed-in user's name, or (without named users)
    the app and the browser's address."""
    user = users.current()
    if user is not None:
        return user.name
    addr = flask.request.remote_addr if flask.has_request_context() else None
    return f"dash:{addr}" if addr else "dash"


def ask(control: Control, action: str, **kwargs: Any) -> Command:
    """The app's one way to request an action: as the signed-in user, refused (and recorded) for a viewer."""
    user = users.current()
    denied = None if user is None or user.may_steer else f"{user.name} may watch, not steer (role {user.role})"
    return control.request(action, by=requester(), denied=denied, **kwargs)
