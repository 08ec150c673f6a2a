"""Screenshots of the three pages for docs/, from the real app on a real running study.

Opt-in (about two minutes): STEER_DASH_SCREENSHOTS=docs pytest tests/test_dash_screenshots.py
writes app-study.png, app-trial.png and app-wall.png into that folder, and for the person's pace
app-pace-trial.png (a paused, kept trial with an LR edit not sent yet) and app-held.png (a held study),
app-hints.png (the study page with a hint, two space edits and a refused hint) and app-find-lr.png (a trial
page with an LR range test).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steer.control import Control
from steer.dashboards import ids
from steer.dashboards.app import create_app
from conftest import CHROMIUM, CHROMIUM_ARGS, requires_browser
from test_dash_browser import WORKER, open_trial, serve, wait_for

OUT = os.environ.get("STEER_DASH_SCREENSHOTS")
pytestmark = [
    pytest.mark.skipif(not OUT, reason="screenshots for docs/ are taken only when STEER_DASH_SCREENSHOTS names a folder"),
    requires_browser,
]

SPEC = """
[study]
name = "demo"
trials = 60
seed = 5
baseline = true

[target]
image = "card"
size = 48

[trial]
steps = 800
report_every = 50
backend = "torch"

[sampler]
type = "tpe"
n_startup_trials = 4

[pruner]
type = "none"

[steering]
poll_interval = 0.05
publish_interval = 0.25

