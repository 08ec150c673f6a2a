"""Hints, search-space edits and the LR range test in the app, in headless Chromium against a real worker.

One tiny study for the module: a single `steer run` worker keeps one long trial
running (each step sleeps a few ms). The study page's hint and space forms act
on the study (applied at once by the control plane); find LR runs on the trial's
worker, which tests a copy while the trial waits. Each test ends by checking
the browser console has no errors.
"""

from __future__ import annotations


import pytest

from conftest import requires_browser
from steer.dashboards import ids
from steer.dashboards.app import create_app
from steer.dashboards.views import fmt_lr, round_lr
from test_dash_browser import one_worker, open_trial, plotly_data, serve, wait_for

pytestmark = requires_browser

SPEC = """
[study]
name = "hints"
trials = 20
seed = 4

[target]
image = "card"
size = 12

[trial]
steps = 200000
report_every = 50
backend = "torch"

[pruner]
type = "none"

[steering]
poll_interval = 0.05
publish_interval = 0.2
preview_size = 12

[space]
lr = { type = "float", low = 1e-3, high = 1e-2, log = true }
optimizer = { type = "categorical", choices = ["adam", "adamw"] }
"""
WAIT = 20_000  # ms a page gets to show what the worker (or the control plane) did
ME = "dash:127.0.0.1"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A real study with one worker training one long trial."""
    with one_worker(tmp_path_factory.mktemp("hints"), "hints", SPEC) as study:
        yield study


@pytest.fixture(scope="module")
def base(study):
    srv, url = serve(create_app(study["url"]))
    yield url
    srv.close()


@pytest.fixture
def page(browser):
    """A page in a fresh context; dialogs are accepted; at the end the console must hold no error."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT)
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: d.accept())  # an LR more than 10x away, or outside the searched range, asks
    yield page
    context.close()
    assert errors == [], f"browser console errors: {errors}"


def pick(page, dropdown, option):
    page.click(f"#{dropdown}")
    page.get_by_role("option", name=option, exact=True).click()


def open_study(page, base):
    page.goto(f"{base}/?study=hints")
    page.locator(f"#{ids.SPACE}", has_text="lr [0.001, 0.01] log").wait_for()  # the first poll has drawn it


def test_a_hint_from_the_study_page(study, base, page):
    control = study["control"]
    open_study(page, base)
    page.locator(f"#{ids.HINTS}", has_text="No hints.").wait_for()
    pick(page, ids.HINT_PARAM, "lr")
    page.locator(f"#{ids.HINT_VALUE}[placeholder='in [0.001, 0.01] log']").wait_for()  # what the box takes
    page.fill(f"#{ids.HINT_VALUE}", "3e-3")
    page.fill(f"#{ids.HINT_STRENGTH}", "0.6")
    page.fill(f"#{ids.HINT_TRIALS}", "4")
    page.get_by_role("button", name="hint", exact=True).click()
    page.locator(f"#{ids.HINT_STATUS}", has_text="hint lr: applied · none -> near 0.003, strength 0.6").wait_for()
    hint = control.hints()["lr"]
    assert (hint.value, hint.strength, hint.trials, hint.hinted_by) == (0.003, 0.6, 4, ME)
    row = page.locator(f"#{ids.HINTS} .pin-row", has_text="lr near 0.003")
    row.wait_for()
    first = hint.first_trial
    assert f"lr near 0.003, strength 0.6, trials {first}-{first + 3}" in row.inner_text()
    left = first + 4 - control.storage.get_n_trials(control.study_id)
    assert f"{left} left · by {ME}" in row.inner_text()

    # a value outside the space later trials draw from: refused in the server's words, nothing changes
    page.fill(f"#{ids.HINT_VALUE}", "5")
    page.get_by_role("button", name="hint", exact=True).click()
    reason = "hint lr: 5.0 is outside the space later trials draw from ([0.001, 0.01] log)"
    page.locator(f"#{ids.HINT_STATUS} .field-error", has_text=f"rejected: {reason}").wait_for()
    assert control.hints()["lr"].value == 0.003
    assert control.commands()[-1].state == "rejected" and reason in control.commands()[-1].reason

    # a categorical: the strength and trials left as they are default; the form shows its choices
    pick(page, ids.HINT_PARAM, "optimizer")
    page.locator(f"#{ids.HINT_VALUE}[placeholder='one of adam | adamw']").wait_for()
    page.fill(f"#{ids.HINT_VALUE}", "adamw")
    page.fill(f"#{ids.HINT_STRENGTH}", "")
    page.get_by_role("button", name="hint", exact=True).click()
    page.locator(f"#{ids.HINTS} .pin-row", has_text="optimizer near adamw, strength 0.8").wait_for()

    row.get_by_role("button", name="unhint").click()
    page.locator(f"#{ids.HINT_STATUS}", has_text="unhint lr: applied · near 0.003").wait_for()
    row.wait_for(state="detached")
    assert set(control.hints()) == {"optimizer"}
    history = page.locator(f"#{ids.SPACE_HISTORY} li")
    history.first.filter(has_text="unhint lr").wait_for()  # newest first
    texts = history.all_inner_texts()
    assert "near 0.003, strength 0.6" in texts[0] and texts[0].rstrip().endswith("-> none")
    assert "hint optimizer" in texts[1] and "none -> near adamw, strength 0.8, trials" in texts[1]
    assert "hint lr 5" in texts[2] and reason in texts[2] and "rejected" in texts[2]
    assert f"{ME}: hint lr · none -> near 0.003, strength 0.6" in texts[3]


