"""Fork and undo in the app, in headless Chromium against real `steer run` workers.

One tiny study for the module: a worker keeps one long trial running (each step
sleeps a few ms) and a second worker waits while the study is held, so the fork
the page makes is what it runs once the test releases the study. Tests run in
file order and share the study: the fork first (its curve must reach the
parent's chart), then a bad LR set from the page and taken back with undo.
Each test ends by checking the browser console has no errors.

With STEER_DASH_SCREENSHOTS=FOLDER the fork test also writes app-fork.png there:
the parent's page with its fork's curve overlaid and the fork card.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import requires_browser
from steer.dashboards import ids
from steer.dashboards.app import create_app
from steer.dashboards.views import fmt_lr, round_lr
from test_dash_browser import one_worker, open_trial, plotly_data, serve, stop, wait_for

pytestmark = requires_browser

SPEC = """
[study]
name = "fork"
trials = 20
seed = 6

[target]
image = "card"
size = 24

[trial]
steps = 200000
report_every = 50
backend = "torch"

[pruner]
type = "none"

[steering]
poll_interval = 0.05
publish_interval = 0.2
preview_size = 24

[checkpoints]
every = 0.5

[space]
lr = { type = "float", low = 1e-3, high = 1e-2, log = true }
"""
WAIT = 20_000  # ms a page gets to show what a worker did
ME = "dash:127.0.0.1"
SHOTS = os.environ.get("STEER_DASH_SCREENSHOTS")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A real study: one worker training one long trial, a second one waiting while the study is held."""
    root = tmp_path_factory.mktemp("fork")
    with one_worker(root, "fork", SPEC) as study:
        control = study["control"]
        control.request("hold", by="test")  # the second worker starts nothing until the fork is there
        env = {**{k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}, "OMP_NUM_THREADS": "1"}
        spare = subprocess.Popen([sys.executable, "worker.py", "run", "fork.toml"], cwd=root, env=env,
                                 stdout=subprocess.DEVNULL, stderr=(root / "spare.log").open("w"))
        try:
            yield study
        finally:
            stop(spare)


@pytest.fixture(scope="module")
def base(study):
    srv, url = serve(create_app(study["url"]))
    yield url
    srv.close()


