"""The person's pace in the app, in headless Chromium against a real `steer run` worker.

One tiny study for the module: a single worker keeps one long trial running
(each step sleeps a few ms). Tests run in file order and share it: the LR
control first (the trial must run), then pause and resume, keep, the watch a
trial page keeps, the held-study banner and the wall's pause button. Each test
ends by checking the browser console has no errors.
"""

from __future__ import annotations

import re
import time

import pytest

from conftest import requires_browser
from steer import record
from steer.dashboards import ids, trial_page
from steer.dashboards.app import create_app
from steer.dashboards.views import fmt, fmt_lr, round_lr
from test_dash_browser import one_worker, open_trial, serve, wait_for

pytestmark = requires_browser

SPEC = """
[study]
name = "pace"
trials = 20
seed = 3

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
"""
WAIT = 20_000  # ms a page gets to show what the worker did


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A real study with one worker training one long trial."""
    with one_worker(tmp_path_factory.mktemp("pace"), "pace", SPEC) as study:
        yield study


@pytest.fixture(scope="module")
def base(study):
    srv, url = serve(create_app(study["url"]))
    yield url
    srv.close()


@pytest.fixture
def page(browser):
    """A page in a fresh context. Dialogs are answered from `page.answers` (True: accept; default
    accept) and their messages kept in `page.dialogs`; at the end the console must hold no error."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT)
    errors, page.dialogs, page.answers = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def answer(dialog):
        page.dialogs.append(dialog.message)
        (dialog.accept if (page.answers.pop(0) if page.answers else True) else dialog.dismiss)()

    page.on("dialog", answer)
    yield page
    context.close()
    assert errors == [], f"browser console errors: {errors}"


def commands(study, action=None):
    return [c for c in study["control"].commands(trial=study["n"]) if action is None or c.action == action]


def shown_lr(page):
    return page.inner_text(f"#{ids.LR_VALUE}")


def lr_edit_shown(page):
    """The LR shown and the first words of its hint."""
    return shown_lr(page), page.inner_text(f"#{ids.LR_HINT}")[:12]


def trial(study):
    return study["control"].trial(study["n"])


def in_page(page, what, check, timeout=20.0):
    """`wait_for` that lets the page run meanwhile (Playwright answers dialogs only inside its own calls)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        page.wait_for_timeout(100)


def steps_advance(study, seconds=2.0):
    """Whether the worker's published step moves within `seconds` (read twice)."""
    first = study["control"].live(study["n"]).step
    time.sleep(seconds)
    return study["control"].live(study["n"]).step > first


# ---- the LR control ---------------------------------------------------------------- #


def test_the_lr_shown_is_the_lr_sent_and_applied(study, base, page):
    n = study["n"]
    open_trial(page, base, n, study="pace")
    now = study["control"].metrics(n)[-1].lr
    page.locator(f"#{ids.LR_VALUE}", has_text=fmt_lr(round_lr(now))).wait_for()  # idle: the trial's LR
    decades = page.evaluate(f"() => [...document.querySelectorAll('#{ids.LR_SLIDER} .dash-slider-mark')]"
                            ".filter(m => m.innerText.startsWith('1.00e')).map(m => m.getBoundingClientRect().x)")
    assert len(decades) >= 2 and decades[1] - decades[0] >= 150  # px per decade
    current = shown_lr(page)
    page.get_by_role("button", name="÷2", exact=True).click()
    page.locator(f"#{ids.LR_HINT}", has_text=re.compile(r"not sent yet: (1\.9\d|2|2\.0\d)x below now")).wait_for()
    page.get_by_role("button", name="×1.25", exact=True).click()
    page.locator(f"#{ids.LR_HINT}", has_text=re.compile(r"1\.[56]\d?x below")).wait_for()
    shown = shown_lr(page)
    assert float(shown) == pytest.approx(float(current) / 2 * 1.25, rel=1e-2)
    before = len(commands(study))
    page.get_by_role("button", name="send", exact=True).click()
    page.locator(f"#{ids.REQUESTS} li.cmd-applied", has_text=f"set_lr {shown}").wait_for()
    sent = commands(study, "set_lr")[-1]
    assert len(commands(study)) == before + 1 and sent.args == {"value": float(shown)}
    assert sent.requested_by == "dash:127.0.0.1"
    # within one refresh of "applied": the Now line, the number and the hint say the trial's LR
    page.locator(f"#{ids.CURRENT}", has_text=f"lr {shown}").wait_for()
    page.locator(f"#{ids.LR_HINT}", has_text="the trial's LR now").wait_for()
    assert shown_lr(page) == shown
    assert page.locator(f"#{ids.INTERVENTIONS} td", has_text=f"-> {shown}").count() == 1


