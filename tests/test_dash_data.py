"""The Dash app without a browser: what the pages extract from studies and the control plane,
what a touched control asks for, the HTTP routes, the token and the exposure check."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from steer.control import Control, Metric
from steer.dashboards import figures, ids, views, server
from steer.dashboards.app import create_app, is_loopback
from steer.dashboards.trial_page import request_for
from steer.errors import UserError

optuna.logging.set_verbosity(optuna.logging.WARNING)
LR = FloatDistribution(1e-4, 1e-2, log=True)
OPT = CategoricalDistribution(["adam", "sgd"])
T0 = datetime(2026, 1, 1, 12, 0, 0)


def frozen(number, state=TrialState.COMPLETE, value=None, attrs=None, start=T0, seconds=10.0, params=None):
    complete = start + timedelta(seconds=seconds) if state.is_finished() else None
    params = params if params is not None else {"lr": 1e-3, "optimizer": "adam"}
    return FrozenTrial(number=number, state=state, value=value, datetime_start=start, datetime_complete=complete,
                       params=params, distributions={"lr": LR, "optimizer": OPT}, user_attrs=attrs or {},
                       system_attrs={}, intermediate_values={}, trial_id=number)


def metric(step, loss=0.1, psnr=20.0, lr=1e-3, opt="adam", loss_name="mse", wd=0.0, trial=0):
    return Metric(trial, step, 1000.0 + step, loss, psnr, lr, wd, opt, loss_name)


@pytest.fixture
def study_db(tmp_path):
    """A real SQLite study: two finished trials, one running with a live preview and metrics, a target."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    study.set_user_attr("steer.spec", {"steps": 500})
    study.add_trial(optuna.trial.create_trial(value=20.0, params={"lr": 1e-3}, distributions={"lr": LR}))
    study.add_trial(optuna.trial.create_trial(value=25.0, params={"lr": 2e-3}, distributions={"lr": LR},
                                              user_attrs={"steer.steered": True}))
    running = study.ask({"lr": LR})
    control = Control.open(url, "s")
    control.publish(running.number, 40, png=b"\x89PNG-fake", metric={
        "loss": 0.05, "psnr": 18.5, "lr": 3e-3, "weight_decay": 0.0, "optimizer": "adam", "loss_name": "mse"})
    return url, study, control, running.number


# ---- formatting and the LR slider -------------------------------------------------- #


def test_formats_and_the_log_slider_round_trip():
    assert views.fmt(0.00343) == "3.43e-3" and views.fmt(0.5) == "0.5" and views.fmt(0.0) == "0"
    assert views.fmt(True) == "yes" and views.fmt(None) == "-" and views.fmt({"a": 1e-5}) == "a=1.00e-5"
    assert views.fmt_lr(3.16e-4) == "3.16e-4" and views.fmt_lr(1.0) == "1.00e+0" and views.fmt_lr(None) == "-"
    assert (views.LR_MIN_LOG10, views.LR_MAX_LOG10) == (-7, 0)  # the spec's allowed range, 1e-7..1
    assert views.lr_to_slider(2e-3) == -2.7 and views.lr_to_slider(1e-9) == -7 and views.lr_to_slider(5.0) == 0
    assert views.lr_to_slider(0) == -7
    assert views.slider_to_lr(-3.5) == 3.16e-4 and views.slider_to_lr(-4) == 1e-4
    assert views.same_value("lr", views.slider_to_lr(views.lr_to_slider(2e-3)), 2e-3)  # within slider resolution
    assert not views.same_value("lr", 1e-3, 1.1e-3)
    assert views.same_value("optimizer", "adam", "adam") and not views.same_value("loss", "mse", "l1")
    assert views.same_value("weight_decay", 0.0, 0) and not views.same_value("weight_decay", 0.0, 1e-4)
    assert views.same_value("lr", None, None) and not views.same_value("lr", None, 1e-3)


# ---- study page ----------------------------------------------------------------------- #


