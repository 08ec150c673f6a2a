"""Click to applied, as a person sees it: the trial page in headless Chromium against a real worker.

Each round steps the LR control by x1.25 (or /1.25), clicks send, and waits until
the page lists the request as applied. The time is measured in the page
(`performance.now()` at the click and when the applied line appears), so it is
what the person sees: the app's poll, the worker's poll and both writes.
Each click is also split in three with the command's own times (browser and
app share this machine's clock): click -> recorded (the send callback's
request and write), recorded -> applied (the worker's poll, `[steering]
poll_interval`, and its write), applied -> shown (the page's poll, every
`FAST_POLL_MS` while the request waits, and the tick's read and answer).
Needs the test tools (Playwright) and Debian's Chromium.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
from pathlib import Path
from typing import Any

from steer.bench.harness import first_trial_control, packaged_spec, percentile, start_worker, write_spec

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]


def click_to_applied(clicks: int = 20) -> dict[str, Any]:
    """`clicks` LR changes sent from the trial page; the seconds from each click to "applied" on the page,
    and each click split into click -> recorded -> applied (by the worker) -> shown."""
    from playwright.sync_api import sync_playwright

    from steer.dashboards import components as C
    from steer.dashboards import ids, server, trial_page
    from steer.dashboards.app import create_app
    from steer.spec import parse_spec

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    spec = packaged_spec("steering")
    name = spec["study"]["name"]
    times: list[float] = []
    marks: list[tuple[int, float, float]] = []  # (newest command id before the click, click, shown): epoch seconds
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / f'{name}.db'}"
        proc = start_worker(write_spec(spec, Path(tmp) / "bench.toml"))
        srv = None
        try:
            control = first_trial_control(url, name, proc)
            srv = server.make_server(create_app(url, name), "127.0.0.1", 0)
            threading.Thread(target=srv.run, daemon=True).start()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("dialog", lambda dialog: dialog.accept())  # a step past the searched range asks first
                page.goto(f"http://127.0.0.1:{srv.effective_port}/trial/0?study={name}")
                newest = (f"() => Math.max(0, ...[...document.querySelectorAll('#{ids.REQUESTS} li[data-command]')]"
                          ".map(li => Number(li.dataset.command)))")
                applied = (f"(n) => [...document.querySelectorAll('#{ids.REQUESTS} li.cmd-applied[data-command]')]"
                           ".some(li => Number(li.dataset.command) > n)")
                page.locator(f"#{ids.LR_SEND}").wait_for()
                for i in range(clicks):
                    page.locator(f"#{ids.LR_HINT}", has_text="the trial's LR now").wait_for()  # idle
                    before = page.evaluate(newest)
                    page.click(f"#{ids.LR_STEP}-{'mul125' if i % 2 == 0 else 'div125'}")
                    page.locator(f"#{ids.LR_HINT}", has_text="not sent yet").wait_for()  # stepped and checked
                    page.evaluate("window.__clicked = performance.now(); window.__clicked_at = Date.now()")
                    page.click(f"#{ids.LR_SEND}")
                    page.wait_for_function(applied, arg=before, timeout=30_000, polling="raf")
                    took, clicked_at = page.evaluate("[performance.now() - window.__clicked, window.__clicked_at]")
                    times.append(took / 1000)
                    marks.append((before, clicked_at / 1000, clicked_at / 1000 + took / 1000))
                    page.wait_for_timeout(200 + (i % 5) * 60)  # spread the clicks over the poll phases
                browser.close()
            sent = {c.id: c for c in control.commands(trial=0) if c.action == "set_lr"}
        finally:
            if srv is not None:
                srv.close()
            proc.kill()
            proc.wait()
    parts: dict[str, list[float]] = {"click_to_recorded_s": [], "recorded_to_applied_s": [], "applied_to_shown_s": []}
    for before, clicked, shown in marks:
        cmd = sent[min(i for i in sent if i > before)]  # the request this click sent
        parts["click_to_recorded_s"].append(cmd.requested_at - clicked)
        parts["recorded_to_applied_s"].append(cmd.resolved_at - cmd.requested_at)
        parts["applied_to_shown_s"].append(shown - cmd.resolved_at)
    return {"clicks": clicks, "p50_s": percentile(times, 0.5), "p95_s": percentile(times, 0.95), "max_s": max(times),
            "mean_s": statistics.fmean(times),
            "parts_p50_s": {k: percentile(v, 0.5) for k, v in parts.items()},
            "parts_p95_s": {k: percentile(v, 0.95) for k, v in parts.items()},
            "worker_poll_interval_s": parse_spec(spec).steering["poll_interval"],
            "app_poll_ms": {"idle": C.POLL_MS, "while_pending": trial_page.FAST_POLL_MS},
            "times_s": [round(t, 4) for t in times],
            "parts_s": {k: [round(x, 4) for x in v] for k, v in parts.items()}}
