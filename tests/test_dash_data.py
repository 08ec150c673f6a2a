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

from steer.actions import check_setting
from steer.control import Control, Metric
from steer.dashboards import figures, ids, views, server
from steer.dashboards.app import create_app, is_loopback
from steer.dashboards import trial_page
from steer.dashboards.trial_page import lr_edit, request_for
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
    assert views.lr_to_slider(2e-3) == -2.699 and views.lr_to_slider(1e-9) == -7 and views.lr_to_slider(5.0) == 0
    assert views.lr_to_slider(0) == -7
    assert views.slider_to_lr(-3.5) == 3.16e-4 and views.slider_to_lr(-4) == 1e-4
    assert views.same_value("lr", views.slider_to_lr(views.lr_to_slider(2e-3)), 2e-3)  # within slider resolution
    for lr in (9.99e-4, 1.0e-3, 3.16e-4, 7.77e-2):  # a position set from an LR reads back as that LR
        assert views.slider_to_lr(views.lr_to_slider(lr)) == pytest.approx(lr, rel=6e-3)
    assert views.fmt_param("lr", 0.05) == "5.00e-2" and views.fmt_param("weight_decay", 0.05) == "0.05"
    assert views.fmt_param("lr", None) == "-" and views.round_lr(3.14159e-4) == 3.14e-4
    assert not views.same_value("lr", 1e-3, 1.1e-3)
    assert views.same_value("optimizer", "adam", "adam") and not views.same_value("loss", "mse", "l1")
    assert views.same_value("weight_decay", 0.0, 0) and not views.same_value("weight_decay", 0.0, 1e-4)
    assert views.same_value("lr", None, None) and not views.same_value("lr", None, 1e-3)


def test_the_lr_slider_spans_two_decades_around_the_lr_with_marks_as_every_lr_reads():
    assert views.lr_window(1e-3) == (-4.0, -2.0)
    assert views.lr_window(2e-3) == (-3.699, -1.699)
    assert views.lr_window(0.5) == (-2.0, 0.0) and views.lr_window(1e-7) == (-7.0, -5.0)  # inside 1e-7..1
    assert views.lr_marks(-4.0, -2.0) == {-4.0: "1.00e-4", -3.5229: "3.00e-4", -3.0: "1.00e-3", -2.5229: "3.00e-3",
                                          -2.0: "1.00e-2"}
    assert not views.lr_off_centre(1.2e-3, (-4.0, -2.0)) and views.lr_off_centre(1.1e-4, (-4.0, -2.0))
    assert views.lr_off_centre(1e-3, None)
    searched = frozen(0, state=TrialState.RUNNING)
    assert views.lr_search(searched) == (1e-4, 1e-2)
    assert views.lr_search(frozen(1, params={"optimizer": "adam"})) == (1e-4, 1e-2)  # its distributions say
    pinned = FrozenTrial(number=2, state=TrialState.RUNNING, value=None, datetime_start=T0, datetime_complete=None,
                         params={}, distributions={}, user_attrs={}, system_attrs={}, intermediate_values={},
                         trial_id=2)
    assert views.lr_search(pinned) is None


def test_lr_checks_are_the_servers_and_big_changes_ask_first():
    ok = views.check_lr(" 3.14159e-4 ", 1e-3, (1e-4, 1e-2))
    assert (ok.value, ok.error, ok.confirm) == (3.14e-4, None, ())  # rounded as it is shown
    assert views.check_lr("abc", 1e-3, None).error == "lr: got 'abc'; expected a number, float in [1e-07, 1]"
    assert views.check_lr("50", 1e-3, None).error == "lr: got 50.0; allowed: float in [1e-07, 1]"
    assert views.check_lr(-1, 1e-3, None).error == "lr: got -1.0; allowed: float in [1e-07, 1]"
    for bad in ("abc", "50", "nan", "-1", ""):  # the same message as the control plane's
        with pytest.raises(ValueError) as server:
            check_setting("lr", bad.strip())
        assert views.check_lr(bad, 1e-3, None).error == str(server.value)
    assert views.check_lr("1e-2", 1e-3, None).confirm == ()  # 10x exactly: no question
    big = views.check_lr("2e-2", 1e-3, None)
    assert big.confirm == ("20x above the current 1.00e-3",)
    assert big.question(7, 1e-3) == ("Set trial 7's learning rate from 1.00e-3 to 2.00e-2? "
                                     "It is 20x above the current 1.00e-3.")
    assert views.check_lr("1.56e-4", 1.5634e-3, None).confirm == ()  # ÷10 of the LR shown (1.56e-3)
    outside = views.check_lr("2e-4", 1e-3, (5e-4, 5e-3))
    assert outside.confirm == ("outside the range this trial's sampler searched (5.00e-4 to 5.00e-3)",)
    assert len(views.check_lr("1e-5", 1e-3, (5e-4, 5e-3)).confirm) == 2
    assert views.lr_change(2e-3, 1e-3) == "2x above the current 1.00e-3"
    assert views.lr_change(8e-4, 1e-3) == "1.25x below the current 1.00e-3"
    assert views.lr_change(1e-3, 1e-3) == "the current 1.00e-3" and views.lr_change(1e-3, None) == ""
    assert views.lr_change(4e-3, 1e-3, named=False) == "4x above now"