def test_trial_rows_say_state_psnr_steering_pins_and_duration():
    trials = [
        frozen(1, value=30.0, attrs={"steer.steered": True,
                                     "steer.interventions": [{"action": "set_lr"}, {"action": "set_loss"}],
                                     "steer.pinned": {"loss": "l1"},
                                     "steer.effective_params": {"lr": 5e-4, "optimizer": "sgd", "loss": "l1",
                                                                "weight_decay": 0.0, "width": 64}}),
        frozen(0, value=25.0, attrs={"steer.baseline": True, "steer.params": {"lr": 2e-3, "optimizer": "adam"}}),
        frozen(2, state=TrialState.RUNNING, start=T0),
        frozen(3, state=TrialState.PRUNED, attrs={"steer.pruned_reason": "pruned by dash at step 40",
                                                  "steer.promoted_from": 1}),
    ]
    rows = views.trial_rows(trials, now=(T0 + timedelta(seconds=42)).timestamp())
    assert [r["number"] for r in rows] == [0, 1, 2, 3]
    r0, r1, r2, r3 = rows
    assert (r0["state"], r0["psnr"], r0["steered"], r0["baseline"], r0["duration_s"]) == ("COMPLETE", 25.0, False,
                                                                                          True, 10.0)
    assert r0["params"] == {"lr": 2e-3, "optimizer": "adam"}  # what it started with
    assert r1["steered"] and r1["interventions"] == 2 and r1["pinned"] == {"loss": "l1"}
    assert r1["params"] == {"lr": 5e-4, "optimizer": "sgd", "loss": "l1", "weight_decay": 0.0}  # effective
    assert r1["searched"] == {"lr": 1e-3, "optimizer": "adam"}  # Optuna's params
    assert r2["state"] == "RUNNING" and r2["psnr"] is None and r2["duration_s"] == pytest.approx(42.0)
    assert r2["live_psnr"] is None and r0["live_psnr"] is None
    now = views.trial_rows(trials, live={2: metric(30, psnr=21.5, lr=4e-4, opt="sgd"), 0: metric(5)})
    assert now[2]["live_psnr"] == 21.5 and now[2]["params"] == {"lr": 4e-4, "optimizer": "sgd", "loss": "mse",
                                                                 "weight_decay": 0.0}  # what it trains with now
    assert now[0]["live_psnr"] is None and now[0]["params"] == r0["params"]  # finished: a stale live row is ignored
    assert r3["note"] == "pruned by dash at step 40" and r3["promoted_from"] == 1


def test_best_so_far_counts_only_completed_trials():
    trials = [frozen(0, value=20.0), frozen(1, value=18.0, attrs={"steer.steered": True}),
              frozen(2, state=TrialState.PRUNED, value=40.0), frozen(3, state=TrialState.RUNNING),
              frozen(4, value=26.0), frozen(5, value=float("nan")), frozen(6, value=24.0)]
    best = views.best_so_far(trials)
    assert best == {"number": [0, 1, 4, 6], "value": [20.0, 18.0, 26.0, 24.0], "best": [20.0, 20.0, 26.0, 26.0],
                    "steered": [False, True, False, False], "best_number": 4}
    low = views.best_so_far(trials, optuna.study.StudyDirection.MINIMIZE)
    assert low["best"] == [20.0, 18.0, 18.0, 18.0] and low["best_number"] == 1
    assert views.best_so_far([])["best_number"] is None
    stats = dict(views.summary_stats(views.trial_rows(trials), best))
    assert stats == {"trials": "7", "running": "1", "complete": "5", "pruned": "1", "steered": "1",
                     "best PSNR": "26.00 dB"}


def test_pins_in_the_order_of_the_controls(study_db):
    _, _, control, _ = study_db
    control.request("pin", param="weight_decay", value=0.01, by="t")
    control.request("pin", param="lr", value="3e-4", by="t")
    rows = views.pin_rows(control.pins())
    assert [(p["param"], p["value"], p["by"], p["source_trial"]) for p in rows] == [
        ("lr", 3e-4, "t", None), ("weight_decay", 0.01, "t", None)]


# ---- trial page ------------------------------------------------------------------------ #


def test_curve_points_thin_long_trials_but_keep_the_last_row():
    rows = [metric(s, loss=1.0 / (s + 1), psnr=float(s)) for s in range(0, 10_001, 2)]
    full = views.curve_points(rows, cap=None)
    assert len(full["step"]) == len(rows) and full["psnr"][3] == 6.0
    thin = views.curve_points(rows, cap=1000)
    assert 500 < len(thin["step"]) <= 1001 and thin["step"][0] == 0 and thin["step"][-1] == 10_000
    assert thin["step"] == sorted(set(thin["step"]))
    assert views.curve_points([]) == {"step": [], "loss": [], "psnr": []}