def test_a_space_edit_from_the_study_page(study, base, page):
    control = study["control"]
    open_study(page, base)
    pick(page, ids.SPACE_PARAM, "lr")
    page.locator(f"#{ids.SPACE_LOW}[placeholder='0.001']").wait_for()  # the range later trials draw from now
    page.fill(f"#{ids.SPACE_LOW}", "2e-3")
    page.fill(f"#{ids.SPACE_HIGH}", "5e-3")
    page.get_by_role("button", name="apply", exact=True).click()
    page.locator(f"#{ids.SPACE_STATUS}",
                 has_text="space lr: applied · [0.001, 0.01] log -> [0.002, 0.005] log").wait_for()
    row = page.locator(f"#{ids.SPACE} .space-row", has_text="lr [0.002, 0.005] log")
    row.wait_for()
    assert row.inner_text() == f"lr [0.002, 0.005] log (spec: [0.001, 0.01] log) · edited by {ME}"
    edit = control.space_edits()["lr"]
    assert (edit.dimension["low"], edit.dimension["high"], edit.edited_by) == (0.002, 0.005, ME)

    # a categorical narrows to some of the spec's choices; a range for it is refused with the reason
    pick(page, ids.SPACE_PARAM, "optimizer")
    page.locator(f"#{ids.SPACE_CHOICES}[placeholder='adam,adamw']").wait_for()
    page.fill(f"#{ids.SPACE_LOW}", "1")
    page.get_by_role("button", name="apply", exact=True).click()
    page.locator(f"#{ids.SPACE_STATUS} .field-error",
                 has_text="rejected: space optimizer: a categorical parameter takes --choices").wait_for()
    page.fill(f"#{ids.SPACE_LOW}", "")
    page.fill(f"#{ids.SPACE_CHOICES}", "adam")
    page.get_by_role("button", name="apply", exact=True).click()
    page.locator(f"#{ids.SPACE} .space-row", has_text="optimizer adam (spec: adam | adamw)").wait_for()
    assert control.space()["optimizer"].choices == ("adam",)

    pick(page, ids.SPACE_PARAM, "lr")
    page.get_by_role("button", name="reset to spec").click()
    page.locator(f"#{ids.SPACE} .space-row", has_text="lr [0.001, 0.01] log").wait_for()
    assert page.locator(f"#{ids.SPACE} .space-row", has_text="lr ").inner_text() == "lr [0.001, 0.01] log"
    assert set(control.space_edits()) == {"optimizer"}
    pick(page, ids.SPACE_PARAM, "optimizer")
    page.get_by_role("button", name="reset to spec").click()
    page.locator(f"#{ids.SPACE} .space-row", has_text="optimizer adam | adamw").wait_for()
    assert control.space_edits() == {}

    history = page.locator(f"#{ids.SPACE_HISTORY} li")
    history.first.filter(has_text="space optimizer").filter(has_text="(the spec's)").wait_for()
    texts = history.all_inner_texts()[:5]
    assert "space optimizer · adam -> adam | adamw (the spec's)" in texts[0]
    assert "space lr · [0.002, 0.005] log -> [0.001, 0.01] log (the spec's)" in texts[1]
    assert "space optimizer · adam | adamw -> adam" in texts[2]
    assert "space optimizer low=1" in texts[3] and "rejected" in texts[3]
    assert f"{ME}: space lr · [0.001, 0.01] log -> [0.002, 0.005] log" in texts[4]