def test_lr_edits_change_the_lr_shown_and_send_nothing_malformed():
    now, window, searched = 1e-3, (-4.0, -2.0), [1e-4, 1e-2]
    step = lr_edit(f"{ids.LR_STEP}-mul2", 1, "1.00e-3", None, now, searched, window)
    assert (step["value"], step["position"], step["window"], step["send"], step["confirm"]) == (
        2e-3, -2.699, None, False, None)
    assert lr_edit(f"{ids.LR_STEP}-div125", 1, "2.00e-3", {"value": 2e-3}, now, searched, window)["value"] == 1.6e-3
    far = lr_edit(f"{ids.LR_STEP}-div10", 1, "1.00e-3", None, now, searched, window)
    assert far["value"] == 1e-4 and far["window"] == (-5.0, -3.0)  # the slider moves to it
    assert lr_edit(f"{ids.LR_STEP}-mul10", 0, "1.00e-3", None, now, searched, window) is None  # drawn
    assert lr_edit(f"{ids.LR_STEP}-mul10", 1, "0.5", None, now, searched, window)["error"] == \
        "lr: got 5.0; allowed: float in [1e-07, 1]"
    assert lr_edit(ids.LR_SLIDER, -3.0, "1.00e-3", None, now, searched, window) is None  # `tick` synced it
    moved = lr_edit(ids.LR_SLIDER, -3.301, "1.00e-3", None, now, searched, window)
    assert moved["value"] == 5e-4 and moved["position"] is None and not moved["send"]
    assert lr_edit(ids.LR_INPUT, "abc", "1.00e-3", None, now, searched, window) == {
        "error": "lr: got 'abc'; expected a number, float in [1e-07, 1]"}
    typed = lr_edit(ids.LR_INPUT, "3e-3", "1.00e-3", None, now, searched, window)
    assert typed["send"] and typed["value"] == 3e-3 and typed["confirm"] is None
    jump = lr_edit(ids.LR_INPUT, "2e-2", "1.00e-3", None, now, searched, window, trial=7)
    assert not jump["send"] and jump["confirm"] == (  # the question: send waits for it
        "Set trial 7's learning rate from 1.00e-3 to 2.00e-2? It is 20x above the current 1.00e-3 and outside the "
        "range this trial's sampler searched (1.00e-4 to 1.00e-2).")
    assert lr_edit(ids.LR_SEND, 1, "1.00e-3", None, now, searched, window)["error"].startswith("Nothing to send")
    assert lr_edit(ids.LR_SEND, 1, "4.00e-3", {"value": 4e-3}, now, searched, window)["send"]
    back = lr_edit(ids.LR_REVERT, 1, "4.00e-3", {"value": 4e-3}, now, searched, window)
    assert back["revert"] and back["value"] == 1e-3


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
    assert r1["changes"] == {} and r0["changes"] == {}
    ended = views.trial_rows([frozen(4, value=31.0, params={"lr": 1e-3, "optimizer": "adam", "lr@479": 3e-4},
                                     attrs={"steer.steered": True})])[0]
    assert ended["searched"] == {"lr": 1e-3, "optimizer": "adam"}  # its changes are not what was searched
    assert ended["changes"] == {"lr@479": 3e-4}
    assert r2["state"] == "RUNNING" and r2["psnr"] is None and r2["duration_s"] == pytest.approx(42.0)
    assert r2["live_psnr"] is None and r0["live_psnr"] is None
    now = views.trial_rows(trials, live={2: metric(30, psnr=21.5, lr=4e-4, opt="sgd"), 0: metric(5)})
    assert now[2]["live_psnr"] == 21.5 and now[2]["params"] == {"lr": 4e-4, "optimizer": "sgd", "loss": "mse",
                                                                 "weight_decay": 0.0}  # what it trains with now
    assert now[0]["live_psnr"] is None and now[0]["params"] == r0["params"]  # finished: a stale live row is ignored
    assert r3["note"] == "pruned by dash at step 40" and r3["promoted_from"] == 1
    assert (r2["paused"], r2["kept"], r0["paused"]) == (None, False, None)
    held = views.trial_rows([frozen(5, state=TrialState.RUNNING, attrs={
        "steer.paused": {"since": 1.0, "step": 77, "by": "a"},
        "steer.interventions": [{"action": "keep", "new": True}, {"action": "pause", "new": "paused"}]})])[0]
    assert (held["paused"], held["kept"], held["steered"]) == (77, True, False)  # neither steers