def test_interventions_are_labelled_for_the_log_and_the_markers():
    attrs = {"steer.interventions": [
        {"command": 1, "action": "set_lr", "args": {"value": 1e-4}, "old": 2e-3, "new": 1e-4, "step": 100,
         "at": 5.0, "by": "dash:127.0.0.1"},
        {"command": 2, "action": "reset", "args": {"seed": 7}, "old": None, "new": 7, "step": 150, "at": 6.0,
         "by": "cli:me"},
        {"command": 3, "action": "pin", "args": {"param": "optimizer"}, "old": None, "new": "sgd", "step": 160,
         "at": 7.0, "by": "x"},
    ]}
    marks = views.interventions(frozen(0, state=TrialState.RUNNING, attrs=attrs))
    assert [m["label"] for m in marks] == ["set_lr 2.00e-3 -> 1.00e-4", "reset seed 7", "pin optimizer: - -> sgd"]
    assert [m["step"] for m in marks] == [100, 150, 160] and marks[1]["by"] == "cli:me"
    fig = figures.curves_figure(views.curve_points([metric(0), metric(100)]), marks)
    assert list(fig.data[2].x) == [100, 150, 160] and len(fig.layout.shapes) == 3
    assert list(fig.data[2].customdata[0]) == ["set_lr", "2.00e-3 -> 1.00e-4", "dash:127.0.0.1"]


def test_current_and_synced_controls():
    trial = frozen(0, state=TrialState.RUNNING, params={"lr": 1e-3},
                   attrs={"steer.params": {"lr": 1e-3, "optimizer": "adamw", "loss": "mse", "weight_decay": 0.0}})
    assert views.current_settings(trial, None) == {"lr": 1e-3, "optimizer": "adamw", "loss": "mse",
                                                  "weight_decay": 0.0}
    now = views.current_settings(trial, metric(50, lr=4e-4, opt="sgd", loss_name="huber", wd=0.1))
    assert now == {"lr": 4e-4, "optimizer": "sgd", "loss": "huber", "weight_decay": 0.1}
    applied = [{"action": "set_lr", "new": 5e-4}, {"action": "reset", "new": 3}, {"action": "set_loss", "new": "l1"}]
    assert views.synced_controls(now, applied) == {"lr": 5e-4, "optimizer": "sgd", "loss": "l1", "weight_decay": 0.1}


def test_command_statuses_from_the_control_plane(study_db):
    _, _, control, running = study_db
    pending = control.request("set_lr", trial=running, value=1e-4, by="dash:1.2.3.4")
    bad = control.request("set_lr", trial=running, value=10, by="dash:1.2.3.4")
    done = control.request("set_optimizer", trial=running, value="sgd", by="cli:x")
    control.resolve(done.id, "applied", step=77)
    gone = control.request("prune", trial=0, by="x")  # trial 0 has finished
    statuses = views.request_statuses(control.commands(trial=None), mine=[pending.id, bad.id])
    by_id = {s["id"]: s for s in statuses}
    assert [s["id"] for s in statuses] == sorted(by_id, reverse=True)  # newest first
    assert by_id[pending.id]["status"] == "pending: waiting for the trial's next poll" and by_id[pending.id]["mine"]
    assert by_id[pending.id]["what"] == "set_lr 1.00e-4"
    assert by_id[bad.id]["status"] == "rejected: lr: got 10.0; allowed: float in [1e-07, 1]"
    assert by_id[done.id]["status"] == "applied at step 77" and not by_id[done.id]["mine"]
    assert by_id[gone.id]["state"] == "rejected" and "COMPLETE" in by_id[gone.id]["status"]


def test_trial_reads_from_the_control_plane(study_db):
    _, study, control, running = study_db
    assert views.load_trial(control, running).state == TrialState.RUNNING
    assert views.load_trial(control, 99) is None
    assert views.total_steps(control) == 500
    live = control.live(running)
    latest = views.latest_metric(control, live)
    assert (latest.step, latest.psnr, latest.lr) == (40, 18.5, 3e-3)
    assert views.latest_metric(control, None) is None
    cards = views.wall_cards(control.live_all(), {running: latest})
    assert cards == [{"trial": running, "step": 40, "wall_time": live.wall_time, "has_image": True, "psnr": 18.5,
                      "lr": 3e-3, "optimizer": "adam", "loss": "mse", "weight_decay": 0.0}]


# ---- what a touched control asks for --------------------------------------------------- #


def test_controls_ask_only_for_changes():
    known = {"lr": 2e-3, "optimizer": "adam", "loss": "mse", "weight_decay": 0.0}
    assert request_for(ids.LR_SLIDER, -4.0, known) == {"action": "set_lr", "value": 1e-4}
    assert request_for(ids.LR_SLIDER, views.lr_to_slider(2e-3), known) is None  # the value tick synced
    assert request_for(ids.LR_INPUT, " 3e-4 ", known) == {"action": "set_lr", "value": "3e-4"}
    assert request_for(ids.LR_INPUT, "", known) is None
    assert request_for(ids.OPTIMIZER, "sgd", known) == {"action": "set_optimizer", "value": "sgd"}
    assert request_for(ids.OPTIMIZER, "adam", known) is None
    assert request_for(ids.LOSS, "huber", known) == {"action": "set_loss", "value": "huber"}
    assert request_for(ids.WEIGHT_DECAY, 5, known) == {"action": "set_weight_decay", "value": 5}  # rejected later
    assert request_for(ids.WEIGHT_DECAY, None, known) is None  # not a number in the browser
    assert request_for({"type": ids.PIN, "param": "loss"}, 1, known) == {"action": "pin", "param": "loss"}
    assert request_for({"type": ids.PIN, "param": "loss"}, 0, known) is None  # drawn, not clicked
    assert request_for(ids.PRUNE, 1, known)["action"] == "prune"
    assert request_for(ids.RESET, 1, known) == {"action": "reset"}
    assert request_for(ids.PROMOTE, 1, known) == {"action": "promote"}
    assert request_for(ids.PROMOTE, None, known) is None


