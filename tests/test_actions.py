"""The one action table: every action is accepted by the control plane, the CLI and the app, and a bad
value is rejected with the same message by all three.

The app is driven through its real HTTP callback endpoint (what a browser
posts when a control is touched), the CLI through its real `main` (argparse,
the one error funnel), on a real SQLite study with a running trial.
"""

from __future__ import annotations

import json

import optuna
import pytest

from steer import actions
from steer.actions import ACTIONS, BY_CLI, SETTING_ACTIONS
from steer.cli import main as cli_main
from steer.control import IMMEDIATE, Control
from steer.dashboards import held, ids, study_page, trial_page
from steer.dashboards.app import create_app
from steer.steering import HANDLERS
from steer.storage import open_storage


def test_every_row_has_its_handlers_a_cli_spelling_and_an_app_control():
    app_triggers = {SETTING_ACTIONS[p].name for p in trial_page.VALUE_CONTROLS.values()}
    app_triggers |= set(trial_page.BUTTONS.values()) | {"pin", "unpin"}  # pin buttons; unpin on the study page
    app_triggers |= set(held.BUTTONS.values())  # hold and release, in every page's frame
    app_triggers |= set(study_page.BUTTONS.values())  # hint, unhint and space: the study page's forms
    for a in ACTIONS.values():
        assert (a.name in HANDLERS) == a.by_trial, a.name
        assert (a.name in IMMEDIATE) == a.by_control, a.name
        assert BY_CLI[a.cli] is a and actions.get(a.cli) is a and actions.get(a.name) is a
        assert a.name in app_triggers, f"{a.name} has no control in the app"
        assert a.scope in ("trial", "study", "either") and a.label and a.help and a.example
    assert set(HANDLERS) | set(IMMEDIATE) == set(ACTIONS)


# action: (CLI words, control plane kwargs, app trigger) for a good request and for a bad one, and
# the reason the bad one gets. `N` stands for the running trial; 999 is a trial the study lacks.
CASES = {
    # The page checks a typed LR itself with the same rule and sends nothing bad (tests/test_dash_pace.py).
    "set_lr": (["3e-4"], {"value": "3e-4"}, ("lr-input.value", "3e-4"),
               ["-1"], {"value": "-1"}, None, "lr: got -1.0; allowed: float in [1e-07, 1]"),
    "set_optimizer": (["sgd"], {"value": "sgd"}, ("optimizer.value", "sgd"),
                      ["rmsprop"], {"value": "rmsprop"}, ("optimizer.value", "rmsprop"),
                      "optimizer: got 'rmsprop'; allowed: adam | sgd | adamw"),
    "set_loss": (["l1"], {"value": "l1"}, ("loss.value", "l1"),
                 ["ssim"], {"value": "ssim"}, ("loss.value", "ssim"), "loss: got 'ssim'; allowed: mse | l1 | huber"),
    "set_weight_decay": (["1e-4"], {"value": "1e-4"}, ("weight-decay.value", 1e-4),
                         ["2"], {"value": "2"}, ("weight-decay.value", 2), "weight_decay: got 2.0; allowed: float in [0, 1]"),
    "reset": (["42"], {"value": 42}, ("reset.submit_n_clicks", 1),
              ["-3"], {"value": "-3"}, None, "reset seed must be a non-negative integer, got '-3'"),
    "prune": ([], {}, ("prune.submit_n_clicks", 1),
              ["--trial", "999"], {"trial": 999}, ("prune.submit_n_clicks", 999), "no trial 999 in study 'acts'"),
    "pin": (["lr"], {"param": "lr"}, ("pin:lr", 1),
            ["colour"], {"param": "colour"}, ("pin:colour", 1),
            "pin needs a parameter: one of lr, optimizer, loss, weight_decay; got 'colour'"),
    "unpin": (["lr"], {"param": "lr"}, ("unpin:lr", 1),
              ["loss"], {"param": "loss"}, ("unpin:loss", 1), "loss is not pinned"),
    "promote": ([], {}, ("promote.n_clicks", 1),
                ["--trial", "999"], {"trial": 999}, ("promote.n_clicks", 999), "no trial 999 in study 'acts'"),
    "pause": ([], {}, ("pause-button.n_clicks", 1),
              ["--trial", "999"], {"trial": 999}, ("pause-button.n_clicks", 999), "no trial 999 in study 'acts'"),
    "resume": ([], {}, ("resume-button.n_clicks", 1),
               ["--trial", "999"], {"trial": 999}, ("resume-button.n_clicks", 999), "no trial 999 in study 'acts'"),
    "keep": ([], {}, ("keep-button.n_clicks", 1),
             ["--trial", "999"], {"trial": 999}, ("keep-button.n_clicks", 999), "no trial 999 in study 'acts'"),
    # The fork card sends the fields filled in (a third item: the card's values as the browser has them); it
    # checks a typed LR or weight decay itself (tests/test_dash_fork.py) and leaves the dropdowns to the server.
    "fork": (["--set", "lr=3e-4", "--set", "optimizer=sgd"], {"value": {"lr": "3e-4", "optimizer": "sgd"}},
             ("fork-send.n_clicks", 1, {"fork-lr.value": "3e-4", "fork-optimizer.value": "sgd"}),
             ["--set", "optimizer=rmsprop"], {"value": {"optimizer": "rmsprop"}},
             ("fork-send.n_clicks", 1, {"fork-optimizer.value": "rmsprop"}),
             "optimizer: got 'rmsprop'; allowed: adam | sgd | adamw"),
    "undo": ([], {}, ("undo-button.n_clicks", 1),
             ["--trial", "999"], {"trial": 999}, ("undo-button.n_clicks", 999), "no trial 999 in study 'acts'"),
    # hold is checked against a study someone ("test") already held; release against a free one
    "hold": ([], {}, ("study:hold", 1), [], {}, ("study:hold", 1), "the study is held already (by test)"),
    "release": ([], {}, ("study:release", 1), [], {}, ("study:release", 1), "the study is not held"),
}
TRIAL_BUTTONS = ("prune.submit_n_clicks", "promote.n_clicks", "pause-button.n_clicks", "resume-button.n_clicks",
                 "keep-button.n_clicks", "undo-button.n_clicks")