def test_the_best_so_far_chart_ticks_whole_trials():
    assert [figures.trial_tick(n) for n in (0, 2, 10, 11, 25, 199, 200, 201, 3000)] == [1, 1, 1, 2, 5, 20, 20, 50, 500]
    data = {"number": [0, 1, 2], "value": [1.0, 2.0, 3.0], "best": [1.0, 2.0, 3.0], "steered": [False] * 3}
    assert figures.best_so_far_figure(data).layout.xaxis.dtick == 1  # not trial 0.5, 1.5


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


def test_the_study_page_says_how_to_get_a_steered_best_trial_again():
    from steer.dashboards.study_page import summary

    steered = frozen(1, value=30.0, attrs={"steer.steered": True, "steer.interventions": [{"action": "set_lr"}]})
    plain = [frozen(0, value=20.0), steered]

    def note(trials):
        shown = [c for c in summary(views.trial_rows(trials), views.best_so_far(trials))
             if getattr(c, "id", None) == ids.BEST_NOTE]
        return " ".join(str(part.children if hasattr(part, "children") else part) for part in shown[0].children) \
            if shown else None

    assert "promote it (its page's button, or `steer ctl promote --trial 1`)" in note(plain)
    promoted = frozen(2, state=TrialState.COMPLETE, value=29.5, attrs={"steer.promoted_from": 1})
    assert "its clean run is trial 2 (COMPLETE, PSNR 29.50 dB)" in note([*plain, promoted])
    assert note([frozen(0, value=20.0)]) is None  # an unsteered best trial trained as its params say


def test_pins_in_the_order_of_the_controls(study_db):
    _, _, control, _ = study_db
    control.request("pin", param="weight_decay", value=0.01, by="t")
    control.request("pin", param="lr", value="3e-4", by="t")
    rows = views.pin_rows(control.pins())
    assert [(p["param"], p["value"], p["shown"], p["by"], p["source_trial"]) for p in rows] == [
        ("lr", 3e-4, "3.00e-4", "t", None), ("weight_decay", 0.01, "0.01", "t", None)]


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
        {"command": 4, "action": "find_lr", "args": {}, "old": 1e-4, "new": {"suggestion": 3.16e-3, "steps": 90,
                                                                              "reason": "reached lr_max"},
         "step": 170, "at": 8.0, "by": "x"},
    ]}
    marks = views.interventions(frozen(0, state=TrialState.RUNNING, attrs=attrs))
    assert [m["label"] for m in marks] == ["set_lr 2.00e-3 -> 1.00e-4", "reset seed 7", "pin optimizer: - -> sgd",
                                           "find_lr LR range test: suggested 3.16e-3"]
    assert [m["step"] for m in marks] == [100, 150, 160, 170] and marks[1]["by"] == "cli:me"
    fig = figures.curves_figure(views.curve_points([metric(0), metric(100)]), marks)
    assert list(fig.data[2].x) == [100, 150, 160, 170] and len(fig.layout.shapes) == 4
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
    # a change applied after the latest metrics row shows at once, before the next row does
    steered = frozen(0, state=TrialState.RUNNING, params={"lr": 1e-3}, attrs={"steer.interventions": [
        {"action": "set_lr", "new": 5e-4, "at": 1000.0 + 40}, {"action": "set_loss", "new": "l1", "at": 1000.0 + 60},
        {"action": "pause", "new": "paused", "at": 1000.0 + 61}]})
    assert views.current_settings(steered, metric(50, lr=5e-4, loss_name="mse")) == {
        "lr": 5e-4, "optimizer": "adam", "loss": "l1", "weight_decay": 0.0}
    assert views.current_settings(steered, views.metric_settings(metric(70, lr=5e-4, loss_name="huber")))["loss"] \
        == "huber"  # the row after it says what trains


def test_pace_in_words_and_on_the_wall(study_db):
    _, _, control, running = study_db
    at = datetime(2026, 1, 1, 14, 3, 27).timestamp()
    assert views.paused_words({"since": at, "step": 1200, "by": "alice"}) == \
        "paused since 14:03:27 at step 1200 (by alice)"
    assert views.paused_words(None) is None
    assert views.held_words({"by": "dash:127.0.0.1", "at": at}) == \
        "Study held by dash:127.0.0.1 since 14:03:27: no new trial starts"
    assert views.held_words(None) is None
    live = control.live_all()
    assert views.wall_cards(live, {}, {running: {"since": at, "step": 38, "by": "x"}})[0]["paused"] == 38
    assert views.wall_cards(live, {})[0]["paused"] is None
    marks = views.interventions(frozen(0, state=TrialState.RUNNING, attrs={"steer.interventions": [
        {"action": "pause", "new": "paused", "step": 5, "at": 1.0, "by": "a"},
        {"action": "keep", "new": True, "step": 6, "at": 2.0, "by": "a"},
        {"action": "pin", "args": {"param": "lr"}, "old": None, "new": 0.05, "step": 7, "at": 3.0, "by": "a"}]}))
    assert [m["label"] for m in marks] == ["pause held at this step", "keep never pruned automatically",
                                           "pin lr: - -> 5.00e-2"]


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
    assert trial_page.poll_ms(statuses) == trial_page.FAST_POLL_MS == 150  # this browser's set_lr is pending
    control.resolve(pending.id, "applied", step=80)
    assert trial_page.poll_ms(views.request_statuses(control.commands(), mine=[pending.id])) == 500
    mine = trial_page.sent_lr({"value": 1e-4, "at": pending.requested_at}, control.commands(), {pending.id, bad.id})
    assert [c.id for c in mine] == [pending.id]  # the request that sent the LR shown
    assert trial_page.sent_lr({"value": 1e-4, "at": pending.requested_at + 60}, control.commands(), {pending.id}) == []


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
                      "lr": 3e-3, "optimizer": "adam", "loss": "mse", "weight_decay": 0.0, "paused": None}]