# ---- HTTP: images, hosts, token --------------------------------------------------------- #


def test_image_routes_and_loopback_hosts(study_db):
    url, _, control, running = study_db
    client = create_app(url, "s").server.test_client()
    assert client.get("/steer/target.png?study=s").status_code == 404  # no target stored yet
    control.store_target(b"\x89PNG-target", 4, 4)
    target = client.get("/steer/target.png?study=s")
    assert target.status_code == 200 and target.data == b"\x89PNG-target" and target.mimetype == "image/png"
    live = client.get(f"/steer/live.png?study=s&trial={running}&v=1")
    assert live.status_code == 200 and live.data == b"\x89PNG-fake" and "max-age" in live.headers["Cache-Control"]
    assert client.get("/steer/live.png?study=s&trial=0").status_code == 404  # nothing published
    assert client.get("/steer/live.png?study=s&trial=x").status_code == 400
    assert client.get("/steer/live.png?study=nope&trial=0").status_code == 404
    assert client.get("/", headers={"Host": "localhost:8050"}).status_code == 200
    assert client.get("/", headers={"Host": "[::1]:8050"}).status_code == 200
    rebound = client.get("/", headers={"Host": "evil.example:8050"})  # DNS rebinding
    assert rebound.status_code == 403 and b"--token" in rebound.data


def test_token_is_required_of_every_request(study_db):
    url, *_ = study_db
    client = create_app(url, "s", token="s3cret").server.test_client()
    for path in ("/", "/trial/0?study=s", "/_dash-layout", "/steer/live.png?study=s&trial=2"):
        answer = client.get(path)
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer"), path
    assert client.get("/?token=wrong").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    first = client.get("/wall?study=s&token=s3cret")
    assert first.status_code == 302 and first.headers["Location"] == "/wall?study=s"  # the token leaves the URL
    assert "HttpOnly" in first.headers["Set-Cookie"] and "SameSite=Strict" in first.headers["Set-Cookie"]
    assert "s3cret" not in first.headers["Set-Cookie"]  # the cookie holds a digest, not the token
    assert client.get("/wall?study=s").status_code == 200  # the test client kept the cookie
    assert client.get("/_dash-layout").status_code == 200


def test_token_over_real_http(study_db):
    url, *_ = study_db
    srv = server.make_server(create_app(url, "s", token="tok"), "127.0.0.1", 0)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{srv.effective_port}"
    try:
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(base + "/", timeout=10)
        assert denied.value.code == 401
        ok = urllib.request.urlopen(urllib.request.Request(base + "/", headers={"Authorization": "Bearer tok"}),
                                    timeout=10)
        assert ok.status == 200 and b"_dash-config" in ok.read()
    finally:
        srv.close()


def test_exposure_needs_a_token(monkeypatch, study_db):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")
    server.check_exposure("127.0.0.1", None)
    server.check_exposure("0.0.0.0", "t")
    with pytest.raises(UserError, match=r"--host 0.0.0.0 serves the app beyond this machine: give a token"):
        server.check_exposure("0.0.0.0", None)
    parser = argparse.ArgumentParser()
    server.add_arguments(parser)
    args = parser.parse_args(["--storage", study_db[0], "--host", "0.0.0.0"])
    assert (args.port, args.study, args.token) == (8050, None, None)
    monkeypatch.delenv("STEER_TOKEN", raising=False)
    with pytest.raises(UserError, match="give a token"):
        server.run(args)
    with pytest.raises(UserError, match=r"no study named 'zzz'"):
        create_app(study_db[0], "zzz")


def test_module_entry_point_refuses_exposure_in_one_line(study_db):
    env = {k: v for k, v in os.environ.items() if k != "STEER_TOKEN"}
    proc = subprocess.run([sys.executable, "-m", "steer.dashboards", "--storage", study_db[0], "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "steer: error: --host 0.0.0.0 serves the app beyond this machine: give a token with --token TOKEN or "
        "$STEER_TOKEN (clients then open /?token=TOKEN once)"]