@pytest.fixture
def running(tmp_path):
    """A SQLite study with one RUNNING trial (no worker: requests to it stay pending, which is accepted)."""
    url = f"sqlite:///{tmp_path / 'acts.db'}"
    study = optuna.create_study(study_name="acts", storage=open_storage(url, heartbeat=False), direction="maximize")
    trial = study.ask()
    return url, trial.number, Control.open(url)


def via_control(control: Control, trial: int, action: str, kw: dict) -> tuple[str, str | None]:
    kw = dict(kw)
    scope = {} if ACTIONS[action].scope == "study" else {"trial": kw.pop("trial", trial)}
    cmd = control.request(action, by="test", **scope, **kw)
    return cmd.state, cmd.reason


def via_cli(url: str, trial: int, action: str, words: list[str], capsys) -> tuple[str, str | None]:
    a = ACTIONS[action]
    where = [] if a.scope == "study" or "--trial" in words else ["--trial", str(trial)]
    status = cli_main(["ctl", a.cli, *words, *where, "--storage", url, "--json"])
    out = capsys.readouterr()
    cmd = json.loads(out.out)
    assert status == (1 if cmd["state"] == "rejected" else 0), out
    return cmd["state"], cmd["reason"]


def via_app(client, app, control: Control, trial: int, action: str, trigger: tuple) -> tuple[str, str | None]:
    """Post what the browser posts when the control is touched (with the page's other values `trigger[2]`
    holds, if any); return what the request became."""
    before = len(control.commands())
    key, value, *others = trigger
    if key.startswith("study:"):  # the hold / release buttons of every page's frame
        button = key.split(":")[1]
        outputs = [{"id": ids.HELD_TEXT, "property": "children"}, {"id": ids.HELD_BANNER, "property": "style"},
                   [{"id": {"type": ids.STUDY_BUTTON, "button": b}, "property": "style"} for b in held.BUTTONS],
                   {"id": ids.HELD_SEEN, "property": "data"}, {"id": ids.HELD_STATUS, "property": "children"}]
        spec = next(v for k, v in app.callback_map.items() if ids.HELD_TEXT in k)
        body = {"output": next(k for k in app.callback_map if ids.HELD_TEXT in k), "outputs": outputs,
                "inputs": [{"id": ids.HELD_TICK, "property": "n_intervals", "value": 1},
                           {"id": ids.URL, "property": "search", "value": "?study=acts"},
                           [{"id": {"type": ids.STUDY_BUTTON, "button": b}, "property": "n_clicks",
                             "value": value if b == button else 0} for b in held.BUTTONS]],
                "changedPropIds": [json.dumps({"button": button, "type": ids.STUDY_BUTTON},
                                              separators=(",", ":")) + ".n_clicks"],
                "state": [{"id": ids.HELD_SEEN, "property": "data", "value": None}]}
        assert len(spec["inputs"]) == 3
        response = client.post("/_dash-update-component", json=body)
        assert response.status_code == 200, response.get_data(as_text=True)
    elif key.startswith("unpin:"):
        fire(client, app, "study-status.children", {"unpin": [(key.split(":")[1], value)]}, {"page-ctx.data": {"study": "acts"}},
             changed=json.dumps({"param": key.split(":")[1], "type": ids.UNPIN}, separators=(",", ":")) + ".n_clicks")
    else:
        number = value if key in TRIAL_BUTTONS and value == 999 else trial
        value = 1 if value == 999 else value
        pins = [(key.split(":")[1], value)] if key.startswith("pin:") else [("lr", 0)]
        changed = (json.dumps({"param": pins[0][0], "type": ids.PIN}, separators=(",", ":")) + ".n_clicks"
                   if key.startswith("pin:") else key)
        fire(client, app, "my-commands.data", {"pin": pins, key: value},
             {"page-ctx.data": {"study": "acts", "trial": number}, "known.data": {}, "my-commands.data": [],
              **(others[0] if others else {})}, changed=changed)
    commands = control.commands()
    assert len(commands) == before + 1, "the app recorded no request"
    assert commands[-1].action == action, f"the app asked for {commands[-1].action}, not {action}"
    return commands[-1].state, commands[-1].reason