# ---- what a touched control asks for --------------------------------------------------- #


def test_controls_ask_only_for_changes():
    known = {"lr": 2e-3, "optimizer": "adam", "loss": "mse", "weight_decay": 0.0}
    assert request_for(ids.LR_SLIDER, -4.0, known) is None  # the slider only moves the LR shown
    assert request_for(ids.LR_INPUT, " 3e-3 ", known) == {"action": "set_lr", "value": 3e-3}
    assert request_for(ids.LR_INPUT, "", known) is None
    assert request_for(ids.LR_INPUT, "abc", known) is None and request_for(ids.LR_INPUT, "50", known) is None
    assert request_for(ids.LR_INPUT, "1e-4", known) is None  # 20x: only once confirmed
    assert request_for(ids.LR_CONFIRM, 1, known, "1.00e-4") == {"action": "set_lr", "value": 1e-4}
    assert request_for(ids.LR_SEND, 1, known, "4.00e-3") == {"action": "set_lr", "value": 4e-3}  # as shown
    assert request_for(ids.LR_SEND, 1, known, "2.00e-3") is None  # the trial's LR: nothing to send
    assert request_for(ids.LR_SEND, 1, known, "1.00e-4") is None  # 20x: the question first
    assert request_for(ids.LR_SEND, 1, known, "1.00e-3", searched=[1.5e-3, 1e-2]) is None  # outside the search
    assert request_for(ids.LR_SEND, 0, known, "4.00e-3") is None  # drawn, not clicked
    for button, action in (("pause-button", "pause"), ("resume-button", "resume"), ("keep-button", "keep")):
        assert request_for(button, 1, known) == {"action": action} and request_for(button, 0, known) is None
    assert set(trial_page.BUTTONS.values()) >= {"pause", "resume", "keep"}
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


def test_find_lr_sends_the_suggestion_as_the_lr_control_sends_an_lr():
    known = {"lr": 2e-3}
    apply = ids.FIND_LR_APPLY
    assert request_for(ids.FIND_LR, 1, known) == {"action": "find_lr"} and request_for(ids.FIND_LR, 0, known) is None
    assert request_for(apply, 1, known, suggested=3.1415e-3) == {"action": "set_lr", "value": 3.14e-3}  # as shown
    assert request_for(apply, 0, known, suggested=3.1415e-3) is None  # drawn, not clicked
    assert request_for(apply, 1, known, suggested=None) is None
    assert request_for(apply, 1, known, suggested=1e-4) is None  # 20x: the question first, as for any LR
    assert request_for(apply, 1, known, suggested=4e-3, searched=[1e-3, 3e-3]) is None  # outside the search
    edit = lr_edit(apply, 1, "2.00e-3", None, 2e-3, None, (-3.7, -1.7), 7, suggested=3.1415e-3)
    assert edit["value"] == 3.14e-3 and edit["send"] and edit["confirm"] is None
    edit = lr_edit(apply, 1, "2.00e-3", None, 2e-3, None, (-3.7, -1.7), 7, suggested=1e-4)
    assert not edit["send"] and edit["confirm"].startswith("Set trial 7's learning rate from 2.00e-3 to 1.00e-4?")
    assert lr_edit(apply, 1, "2.00e-3", None, 2e-3, None, None, 7, suggested=2.001e-3)["error"].startswith(
        "Nothing to send: the trial's LR is already")
    assert lr_edit(apply, 1, "2.00e-3", None, 2e-3, None, None, 7, suggested=None)["error"].startswith("No suggested")
    assert lr_edit(apply, 0, "2.00e-3", None, 2e-3, None, None, 7, suggested=3e-3) is None