def test_a_big_lr_jump_asks_first(study, base, page):
    n = study["n"]
    open_trial(page, base, n, study="pace")
    now = shown_lr(page)
    page.get_by_role("button", name="÷10", exact=True).click()
    page.get_by_role("button", name="÷2", exact=True).click()
    page.locator(f"#{ids.LR_HINT}", has_text=re.compile(r"(19\.\d|20(\.\d)?)x below")).wait_for()
    jump = shown_lr(page)
    assert float(jump) == pytest.approx(float(now) / 20, rel=1e-2)
    before = len(commands(study))
    page.answers.append(False)  # dismissed: nothing is recorded
    page.get_by_role("button", name="send", exact=True).click()
    in_page(page, "the question", lambda: page.dialogs)
    assert page.dialogs[-1].startswith(f"Set trial {n}'s learning rate from {now} to {jump}? It is ")
    page.wait_for_timeout(1000)
    assert len(commands(study)) == before
    assert shown_lr(page) == jump  # still shown, not sent
    page.get_by_role("button", name="send", exact=True).click()  # accepted: recorded
    in_page(page, "the second question", lambda: len(page.dialogs) == 2)
    in_page(page, "the request", lambda: len(commands(study)) == before + 1)
    assert commands(study)[-1].args == {"value": float(jump)}
    page.locator(f"#{ids.CURRENT}", has_text=f"lr {jump}").wait_for()


def test_malformed_and_out_of_range_lrs_are_refused_in_the_page(study, base, page):
    open_trial(page, base, study["n"], study="pace")
    before = len(commands(study))
    shown = shown_lr(page)
    error = page.locator(f"#{ids.LR_ERROR}")
    for typed, reason in (("abc", "lr: got 'abc'; expected a number, float in [1e-07, 1]"),
                          ("50", "lr: got 50.0; allowed: float in [1e-07, 1]")):
        page.fill(f"#{ids.LR_INPUT}", typed)
        page.press(f"#{ids.LR_INPUT}", "Enter")
        error.filter(has_text=reason).wait_for()  # the server's words, in the page
        assert shown_lr(page) == shown
    page.wait_for_timeout(1000)
    assert len(commands(study)) == before  # nothing was stored
    assert page.dialogs == []


# The moment the page lists a request newer than `after` as applied, step the LR (in the same turn of the
# page's event loop as that update) and keep the LR the step started from.
STEP_WHEN_APPLIED = """([after, stepper]) => {
    window.__stepped = null;
    const list = document.getElementById('%s');
    const applied = () => [...list.querySelectorAll('li.cmd-applied[data-command]')]
        .some(li => Number(li.dataset.command) > after);
    const observer = new MutationObserver(() => {
        if (!applied()) { return; }
        observer.disconnect();
        const from = document.getElementById('%s').innerText;
        document.getElementById(stepper).click();
        window.__stepped = from;
    });
    observer.observe(list, {childList: true, subtree: true, attributes: true});
}""" % (ids.REQUESTS, ids.LR_VALUE)


