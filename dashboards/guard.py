"""What the app answers to callback requests that no page of it sent: 400 with the reason.

Dash trusts its renderer: a request to /_dash-update-component with another shape, or values of
other types than the page's components send, reaches Dash's dispatcher and the callbacks as it is,
and an exception there is a 500 with a traceback in the log. The rule (docs/fuzzing.md) is one
clear answer to bad input, so requests are checked here first, against the callback map (which
callback, which inputs in which order) and against what each property and each store can hold.
What passes is what a page of this app could send. A callback that raises a UserError on it was
asked for what is not there (a study since deleted): 400 with its message; any other failure is a
bug, and stays a 500 in the log.
"""

from __future__ import annotations

import json
import logging
import math
import traceback
from pathlib import Path
from typing import Any

import dash
import flask
from werkzeug.exceptions import HTTPException

from steer.control import MAX_TRIAL_NUMBER
from steer.dashboards import ids
from steer.errors import UserError

HERE = Path(__file__).resolve().parent
log = logging.getLogger("steer.dashboards")
NUMBER = (int, float)
NONE = type(None)
# What the renderer sends for these properties, whichever component has them.
PROPERTY_TYPES: dict[str, tuple[type, ...]] = {
    "pathname": (str, NONE), "search": (str, NONE), "href": (str, NONE),
    "n_intervals": (int, NONE), "n_clicks": (int, NONE), "submit_n_clicks": (int, NONE),
    "interval": NUMBER, "drag_value": (*NUMBER, NONE), "min": (*NUMBER, NONE), "max": (*NUMBER, NONE),
}
# What a component's `value` (or, for the LR shown, `children`) is, where it is not any JSON.
COMPONENT_TYPES: dict[tuple[str, str], tuple[type, ...]] = {
    (ids.LR_INPUT, "value"): (str, NONE), (ids.OPTIMIZER, "value"): (str, NONE), (ids.LOSS, "value"): (str, NONE),
    (ids.WEIGHT_DECAY, "value"): (*NUMBER, NONE), (ids.LR_SLIDER, "value"): (*NUMBER, NONE),
    (ids.STUDY_PICKER, "value"): (str, NONE), (ids.LR_VALUE, "children"): (str, NONE),
    # the study page's hint and search-space forms: text boxes (the control plane reads the numbers)
    (ids.HINT_PARAM, "value"): (str, NONE), (ids.HINT_VALUE, "value"): (str, NONE),
    (ids.HINT_STRENGTH, "value"): (str, NONE), (ids.HINT_TRIALS, "value"): (str, NONE),
    (ids.SPACE_PARAM, "value"): (str, NONE), (ids.SPACE_LOW, "value"): (str, NONE),
    (ids.SPACE_HIGH, "value"): (str, NONE), (ids.SPACE_CHOICES, "value"): (str, NONE),
    # the trial page's fork card: text boxes and dropdowns (empty: the parent's), its log LR slider
    (ids.FORK_LR, "value"): (str, NONE), (ids.FORK_OPTIMIZER, "value"): (str, NONE),
    (ids.FORK_LOSS, "value"): (str, NONE), (ids.FORK_WEIGHT_DECAY, "value"): (str, NONE),
    (ids.FORK_LR_SLIDER, "value"): (*NUMBER, NONE),
}
# What each dcc.Store holds (the app writes them; a request may carry anything).
STORE_TYPES: dict[str, tuple[type, ...]] = {
    ids.PAGE_CTX: (dict,), ids.MY_COMMANDS: (list,), ids.HELD_SEEN: (str, NONE), ids.STUDY_SEEN: (dict, NONE),
    ids.SPACE_SEEN: (dict, NONE), ids.WALL_SEEN: (str, NONE), ids.TRIAL_CURSOR: (dict, NONE), ids.KNOWN: (dict,),
    ids.LR_PENDING: (dict, NONE), ids.TRIAL_POLLED: (dict, NONE), ids.FIND_LR_RESULT: (dict, NONE),
}
# The keys of the stores whose values the callbacks compute with: (types, required).
STORE_KEYS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    ids.LR_PENDING: {"id": ((str,), True), "value": (NUMBER, True), "at": (NUMBER, True), "sent": ((bool,), False)},
    ids.KNOWN: {"lr": ((*NUMBER, NONE), False), "optimizer": ((str, NONE), False), "loss": ((str, NONE), False),
                "weight_decay": ((*NUMBER, NONE), False)},
    ids.TRIAL_CURSOR: {"step": ((int,), False), "watched": (NUMBER, False), "psnr": ((*NUMBER, NONE), False),
                       "n_int": ((int,), False), "buttons": ((list,), False), "family": ((list,), False)},
    ids.FIND_LR_RESULT: {"command": ((int,), True), "suggestion": ((*NUMBER, NONE), True)},
}


