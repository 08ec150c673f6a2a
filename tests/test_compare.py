"""Comparing a steered study: the data, `steer show --compare`, and a real optuna-dashboard server."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from PIL import Image

import steer
from conftest import CHROMIUM, CHROMIUM_ARGS, requires_browser, run_cli, steer_in_thread
from steer import record
from steer.comparison import comparison

SPEC = """
[study]
name = "cmp"
seed = 2
[target]
image = "card"
size = 16
[trial]
steps = 1500
report_every = 100
backend = "torch"
[pruner]
type = "none"
[steering]
poll_interval = 0.02
[space]
lr = { type = "float", low = 1e-3, high = 1e-2, log = true }
"""


@pytest.fixture(scope="module")
def steered_study(tmp_path_factory):
    """A real study: trial 0 steered (set_lr, then promoted), trial 1 its promoted clean run, trial 2 plain."""
    folder = tmp_path_factory.mktemp("cmp")
    _, url, study, worker, control = steer_in_thread(folder, "cmp", SPEC, n_trials=3)
    for action, value in (("set_lr", 2e-3), ("promote", None)):
        cmd = control.wait(control.request(action, trial=0, value=value, by="tester").id)
        assert cmd.state == "applied", cmd.describe()
    worker.join(600)
    assert not worker.is_alive(), "the study did not finish its 3 trials"
    steer.comparison.save_comparison(study)
    return folder, url, study


def test_comparison_data(steered_study):
    _, _, study = steered_study
    data = comparison(study)
    assert data["steered"]["count"] == 1 and data["unsteered"]["count"] == 2
    assert data["steered"]["best"] == study.trials[0].value
    assert data["promoted"] == [{"trial": 1, "psnr": study.trials[1].value, "state": "COMPLETE", "origin": 0,
                                 "origin_psnr": study.trials[0].value, "origin_state": "COMPLETE"}]
    # The promoted run started where trial 0 started and made its change at the same step, as a param too:
    # same seed, same schedule, so the same PSNR at every report, bit for bit.
    first, second = study.trials[0], study.trials[1]
    step = record.attrs(first)["steer.interventions"][0]["step"]
    assert second.params == {**first.params, f"lr@{step}": 2e-3}
    assert second.intermediate_values == first.intermediate_values and second.value == first.value
    # Did steering help? Trial 0 and its clean run, each placed among the plain trials (trial 2 only).
    beats = 1.0 if first.value > study.trials[2].value else 0.0
    assert data["held_up"] == [{"trial": 0, "psnr": first.value, "state": "COMPLETE", "changes": 2,
                                "beats_unsteered": beats, "unsteered": 1,
                                "clean": [{"trial": 1, "psnr": second.value, "state": "COMPLETE",
                                           "beats_unsteered": beats}]}]


def test_show_compare_cli(steered_study):
    _, url, study = steered_study
    result = run_cli("show", "--storage", url, "--compare")
    assert result.returncode == 0, result.stderr
    assert "steered            1          1" in result.stdout
    assert f"trial 1 (COMPLETE, {study.trials[1].value:.2f} dB) from trial 0" in result.stdout
    assert "did steering help? each steered trial and its clean re-runs" in result.stdout
    assert f"clean run #1 (COMPLETE, {study.trials[1].value:.2f} dB)" in result.stdout
    assert "-> held up on its own" in result.stdout
    as_json = json.loads(run_cli("show", "--storage", url, "--compare", "--json").stdout)
    assert as_json["promoted"][0]["origin"] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.fixture(scope="module")
def dashboard(steered_study):
    folder, url, _ = steered_study
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.Popen([sys.executable, "-m", "steer", "dashboard", "--storage", url, "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            _get(base + "/api/meta")
            break
        except OSError:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "optuna-dashboard did not start"
            time.sleep(0.2)
    yield base
    proc.terminate()
    proc.wait(10)


def _png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return im.size


def test_optuna_dashboard_shows_notes_images_attrs_and_figure(steered_study, dashboard):
    folder, _, study = steered_study
    summaries = json.loads(_get(dashboard + "/api/studies"))["study_summaries"]
    study_id = next(s["study_id"] for s in summaries if s["study_name"] == "cmp")
    detail = json.loads(_get(f"{dashboard}/api/studies/{study_id}"))
    # The study's target image and every trial's final prediction, as artifacts of the right size.
    (target,) = [a for a in detail["artifacts"] if a["filename"] == "target.png"]
    assert _png_size(_get(f"{dashboard}/artifacts/{study_id}/{target['artifact_id']}")) == (16, 16)
    for trial in detail["trials"]:
        (pred,) = [a for a in trial["artifacts"] if a["filename"] == "prediction.png"]
        data = _get(f"{dashboard}/artifacts/{study_id}/{trial['trial_id']}/{pred['artifact_id']}")
        assert _png_size(data) == (16, 16)
    assert (folder / "cmp-artifacts").is_dir()  # beside the database by default
    steered = detail["trials"][0]
    assert "-> 0.002 | tester |" in steered["note"]["body"] and "| promoted as #1 | tester |" in steered["note"]["body"]
    assert "Promoted as #1." in steered["note"]["body"]
    assert "Promoted from #0: its schedule from step 0 (1 change), same seed" in detail["trials"][1]["note"]["body"]
    # optuna-dashboard shows the user attributes: only the short ones a person scans (the rest of the
    # record is kept in system attributes, which it does not print in full on the trial's page).
    attrs = {a["key"]: a["value"] for a in steered["user_attrs"]}
    assert attrs == {"steer.steered": "True"}
    assert sum(len(k) + len(v) for k, v in attrs.items()) < 100
    promoted = {a["key"]: a["value"] for a in detail["trials"][1]["user_attrs"]}
    assert promoted["steer.promoted_from"] == "0"
    figures = {g["id"]: json.loads(g["graph_object"]) for g in detail["plotly_graph_objects"]}
    names = [trace.get("name") for trace in figures["steer-comparison"]["data"]]
    assert "steered" in names and "not steered" in names


@requires_browser
def test_optuna_dashboard_page_in_a_browser(dashboard, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(dashboard + "/dashboard/studies/1/trials?numbers=0")
        page.get_by_text("Promoted as #1.").wait_for(timeout=30_000)  # the note, rendered
        page.get_by_text("steer.steered").first.wait_for(timeout=30_000)  # the user attributes, rendered
        # No horizontal scroll at 1400 px (with the whole record in user attributes the page was 5,138 px wide).
        widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], widths
        page.screenshot(path=str(tmp_path / "trial.png"))
        browser.close()
    assert (tmp_path / "trial.png").stat().st_size > 10_000