[space]
lr = { type = "float", low = 3e-4, high = 3e-2, log = true }
optimizer = { type = "categorical", choices = ["adam", "adamw", "sgd"] }
activation = { type = "categorical", choices = ["relu", "sine"] }
w0 = { type = "float", low = 10.0, high = 40.0 }
"""


def test_screenshots(tmp_path):
    out = Path(OUT)
    out.mkdir(parents=True, exist_ok=True)
    (tmp_path / "demo.toml").write_text(SPEC)
    (tmp_path / "worker.py").write_text(WORKER.replace("0.004", "0.002"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "worker.py", "run", "demo.toml", "--trials", "8"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    workers = [subprocess.Popen([sys.executable, "worker.py", "run", "demo.toml", "--steps", "40000"], cwd=tmp_path,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(3)]
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    srv, base = serve(create_app(url))
    try:
        control = Control.open(url, "demo")
        running = wait_for("three running trials", lambda: (lambda s: s if len(s) == 3 else None)(
            sorted(s.trial for s in control.live_all() if s.step > 600)), timeout=180)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.on("dialog", lambda d: d.accept())
            a = running[0]
            open_trial(page, base, a, study="demo")
            page.get_by_role("button", name="÷2", exact=True).click()
            page.get_by_role("button", name="÷1.25", exact=True).click()
            page.locator(f"#{ids.LR_HINT}", has_text="not sent yet").wait_for()
            page.get_by_role("button", name="send", exact=True).click()
            page.locator(f"#{ids.REQUESTS} li.cmd-applied", has_text="set_lr").wait_for()
            time.sleep(4)
            other = "Adam" if control.metrics(a)[-1].optimizer == "adamw" else "AdamW"
            page.click(f"#{ids.OPTIMIZER}")
            page.get_by_role("option", name=other, exact=True).click()
            page.locator(f"#{ids.REQUESTS} li.cmd-applied", has_text="set_optimizer").wait_for()
            page.get_by_role("button", name="pin LR").click()
            page.locator(f"#{ids.REQUESTS} li.cmd-applied", has_text="pin lr").wait_for()
            page.fill(f"#{ids.LR_INPUT}", "3")  # refused in the page, with the server's reason
            page.press(f"#{ids.LR_INPUT}", "Enter")
            page.locator(f"#{ids.LR_ERROR}", has_text="lr: got 3.0").wait_for()
            time.sleep(5)
            page.mouse.move(0, 0)
            page.screenshot(path=str(out / "app-trial.png"), full_page=True)
            # the person's pace: paused and kept, an LR edit shown but not sent yet
            page.reload()
            page.locator(f"#{ids.TRIAL_HEADER} .badge").wait_for()
            page.locator(f"#{ids.KEEP}").click()
            page.locator(f"#{ids.TRIAL_HEADER} .note-kept").wait_for()
            page.locator(f"#{ids.PAUSE}").click()
            page.locator(f"#{ids.LIVE_CAPTION}", has_text="(paused)").wait_for()
            page.get_by_role("button", name="×2", exact=True).click()
            page.locator(f"#{ids.LR_HINT}", has_text="not sent yet").wait_for()
            time.sleep(2)
            page.mouse.move(0, 0)
            page.screenshot(path=str(out / "app-pace-trial.png"), full_page=True)
            page.locator(f"#{ids.RESUME}").click()
            page.locator(f"#{ids.PAUSE}").wait_for(state="visible")
            page.goto(f"{base}/?study=demo")
            page.locator(f"#{ids.PINS}", has_text="lr = ").wait_for()
            time.sleep(2)
            page.screenshot(path=str(out / "app-study.png"), full_page=True)
            # hints and the search space: a hint, a refused one, a narrowed range and fewer choices
            page.fill(f"#{ids.HINT_VALUE}", "3e-3")
            page.get_by_role("button", name="hint", exact=True).click()
            page.locator(f"#{ids.HINTS} .pin-row", has_text="lr near 0.003").wait_for()
            page.fill(f"#{ids.SPACE_LOW}", "1e-3")
            page.fill(f"#{ids.SPACE_HIGH}", "1e-2")
            page.get_by_role("button", name="apply", exact=True).click()
            page.locator(f"#{ids.SPACE} .space-row", has_text="(spec: ").wait_for()
            page.click(f"#{ids.SPACE_PARAM}")
            page.get_by_role("option", name="optimizer", exact=True).click()
            page.fill(f"#{ids.SPACE_CHOICES}", "adam,adamw")
            page.get_by_role("button", name="apply", exact=True).click()
            page.locator(f"#{ids.SPACE} .space-row", has_text="optimizer adam | adamw (spec: ").wait_for()
            page.fill(f"#{ids.HINT_VALUE}", "0.5")  # outside the edited range: refused, in the server's words
            page.get_by_role("button", name="hint", exact=True).click()
            page.locator(f"#{ids.HINT_STATUS} .field-error").wait_for()
            time.sleep(2)
            page.screenshot(path=str(out / "app-hints.png"), full_page=True)
            page.get_by_role("button", name="hold the study").click()
            page.locator(f"#{ids.HELD_BANNER}", has_text="Study held by").wait_for()
            time.sleep(2)
            page.set_viewport_size({"width": 1400, "height": 700})
            page.screenshot(path=str(out / "app-held.png"))
            page.set_viewport_size({"width": 1400, "height": 1000})
            page.get_by_role("button", name="release the study").click()
            page.locator(f"#{ids.HELD_BANNER}").wait_for(state="hidden")
            page.goto(f"{base}/wall?study=demo")
            page.locator(f"#{ids.WALL_GRID} a.wall-card").nth(2).wait_for()
            last = page.locator(f"#{ids.WALL_GRID} .wall-cell").nth(2)
            last.get_by_role("button", name="pause").click()
            last.locator(".badge", has_text="paused").wait_for()
            page.wait_for_function(f"() => [...document.querySelectorAll('#{ids.WALL_GRID} img')]"
                                   ".every(img => img.complete && img.naturalWidth > 0)")
            time.sleep(1)
            page.set_viewport_size({"width": 1400, "height": 560})
            page.screenshot(path=str(out / "app-wall.png"))
            # an LR range test on another running trial, its suggestion ready to apply
            page.set_viewport_size({"width": 1400, "height": 1000})
            open_trial(page, base, running[1], study="demo")
            page.get_by_role("button", name="find LR", exact=True).click()
            page.locator(f"#{ids.FIND_LR_CARD}").wait_for(state="visible")
            time.sleep(2)
            page.mouse.move(0, 0)
            page.screenshot(path=str(out / "app-find-lr.png"), full_page=True)
            browser.close()
    finally:
        srv.close()
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=30)