def _positive(v: Any) -> bool:
    return v is None or (isinstance(v, NUMBER) and not isinstance(v, bool) and math.isfinite(v) and v > 0)


def _lr_range(v: Any) -> bool:
    return v is None or (isinstance(v, list) and len(v) == 2 and all(_positive(x) and x is not None for x in v)
                         and v[0] < v[1])


# Values the callbacks compute with (logarithms of learning rates): what the app itself writes there.
VALUE_RULES: dict[tuple[str, str], tuple[Any, str]] = {
    (ids.KNOWN, "lr"): (_positive, "a positive learning rate"),
    (ids.LR_PENDING, "value"): (_positive, "a positive learning rate"),
    (ids.FIND_LR_RESULT, "suggestion"): (_positive, "a positive learning rate"),
    (ids.PAGE_CTX, "lr_search"): (_lr_range, "a [low, high] range of learning rates"),
}
# The page context's keys: "study" on every page, the others where the page has them (a trial page's
# callbacks refuse a context without its trial themselves).
PAGE_CTX_KEYS: dict[str, tuple[type, ...]] = {"study": (str,), "trial": (int,), "steps": (int, NONE),
                                              "images": (bool, NONE), "value_label": (str, NONE),
                                              "lr_search": (list, NONE)}


def answer_malformed_callbacks(app: dash.Dash) -> None:
    """Check every callback request before Dash reads it; answer 400 to what no page sends."""
    server = app.server

    @server.before_request
    def check_callback_request():
        request = flask.request
        if request.method != "POST" or not request.path.endswith("/_dash-update-component"):
            return None
        problem = callback_request_problem(request.get_data(), app.callback_map)
        if problem:
            log.warning("answered 400 to a callback request: %s", problem)  # one line, no traceback
            return flask.Response(f"malformed callback request: {problem}", status=400, mimetype="text/plain")
        return None

    def handler(exc: Exception):
        """A UserError, or whatever still fails inside Dash's own reading of a request, is the request's
        fault: 400. Any other failure in this package's code is a bug, re-raised: a 500, logged."""
        if isinstance(exc, HTTPException):
            return exc
        if isinstance(exc, UserError):  # the request named what is not there (a study since deleted, say)
            return flask.Response(str(exc), status=400, mimetype="text/plain")
        ours = any(Path(frame.filename).resolve().is_relative_to(HERE)
                   for frame in traceback.extract_tb(exc.__traceback__))
        if flask.request.path.endswith("/_dash-update-component") and not ours:
            reason = f"malformed callback request: {type(exc).__name__}: {str(exc)[:200]}"
            return flask.Response(reason, status=400, mimetype="text/plain")
        raise exc

    server.register_error_handler(Exception, handler)