@pytest.fixture
def page(browser):
    """A page 1400 px wide in a fresh context; dialogs (a big LR change asks first) are accepted; at the end
    the console must hold no error."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT)
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: d.accept())
    yield page
    context.close()
    assert errors == [], f"browser console errors: {errors}"


def trace_with_points(page, name: str) -> None:
    """Wait until the curves figure holds a trace called `name` with points."""
    page.wait_for_function(f"(name) => (document.querySelector('#{ids.CURVES} .js-plotly-plot')?.data || [])"
                           ".some(t => t.name === name && t.x && t.x.length > 0)", arg=name)


def test_fork_from_the_page_and_its_curve_on_the_parents_chart(study, base, page):
    control, n = study["control"], study["n"]
    open_trial(page, base, n, study="fork")
    assert page.locator(f"#{ids.FORK_STATUS}").inner_text() == ""
    # a lower LR: the fork card's ÷10 scales this trial's LR (its box was empty: this trial's)
    now = control.metrics(n)[-1].lr
    page.get_by_role("button", name="fork LR ÷10", exact=True).click()
    lower = fmt_lr(round_lr(round_lr(now) * 0.1))
    page.wait_for_function(f"(v) => document.getElementById('{ids.FORK_LR}').value === v", arg=lower)
    page.fill(f"#{ids.FORK_WEIGHT_DECAY}", "7")  # refused in the page with the server's reason, nothing sent
    page.get_by_role("button", name="Fork", exact=True).click()
    page.locator(f"#{ids.FORK_ERROR}", has_text="weight_decay: got 7.0; allowed: float in [0, 1]").wait_for()
    assert [c for c in control.commands(trial=n) if c.action == "fork"] == []
    page.fill(f"#{ids.FORK_WEIGHT_DECAY}", "")
    page.get_by_role("button", name="Fork", exact=True).click()

    made = page.locator(f"#{ids.FORK_STATUS}", has_text="forked as trial")
    made.wait_for()
    (fork,) = [c for c in control.commands(trial=n) if c.action == "fork"]
    new = fork.result["new"]
    m, step = new["trial"], new["step"]
    assert (fork.state, fork.requested_by, fork.args) == ("applied", ME, {"changes": {"lr": float(lower)}})
    assert made.inner_text() == f"forked as trial {m} at step {step} with lr {lower}"
    assert made.get_by_role("link", name=f"trial {m}").get_attribute("href") == f"/trial/{m}?study=fork"
    assert page.locator(f"#{ids.FORKS}").inner_text() == f"Forks of this trial: #{m} (step {step}: lr {lower})"
    page.locator(f"#{ids.FORK_ERROR}").wait_for(state="hidden")  # the refusal is gone with the good click

    control.request("release", by="test")  # the waiting worker takes the fork: it runs from the parent's step
    name = f"trial {m} (fork at step {step})"
    trace_with_points(page, name)
    curves = {t["name"]: t for t in plotly_data(page, ids.CURVES)}
    assert min(curves[name]["x"]) > step and curves[f"{name}: loss"]["x"]  # it continues the parent's count
    assert max(curves["loss"]["x"]) >= step  # beside the parent's own curve
    first = control.metrics(m)[0]
    assert first.step > step and first.lr == pytest.approx(float(lower))  # with the fork's LR from its first step
    page.locator(f"#{ids.INTERVENTIONS} td", has_text=f"forked as #{m} with lr {lower}").wait_for()

    if SHOTS:  # the parent with its fork overlaid, and the fork card that made it
        page.wait_for_function(f"(name) => document.querySelector('#{ids.CURVES} .js-plotly-plot').data"
                               ".find(t => t.name === name).x.length >= 25", arg=name, timeout=60_000)
        page.mouse.move(0, 0)
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / "app-fork.png"), full_page=True)

    # the fork's own page: its parent's curve beside its own, and where it came from
    made.get_by_role("link", name=f"trial {m}").click()
    page.wait_for_url(f"**/trial/{m}?study=fork")
    trace_with_points(page, f"trial {n} (parent, forked at step {step})")
    assert page.locator(f"#{ids.FORKS}").inner_text() == f"Forked from #{n} at step {step} with lr {lower}"
    page.locator(f"#{ids.TRIAL_HEADER}", has_text=f"fork of #{n} at step {step}").wait_for()


def test_undo_takes_back_a_bad_lr_set_from_the_page(study, base, page):
    control, n = study["control"], study["n"]
    open_trial(page, base, n, study="fork")
    before = round_lr(control.metrics(n)[-1].lr)
    page.fill(f"#{ids.LR_INPUT}", "0.5")  # 100x the LR: the page asks first, the dialog handler accepts
    page.press(f"#{ids.LR_INPUT}", "Enter")
    page.locator(f"#{ids.REQUESTS} li.cmd-applied", has_text="set_lr 5.00e-1").wait_for()
    page.locator(f"#{ids.CURRENT}", has_text="lr 5.00e-1").wait_for()

    page.get_by_role("button", name="undo", exact=True).click()
    page.locator(f"#{ids.UNDO_STATUS}", has_text="undone at step").wait_for()
    (undo,) = [c for c in control.commands(trial=n) if c.action == "undo"]
    assert (undo.state, undo.requested_by) == ("applied", ME)
    assert undo.result["old"].startswith("lr ") and undo.result["old"].endswith("-> 0.5")
    logged = page.locator(f"#{ids.INTERVENTIONS} tbody tr").first  # newest first
    logged.filter(has_text="undid lr").wait_for()
    assert (f"(command {undo.result['new']['command']}), back to its state at step {undo.result['new']['step']}"
            in logged.inner_text())
    assert logged.locator("td").nth(1).inner_text() == "undo"
    page.locator(f"#{ids.CURRENT}", has_text=f"lr {fmt_lr(before)}").wait_for()  # the LR it had
    wait_for("the worker's LR back", lambda: round_lr(control.metrics(n)[-1].lr) == before, timeout=10)

    # nothing left to take back: refused in the server's words, beside the button
    page.get_by_role("button", name="undo", exact=True).click()
    page.locator(f"#{ids.UNDO_STATUS} .field-error", has_text="undo rejected: nothing to undo").wait_for()
    time.sleep(0.3)
    assert [c.state for c in control.commands(trial=n) if c.action == "undo"] == ["applied", "rejected"]