def fire(client, app, output: str, values: dict, state: dict, changed: str):
    """POST to Dash's callback endpoint as the renderer does; inputs not in `values` are None."""
    spec = app.callback_map[output]
    inputs = []
    for i in spec["inputs"]:
        if i["id"].startswith("{"):  # a pattern-matching input: one entry per button drawn
            kind = json.loads(i["id"])["type"]
            inputs.append([{"id": {"type": kind, "param": p}, "property": i["property"], "value": v}
                           for p, v in values[kind]])
        else:
            inputs.append({"id": i["id"], "property": i["property"],
                           "value": values.get(f"{i['id']}.{i['property']}")})
    body = {"output": output, "outputs": _outputs(output), "inputs": inputs, "changedPropIds": [changed],
            "state": [{"id": s["id"], "property": s["property"], "value": state.get(f"{s['id']}.{s['property']}")}
                      for s in spec.get("state", [])]}
    response = client.post("/_dash-update-component", json=body)
    assert response.status_code in (200, 204), response.get_data(as_text=True)
    return response


def _outputs(output: str) -> dict | list:
    if output.startswith(".."):  # a callback with several outputs: "..a.p...b.q.."
        return [_outputs(part) for part in output[2:-2].split("...")]
    cid, prop = output.rsplit(".", 1)
    return {"id": cid, "property": prop}


@pytest.mark.parametrize("action", list(CASES))
def test_action_is_accepted_everywhere_and_rejected_alike(action, running, capsys):
    url, trial, control = running
    cli_good, api_good, app_good, cli_bad, api_bad, app_bad, reason = CASES[action]
    app = create_app(url)
    client = app.server.test_client()

    def repin():  # what the good request needs: a pin to remove, a held study to release
        if action == "unpin":
            control.request("pin", param="lr", value=1e-3, by="test")
        if action == "release" and control.held() is None:
            control.request("hold", by="test")
        if action == "hold" and control.held() is not None:
            control.request("release", by="test")

    accepted = ("pending", "applied")
    repin()
    assert via_control(control, trial, action, api_good)[0] in accepted
    repin()
    assert via_cli(url, trial, action, cli_good, capsys)[0] in accepted
    repin()
    assert via_app(client, app, control, trial, action, app_good)[0] in accepted
    if action == "fork":  # the app sends the fields filled in, as the control plane and the CLI record them
        assert [c.args for c in control.commands()[-3:]] == [{"changes": {"lr": 3e-4, "optimizer": "sgd"}}] * 3

    def spoil():  # what the bad request meets: a study held by "test", or a free one
        if action == "hold" and (control.held() or {}).get("by") != "test":
            if control.held() is not None:
                control.request("release", by="test")
            control.request("hold", by="test")
        if action == "release" and control.held() is not None:
            control.request("release", by="test")

    spoil()
    assert via_control(control, trial, action, api_bad) == ("rejected", reason)
    spoil()
    assert via_cli(url, trial, action, cli_bad, capsys) == ("rejected", reason)
    spoil()
    if app_bad is not None:  # the app has no way to give a reset seed, and refuses a bad LR before sending
        assert via_app(client, app, control, trial, action, app_bad) == ("rejected", reason)


@pytest.mark.parametrize("field, typed, reason", [
    ("fork-lr.value", "-1", "lr: got -1.0; allowed: float in [1e-07, 1]"),
    ("fork-weight-decay.value", "2", "weight_decay: got 2.0; allowed: float in [0, 1]"),
])
def test_the_fork_card_refuses_a_bad_value_before_sending_it(running, field, typed, reason):
    """As the LR control: the page checks a typed value with the server's rule, sends nothing, and says why."""
    url, trial, control = running
    app = create_app(url)
    client = app.server.test_client()
    page = {"page-ctx.data": {"study": "acts", "trial": trial}, "known.data": {"lr": 1e-3}, "my-commands.data": []}
    fire(client, app, "my-commands.data", {"pin": [("lr", 0)], "fork-send.n_clicks": 1}, {**page, field: typed},
         changed="fork-send.n_clicks")
    assert control.commands() == []
    checked = next(k for k in app.callback_map if ids.FORK_ERROR in k)
    response = fire(client, app, checked, {"fork-send.n_clicks": 1, field: typed}, page, changed="fork-send.n_clicks")
    assert response.get_json()["response"][ids.FORK_ERROR]["children"] == reason
    # filled in well, the same click sends only what was filled in
    fire(client, app, "my-commands.data", {"pin": [("lr", 0)], "fork-send.n_clicks": 2},
         {**page, "fork-lr.value": "3.00e-4", "fork-loss.value": "l1"}, changed="fork-send.n_clicks")
    (cmd,) = control.commands()
    assert (cmd.action, cmd.args, cmd.state) == ("fork", {"changes": {"lr": 3e-4, "loss": "l1"}}, "pending")