def test_the_latest_range_test_in_words(study_db):
    _, _, control, running = study_db
    assert views.find_lr(control.commands(trial=running)) is None
    first = control.request("find_lr", trial=running, by="alice")
    assert views.find_lr(control.commands(trial=running)) == {"id": first.id, "state": "pending",
                                                              "status": "range test running…", "test": None}
    test = {"lrs": [1e-4, 1e-3, 1e-2], "losses": [0.5, 0.3, 0.9], "suggestion": 1e-3, "rule": "steepest",
            "reason": "reached lr_max", "steps": 3}
    control.resolve(first.id, "applied", step=40, result={"action": "find_lr", "old": 3e-3, "range_test": test,
                                                          "new": {"suggestion": 1e-3}})
    found = views.find_lr(control.commands(trial=running))
    assert found["status"] == "suggested 1.00e-3" and found["test"]["command"] == first.id
    assert (found["test"]["suggested_loss"], found["test"]["lr_then"], found["test"]["step"]) == (0.3, 3e-3, 40)
    assert figures.lr_range_figure(found["test"]).data[1].x == (1e-3,)  # the suggestion, marked on the curve
    again = control.request("find_lr", trial=running, by="bob")
    control.resolve(again.id, "rejected", reason="find-lr needs the trial's model")
    found = views.find_lr(control.commands(trial=running))  # a refused one: the last curve stays shown
    assert found["status"] == "rejected: find-lr needs the trial's model" and found["test"]["command"] == first.id


def test_hints_and_the_search_space_in_words(write_spec, tmp_path):
    import steer

    spec = steer.load_spec(write_spec())
    url = f"sqlite:///{tmp_path / 'h.db'}"
    control = Control.open(steer.create_study(spec, url))
    assert [r["now"] for r in views.space_rows(control.spec_space(), control.space(), {})] == [
        "[0.001, 0.01] log", "relu | sine", "[10, 30]"]
    assert views.dimension_hint(control.space()["lr"]) == "in [0.001, 0.01] log"
    assert views.dimension_hint(control.space()["activation"]) == "one of relu | sine"
    control.request("hint", param="lr", value="3e-3", options={"strength": "0.5", "trials": "3"}, by="alice")
    bad = control.request("hint", param="lr", value="5", options={"strength": "0.5"}, by="alice")
    control.request("space", param="activation", options={"choices": "sine"}, by="bob")
    control.request("space", param="w0", options={"low": 12, "high": 20}, by="bob")
    control.request("space", param="w0", options={"reset": True}, by="bob")
    control.request("unhint", param="activation", by="carol")  # not hinted: rejected
    rows = views.hint_rows(control.hints(), n_trials=0)
    assert rows == [{"param": "lr", "shown": "lr near 0.003, strength 0.5, trials 0-2", "left": 3,
                     "left_words": "3 left", "by": "alice", "at": rows[0]["at"]}]
    assert views.hint_rows(control.hints(), n_trials=2)[0]["left_words"] == "1 left"
    assert views.hint_rows(control.hints(), n_trials=9)[0]["left_words"] == "used up"
    space = views.space_rows(control.spec_space(), control.space(), control.space_edits())
    assert [(r["param"], r["now"], r["spec"], r["by"]) for r in space] == [
        ("lr", "[0.001, 0.01] log", None, None), ("activation", "sine", "relu | sine", "bob"),
        ("w0", "[10, 30]", None, None)]
    history = views.space_history(control.commands())
    assert [(h["state"], h["by"], h["what"], h["change"]) for h in history] == [
        ("rejected", "carol", "unhint activation", "activation is not hinted"),
        ("applied", "bob", "space w0", "[12, 20] -> [10, 30] (the spec's)"),
        ("applied", "bob", "space w0", "[10, 30] -> [12, 20]"),
        ("applied", "bob", "space activation", "relu | sine -> sine"),
        ("rejected", "alice", "hint lr 5 strength=0.5", bad.reason),
        ("applied", "alice", "hint lr", "none -> near 0.003, strength 0.5, trials 0-2"),
    ]
    assert "outside the space later trials draw from" in bad.reason
    assert len(views.space_history(control.commands(), limit=2)) == 2