def callback_request_problem(raw: bytes, callback_map: dict[str, dict]) -> str | None:
    """Why `raw` is not a callback request a page of this app sends, or None."""
    try:
        body = json.loads(raw)
    except ValueError:
        return "not JSON"
    if not isinstance(body, dict) or not isinstance(body.get("output"), str) or body["output"] not in callback_map:
        return "no such callback output"
    key, spec = body["output"], callback_map[body["output"]]
    outputs = key[2:-2].split("...") if key.startswith("..") else [key]
    sent_outputs = body.get("outputs") if key.startswith("..") else [body.get("outputs")]
    wanted = [dict(zip(("id", "property"), o.split("@")[0].rsplit(".", 1))) for o in outputs]
    checks = [("outputs", sent_outputs, wanted, False), ("inputs", body.get("inputs"), spec["inputs"], True),
              ("state", body.get("state", []), spec.get("state", []), True)]
    for field, sent, deps, valued in checks:
        if not isinstance(sent, list) or len(sent) != len(deps):
            return f"{field}: expected {len(deps)} entries"
        for item, dep in zip(sent, deps):
            problem = _entry_problem(item, dep, valued)
            if problem:
                return f"{field}: {dep['id']}.{dep['property']}: {problem}"
    changed = body.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        return "changedPropIds: expected a list of strings"
    return None


def _entry_problem(item: Any, dep: dict[str, str], valued: bool) -> str | None:
    """Why one entry does not match its dependency: the same id and property (for a pattern id, a
    list of entries with concrete ids of the pattern's keys), and a value of the property's type."""
    if dep["id"].startswith("{"):
        pattern = json.loads(dep["id"])
        if not isinstance(item, list):
            return "expected the list of matching components"
        for entry in item:
            if not (isinstance(entry, dict) and entry.get("property") == dep["property"]
                    and isinstance(entry.get("id"), dict) and set(entry["id"]) == set(pattern)
                    and all(v == pattern[k] if pattern[k] != ["ALL"] else isinstance(v, (str, int))
                            for k, v in entry["id"].items())):
                return "an entry does not match the pattern"
            if valued:
                problem = _value_problem(dep["property"], None, entry.get("value"))
                if problem:
                    return problem
        return None
    # An output that several callbacks set (allow_duplicate) is sent as "property@hash".
    sent_property = item.get("property") if isinstance(item, dict) else None
    if not (isinstance(sent_property, str) and item.get("id") == dep["id"]
            and sent_property.split("@")[0] == dep["property"]):
        return "does not name it"
    return _value_problem(dep["property"], dep["id"], item.get("value")) if valued else None


def _value_problem(prop: str, component: str | None, value: Any) -> str | None:
    allowed = STORE_TYPES.get(component) if prop == "data" else \
        COMPONENT_TYPES.get((component, prop)) or PROPERTY_TYPES.get(prop)
    if allowed is not None and not isinstance(value, allowed):
        return f"a {type(value).__name__} is not what it holds"
    if isinstance(value, bool) and prop in PROPERTY_TYPES and bool not in allowed:
        return "a bool is not what it holds"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return "a number beyond what a browser sends"
    if prop == "data" and isinstance(value, dict) and component in STORE_KEYS:
        for key, (types, required) in STORE_KEYS[component].items():
            if key not in value and required:
                return f"without {key}"
            if key in value and (not isinstance(value[key], types) or isinstance(value[key], bool) and bool not in types):
                return f"{key}: a {type(value[key]).__name__}"
    if prop == "data" and isinstance(value, dict):
        for (store, key), (rule, what) in VALUE_RULES.items():
            if store == component and key in value and not rule(value[key]):
                return f"{key}: expected {what}"
    if prop == "data" and component == ids.PAGE_CTX:
        if "study" not in value:
            return "page context without its study"
        for key, types in PAGE_CTX_KEYS.items():
            if key in value and not isinstance(value[key], types):
                return f"page context {key}: a {type(value[key]).__name__}"
        if "trial" in value and not 0 <= value["trial"] <= MAX_TRIAL_NUMBER:
            return "page context trial: no such trial number"
    return None