def test_a_step_right_as_the_last_lr_is_applied_is_kept(study, base, page):
    """Send, and the moment the page shows it applied, step (x1.25 and /1.25 in turn, as a person tuning
    does): every step is an edit not sent yet, kept over the next polls, though its LR may be one this page
    sent a second ago (a poll once took that older request, applied, for this edit's: it showed the trial's
    LR over the step and the next send said "Nothing to send")."""
    open_trial(page, base, study["n"], study="pace")
    page.locator(f"#{ids.LR_HINT}", has_text="the trial's LR now").wait_for()
    page.get_by_role("button", name="×1.25", exact=True).click()
    page.locator(f"#{ids.LR_HINT}", has_text="not sent yet").wait_for()
    for i in range(4):
        key, factor = [("div125", 0.8), ("mul125", 1.25)][i % 2]
        sent = shown_lr(page)
        after = max([c.id for c in commands(study)], default=0)
        page.evaluate(STEP_WHEN_APPLIED, [after, f"{ids.LR_STEP}-{key}"])
        page.get_by_role("button", name="send", exact=True).click()
        page.wait_for_function("() => window.__stepped !== null")
        assert commands(study, "set_lr")[-1].args == {"value": float(sent)}
        stepped = fmt_lr(round_lr(float(page.evaluate("() => window.__stepped")) * factor))
        page.wait_for_timeout(1200)  # the polls after "applied" (every 0.5 s once nothing of this page waits)
        assert lr_edit_shown(page) == (stepped, "not sent yet"), f"round {i}"
        assert page.inner_text(f"#{ids.LR_ERROR}") == ""


# Once armed (`window.__hold = value`), the trial page's poll whose answer moves the weight-decay box to
# `value` (the value last set by hand, as that poll read it) is held on its way until `window.__release`.
HOLD_THE_SYNC = """() => {
    window.__hold = null; window.__held = false; window.__release = false;
    const syncs = (answer, value) => {
        const box = answer['%(box)s'];
        const polled = answer['%(polled)s'] && answer['%(polled)s'].data;
        return (box && box.value === value) || (polled && polled.known && polled.known.weight_decay === value);
    };
    const realFetch = window.fetch;
    window.fetch = function(url, options) {
        const answer = realFetch.apply(this, arguments);
        const body = options && typeof options.body === 'string' ? options.body : '';
        if (!String(url).includes('_dash-update-component') || !body.includes('%(cursor)s.data')) { return answer; }
        return answer.then(async response => {
            if (window.__hold === null) { return response; }
            let parsed = null;
            try { parsed = JSON.parse(await response.clone().text()); } catch (e) { return response; }
            if (!syncs(parsed.response || {}, window.__hold)) { return response; }
            window.__hold = null;
            window.__held = true;
            while (!window.__release) { await new Promise(resolve => setTimeout(resolve, 5)); }
            return response;
        });
    };
}""" % {"box": ids.WEIGHT_DECAY, "polled": trial_page.POLLED, "cursor": ids.TRIAL_CURSOR}


def test_a_value_typed_while_a_poll_is_out_is_sent_and_kept(study, base, page):
    """Weight decay 0.0011 is sent and applied; the poll that reads it applied is out when the person sends
    0.0022. That poll's answer must neither keep 0.0022 from being sent nor put 0.0011 over it (it once did
    both: the request waited for the poll, then read the box the poll had put back)."""
    page.add_init_script(f"({HOLD_THE_SYNC})();")
    open_trial(page, base, study["n"], study="pace")
    box = f"#{ids.WEIGHT_DECAY}"
    page.evaluate("() => { window.__hold = 0.0011; }")
    page.fill(box, "0.0011")
    page.press(box, "Enter")
    page.wait_for_function("() => window.__held")
    assert commands(study, "set_weight_decay")[-1].args == {"value": 0.0011}
    page.fill(box, "0.0022")
    page.press(box, "Enter")
    page.wait_for_timeout(300)
    page.evaluate("() => { window.__release = true; }")
    in_page(page, "0.0022 to be applied", lambda: commands(study, "set_weight_decay")[-1].args == {"value": 0.0022}
            and commands(study, "set_weight_decay")[-1].state == "applied", timeout=5)
    page.locator(f"#{ids.CURRENT}", has_text=f"weight decay {fmt(0.0022)}").wait_for()
    page.wait_for_timeout(1200)  # the polls after it
    assert page.input_value(box) == "0.0022"


# ---- pause, resume, keep, watch ------------------------------------------------------- #