def test_the_hint_form_through_the_callback_endpoint_and_a_viewer(write_spec, tmp_path, capsys):
    """What a browser posts when the hint button is clicked: applied for alice, refused for bob (a viewer)
    with the server's reason, both recorded with their names."""
    import steer
    from steer.cli import main as cli_main
    from steer.dashboards.users import load_users

    url = f"sqlite:///{tmp_path / 'h.db'}"
    control = Control.open(steer.create_study(steer.load_spec(write_spec()), url))
    users = tmp_path / "users.toml"
    tokens = {}
    for name, role in (("alice", "steer"), ("bob", "view")):
        assert cli_main(["user", name, "--users", str(users), "--role", role]) == 0
        tokens[name] = capsys.readouterr().out.strip()
    app = create_app(url, users=load_users(users))
    key = next(k for k in app.callback_map if k.startswith(f"..{ids.HINT_STATUS}.children"))
    outputs = [{"id": i, "property": p} for i, p in ((ids.HINT_STATUS, "children"), (ids.HINT_VALUE, "placeholder"),
                                                      (ids.HINT_VALUE, "value"))]

    def click(token: str, value: str) -> str:
        client = app.server.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        body = {"output": key, "outputs": outputs, "changedPropIds": [f"{ids.HINT_SEND}.n_clicks"],
                "inputs": [{"id": ids.HINT_SEND, "property": "n_clicks", "value": 1}, [],
                           {"id": ids.HINT_PARAM, "property": "value", "value": "lr"}],
                "state": [{"id": ids.HINT_VALUE, "property": "value", "value": value},
                          {"id": ids.HINT_STRENGTH, "property": "value", "value": "0.8"},
                          {"id": ids.HINT_TRIALS, "property": "value", "value": ""},
                          {"id": ids.PAGE_CTX, "property": "data", "value": {"study": "tiny"}}]}
        response = client.post("/_dash-update-component", json=body)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()["response"][ids.HINT_STATUS]["children"]["props"]["children"]

    assert "hint lr: applied · none -> near 0.002, strength 0.8, trials 0-4" in click(tokens["alice"], "2e-3")
    assert control.hints()["lr"].hinted_by == "alice" and control.hints()["lr"].trials == 5  # an empty box: 5
    assert "rejected: bob may watch, not steer (role view)" in click(tokens["bob"], "3e-3")
    assert control.hints()["lr"].value == 0.002 and control.commands()[-1].requested_by == "bob"


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


def test_the_trials_table_says_which_trials_a_hint_drew():
    from steer import record
    from steer.dashboards import study_page

    hinted = optuna.trial.create_trial(
        params={"lr": 1e-3}, distributions={"lr": FloatDistribution(1e-4, 1e-2, log=True)},
        value=20.0, user_attrs={record.HINTED: {"lr": 1e-3}})
    hinted.number = 4
    table = study_page.trials_table(views.trial_rows([hinted]), "s", None)
    assert "hinted lr" in str(table)


def test_the_trials_table_keeps_the_changes_that_trained_out_of_the_searched_params():
    """A steered trial's changes become params when it ends (`lr@479`), and a promoted run starts with
    them: the table lists them as what the trial replays or was steered with, not as what was searched."""
    from steer import record
    from steer.dashboards import study_page

    lr = FloatDistribution(1e-5, 1e-1, log=True)
    steered = optuna.trial.create_trial(
        params={"lr": 1e-3, "lr@479": 3e-4}, distributions={"lr": lr, "lr@479": lr}, value=30.0,
        user_attrs={record.STEERED: True, record.INTERVENTIONS: [{"action": "set_lr"}]})
    promoted = optuna.trial.create_trial(
        params={"lr": 1e-3, "lr@479": 3e-4, "lr@900": 1e-4}, distributions={"lr": lr, "lr@479": lr, "lr@900": lr},
        value=30.0, user_attrs={record.PROMOTED_FROM: 0})
    steered.number, promoted.number = 0, 1
    rows = study_page.trials_table(views.trial_rows([steered, promoted]), "s", None).children[1].children
    cells = [[str(td.children) for td in row.children] for row in rows]  # newest first
    searched, column = 7, 8
    assert "lr@" not in cells[0][searched] + cells[1][searched] and "lr=1.00e-3" in cells[0][searched]
    assert cells[1][column] == "yes (1)" and cells[0][column] == "replays 2 changes"


# ---- forks and undo ------------------------------------------------------------------ #


def command(id, action, state="applied", args=None, result=None, reason=None, step=None, by="dash:127.0.0.1"):
    from steer.control import Command

    return Command(id, 0, action, args or {}, None, by, 1000.0 + id, state, step, None, reason, result)


def test_the_fork_card_checks_its_fields_with_the_servers_rules():
    assert views.fork_form(None, None, None, None) == views.ForkForm({})  # nothing filled in: a plain copy
    assert views.fork_form(" 3.14159e-4 ", None, "l1", "") == views.ForkForm({"lr": 3.14e-4, "loss": "l1"})
    assert views.fork_form("", "sgd", None, "1e-4").changes == {"optimizer": "sgd", "weight_decay": 1e-4}
    assert views.fork_form("-1", None, None, None).error == "lr: got -1.0; allowed: float in [1e-07, 1]"
    assert views.fork_form("abc", None, None, None).error == check_lr_error("abc")
    assert views.fork_form(None, None, None, "2").error == "weight_decay: got 2.0; allowed: float in [0, 1]"
    # the fork button asks for what was filled in; nothing when a field is refused (edit_fork says why)
    assert request_for(ids.FORK_SEND, 1, {}, fork=("3e-4", None, None, None)) == \
        {"action": "fork", "value": {"lr": 3e-4}}
    assert request_for(ids.FORK_SEND, 1, {}, fork=(None, None, None, None)) == {"action": "fork", "value": {}}
    assert request_for(ids.FORK_SEND, 1, {}, fork=("5", None, None, None)) is None
    assert request_for(ids.FORK_SEND, 0, {}, fork=("3e-4", None, None, None)) is None  # drawn, not clicked
    assert request_for(ids.UNDO, 1, {}) == {"action": "undo"}