def test_find_lr_on_a_running_trial_and_apply_its_suggestion(study, base, page):
    control, n = study["control"], study["n"]
    open_trial(page, base, n, study="hints")
    assert page.locator(f"#{ids.FIND_LR_CARD}").is_hidden()  # no range test yet
    page.get_by_role("button", name="find LR", exact=True).click()
    page.locator(f"#{ids.FIND_LR_STATUS}", has_text="range test running…").wait_for()
    page.locator(f"#{ids.FIND_LR_STATUS}", has_text="suggested").wait_for()
    (test_cmd,) = [c for c in control.commands(trial=n) if c.action == "find_lr"]
    assert test_cmd.state == "applied" and test_cmd.requested_by == ME
    test = test_cmd.result["range_test"]
    assert test["suggestion"] is not None, test["reason"]
    shown = fmt_lr(round_lr(test["suggestion"]))
    assert page.inner_text(f"#{ids.FIND_LR_STATUS}") == f"suggested {fmt_lr(test['suggestion'])}"

    page.locator(f"#{ids.FIND_LR_CARD}").wait_for(state="visible")
    curve = plotly_data(page, ids.FIND_LR_GRAPH)
    assert curve[0]["x"] == test["lrs"] and curve[0]["y"] == test["losses"] and len(curve[0]["x"]) >= 10
    assert curve[1]["name"] == "suggested" and curve[1]["x"] == [test["suggestion"]]
    text = page.inner_text(f"#{ids.FIND_LR_TEXT}")
    assert f"Suggested LR: {fmt_lr(test['suggestion'])}" in text
    assert test["rule"] in text and test["reason"] in text

    # applied as the LR control sends an LR (a big change asks first: the page's dialog handler accepts)
    page.get_by_role("button", name=f"Apply suggested LR ({shown})").click()
    applied = page.locator(f"#{ids.REQUESTS} li.cmd-applied", has_text=f"set_lr {shown}")
    applied.wait_for()
    sets = [c for c in control.commands(trial=n) if c.action == "set_lr"]
    assert [(c.state, c.args["value"]) for c in sets] == [("applied", round_lr(test["suggestion"]))]
    page.locator(f"#{ids.CURRENT}", has_text=f"lr {shown}").wait_for()
    page.locator(f"#{ids.LR_HINT}", has_text="the trial's LR now").wait_for()
    page.locator(f"#{ids.INTERVENTIONS} td", has_text="LR range test: suggested").wait_for()  # the log says it

    page.reload()  # the range test is the command's: shown again from the database
    page.locator(f"#{ids.FIND_LR_CARD}").wait_for(state="visible")
    page.get_by_role("button", name=f"Apply suggested LR ({shown})").wait_for()
    page.get_by_role("button", name=f"Apply suggested LR ({shown})").click()  # the trial's LR already
    page.locator(f"#{ids.LR_ERROR}", has_text="Nothing to send: the trial's LR is already").wait_for()