def test_pause_holds_the_trial_and_resume_lets_it_train(study, base, page):
    n = study["n"]
    open_trial(page, base, n, study="pace")
    page.locator(f"#{ids.PAUSE}").click()
    header = page.locator(f"#{ids.TRIAL_HEADER}")
    header.get_by_text("paused since").wait_for()
    paused = record.read(trial(study)).paused
    assert paused["by"] == "dash:127.0.0.1"
    assert f"at step {paused['step']} (by dash:127.0.0.1)" in header.inner_text()
    page.locator(f"#{ids.LIVE_CAPTION}", has_text="(paused)").wait_for()
    page.locator(f"#{ids.RESUME}").wait_for(state="visible")
    assert page.locator(f"#{ids.PAUSE}").is_hidden()
    assert not steps_advance(study)  # held at a step boundary
    page.locator(f"#{ids.RESUME}").click()
    page.locator(f"#{ids.PAUSE}").wait_for(state="visible")
    wait_for("the trial to train on", lambda: steps_advance(study, 0.5), timeout=20)
    assert record.read(trial(study)).paused is None and "paused since" not in header.inner_text()
    page.locator(f"#{ids.LIVE_CAPTION}:not(:has-text('(paused)'))").wait_for()


def test_keep_shows_as_kept(study, base, page):
    open_trial(page, base, study["n"], study="pace")
    keep = page.locator(f"#{ids.KEEP}")
    assert keep.get_attribute("title") == "exempt a running trial from automatic pruning for the rest of its run"
    keep.click()
    page.locator(f"#{ids.TRIAL_HEADER} .note-kept", has_text="kept").wait_for()
    page.wait_for_function(f"() => document.getElementById('{ids.KEEP}').disabled")
    assert keep.inner_text() == "kept" and record.read(trial(study)).kept


# ---- the study's hold --------------------------------------------------------------------- #


def test_hold_shows_a_banner_on_every_page_until_released(study, base, page):
    control = study["control"]
    page.goto(f"{base}/?study=pace")
    banner = page.locator(f"#{ids.HELD_BANNER}")
    hold = page.get_by_role("button", name="hold the study")
    hold.click()
    banner.get_by_text("Study held by dash:127.0.0.1 since").wait_for()
    assert "no new trial starts" in banner.inner_text() and hold.is_hidden()
    assert control.held()["by"] == "dash:127.0.0.1"
    open_trial(page, base, study["n"], study="pace")  # every page shows it
    banner.get_by_text("Study held by").wait_for()
    page.goto(f"{base}/?study=pace")
    banner.get_by_role("button", name="release the study").click()
    banner.wait_for(state="hidden")
    hold.wait_for(state="visible")
    assert control.held() is None
    holds = [c for c in control.commands() if c.action in ("hold", "release")]
    assert [(c.action, c.state) for c in holds] == [("hold", "applied"), ("release", "applied")]


def test_the_wall_pauses_and_resumes_a_card(study, base, page):
    n = study["n"]
    page.goto(f"{base}/wall?study=pace")
    card = page.locator(f"#{ids.WALL_GRID} .wall-cell", has=page.locator("a.wall-card", has_text=f"trial {n}"))
    card.get_by_role("button", name="pause").click()
    card.locator(".badge", has_text="paused").wait_for()
    card.get_by_text("paused at step").wait_for()
    assert page.url.endswith("/wall?study=pace")  # the button is not the card's link
    assert record.read(trial(study)).paused is not None
    card.get_by_role("button", name="resume").click()
    card.get_by_role("button", name="pause").wait_for()
    assert card.locator(".badge", has_text="paused").count() == 0
    assert record.read(trial(study)).paused is None
    paused = [c for c in commands(study) if c.action in ("pause", "resume")][-2:]
    assert [(c.action, c.state) for c in paused] == [("pause", "applied"), ("resume", "applied")]


def test_an_open_trial_page_watches_its_trial(study, base, browser, page):
    control, n = study["control"], study["n"]
    wait_for("no page watching", lambda: not control.watched(n), timeout=10)  # earlier tests' pages are closed
    open_trial(page, base, n, study="pace")
    wait_for("the watch", lambda: control.watched(n), timeout=10)
    time.sleep(7)  # longer than one watch: the page renews it
    assert control.watched(n)
    page.goto("about:blank")
    wait_for("the watch to lapse", lambda: not control.watched(n), timeout=12)