def check_lr_error(text):
    try:
        check_setting("lr", text)
    except ValueError as exc:
        return str(exc)


def test_the_fork_cards_lr_slider_steps_and_keep():
    window = views.lr_window(1e-3)
    step = f"{ids.FORK_LR_STEP}-div10"
    edit = trial_page.fork_lr_edit(step, 1, "", 1e-3, window)  # empty: this trial's LR, scaled
    assert edit["text"] == "1.00e-4" and edit["error"] == "" and edit["position"] == -4.0
    assert edit["window"] == views.lr_window(1e-4)  # off centre: the slider's range moves
    assert trial_page.fork_lr_edit(step, 1, "3e-4", 1e-3, window)["text"] == "3.00e-5"
    assert trial_page.fork_lr_edit(step, 0, "", 1e-3, window) is None
    assert trial_page.fork_lr_edit(ids.FORK_LR_SLIDER, -3.5, "", 1e-3, window) == {
        "text": "3.16e-4", "error": "", "position": None, "window": None}
    typed = trial_page.fork_lr_edit(ids.FORK_LR, "2e-3", "2e-3", 1e-3, window)
    assert typed["text"] == "2.00e-3" and typed["position"] == views.lr_to_slider(2e-3) and typed["window"] is None
    bad = trial_page.fork_lr_edit(ids.FORK_LR, "7", "7", 1e-3, window)
    assert bad["text"] is None and bad["error"] == "lr: got 7.0; allowed: float in [1e-07, 1]"
    assert trial_page.fork_lr_edit(f"{ids.FORK_LR_STEP}-mul10", 1, "0.5", 1e-3, window)["error"] == \
        "lr: got 5.0; allowed: float in [1e-07, 1]"
    keep = trial_page.fork_lr_edit(ids.FORK_LR_KEEP, 1, "3e-4", 1e-3, views.lr_window(1e-5))
    assert keep["text"] == "" and keep["position"] == -3.0 and keep["window"] == views.lr_window(1e-3)
    assert trial_page.family_cursor([[3, 10], [4, -1]]) == [[3, 10], [4, -1]]
    assert trial_page.family_cursor([[3, 10], ["x", 1]]) == [] and trial_page.family_cursor(5) == []


def test_forks_undo_and_the_family_from_commands_and_records():
    from steer import record

    made = {"trial": 5, "step": 1425, "changes": {"lr": 3e-4}, "checkpoint": 2}
    commands = [command(1, "fork", result={"new": made}, step=1425),
                command(2, "fork", state="rejected", reason="fork needs a loop that can start from a checkpoint"),
                command(3, "undo", state="rejected", reason="nothing to undo: ..."),
                command(4, "fork", result={"new": {**made, "trial": 7, "step": 1600, "changes": {}}}, by="cli:me")]
    assert [f["trial"] for f in views.forks(commands)] == [5, 7]
    assert views.fork_status(commands, [1, 2])["state"] == "rejected"  # this browser's latest
    assert views.fork_status(commands, [1]) == {"id": 1, "state": "applied", "reason": None, "trial": 5,
                                                "step": 1425, "changes": {"lr": 3e-4}}
    assert views.fork_status(commands, []) is None
    assert views.undo_status(commands) == {"id": 3, "state": "rejected", "text": "undo rejected: nothing to undo: ..."}
    undone = command(5, "undo", result={"old": "lr 0.003 -> 0.5", "new": {"step": 513}}, step=661)
    assert views.undo_status([undone])["text"] == "undone at step 661: took back lr 0.003 -> 0.5"

    parent = record.read(frozen(0, state=TrialState.RUNNING))
    assert [(m["trial"], m["name"]) for m in views.relatives(parent, commands)] == [
        (5, "trial 5 (fork at step 1425)"), (7, "trial 7 (fork at step 1600)")]
    fork = record.read(frozen(5, state=TrialState.RUNNING, attrs={record.FORK_OF: 0, record.RESUME: {
        "kind": "fork", "from": 0, "step": 1425, "checkpoint": 2, "changes": {"lr": 3e-4}}}))
    assert views.relatives(fork, []) == [{"trial": 0, "step": 1425, "role": "parent",
                                          "name": "trial 0 (parent, forked at step 1425)"}]
    many = [command(10 + i, "fork", result={"new": {**made, "trial": 10 + i}}) for i in range(9)]
    assert [m["trial"] for m in views.relatives(fork, many)] == [0, 14, 15, 16, 17, 18]  # the newest
    # the figure: each relative a dashed value curve and a dotted loss curve, one legend entry for both
    members = views.relatives(parent, commands)
    fig = figures.curves_figure(views.curve_points([metric(0), metric(50)]), [],
                                relatives=[(members[0], views.curve_points([metric(1450, psnr=21.0)]))])
    assert [t.name for t in fig.data[3:]] == ["trial 5 (fork at step 1425)", "trial 5 (fork at step 1425): loss"]
    assert list(fig.data[3].x) == [1450] and fig.data[3].line.dash == "dash" and fig.data[4].showlegend is False
    patch = figures.curves_patch(None, None, relatives={0: views.curve_points([metric(1500)])},
                                 joined=[(members[1], views.curve_points([]))], shown=1).to_plotly_json()
    ops = [(o["operation"], o["location"]) for o in patch["operations"]]
    assert ("Extend", ["data", 3, "x"]) in ops and ("Extend", ["data", 4, "y"]) in ops
    assert [o["params"]["value"]["name"] for o in patch["operations"] if o["operation"] == "Append"] == \
        ["trial 7 (fork at step 1600)", "trial 7 (fork at step 1600): loss"]


