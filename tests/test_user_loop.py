"""Steering a training loop that is not steer's: docs/examples/regression.py as a real study on SQLite.

The example runs in its own process, as a user runs it; `steer ctl` steers it
from another; the app's trial page shows it in headless Chromium (no image:
curves and controls only).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest

from conftest import CHROMIUM, CHROMIUM_ARGS, requires_browser, run_cli
from steer import record
from steer.control import Control
from steer.dashboards import ids, server
from steer.dashboards.app import create_app
from test_control import wait_for

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "regression.py"


@pytest.fixture
def example(tmp_path):
    """The example running one long trial on a SQLite study; yields (process, url)."""
    url = f"sqlite:///{tmp_path / 'regression.db'}"
    env = {**{k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), "--storage", url, "--trials", "1",
                             "--steps", "100000000"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    yield proc, url
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def ctl(url: str, *args: str) -> str:
    result = run_cli("ctl", *args, "--trial", "0", "--storage", url, "--wait", "--by", "tester")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _study_created(url: str) -> bool:
    """Whether the example has made its study, read without creating anything: Optuna's plain
    `create_study` and a second process creating the same tables at once fail with "table studies
    already exists" (Optuna's table creation is not safe against that; steer's own retries it)."""
    path = Path(url.removeprefix("sqlite:///"))
    if not path.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return db.execute("SELECT count(*) FROM studies").fetchone()[0] > 0
    except sqlite3.OperationalError:  # no table yet, or locked while it is made
        return False


def running_control(proc: subprocess.Popen, url: str) -> Control:
    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"the example exited {proc.returncode}: {proc.stderr.read()}")
        if not _study_created(url):
            return None
        try:
            control = Control.open(url)
        except Exception:  # noqa: BLE001 - the database or the study is not there yet
            return None
        live = control.live(0)
        return control if live is not None and live.running else None
    return wait_for(ready, what="the example's first trial to run")


@requires_browser
def test_a_users_training_loop_is_steered_recorded_and_shown(example, tmp_path):
    proc, url = example
    control = running_control(proc, url)
    assert control.metrics(0)[-1].optimizer == "adamw" and control.metrics(0)[-1].loss_name == "mse"

    assert "applied at step" in ctl(url, "set-lr", "3e-3")
    assert "applied at step" in ctl(url, "set-optimizer", "sgd")
    assert "applied at step" in ctl(url, "set-loss", "huber")
    # The optimizer's param_groups now say so: every metrics row is read from them.
    latest = wait_for(lambda: (m := control.metrics(0)[-1]).optimizer == "sgd" and m.loss_name == "huber" and m,
                      what="a metrics row after the changes")
    assert latest.lr == 3e-3
    # A name the loop did not offer is rejected by the control plane with the trial's own names.
    bad = run_cli("ctl", "set-loss", "--trial", "0", "ssim", "--storage", url)
    assert bad.returncode == 1 and "loss: got 'ssim'; allowed: mse | l1 | huber" in bad.stdout

    # The app shows the trial: curves and controls, no image.
    app = create_app(url)
    srv = server.make_server(app, "127.0.0.1", 0)
    threading.Thread(target=srv.run, daemon=True).start()
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"http://127.0.0.1:{srv.effective_port}/trial/0")
            page.get_by_text("This study has no images").wait_for(timeout=30_000)
            page.locator(f"#{ids.TRIAL_HEADER}", has_text="steered (3 interventions)").wait_for(timeout=30_000)
            page.locator(f"#{ids.INTERVENTIONS}", has_text="set_optimizer").wait_for(timeout=30_000)
            page.wait_for_function(
                f"document.querySelector('#{ids.CURVES} .js-plotly-plot')?.data?.[0]?.x?.length > 1",
                timeout=30_000)
            assert page.locator(f"#{ids.PRUNE_BUTTON}").is_enabled()  # a running trial's controls are live
            page.screenshot(path=str(tmp_path / "user-loop-trial.png"), full_page=True)
            if os.environ.get("STEER_DOCS_SCREENSHOTS"):
                page.screenshot(path=str(EXAMPLE.parent.parent / "app-user-loop.png"), full_page=True)
            page.goto(f"http://127.0.0.1:{srv.effective_port}/")  # the study page names its value plainly
            page.get_by_text("Best value so far").wait_for(timeout=30_000)
            page.locator(f"#{ids.TRIALS_TABLE}", has_text="yes (3)").wait_for(timeout=30_000)
            page.screenshot(path=str(tmp_path / "user-loop-study.png"), full_page=True)
            browser.close()
        assert not errors, errors
    finally:
        srv.close()

    assert "applied at step" in ctl(url, "prune")
    proc.wait(60)
    assert proc.returncode == 0 and "no trial completed" in proc.stdout.read()
    trial = optuna.load_study(study_name="regression", storage=url).trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    rec = record.read(trial)
    assert [e["action"] for e in rec.interventions] == ["set_lr", "set_optimizer", "set_loss", "prune"]
    assert rec.steered and all(e["by"] == "tester" for e in rec.interventions)
    assert rec.interventions[1]["old"] == "adamw" and rec.interventions[1]["new"] == "sgd"
    assert rec.effective["lr"] == 3e-3 and rec.effective["optimizer"] == "sgd" and rec.effective["loss"] == "huber"
    assert record.attrs(trial)[record.CHOICES] == {"optimizer": ["adam", "sgd", "adamw"], "loss": ["mse", "l1", "huber"]}
    assert "pruned by tester" in trial.user_attrs[record.PRUNED_REASON]