def test_undo_and_fork_in_the_log_and_the_controls():
    marks = views.interventions(frozen(0, state=TrialState.RUNNING, attrs={"steer.interventions": [
        {"action": "set_optimizer", "old": "adam", "new": "sgd", "step": 10, "at": 1.0, "by": "a"},
        {"action": "undo", "old": "optimizer adam -> sgd", "new": {"step": 10}, "step": 12, "at": 2.0, "by": "a"},
        {"action": "fork", "old": None, "new": {"trial": 3, "step": 20, "changes": {"lr": 3e-4}}, "step": 20,
         "at": 3.0, "by": "a"}]}))
    assert [m["change"] for m in marks][1:] == ["undid optimizer adam -> sgd, back to its state at step 10",
                                                "forked as #3 with lr 3.00e-4"]
    # after an undo the controls show the trial's settings again, not the value last set by hand
    now = {"lr": 1e-3, "optimizer": "adam", "loss": "mse", "weight_decay": 0.0}
    applied = [{"action": "set_optimizer", "new": "sgd"}, {"action": "undo", "new": {"step": 10}}]
    assert views.synced_controls(now, applied)["optimizer"] == "adam"
    assert views.synced_controls(now, applied + [{"action": "set_loss", "new": "l1"}])["loss"] == "l1"
    steered = frozen(0, state=TrialState.RUNNING, attrs={"steer.interventions": [
        {"action": "set_optimizer", "new": "sgd", "at": 1000.0 + 60},
        {"action": "undo", "new": {"step": 55}, "at": 1000.0 + 61}]})
    assert views.current_settings(steered, metric(50, opt="adam"))["optimizer"] == "adam"


def test_the_trials_table_shows_forks_and_retries_with_links():
    from steer import record
    from steer.dashboards import study_page

    def trial(number, attrs=None):
        t = optuna.trial.create_trial(params={"lr": 1e-3}, distributions={"lr": LR}, value=20.0,
                                      user_attrs=attrs or {})
        t.number = number
        return t

    resume = {"kind": "fork", "from": 0, "step": 1425, "checkpoint": 2, "changes": {"lr": 3e-4}}
    rows = views.trial_rows([trial(0), trial(1, {record.FORK_OF: 0, record.RESUME: resume}),
                             trial(2, {record.FORK_OF: 0, record.RESUME: {**resume, "step": 1600}}),
                             trial(3, {record.RETRY_OF: 1, record.RESUME: {**resume, "kind": "retry", "from": 1,
                                                                           "step": 1500}})])
    assert [(r["forks"], r["retried_as"]) for r in rows] == [([1, 2], []), ([], [3]), ([], []), ([], [])]
    cells = {r["number"]: study_page.joined(study_page.family_words(r, "s")) for r in rows}
    text = {n: "".join(_text(c) for c in parts) for n, parts in cells.items()}
    assert text == {0: "forks: #1, #2", 1: "fork of #0 at step 1425; retried as #3", 2: "fork of #0 at step 1600",
                    3: "retry of #1 from step 1500"}
    table = study_page.trials_table(rows, "s", None)
    assert "/trial/1?study=s" in str(table) and "forks: " in str(table)


def _text(component) -> str:
    """The text a component shows (its strings, depth first)."""
    if isinstance(component, str):
        return component
    children = getattr(component, "children", None)
    if children is None:
        return ""
    return "".join(_text(c) for c in (children if isinstance(children, list) else [children]))


def test_a_fork_request_says_what_it_asked_for_and_what_it_made():
    made = command(1, "fork", args={"changes": {"lr": 3e-4}}, step=463,
                   result={"new": {"trial": 5, "step": 463, "changes": {"lr": 3e-4}}})
    shown = views.command_status(made)
    assert (shown["what"], shown["status"]) == ("fork with lr 3.00e-4", "applied at step 463: trial 5")
    asked = views.command_status(command(2, "fork", state="pending", args={"changes": {}}))
    assert asked["what"] == "fork with no change" and asked["status"].startswith("pending")
